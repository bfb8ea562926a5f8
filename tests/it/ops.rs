//! The ops listener: `/healthz`, `/readyz` and `/metrics` are off the public callback listener
//! (unless `http.ops_on_callback_listener` keeps them there too), and readiness answers from a
//! cache refreshed at most once a second, so polling it cannot crowd the store's pool.

use crate::common::*;
use futures_util::future::join_all;
use std::time::{Duration, Instant};

const OPS_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

async fn status(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn ops_routes_are_off_the_callback_listener_by_default() {
    let app = spawn_app(&test_config(&unique_exchange(), "")).await;
    assert!(!app.config.http.ops_on_callback_listener);
    assert_ne!(app.addr, app.ops);
    for route in OPS_ROUTES {
        assert_eq!(status(&app.url(route)).await, 404, "{route} on the callback listener");
        assert_eq!(status(&app.ops_url(route)).await, 200, "{route} on the ops listener");
    }
    let metrics = reqwest::get(app.ops_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("groupwatch_"), "{metrics}");
    // The callbacks stay where they were, and only there.
    assert_eq!(status(&app.callback_url(TENANT)).await, 401, "unsigned verification on the callback listener");
    assert_eq!(status(&app.ops_url(&format!("/wecom/{TENANT}/callback"))).await, 404);
    cleanup(&amqp().await, &app.topology).await;
    app.stop().await;
}

#[tokio::test]
async fn ops_on_callback_listener_keeps_them_on_both() {
    let config = test_config(&unique_exchange(), "")
        .replace("ops_listen = '127.0.0.1:0'", "ops_listen = '127.0.0.1:0'\nops_on_callback_listener = true")
        .replace("[worker]", "[api]\ntokens = [\"ops-test-token-0123456789\"]\n\n[worker]");
    let app = spawn_app(&config).await;
    for route in OPS_ROUTES {
        assert_eq!(status(&app.url(route)).await, 200, "{route} on the callback listener");
        assert_eq!(status(&app.ops_url(route)).await, 200, "{route} on the ops listener");
    }
    // Never the read API, which serves membership: ops listener only.
    let client = reqwest::Client::new();
    let list = format!("/v1/groups/wecom/{TENANT}");
    let on = |url: String| client.get(url).bearer_auth("ops-test-token-0123456789").send();
    assert_eq!(on(app.ops_url(&list)).await.unwrap().status(), 200);
    assert_eq!(on(app.url(&list)).await.unwrap().status(), 404);
    cleanup(&amqp().await, &app.topology).await;
    app.stop().await;
}

/// 64 concurrent `/readyz` cost one store ping, and polling for a while costs at most one ping
/// per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_from_a_cache_refreshed_at_most_once_a_second() {
    let app = spawn_app(&test_config(&unique_exchange(), "")).await;
    let client = reqwest::Client::new();
    let ready = || async { client.get(app.ops_url("/readyz")).send().await.unwrap().status().as_u16() };
    assert_eq!(ready().await, 200);
    // Let the cache go stale, then ask 64 times at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = app.readiness.store_pings();
    let answers = join_all((0..64).map(|_| ready())).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let burst = app.readiness.store_pings() - before;
    assert_eq!(burst, 1, "64 concurrent /readyz, {burst} store pings");

    let before = app.readiness.store_pings();
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        answered += join_all((0..16).map(|_| ready())).await.iter().filter(|s| **s == 200).count();
    }
    let pings = app.readiness.store_pings() - before;
    let allowed = started.elapsed().as_secs() + 1;
    println!("{answered} /readyz answers in {:?}: {pings} store pings", started.elapsed());
    assert!(answered > 100, "{answered}");
    assert!(pings <= allowed, "{pings} store pings in {:?}", started.elapsed());
    cleanup(&amqp().await, &app.topology).await;
    app.stop().await;
}

/// A worker-only process (`http.enabled = false`) binds neither listener.
#[tokio::test]
async fn a_worker_only_process_has_no_listener_at_all() {
    let config = test_config(&unique_exchange(), "").replace("[http]\n", "[http]\nenabled = false\n");
    let config = groupwatch::config::Config::from_toml(&config, std::iter::empty()).unwrap();
    let app = groupwatch::app::Application::build(config).await.unwrap();
    assert_eq!((app.local_addr(), app.ops_addr()), (None, None));
}
