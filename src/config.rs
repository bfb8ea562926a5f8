//! Configuration: one TOML file, overridden key by key from `GROUPWATCH__SECTION__KEY` variables,
//! loaded once at start-up into typed structs and validated before anything connects.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and every error
//! names the key it is about, so `groupwatch serve` can exit 2 with one useful line.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use crate::provider::dingtalk::config::DingtalkTenant;
use crate::provider::tim::config::TimTenant;
use crate::provider::wecom::config::WecomTenant;

pub const ENV_PREFIX: &str = "GROUPWATCH__";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { key: key.into(), reason: reason.into() }
    }
}

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_like(d).map(Secret)
    }
}

/// Accepts a string, or a number/bool written without quotes (an environment variable such as
/// `GROUPWATCH__WECOM__ACME__SECRET=12345` arrives untyped and is read as TOML).
pub(crate) fn string_like<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub amqp: AmqpConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub resync: ResyncConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub wecom: Vec<WecomTenant>,
    #[serde(default)]
    pub dingtalk: Vec<DingtalkTenant>,
    #[serde(default)]
    pub tim: Vec<TimTenant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Callback bodies above this are answered 413 (WeCom events are a few KiB at most).
    pub max_body_bytes: usize,
    /// A request (including reading its body) that takes longer is answered 408.
    pub request_timeout_ms: u64,
    /// Signed requests whose `timestamp` is further than this from now (either side) are
    /// refused with 401, so a captured callback cannot be replayed later. 0 disables the check
    /// and the replay cache, and is refused unless `allow_replay` says it is meant.
    pub timestamp_window_secs: u64,
    /// Makes `timestamp_window_secs = 0` acceptable: a captured callback may then be replayed
    /// at any time. For tests with old, fixed vectors; never for a public endpoint.
    pub allow_replay: bool,
    /// Most signed callbacks remembered for replay detection (about 100 bytes each); beyond
    /// it the oldest are forgotten first.
    pub replay_cache_entries: usize,
    /// Connections open at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// At shutdown, how long open connections may take to finish their requests before they
    /// are closed.
    pub shutdown_grace_ms: u64,
    /// The ops listener: `/healthz`, `/readyz`, `/metrics` and the read API. Kept off the
    /// callback listener, which faces the internet: metrics name tenants, readiness costs a store
    /// query, and the read API serves membership.
    #[serde(deserialize_with = "socket_addr")]
    pub ops_listen: SocketAddr,
    /// Also serves `/healthz`, `/readyz` and `/metrics` on the callback listener, where they
    /// were before the ops listener existed (never the read API).
    pub ops_on_callback_listener: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:8080".parse().unwrap(),
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 4_000,
            timestamp_window_secs: 300,
            allow_replay: false,
            replay_cache_entries: 100_000,
            max_connections: 1_024,
            shutdown_grace_ms: 5_000,
            ops_listen: "127.0.0.1:9464".parse().unwrap(),
            ops_on_callback_listener: false,
        }
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not an address such as 127.0.0.1:8080")))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    pub enabled: bool,
    /// Events for one chat arriving within this window share one fetch.
    pub coalesce_ms: u64,
    /// Delays before re-fetching a group that is not yet consistent with its newest callback,
    /// and before retrying a failed fetch. When spent, the latest fetch is taken as the truth
    /// (or, for failures, the events go to the dead-letter queue).
    pub retry_delays_ms: Vec<u64>,
    /// Unacknowledged inbound messages per shard (events waiting for consistency stay unacked).
    pub prefetch: u16,
    /// Timeout of one WeCom API request.
    pub api_timeout_ms: u64,
    /// WeCom API calls per minute per corp (WeCom allows 10,000 per corp per API).
    pub api_rate_per_minute: u32,
    /// WeCom API calls in flight at once per corp (WeCom answers 45033 above its own limit).
    pub api_concurrency: u32,
    /// How long a corp's API calls pause after WeCom answers 45009 (its limit window is a minute).
    pub api_rate_limit_pause_ms: u64,
    /// A callback seen again within this window (WeCom retries) costs no API call.
    pub dedupe_window_secs: u64,
    /// Most callback keys remembered for the dedupe window (the oldest go first).
    pub dedupe_max_keys: usize,
    /// A fetch that nothing proves current (a resync's, or what a fetch showed beyond the
    /// callbacks) is believed once a read at least this much later shows the same group. Keep
    /// it above the vendor API's lag behind its notifications (WeCom: "e.g. 2 s").
    pub confirm_delay_ms: u64,
    /// A fetch showing a membership the chat left behind less than this long ago is stale.
    pub stale_horizon_secs: u64,
    /// How often, and after how long, stored events still unpublished are sent again.
    pub outbox_sweep_secs: u64,
    /// A chat with nothing to do for this long releases its actor.
    pub actor_idle_secs: u64,
    /// Instances heartbeat into the store and split the inbound shards among the live workers;
    /// a stopped instance's shards move to the others within this many seconds.
    pub rebalance_secs: u64,
    /// A change to a chat quiet for `coalesce_ms` is fetched at once (false: every change waits
    /// out `coalesce_ms` first, the behaviour before 0.2).
    pub leading_edge: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            coalesce_ms: 500,
            retry_delays_ms: vec![1_000, 2_000, 5_000, 15_000, 30_000],
            prefetch: 1_000,
            api_timeout_ms: 10_000,
            api_rate_per_minute: 3_000,
            api_concurrency: 8,
            api_rate_limit_pause_ms: 60_000,
            dedupe_window_secs: 300,
            dedupe_max_keys: 100_000,
            confirm_delay_ms: 5_000,
            stale_horizon_secs: 600,
            outbox_sweep_secs: 60,
            actor_idle_secs: 30,
            rebalance_secs: 10,
            leading_edge: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    pub url: Secret,
    pub exchange: String,
    pub declare_default_queues: bool,
    /// How long the callback waits for the broker to confirm the hand-off before answering 503.
    pub confirm_timeout_ms: u64,
    /// Number of inbound queues (`{exchange}.inbound.N`); chats are spread over them by hash,
    /// and the live workers split the queues among themselves. Every instance on one exchange
    /// must use the same value; `groupwatch reshard` changes it for a stopped deployment.
    pub inbound_shards: u16,
    /// Most callbacks in one hand-off flush (group commit); a flush is one inbound message per
    /// shard it touches, confirmed together.
    pub handoff_max_batch: usize,
    /// Flushes awaiting their confirms at once; callbacks arriving meanwhile join the next one.
    /// 1 is fastest on RabbitMQ, which confirms one large message sooner than several small ones.
    pub handoff_in_flight: usize,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            exchange: "groupwatch".into(),
            declare_default_queues: true,
            confirm_timeout_ms: 3_000,
            inbound_shards: 16,
            handoff_max_batch: 512,
            handoff_in_flight: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: Secret,
    /// Published events older than this many days are deleted from the history (the read API's
    /// `/events`); 0 keeps them for ever. Snapshots and unpublished events are never deleted.
    pub history_days: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: Secret::new("sqlite://groupwatch.db"), history_days: 30 }
    }
}

