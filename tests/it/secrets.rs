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
