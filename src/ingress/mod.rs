//! HTTP in: one handler for every provider's callbacks, `/{provider}/{tenant}/callback`.
//!
//! Thin: find the tenant's codec, let it verify, decrypt and decode (no I/O), skip replays, hand
//! the reports off durably, answer as the vendor expects. The group re-fetch never happens here:
//! vendors give us seconds (WeCom 5 s, DingTalk 1.5 s) and retry on anything but 200.

pub mod aliases;
pub mod replay;
pub mod server;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

use crate::config::HttpConfig;
use crate::core::clock::now_ms;
use crate::core::model::Provider;
use crate::provider::registry::Registry;
use crate::provider::{CallbackError, CallbackRequest, Change, ChatRef, Decoded, Method};
use crate::queue::inbound::{HandOffError, Inbound, InboundEvent};
use aliases::Aliases;
use replay::{ReplayCache, Seen};

/// What the callback route needs: the codecs, the replay cache, the alias map and the inbound
/// hand-off.
#[derive(Clone)]
pub struct CallbackState {
    pub registry: Arc<Registry>,
    pub inbound: Inbound,
    pub aliases: Arc<Aliases>,
    /// `None` only with the timestamp check off (`http.allow_replay`).
    replays: Option<Arc<ReplayCache>>,
}

impl CallbackState {
    pub fn new(registry: Arc<Registry>, inbound: Inbound, aliases: Arc<Aliases>, http: &HttpConfig) -> Self {
        let window = Some(http.timestamp_window_secs).filter(|w| *w > 0);
        let replays = window.map(|w| ReplayCache::new(std::time::Duration::from_secs(w), http.replay_cache_entries));
        Self { registry, inbound, aliases, replays }
    }
}

/// Why a callback got no 200.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("unknown provider or tenant")]
    UnknownTenant,
    #[error(transparent)]
    Refused(#[from] CallbackError),
    #[error("event could not be handed off: {0}")]
    Unavailable(#[from] HandOffError),
    /// The same signed callback is being handed off by another request at this moment; it
    /// cannot be acknowledged before that hand-off is confirmed.
    #[error("the same callback is being handed off")]
    ReplayInFlight,
}

impl IngressError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownTenant => StatusCode::NOT_FOUND,
            Self::Refused(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Unavailable(_) | Self::ReplayInFlight => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownTenant => "unknown_tenant",
            Self::Refused(e) => e.outcome(),
            Self::Unavailable(_) => "unavailable",
            Self::ReplayInFlight => "replay_in_flight",
        }
    }

    /// The answer's body: fixed per outcome, so that no error echoes the request body (a parser
    /// error quotes it) or a decrypted value.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::UnknownTenant => "unknown tenant",
            Self::Refused(e) => e.public_message(),
            Self::Unavailable(_) | Self::ReplayInFlight => "event could not be handed off; retry",
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        (self.status(), [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.public_message()).into_response()
    }
}

fn record(provider: Option<Provider>, tenant: &str, outcome: &'static str, started: Instant) {
    // Unknown tenants are attacker-chosen strings: do not let them create metric series.
    let (provider, tenant) = match provider {
        Some(p) if outcome != "unknown_tenant" => (p.as_str(), tenant),
        _ => ("unknown", "unknown"),
    };
    metrics::counter!("groupwatch_callbacks_total", "provider" => provider, "tenant" => tenant.to_owned(),
        "outcome" => outcome)
    .increment(1);
    metrics::histogram!("groupwatch_callback_seconds", "provider" => provider, "outcome" => outcome)
        .record(started.elapsed());
}

/// `GET|POST /{provider}/{tenant}/callback`.
pub async fn callback(
    State(state): State<CallbackState>,
    method: HttpMethod,
    Path((provider, tenant)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let provider = Provider::parse(&provider);
    let method = if method == HttpMethod::GET { Method::Get } else { Method::Post };
    match accept(&state, provider, &tenant, method, query.as_deref(), &body).await {
        Ok((outcome, reply)) => {
            record(provider, &tenant, outcome, started);
            (StatusCode::OK, [(header::CONTENT_TYPE, reply.content_type)], reply.body).into_response()
        }
        Err(e) => {
            record(provider, &tenant, e.outcome(), started);
            if matches!(e, IngressError::Unavailable(_)) {
                tracing::warn!(tenant, error = %e, "callback not accepted; the vendor will retry");
            } else {
                tracing::debug!(tenant, error = %e, "callback refused");
            }
            e.into_response()
        }
    }
}

async fn accept(
    state: &CallbackState,
    provider: Option<Provider>,
    tenant: &str,
    method: Method,
    query: Option<&str>,
    body: &[u8],
) -> Result<(&'static str, crate::provider::Reply), IngressError> {
    let provider = provider.ok_or(IngressError::UnknownTenant)?;
    let known = state.registry.tenant(provider, tenant).ok_or(IngressError::UnknownTenant)?;
    let request = CallbackRequest { method, query, body, now_ms: now_ms() };
    let accepted = known.codec.accept(&request)?;
    // Only verified, well-formed callbacks reach the cache: nobody can fill it with made-up
    // signatures, and a broken request gets its 4xx however often it comes.
    let reservation = match (&state.replays, accepted.replay_id) {
        (Some(cache), Some(id)) => match cache.check(known.number, id) {
            Seen::New(reservation) => Some(reservation),
            Seen::Accepted => return Ok(("replayed", accepted.reply)),
            Seen::InFlight => return Err(IngressError::ReplayInFlight),
        },
        _ => None,
    };
    let outcome = match accepted.decoded {
        Decoded::Handshake => {
            tracing::info!(%provider, tenant, "callback URL verified");
            "verified"
        }
        Decoded::Ignored { kind } => {
            metrics::counter!("groupwatch_callbacks_ignored_total", "provider" => provider.as_str(), "kind" => kind.clone())
                .increment(1);
            tracing::debug!(%provider, tenant, kind, "ignoring an event of another type");
            "ignored"
        }
        Decoded::Change(change) => {
            hand_off(&state.inbound, &state.aliases, provider, tenant, change, now_ms()).await?;
            "accepted"
        }
    };
    if let Some(reservation) = reservation {
        reservation.commit();
    }
    Ok((outcome, accepted.reply))
}

/// Hands a decoded change to its chat's shard, learning and resolving chat aliases on the way;
/// shared by the HTTP route and DingTalk's Stream mode.
pub async fn hand_off(
    inbound: &Inbound,
    aliases: &Aliases,
    provider: Provider,
    tenant: &str,
    change: Change,
    received_at_ms: i64,
) -> Result<(), HandOffError> {
    let (chat_id, by_alias) = match &change.chat {
        ChatRef::Id(id) => {
            for alias in &change.aliases {
                aliases.learn(provider, tenant, alias, id).await;
            }
            (id.clone(), false)
        }
        ChatRef::Alias(alias) => match aliases.resolve(provider, tenant, alias).await {
            Some(id) => (id, false),
            // Not known here (yet): the worker resolves it again, and parks it if it cannot.
            None => (alias.clone(), true),
        },
    };
    let mut item = InboundEvent::change(
        provider,
        tenant,
        &chat_id,
        change.key.clone(),
        change.dedupe,
        change.reports,
        received_at_ms,
    );
    item.by_alias = by_alias;
    inbound.hand_off(item).await?;
    tracing::info!(%provider, tenant, chat_id, by_alias, event_key = change.key, "callback accepted");
    Ok(())
}