/// The read API on the ops listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer tokens accepted by the read API; none (the default) turns the API off (404).
    pub tokens: Vec<Secret>,
}

/// A bearer token shorter than this is guessable.
pub const MIN_API_TOKEN_LEN: usize = 16;

/// Reconciliation: walking `groupchat/list` and diffing every group against its snapshot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResyncConfig {
    /// Run a resync inside `serve` every this many seconds; 0 (the default) turns it off.
    pub interval_secs: u64,
    /// `limit` of each `groupchat/list` page (1..=1000).
    pub page_size: u32,
}

impl Default for ResyncConfig {
    fn default() -> Self {
        Self { interval_secs: 0, page_size: 1000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable in a terminal, JSON otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `groupwatch=debug,lapin=warn`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Auto, level: "info".into() }
    }
}

impl Config {
    /// Reads `path`, applies `GROUPWATCH__…` overrides from `env`, then validates.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text, env)
    }

    /// Parses TOML text, applies overrides, validates.
    pub fn from_toml(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut root: toml::Value = text.parse::<toml::Table>().map(toml::Value::Table).map_err(|e| {
            let reason = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
            let key = e
                .span()
                .map(|s| format!("line {}", text[..s.start].lines().count().max(1)))
                .unwrap_or_else(|| "file".into());
            ConfigError::new(key, reason)
        })?;
        let mut overrides: Vec<_> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        overrides.sort();
        for (name, value) in overrides {
            apply_override(&mut root, &name, &value)?;
        }
        let config: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let key = e.path().to_string();
            let mut reason = e.into_inner().to_string();
            // toml's messages can span lines; the contract promises one line.
            reason = reason.lines().next().unwrap_or_default().trim().to_owned();
            ConfigError::new(if key == "." { "file".into() } else { key }, reason)
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn tenant(&self, name: &str) -> Option<&WecomTenant> {
        self.wecom.iter().find(|t| t.tenant == name)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.wecom.is_empty() && self.dingtalk.is_empty() && self.tim.is_empty() {
            return Err(ConfigError::new(
                "wecom",
                "at least one [[wecom]], [[dingtalk]] or [[tim]] tenant is required",
            ));
        }
        let mut tenants = std::collections::BTreeSet::new();
        for (i, t) in self.wecom.iter().enumerate() {
            t.validate(&format!("wecom[{i}]"))?;
            if !tenants.insert(t.tenant.as_str()) {
                return Err(ConfigError::new(
                    format!("wecom[{i}].tenant"),
                    format!("{:?} is configured twice", t.tenant),
                ));
            }
        }
        let mut tenants = std::collections::BTreeSet::new();
        for (i, t) in self.dingtalk.iter().enumerate() {
            t.validate(&format!("dingtalk[{i}]"))?;
            if !tenants.insert(t.tenant.as_str()) {
                return Err(ConfigError::new(
                    format!("dingtalk[{i}].tenant"),
                    format!("{:?} is configured twice", t.tenant),
                ));
            }
        }
        let mut tenants = std::collections::BTreeSet::new();
        for (i, t) in self.tim.iter().enumerate() {
            t.validate(&format!("tim[{i}]"))?;
            if !tenants.insert(t.tenant.as_str()) {
                return Err(ConfigError::new(
                    format!("tim[{i}].tenant"),
                    format!("{:?} is configured twice", t.tenant),
                ));
            }
        }
        check_url("amqp.url", self.amqp.url.expose(), &["amqp", "amqps"])?;
        let ex = &self.amqp.exchange;
        if ex.is_empty() || ex.len() > 200 || !ex.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(ConfigError::new("amqp.exchange", format!("{ex:?} must match [A-Za-z0-9._-]{{1,200}}")));
        }
        if !(1..=256).contains(&self.amqp.inbound_shards) {
            return Err(ConfigError::new("amqp.inbound_shards", "must be between 1 and 256"));
        }
        if self.worker.prefetch == 0 {
            return Err(ConfigError::new("worker.prefetch", "must be positive"));
        }
        if !(1..=1000).contains(&self.resync.page_size) {
            return Err(ConfigError::new("resync.page_size", "must be between 1 and 1000"));
        }
        if self.worker.api_rate_per_minute == 0 {
            return Err(ConfigError::new("worker.api_rate_per_minute", "must be positive"));
        }
        if self.worker.api_concurrency == 0 {
            return Err(ConfigError::new("worker.api_concurrency", "must be positive"));
        }
        in_range("worker.dedupe_max_keys", self.worker.dedupe_max_keys as u64, 1, 10_000_000, "")?;
        if !(1..=10_000).contains(&self.amqp.handoff_max_batch) {
            return Err(ConfigError::new("amqp.handoff_max_batch", "must be between 1 and 10000"));
        }
        if !(1..=1_000).contains(&self.amqp.handoff_in_flight) {
            return Err(ConfigError::new("amqp.handoff_in_flight", "must be between 1 and 1000"));
        }
        check_url("store.url", self.store.url.expose(), &["sqlite", "postgres", "postgresql"])?;
        if self.http.max_body_bytes < 1024 {
            return Err(ConfigError::new("http.max_body_bytes", "must be at least 1024"));
        }
        if self.http.timestamp_window_secs == 0 && !self.http.allow_replay {
            return Err(ConfigError::new(
                "http.timestamp_window_secs",
                "0 turns replay protection off; set http.allow_replay = true if that is really meant",
            ));
        }
        in_range("http.replay_cache_entries", self.http.replay_cache_entries as u64, 1_000, 10_000_000, "")?;
        in_range("http.max_connections", self.http.max_connections as u64, 1, 100_000, "")?;
        if self.http.enabled && self.http.ops_listen == self.http.listen && self.http.listen.port() != 0 {
            return Err(ConfigError::new("http.ops_listen", "must differ from http.listen"));
        }
        for (i, token) in self.api.tokens.iter().enumerate() {
            let token = token.expose();
            // Never echo a token, even a bad one: the line goes to logs.
            if token.len() < MIN_API_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::new(
                    format!("api.tokens[{i}]"),
                    format!("must be at least {MIN_API_TOKEN_LEN} printable ASCII characters without spaces"),
                ));
            }
            if self.api.tokens[..i].iter().any(|other| other.expose() == token) {
                return Err(ConfigError::new(format!("api.tokens[{i}]"), "is listed twice"));
            }
        }
        let delays = &self.worker.retry_delays_ms;
        if delays.is_empty() || delays.len() > MAX_RETRY_DELAYS {
            return Err(ConfigError::new(
                "worker.retry_delays_ms",
                format!("must be a list of 1 to {MAX_RETRY_DELAYS} delays"),
            ));
        }
        for (key, value) in self.durations() {
            let Some((_, min, max, unit)) = DURATION_BOUNDS.iter().find(|(k, ..)| key.starts_with(k)) else {
                unreachable!("{key} has no bounds in DURATION_BOUNDS")
            };
            in_range(&key, value, *min, *max, unit)?;
        }
        Ok(())
    }

    /// Tenants that use the documentation's public test key, to warn about at start-up.
    pub fn warn_documented_test_keys(&self) {
        for t in self.wecom.iter().filter(|t| t.uses_documented_test_key()) {
            tracing::warn!(
                tenant = %t.tenant,
                "allow_documented_test_key: this tenant uses the public test Token/EncodingAESKey of WeCom's documentation; anyone can sign its callbacks"
            );
        }
    }

    /// Every duration key with its value; `DURATION_BOUNDS` bounds each one. A list key is
    /// named with its index (`worker.retry_delays_ms[2]`).
    fn durations(&self) -> Vec<(String, u64)> {
        let (h, w) = (&self.http, &self.worker);
        let mut all: Vec<(String, u64)> = [
            ("http.request_timeout_ms", h.request_timeout_ms),
            ("http.timestamp_window_secs", h.timestamp_window_secs),
            ("http.shutdown_grace_ms", h.shutdown_grace_ms),
            ("worker.coalesce_ms", w.coalesce_ms),
            ("worker.api_timeout_ms", w.api_timeout_ms),
            ("worker.api_rate_limit_pause_ms", w.api_rate_limit_pause_ms),
            ("worker.dedupe_window_secs", w.dedupe_window_secs),
            ("worker.confirm_delay_ms", w.confirm_delay_ms),
            ("worker.stale_horizon_secs", w.stale_horizon_secs),
            ("worker.outbox_sweep_secs", w.outbox_sweep_secs),
            ("worker.actor_idle_secs", w.actor_idle_secs),
            ("worker.rebalance_secs", w.rebalance_secs),
            ("amqp.confirm_timeout_ms", self.amqp.confirm_timeout_ms),
            ("resync.interval_secs", self.resync.interval_secs),
            ("store.history_days", self.store.history_days),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        all.extend(w.retry_delays_ms.iter().enumerate().map(|(i, d)| (format!("worker.retry_delays_ms[{i}]"), *d)));
        all
    }
}

