//! `/metrics` exposes every family an operator needs, after a short real scenario.

use crate::common::*;
use groupwatch::sim::{self, SimState};
use groupwatch::tools::replay::Replayer;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_every_stage_after_a_short_scenario() {
    let sim = sim::spawn(SimState::bundled().unwrap(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let exchange = unique_exchange();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("gw.db").display());
    let config = test_config_with_store(&exchange, &store, "")
        .replace("[worker]\nenabled = false", "[worker]\nenabled = true\ncoalesce_ms = 50")
        .replace("api_base = \"http://127.0.0.1:9\"", &format!("api_base = \"{}\"", sim.base_url()))
        .replace("secret = \"test-secret\"\napi_base", "secret = \"demo-secret\"\napi_base");
    let app = spawn_app(&config).await;
    let conn = amqp().await;
    let tap = Tap::new(&conn, &exchange).await;
    let replayer = Replayer::wecom(app.config.tenant(TENANT).unwrap(), &app.callback_url(TENANT)).unwrap();
    let fixture =
        |name: &str| std::path::PathBuf::from(format!("{}/fixtures/wecom/{name}", env!("CARGO_MANIFEST_DIR")));
    assert_eq!(replayer.post_file(&fixture("create.xml")).await.unwrap(), 200);
    assert_eq!(replayer.post_file(&fixture("unknown_event.xml")).await.unwrap(), 200);
    tap.expect(3, Duration::from_secs(20)).await;
    // A bad signature, so the rejection outcome shows too.
    let bad = reqwest::Client::new()
        .post(format!(
            "{}?msg_signature=x&timestamp={}&nonce=2",
            app.callback_url(TENANT),
            groupwatch::core::clock::now_ms() / 1000
        ))
        .body("<xml><Encrypt>abcd</Encrypt></xml>")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);

    let text = reqwest::get(app.ops_url("/metrics")).await.unwrap().text().await.unwrap();
    for family in [
        "groupwatch_callbacks_total{",
        "groupwatch_callbacks_ignored_total{",
        "groupwatch_callback_seconds_bucket",
        "groupwatch_handoff_seconds_bucket",
        "groupwatch_inbound_lag_seconds_bucket",
        "groupwatch_callback_to_publish_seconds_bucket",
        "groupwatch_fetches_total{",
        "groupwatch_consistency_retries_total",
        "groupwatch_consistency_giveups_total",
        "groupwatch_events_published_total{",
        "groupwatch_publish_confirm_seconds_bucket",
        "groupwatch_dead_letters_total",
        "groupwatch_store_seconds_bucket",
        "groupwatch_broker_reconnects_total",
        "groupwatch_broker_connected",
        "groupwatch_wecom_api_calls_total{",
    ] {
        assert!(text.contains(family), "/metrics lacks {family}:\n{text}");
    }
    assert!(
        text.contains(r#"groupwatch_callbacks_total{provider="wecom",tenant="acme",outcome="accepted"}"#),
        "{text}"
    );
    assert!(text.contains(r#"outcome="bad_signature""#), "{text}");
    assert!(text.contains(r#"groupwatch_events_published_total{provider="wecom",type="member.join"}"#), "{text}");
    assert!(text.contains("# HELP groupwatch_dead_letters_total"), "{text}");
    assert!(!text.contains("demo-secret") && !text.contains("QDG6eK"), "no secrets in metrics");
    app.stop().await;
    cleanup(&conn, &groupwatch::queue::broker::Topology::from_config(&app_amqp(&config))).await;
}

fn app_amqp(config: &str) -> groupwatch::config::AmqpConfig {
    groupwatch::config::Config::from_toml(config, std::iter::empty()).unwrap().amqp
}
