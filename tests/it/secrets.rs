//! Secrets stay out of what the binary prints: logs at any level, `--help`, and the demo's
//! configuration, which no `GROUPWATCH__…` variable of a production environment can reach.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_groupwatch");

/// `RUST_LOG=trace` turns on every target but lapin's and amq-protocol's, whose trace lines
/// print the frames on the wire, `Connection.StartOk` with the broker password among them.
#[test]
fn rust_log_trace_does_not_log_the_broker_password() {
    let exchange = unique_exchange();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("groupwatch.toml");
    std::fs::write(&path, test_config(&exchange, "\n[log]\nformat = \"json\"\n")).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    while !read().contains("connected to the broker") {
        assert!(started.elapsed() < Duration::from_secs(20), "serve did not connect to RabbitMQ:\n{}", read());
        assert!(child.try_wait().unwrap().is_none(), "serve exited:\n{}", read());
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let config = groupwatch::config::Config::from_toml(&test_config(&exchange, ""), std::iter::empty()).unwrap();
    let topology = groupwatch::queue::broker::Topology::from_config(&config.amqp);
    tokio::runtime::Runtime::new().unwrap().block_on(async { cleanup(&amqp().await, &topology).await });
    let text = read();
    let verbose = |l: &&str| l.contains("\"level\":\"TRACE\"") || l.contains("\"level\":\"DEBUG\"");
    assert!(text.lines().any(|l| verbose(&l)), "below info is on for other targets:\n{text}");
    assert!(!text.contains("StartOk"), "Connection.StartOk was logged");
    // The SASL PLAIN response, "\0guest\0guest", as lapin prints it.
    assert!(!text.contains("LongString([0"), "the SASL response was logged");
    for line in text.lines().filter(|l| l.contains("\"target\":\"lapin") || l.contains("\"target\":\"amq_protocol")) {
        assert!(!line.contains("\"level\":\"TRACE\"") && !line.contains("\"level\":\"DEBUG\""), "{line}");
    }
}

/// clap prints an argument's environment value in `--help`; the broker URL carries a password.
#[test]
fn help_never_shows_environment_values() {
    for args in
        [&["demo", "--help"][..], &["serve", "--help"], &["replay", "--help"], &["resync", "--help"], &["--help"]]
    {
        let out = Command::new(BIN)
            .args(args)
            .env("GROUPWATCH__AMQP__URL", "amqp://user:hunter2-prod@broker:5672/%2f")
            .env("GROUPWATCH_DEMO_AMQP_URL", "amqp://user:hunter2-demo@broker:5672/%2f")
            .env("GROUPWATCH_CONFIG", "/etc/secret-place/hunter2.toml")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.is_empty());
        assert!(!text.contains("hunter2"), "{args:?} shows an environment value:\n{text}");
    }
}

/// `demo` builds its configuration from its own flag only: a production environment's
/// `GROUPWATCH__…` variables (here an invalid store and a production exchange) change nothing.
#[test]
fn demo_tours_every_vendor_and_ignores_groupwatch_overrides() {
    let out = Command::new(BIN)
        .args(["demo", "--amqp-url", &amqp_url()])
        .env("GROUPWATCH__STORE__URL", "mysql://production-db/groupwatch")
        .env("GROUPWATCH__AMQP__EXCHANGE", "production-exchange")
        .env("GROUPWATCH__AMQP__URL", "amqp://guest:guest@127.0.0.1:9/%2f")
        .env("GROUPWATCH__WECOM__ACME__API_BASE", "http://127.0.0.1:9")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // WeCom 9, DingTalk (Stream mode) 7, Tencent IM 6: each vendor's story to its dismissal.
    assert!(stdout.contains("22 events published"), "{stdout}");
    for provider in ["wecom.acme", "dingtalk.acme-dt", "tim.acme-im"] {
        for kind in ["member.join", "member.leave", "group.update", "group.dismiss"] {
            assert!(stdout.contains(&format!("{provider}.{kind}")), "no {provider}.{kind} in:\n{stdout}");
        }
    }
    assert!(!stdout.contains("production-exchange"), "{stdout}");
}