/// Bounds of every duration key, checked at load time: `(key, min, max, unit)`. Values past
/// these are mistakes (a coalescing window of years leaves events unacked for ever without an
/// error), and some would overflow an `Instant` later. The README's configuration table lists
/// them.
pub const DURATION_BOUNDS: &[(&str, u64, u64, &str)] = &[
    ("http.request_timeout_ms", 1, 300_000, "ms"),
    ("http.timestamp_window_secs", 0, MAX_TIMESTAMP_WINDOW_SECS, "s"),
    ("http.shutdown_grace_ms", 0, 300_000, "ms"),
    ("worker.coalesce_ms", 0, 60_000, "ms"),
    ("worker.retry_delays_ms", 1, 3_600_000, "ms"),
    ("worker.api_timeout_ms", 1, 300_000, "ms"),
    ("worker.api_rate_limit_pause_ms", 0, 3_600_000, "ms"),
    ("worker.dedupe_window_secs", 0, 86_400, "s"),
    ("worker.confirm_delay_ms", 1, 600_000, "ms"),
    ("worker.stale_horizon_secs", 1, 86_400, "s"),
    ("worker.outbox_sweep_secs", 1, 86_400, "s"),
    ("worker.actor_idle_secs", 1, 86_400, "s"),
    ("worker.rebalance_secs", 1, 3_600, "s"),
    ("amqp.confirm_timeout_ms", 1, 60_000, "ms"),
    ("resync.interval_secs", 0, 604_800, "s"),
    ("store.history_days", 0, 36_500, "days"),
];

