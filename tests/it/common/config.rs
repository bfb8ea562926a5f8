//! A typed builder for test configurations: every knob is a method, so a test that asks for a
//! setting gets it (a `String::replace` on a template that misses does nothing, silently).
//! `toml()` writes the file `serve` would read.

use std::fmt::Display;

use super::{amqp_url, AES_KEY, CORP_ID, TENANT, TOKEN};

#[derive(Debug, Clone)]
pub struct TestConfig {
    exchange: String,
    store_url: String,
    amqp_url: String,
    listen: String,
    ops_listen: String,
    worker: bool,
    http: Vec<(String, String)>,
    worker_keys: Vec<(String, String)>,
    amqp: Vec<(String, String)>,
    wecom_api_base: String,
    /// Extra `[[provider]]` tables, written after the WeCom ones.
    tenants: Vec<(String, String)>,
    sections: Vec<String>,
}

impl TestConfig {
    /// The test tenants (`acme`, and `vector_a` for the official vectors), the worker off.
    pub fn new(exchange: &str, store_url: &str) -> Self {
        Self {
            exchange: exchange.to_owned(),
            store_url: store_url.to_owned(),
            amqp_url: amqp_url(),
            listen: "127.0.0.1:0".into(),
            ops_listen: "127.0.0.1:0".into(),
            worker: false,
            http: Vec::new(),
            worker_keys: Vec::new(),
            amqp: Vec::new(),
            wecom_api_base: "http://127.0.0.1:9".into(),
            tenants: Vec::new(),
            sections: Vec::new(),
        }
    }

    /// The worker on, with timings short enough for tests: 100 ms coalescing, a 2.8 s retry
    /// schedule, 300 ms confirmation delay.
    pub fn with_worker(mut self) -> Self {
        self.worker = true;
        self.worker_value("coalesce_ms", 100)
            .worker_value("retry_delays_ms", "[200, 300, 500, 800, 1000]")
            .worker_value("confirm_delay_ms", 300)
    }

    /// `[worker] key = value`, the value written as TOML (quote strings yourself).
    pub fn worker_value(mut self, key: &str, value: impl Display) -> Self {
        self.worker_keys.retain(|(k, _)| k != key);
        self.worker_keys.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn http_value(mut self, key: &str, value: impl Display) -> Self {
        self.http.retain(|(k, _)| k != key);
        self.http.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn amqp_value(mut self, key: &str, value: impl Display) -> Self {
        self.amqp.retain(|(k, _)| k != key);
        self.amqp.push((key.to_owned(), value.to_string()));
        self
    }

    /// `http.listen` (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_owned();
        self
    }

    /// The broker to use (a proxy in front of RabbitMQ, say).
    /// `http.ops_listen` (default: port 0).
    pub fn ops_listen(mut self, addr: &str) -> Self {
        self.ops_listen = addr.to_owned();
        self
    }

    pub fn amqp_url(mut self, url: &str) -> Self {
        self.amqp_url = url.to_owned();
        self
    }

    /// Where the WeCom tenant `acme` calls its API (the simulator).
    pub fn wecom_api(mut self, base: &str) -> Self {
        self.wecom_api_base = base.to_owned();
        self
    }

    /// A `[[provider]]` table (`dingtalk`, `tim`, or another `wecom`), its body as TOML lines.
    pub fn tenant(mut self, provider: &str, body: &str) -> Self {
        self.tenants.push((provider.to_owned(), body.to_owned()));
        self
    }

    /// Any other section, as TOML text.
    pub fn section(mut self, toml: &str) -> Self {
        self.sections.push(toml.to_owned());
        self
    }

    pub fn toml(&self) -> String {
        let lines = |pairs: &[(String, String)]| pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>();
        // Single quotes: tests rewrite `listen = "..."` with plain string replaces, which must
        // not hit this.
        let mut out = format!(
            "[http]\nlisten = \"{}\"\nops_listen = '{}'\n{}\n",
            self.listen,
            self.ops_listen,
            lines(&self.http)
        );
        out += &format!("[worker]\nenabled = {}\n{}\n", self.worker, lines(&self.worker_keys));
        out += &format!("[store]\nurl = \"{}\"\n\n", self.store_url);
        out +=
            &format!("[amqp]\nurl = \"{}\"\nexchange = \"{}\"\n{}\n", self.amqp_url, self.exchange, lines(&self.amqp));
        out += &format!(
            "[[wecom]]\ntenant = \"{TENANT}\"\ncorp_id = \"{CORP_ID}\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{AES_KEY}\"\n\
             secret = \"test-secret\"\napi_base = \"{}\"\nallow_documented_test_key = true\n\n",
            self.wecom_api_base
        );
        out += "[[wecom]]\ntenant = \"vector_a\"\ncorp_id = \"wx5823bf96d3bd56c7\"\ntoken = \"QDG6eK\"\n\
                encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\nsecret = \"test-secret\"\n\
                allow_documented_test_key = true\n\n";
        for (provider, body) in &self.tenants {
            out += &format!("[[{provider}]]\n{body}\n\n");
        }
        for section in &self.sections {
            out += section;
            out += "\n";
        }
        out
    }
}

#[test]
fn the_builder_writes_what_it_is_asked() {
    let toml = TestConfig::new("ex", "sqlite://x.db")
        .with_worker()
        .worker_value("coalesce_ms", 5)
        .http_value("timestamp_window_secs", 60)
        .wecom_api("http://127.0.0.1:1234")
        .tenant("tim", "tenant = \"im\"\nsdk_app_id = 1400000000\nidentifier = \"admin\"\nsecret_key = \"k\"\ncallback_token = \"t\"")
        .toml();
    let config = groupwatch::config::Config::from_toml(&toml, std::iter::empty()).expect(&toml);
    assert!(config.worker.enabled);
    assert_eq!((config.worker.coalesce_ms, config.worker.confirm_delay_ms), (5, 300));
    assert_eq!(config.http.timestamp_window_secs, 60);
    assert_eq!(config.wecom[0].api_base, "http://127.0.0.1:1234");
    assert_eq!(config.tim[0].sdk_app_id, 1_400_000_000);
}
