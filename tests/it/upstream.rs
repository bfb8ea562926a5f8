//! What WeCom (here the simulator) answers is input too: a huge token lifetime, a paging cursor
//! that repeats, an answer of unbounded size. None of them may panic, loop or exhaust memory.

use crate::common::*;
use groupwatch::config::Config;
use groupwatch::provider::wecom::{ApiLimits, WecomClient};
use groupwatch::provider::ApiError;
use groupwatch::sim::{self, SimServer, SimState};
use serde_json::json;
use std::time::Duration;

fn state() -> SimState {
    let groups: Vec<_> = (0..5)
        .map(|i| {
            json!({"chat_id": format!("wrUP{i}"), "owner": "owner_a", "create_time": 1600000000,
                   "member_list": [{"userid": "owner_a", "type": 1, "join_time": 1600000000, "join_scene": 1}]})
        })
        .collect();
    serde_json::from_value(json!({"corps": [{"corp_id": CORP_ID, "secret": "test-secret", "groups": groups}]})).unwrap()
}

async fn client() -> (SimServer, WecomClient) {
    let sim = sim::spawn(state(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let toml = test_config(&unique_exchange(), "")
        .replace("api_base = \"http://127.0.0.1:9\"", &format!("api_base = \"{}\"", sim.base_url()));
    let config = Config::from_toml(&toml, std::iter::empty()).unwrap();
    let limits = ApiLimits {
        per_minute: 6000,
        concurrency: 4,
        timeout: Duration::from_secs(10),
        rate_limit_pause: Duration::from_secs(60),
    };
    (sim, WecomClient::new(&config.wecom, limits))
}

/// A token said to live for ever used to panic every fetching task ("overflow when adding
/// duration to instant"); the lifetime is clamped instead.
#[tokio::test]
async fn a_huge_token_lifetime_is_clamped() {
    let (sim, client) = client().await;
    sim.client().fault(json!({"token_expires_in": u64::MAX})).await.unwrap();
    let fetch = tokio::spawn(async move {
        let first = client.group_chat(TENANT, "wrUP0").await;
        let second = client.group_chat(TENANT, "wrUP1").await;
        (first, second, client.calls())
    });
    let (first, second, calls) = fetch.await.expect("no panic");
    assert_eq!(first.unwrap().chat_id, "wrUP0");
    assert_eq!(second.unwrap().chat_id, "wrUP1");
    assert_eq!(calls, 3, "one gettoken, then the cached token");
}

/// A cursor that comes back again would page through the same groups for ever.
#[tokio::test]
async fn a_repeated_cursor_fails_the_listing() {
    let (sim, client) = client().await;
    sim.client().fault(json!({"repeat_cursor": true})).await.unwrap();
    let listing = tokio::time::timeout(Duration::from_secs(10), client.list_chats(TENANT, &[], 2))
        .await
        .expect("the listing ends");
    match listing {
        Err(ApiError::Transient(reason)) => assert!(reason.contains("next_cursor repeats"), "{reason}"),
        other => panic!("expected a transient error naming the cursor, got {other:?}"),
    }
    // Without the fault the same listing goes through.
    sim.client().clear_faults().await.unwrap();
    assert_eq!(client.list_chats(TENANT, &[], 2).await.unwrap().len(), 5);
}

/// Answers are read up to 8 MiB; a larger one is a transient failure, not a large allocation.
#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let (sim, client) = client().await;
    let limit = groupwatch::provider::wecom::api::MAX_ANSWER_BYTES;
    sim.client().fault(json!({"oversized_answer_bytes": limit + 1})).await.unwrap();
    match client.group_chat(TENANT, "wrUP0").await {
        Err(ApiError::Transient(reason)) => assert!(reason.contains("larger than"), "{reason}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
    // Padding that keeps the answer under the limit is read as usual.
    sim.client().fault(json!({"oversized_answer_bytes": 1024})).await.unwrap();
    assert_eq!(client.group_chat(TENANT, "wrUP0").await.unwrap().chat_id, "wrUP0");
}