/// Most entries of `worker.retry_delays_ms`.
pub const MAX_RETRY_DELAYS: usize = 100;

/// A signed request is accepted this far from its timestamp at most: WeCom sends callbacks at
/// once, and a wider window only lengthens the time a captured one stays valid.
pub const MAX_TIMESTAMP_WINDOW_SECS: u64 = 3600;

/// Checks that a numeric key lies within `min..=max`; `unit` (`"ms"`, `"s"` or `""`) names what
/// the numbers count, for the error line.
pub(crate) fn in_range(key: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
    Err(ConfigError::new(key, format!("must be between {min} and {max}{unit}, not {value}")))
}

/// `api_base` carries `corpsecret` and `access_token` in its queries: plain `http` only to this
/// machine (the simulator, a local proxy), never across a network.
pub(crate) fn check_api_base(key: &str, value: &str) -> Result<(), ConfigError> {
    check_url(key, value, &["http", "https"])?;
    let url = url::Url::parse(value).map_err(|_| ConfigError::new(key, "must be a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(ConfigError::new(
            key,
            "http:// is allowed only for a loopback host (127.0.0.0/8, ::1, localhost): the corp secret and access token would travel in clear; use https://",
        ));
    }
    Ok(())
}

/// A tenant name is a path segment and a routing-key word: `[a-z0-9_-]+`.
pub(crate) fn check_tenant_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(ConfigError::new(key, format!("{name:?} must match [a-z0-9_-]+")));
    }
    Ok(())
}

