//! The real `groupwatch serve` binary as a child process, for tests that send it signals.

use super::TENANT;
use groupwatch::config::Config;
use groupwatch::tools::replay::Replayer;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (a config with port 0 would not tell us which one it got).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Worker on with short delays, text logs at info (tests read them), the given port and broker;
/// the ops listener on a free port of its own.
pub fn serve_config(exchange: &str, store_url: &str, api_base: &str, port: u16, amqp_url: &str) -> String {
    serve_test_config(exchange, store_url, api_base, port, amqp_url).toml()
}

/// [`serve_config`] as a builder, for tests that set more.
pub fn serve_test_config(
    exchange: &str,
    store_url: &str,
    api_base: &str,
    port: u16,
    amqp_url: &str,
) -> super::TestConfig {
    super::TestConfig::new(exchange, store_url)
        .with_worker()
        .listen(&format!("127.0.0.1:{port}"))
        .ops_listen(&format!("127.0.0.1:{}", free_port()))
        .wecom_api(api_base)
        .amqp_url(amqp_url)
        .section("[log]\nformat = \"text\"\nlevel = \"info\"\n")
}

/// POSTs a callback to instance `first`; on 503 or no answer (the instance is down) retries on
/// the next one, as WeCom retries and a load balancer routes elsewhere. Gives up after 30 s.
pub async fn deliver(replayers: &[Replayer], first: usize, xml: &str, retries: &AtomicUsize) -> usize {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let target = (first + attempt) % replayers.len();
        match replayers[target].post(xml.as_bytes()).await {
            Ok(s) if s == 200 => return target,
            Ok(s) if s == 503 => {}
            Ok(s) => panic!("callback answered {s}, expected 200 or 503"),
            Err(_) => {} // refused or reset: the instance is dead
        }
        retries.fetch_add(1, Ordering::SeqCst);
        attempt += 1;
        assert!(started.elapsed() < Duration::from_secs(30), "callback not accepted within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `groupwatch serve` child process; killed when dropped (its log printed if panicking).
pub struct Serve {
    pub name: String,
    child: Child,
    /// The callback listener's port.
    pub port: u16,
    /// The ops listener's port (`http.ops_listen`).
    pub ops_port: u16,
    log: PathBuf,
    pub config: Config,
}

impl Serve {
    /// Starts the process without waiting for it.
    pub fn start(dir: &Path, name: &str, config_toml: &str, port: u16) -> Serve {
        Self::start_with(dir, name, config_toml, port, Command::new(env!("CARGO_BIN_EXE_groupwatch")))
    }

    /// Starts the process confined to CPU 0 with `taskset`, as `bench/ingest.sh` runs it: one
    /// CPU selects the current-thread runtime.
    pub fn start_on_one_cpu(dir: &Path, name: &str, config_toml: &str, port: u16) -> Serve {
        let mut taskset = Command::new("taskset");
        taskset.args(["-c", "0", env!("CARGO_BIN_EXE_groupwatch")]);
        Self::start_with(dir, name, config_toml, port, taskset)
    }

    fn start_with(dir: &Path, name: &str, config_toml: &str, port: u16, mut command: Command) -> Serve {
        let config = Config::from_toml(config_toml, std::iter::empty()).expect("valid config");
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config_toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("groupwatch starts");
        let ops_port = config.http.ops_listen.port();
        Serve { name: name.to_owned(), child, port, ops_port, log, config }
    }

    /// Starts the process and waits until `/readyz` answers 200.
    pub async fn start_ready(dir: &Path, name: &str, config_toml: &str, port: u16) -> Serve {
        let mut serve = Self::start(dir, name, config_toml, port);
        serve.wait_status("/readyz", 200, Duration::from_secs(20)).await;
        serve
    }

    /// A URL on the callback listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A URL on the ops listener.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    pub fn replayer(&self) -> Replayer {
        Replayer::wecom(self.config.tenant(TENANT).unwrap(), &self.url(&format!("/wecom/{TENANT}/callback"))).unwrap()
    }

    /// Where its configuration file is (for the commands that take `--config`).
    pub fn config_path(&self) -> PathBuf {
        self.log.with_extension("toml")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times this instance reconciled `chat` (one log line per processed batch).
    pub fn reconciled(&self, chat: &str) -> usize {
        self.log().lines().filter(|l| l.contains("group reconciled") && l.contains(chat)).count()
    }

    /// `groupwatch_fetches_total`, all outcomes: the groupchat/get calls this instance made.
    pub async fn fetches(&self) -> u64 {
        let text = reqwest::get(self.ops_url("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with("groupwatch_fetches_total{") || l.starts_with("groupwatch_fetches_total "))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Polls `path` on the ops listener until it answers `want`; panics (with the process log)
    /// after `timeout` or if the process exits.
    pub async fn wait_status(&mut self, path: &str, want: u16, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}) while waiting for {path}:\n{}", self.name, self.log());
            }
            let got = reqwest::get(self.ops_url(path)).await.map(|r| r.status().as_u16());
            if matches!(got, Ok(s) if s == want) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "{}: {path} answers {got:?}, not {want}, after {timeout:?}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -s {signal} failed");
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < timeout, "{} still running after {timeout:?}:\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and checks the process died of it.
    pub async fn kill(&mut self) {
        self.signal("KILL");
        let (status, _) = self.wait_exit(Duration::from_secs(5)).await;
        assert_eq!(status.code(), None, "{} killed by a signal: {status}", self.name);
    }

    /// SIGTERM, then asserts exit code 0 within 20 s; returns how long the exit took.
    pub async fn terminate(&mut self) -> Duration {
        self.signal("TERM");
        let (status, took) = self.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(0), "{} exit status after SIGTERM: {status}; log:\n{}", self.name, self.log());
        took
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of {} (port {}) ---\n{}", self.name, self.port, self.log());
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
