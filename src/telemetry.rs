//! Logging (tracing) and the Prometheus recorder, set up once per process.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Targets that are never logged below `info`, whatever `RUST_LOG` or `log.level` say: at
/// trace level lapin prints every frame it writes, and `Connection.StartOk` carries the broker
/// password; amq-protocol's crates print frames too, and pinky_swear (lapin's promises) the
/// values it resolves. Matched as prefixes, so `amq_protocol` covers `amq_protocol_types` & co.
pub const CLAMPED_TARGETS: [&str; 3] = ["lapin", "amq_protocol", "pinky_swear"];

/// The filter applied on top of the configured one: lets everything through except the
/// [`CLAMPED_TARGETS`] below `info`.
pub fn secret_safe_targets() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(CLAMPED_TARGETS.map(|target| (target, LevelFilter::INFO)))
}

/// Installs the global subscriber: human-readable in a terminal, JSON lines otherwise
/// (or as `log.format` says). `RUST_LOG`, when set, overrides `log.level`.
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cfg.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Colours only for a terminal: escape codes in a log file or a collector are noise.
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter).with(secret_safe_targets());
    let _ = if json {
        registry.with(fmt.json().flatten_event(true).with_current_span(false)).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}

/// The process-wide Prometheus recorder (installed on first use, shared by every app in tests).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ])
                .expect("static buckets")
                // A count, not a duration: the default buckets would put every batch in one bucket.
                .set_buckets_for_metric(
                    Matcher::Full("groupwatch_handoff_batch_events".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
                )
                .expect("static buckets")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe_metrics();
            handle
        })
        .clone()
}

/// Every metric groupwatch records, with its help text. Unlabelled counters start at 0 so that
/// dashboards and alerts see them before the first event of their kind.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    let counters: &[(&'static str, &'static str)] = &[
        (
            "groupwatch_callbacks_total",
            "Callbacks received, by tenant and outcome (accepted, ignored, verified, replayed, bad_signature, ...).",
        ),
        (
            "groupwatch_replay_cache_evictions_total",
            "Replay-cache entries dropped before their time because the cache was full.",
        ),
        ("groupwatch_callbacks_ignored_total", "Callbacks of other event types, answered 200 and not queued, by kind."),
        (
            "groupwatch_callbacks_deduplicated_total",
            "Callbacks already processed within the dedupe window (WeCom retries).",
        ),
        (
            "groupwatch_fetches_total",
            "groupchat/get results, by outcome (consistent, stale, transient, rate_limited, permanent) and errcode.",
        ),
        ("groupwatch_fetches_skipped_total", "Callbacks whose member version was already stored: no fetch needed."),
        ("groupwatch_consistency_retries_total", "Re-fetches because the detail was older than the callback."),
        ("groupwatch_consistency_giveups_total", "Groups taken as they were after the retry schedule ran out."),
        ("groupwatch_events_published_total", "Events published and confirmed, by type."),
        ("groupwatch_events_unroutable_total", "Events confirmed with no queue bound for their routing key."),
        ("groupwatch_dead_letters_total", "Inbound events moved to the dead-letter queue."),
        ("groupwatch_broker_reconnects_total", "Times the broker connection was lost and re-established."),
        ("groupwatch_wecom_api_calls_total", "WeCom API calls, by API."),
        ("groupwatch_wecom_api_pauses_total", "Pauses of a WeCom corp's API calls after it answered 45009."),
        (
            "groupwatch_api_pauses_total",
            "Pauses of a vendor account's API calls after a rate-limit answer (WeCom 45009), by account.",
        ),
        ("groupwatch_resync_groups_total", "Groups reconciled by resync."),
        ("groupwatch_dingtalk_stream_connects_total", "DingTalk Stream connections opened, by tenant."),
        (
            "groupwatch_dingtalk_stream_disconnects_total",
            "DingTalk Stream connections ended (rotated by DingTalk or lost), by tenant.",
        ),
        ("groupwatch_dingtalk_stream_frames_total", "DingTalk Stream frames received, by tenant and type."),
        (
            "groupwatch_dingtalk_stream_acks_total",
            "DingTalk Stream EVENT ACKs sent, by tenant and status (SUCCESS after the hand-off, LATER when it failed).",
        ),
        ("groupwatch_dingtalk_api_calls_total", "DingTalk API calls, by API."),
    ];
    for (name, help) in counters {
        describe_counter!(*name, *help);
    }
    for name in [
        "groupwatch_dead_letters_total",
        "groupwatch_consistency_retries_total",
        "groupwatch_consistency_giveups_total",
        "groupwatch_fetches_skipped_total",
        "groupwatch_events_unroutable_total",
        "groupwatch_broker_reconnects_total",
        "groupwatch_wecom_api_pauses_total",
        "groupwatch_callbacks_deduplicated_total",
        "groupwatch_resync_groups_total",
        "groupwatch_replay_cache_evictions_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    describe_gauge!("groupwatch_broker_connected", "1 while the broker connection is up.");
    describe_gauge!("groupwatch_shards_owned", "Inbound shards this instance owns (and consumes).");
    describe_gauge!("groupwatch_live_workers", "Live worker instances sharing the store, this one included.");
    describe_gauge!("groupwatch_shard_consumer_up", "1 while this instance consumes the shard, by shard.");
    metrics::gauge!("groupwatch_broker_connected").set(0.0);
    let histograms: &[(&'static str, &'static str)] = &[
        ("groupwatch_callback_seconds", "Time to answer a callback, by outcome."),
        ("groupwatch_handoff_seconds", "Time for the broker to confirm a callback's durable hand-off."),
        ("groupwatch_inbound_lag_seconds", "Time from accepting a callback to its worker picking it up."),
        ("groupwatch_callback_to_publish_seconds", "Time from accepting a callback to publishing its events."),
        ("groupwatch_publish_confirm_seconds", "Time for the broker to confirm a batch of events."),
        ("groupwatch_store_seconds", "Snapshot store operation latency, by op."),
    ];
    describe_histogram!(
        "groupwatch_handoff_batch_events",
        Unit::Count,
        "Callbacks per inbound message (group commit)."
    );
    for (name, help) in histograms {
        describe_histogram!(*name, Unit::Seconds, *help);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamped_targets_stay_at_info_under_a_trace_filter() {
        use tracing::Level;
        let targets = secret_safe_targets();
        for target in ["lapin::io_loop", "lapin", "amq_protocol_types::types", "amq_protocol::frame", "pinky_swear"] {
            assert!(!targets.would_enable(target, &Level::TRACE), "{target} at trace");
            assert!(!targets.would_enable(target, &Level::DEBUG), "{target} at debug");
            assert!(targets.would_enable(target, &Level::INFO), "{target} at info");
        }
        assert!(targets.would_enable("groupwatch::ingress", &Level::TRACE));
        assert!(targets.would_enable("sqlx::query", &Level::DEBUG));
    }
}