/// Checks a URL's scheme without echoing it back: it may carry a password.
pub(crate) fn check_url(key: &str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = value.split_once("://").map(|(s, _)| s);
    match (scheme, url::Url::parse(value)) {
        (Some(s), Ok(_)) if schemes.contains(&s) => Ok(()),
        _ => Err(ConfigError::new(key, format!("must be a URL starting with {}://", schemes.join("://, ")))),
    }
}

/// Applies `GROUPWATCH__A__B=value` as `a.b = value`. `[[wecom]]` entries are addressed by tenant
/// name or index: `GROUPWATCH__WECOM__ACME__SECRET` or `GROUPWATCH__WECOM__0__SECRET`.
fn apply_override(root: &mut toml::Value, name: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::new(name, "malformed override name"));
    }
    let mut node = root;
    for (depth, segment) in path.iter().enumerate() {
        let last = depth == path.len() - 1;
        node = match node {
            toml::Value::Table(table) => {
                if last {
                    table.insert(segment.clone(), parse_env_value(value));
                    return Ok(());
                }
                table.entry(segment.clone()).or_insert_with(|| toml::Value::Table(Default::default()))
            }
            toml::Value::Array(items) => {
                let found = match segment.parse::<usize>() {
                    Ok(i) => items.get_mut(i),
                    Err(_) => items
                        .iter_mut()
                        .find(|item| item.get("tenant").and_then(|t| t.as_str()) == Some(segment.as_str())),
                };
                let item = found.ok_or_else(|| ConfigError::new(name, format!("no entry {segment:?} to override")))?;
                if last {
                    return Err(ConfigError::new(name, "cannot replace a whole [[table]] entry"));
                }
                item
            }
            _ => return Err(ConfigError::new(name, "overrides a value that is not a table")),
        };
    }
    Ok(())
}

/// An environment value is read as a TOML value when it is one (`true`, `8080`, `[1, 2]`),
/// otherwise as a plain string, so URLs and secrets need no quoting.
fn parse_env_value(value: &str) -> toml::Value {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, toml::Value::Table(_)))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[http]
listen = "127.0.0.1:0"

[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
exchange = "gw-test"

[[wecom]]
tenant = "acme"
corp_id = "ww1234567890abcdef"
token = "QDG6eK"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
secret = "s3cr3t-value"
allow_documented_test_key = true

[[wecom]]
tenant = "beta_2"
corp_id = "ww2"
token = "t"
encoding_aes_key = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
secret = "other"
api_base = "http://127.0.0.1:9000"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(text, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn good_config_with_defaults() {
        let c = load(GOOD, &[]).unwrap();
        assert!(c.http.enabled && c.worker.enabled && c.amqp.declare_default_queues);
        assert_eq!(c.wecom.len(), 2);
        assert_eq!(c.wecom[0].api_base, "https://qyapi.weixin.qq.com");
        assert_eq!(c.tenant("beta_2").unwrap().api_base, "http://127.0.0.1:9000");
        assert_eq!(c.store.url.expose(), "sqlite://groupwatch.db");
        assert_eq!(c.wecom[0].receive_id(), "ww1234567890abcdef");
        assert!(c.wecom[0].appchats.is_empty());
        assert_eq!(c.wecom[0].appchat_poll_secs, 300);
    }

    #[test]
    fn env_overrides() {
        let c = load(
            GOOD,
            &[
                ("GROUPWATCH__AMQP__URL", "amqp://u:p@broker:5672/vh"),
                ("GROUPWATCH__HTTP__ENABLED", "false"),
                ("GROUPWATCH__WECOM__ACME__SECRET", "12345"),
                ("GROUPWATCH__WECOM__1__TOKEN", "tok"),
                ("GROUPWATCH_CONFIG", "ignored.toml"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.amqp.url.expose(), "amqp://u:p@broker:5672/vh");
        assert!(!c.http.enabled);
        assert_eq!(c.wecom[0].secret.expose(), "12345");
        assert_eq!(c.wecom[1].token.expose(), "tok");
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (&GOOD.replace("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "short"), &[], "wecom[0].encoding_aes_key"),
            (&GOOD.replace("tenant = \"acme\"", "tenant = \"Acme!\""), &[], "wecom[0].tenant"),
            (&GOOD.replace("tenant = \"beta_2\"", "tenant = \"acme\""), &[], "wecom[1].tenant"),
            (&GOOD.replace("http://127.0.0.1:9000", "ftp://x"), &[], "wecom[1].api_base"),
            (&GOOD.replace("exchange = \"gw-test\"", "exchnage = \"x\""), &[], "amqp.exchnage"),
            (&GOOD.replace("127.0.0.1:0", "nowhere"), &[], "http.listen"),
            (GOOD, &[("GROUPWATCH__AMQP__URL", "http://x")], "amqp.url"),
            (GOOD, &[("GROUPWATCH__STORE__URL", "mysql://x")], "store.url"),
            (GOOD, &[("GROUPWATCH__HTTP__ENABLED", "maybe")], "http.enabled"),
            (GOOD, &[("GROUPWATCH__WECOM__NOPE__SECRET", "x")], "GROUPWATCH__WECOM__NOPE__SECRET"),
            (GOOD, &[("GROUPWATCH__WECOM__ACME__APPCHAT_POLL_SECS", "0")], "wecom[0].appchat_poll_secs"),
            (GOOD, &[("GROUPWATCH__WECOM__ACME__APPCHATS", "[\"a\", \"\"]")], "wecom[0].appchats[1]"),
            (GOOD, &[("GROUPWATCH__WECOM__1__APPCHATS", "[\"a\", \"a\"]")], "wecom[1].appchats[1]"),
            ("[http]\nenabled = true\n", &[], "wecom"),
            ("[http\n", &[], "line 1"),
        ];
        for (text, env, key) in cases {
            let err = load(text, env).unwrap_err();
            assert_eq!(err.key, *key, "{err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn replay_protection_cannot_be_switched_off_by_accident() {
        let with = |http: &str| GOOD.replace("[http]\n", &format!("[http]\n{http}\n"));
        let err = load(&with("timestamp_window_secs = 0"), &[]).unwrap_err();
        assert_eq!(err.key, "http.timestamp_window_secs");
        assert!(err.reason.contains("allow_replay"), "{err}");
        let c = load(&with("timestamp_window_secs = 0\nallow_replay = true"), &[]).unwrap();
        assert_eq!(c.http.timestamp_window_secs, 0);
        assert!(load(&with("timestamp_window_secs = 3600"), &[]).is_ok());
        let err = load(&with("timestamp_window_secs = 3601"), &[]).unwrap_err();
        assert_eq!(err.key, "http.timestamp_window_secs", "{err}");
        let err = load(GOOD, &[("GROUPWATCH__HTTP__TIMESTAMP_WINDOW_SECS", "86400")]).unwrap_err();
        assert_eq!(err.key, "http.timestamp_window_secs", "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn every_duration_is_bounded() {
        // The issue's example, then one past the maximum of every duration key.
        let err =
            load(&GOOD.replace("[http]", "[worker]\ncoalesce_ms = 9223372036854775807\n[http]"), &[]).unwrap_err();
        assert_eq!(err.key, "worker.coalesce_ms", "{err}");
        let config = load(GOOD, &[]).unwrap();
        let keys: Vec<String> = config.durations().into_iter().map(|(k, _)| k).collect();
        assert!(keys.len() >= 10, "{keys:?}");
        for (key, _, max, _) in DURATION_BOUNDS {
            let (section, field) = key.split_once('.').unwrap();
            let env_name = format!("GROUPWATCH__{}__{}", section.to_uppercase(), field.to_uppercase());
            let too_long =
                if *key == "worker.retry_delays_ms" { format!("[1000, {}]", max + 1) } else { (max + 1).to_string() };
            let err = load(GOOD, &[(env_name.as_str(), too_long.as_str())]).unwrap_err();
            assert!(err.key.starts_with(key), "{key}: {err}");
            assert!(err.reason.contains(&max.to_string()), "{key}: the bound is named: {err}");
            assert!(!err.to_string().contains('\n'));
            let at_max = if *key == "worker.retry_delays_ms" { format!("[{max}]") } else { max.to_string() };
            load(GOOD, &[(env_name.as_str(), at_max.as_str())]).unwrap_or_else(|e| panic!("{key} = {max}: {e}"));
        }
        assert_eq!(
            load(GOOD, &[("GROUPWATCH__WORKER__RETRY_DELAYS_MS", "[1000, 0]")]).unwrap_err().key,
            "worker.retry_delays_ms[1]"
        );
        let many = format!("[{}]", vec!["1"; MAX_RETRY_DELAYS + 1].join(", "));
        assert_eq!(
            load(GOOD, &[("GROUPWATCH__WORKER__RETRY_DELAYS_MS", many.as_str())]).unwrap_err().key,
            "worker.retry_delays_ms"
        );
        assert_eq!(
            load(GOOD, &[("GROUPWATCH__AMQP__CONFIRM_TIMEOUT_MS", "0")]).unwrap_err().key,
            "amqp.confirm_timeout_ms"
        );
    }

    #[test]
    fn api_base_in_clear_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:9000",
            "http://127.8.9.10",
            "http://[::1]:9090/",
            "http://localhost:9090",
            "https://qyapi.weixin.qq.com",
            "https://10.0.0.1",
        ] {
            load(&GOOD.replace("http://127.0.0.1:9000", ok), &[]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://qyapi.weixin.qq.com",
            "http://10.0.0.1:9000",
            "http://[::2]:80",
            "http://localhost.evil.example",
            "http://128.0.0.1",
        ] {
            let err = load(&GOOD.replace("http://127.0.0.1:9000", bad), &[]).unwrap_err();
            assert_eq!(err.key, "wecom[1].api_base", "{bad}: {err}");
            assert!(err.reason.contains("loopback"), "{err}");
        }
    }

    #[test]
    fn empty_receive_id_is_refused() {
        let err = load(&GOOD.replace("secret = \"other\"", "secret = \"other\"\nreceive_id = \"\""), &[]).unwrap_err();
        assert_eq!(err.key, "wecom[1].receive_id", "{err}");
        let c =
            load(&GOOD.replace("secret = \"other\"", "secret = \"other\"\nreceive_id = \"ww-suite\""), &[]).unwrap();
        assert_eq!(c.wecom[1].receive_id(), "ww-suite");
    }

    #[test]
    fn the_documented_test_key_needs_the_loud_flag() {
        let without = GOOD.replace("allow_documented_test_key = true\n", "");
        let err = load(&without, &[]).unwrap_err();
        assert_eq!(err.key, "wecom[0].encoding_aes_key", "{err}");
        assert!(err.reason.contains("allow_documented_test_key") && !err.reason.contains("jWmYm7"), "{err}");
        // The token alone is public too.
        let err = load(
            &without
                .replace("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.key, "wecom[0].token", "{err}");
        assert!(load(GOOD, &[]).unwrap().wecom[0].uses_documented_test_key());
        assert!(!load(GOOD, &[]).unwrap().wecom[1].uses_documented_test_key());
    }

    #[test]
    fn ops_listener_and_api_tokens() {
        let c = load(GOOD, &[]).unwrap();
        assert_eq!(c.http.ops_listen, "127.0.0.1:9464".parse().unwrap());
        assert!(!c.http.ops_on_callback_listener);
        assert!(c.api.tokens.is_empty(), "the read API is off by default");
        assert_eq!(c.store.history_days, 30);
        let same = GOOD.replace("127.0.0.1:0", "127.0.0.1:9464");
        assert_eq!(load(&same, &[]).unwrap_err().key, "http.ops_listen");
        let tokens = |t: &str| GOOD.replace("[http]", &format!("[api]\ntokens = {t}\n[http]"));
        let c = load(&tokens(r#"["0123456789abcdef-one", "0123456789abcdef-two"]"#), &[]).unwrap();
        assert_eq!(c.api.tokens.len(), 2);
        assert!(!format!("{c:?}").contains("abcdef-one"), "tokens are secrets");
        let err = load(&tokens(r#"["0123456789abcdef-one", "short-hunter2"]"#), &[]).unwrap_err();
        assert_eq!(err.key, "api.tokens[1]", "{err}");
        assert!(!err.to_string().contains("hunter2"), "never echoed: {err}");
        let err = load(&tokens(r#"["0123456789abcdef-one", "0123456789abcdef-one"]"#), &[]).unwrap_err();
        assert_eq!(err.key, "api.tokens[1]", "{err}");
        assert!(!err.to_string().contains("abcdef"), "{err}");
        let err = load(&tokens(r#"["0123456789 abcdef spaced"]"#), &[]).unwrap_err();
        assert_eq!(err.key, "api.tokens[0]", "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(&GOOD.replace("[http]", "[http]\nlisten_addr = \"x\""), &[]).unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = load(GOOD, &[]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-value") && !shown.contains("guest:guest") && !shown.contains("jWmYm7"));
        let err = load(GOOD, &[("GROUPWATCH__AMQP__URL", "amqpx://user:hunter2@host")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
