//! HTTP in: WeCom's URL verification (GET) and event receipt (POST).
//!
//! Handlers stay thin: look up the tenant, verify, decrypt, parse, skip replays, hand off, answer.
//! The group re-fetch never happens here; WeCom gives us 5 seconds and retries on anything but 200.

pub mod replay;
pub mod server;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{HttpConfig, WecomTenant};
use crate::core::clock::now_ms;
use crate::core::model::Provider;
use crate::provider::wecom;
use crate::provider::wecom::xml::{self, Callback, ParseError};
use crate::provider::wxbiz::{CryptoError, WxCrypt};
use crate::queue::inbound::{Inbound, InboundEvent};
use replay::{ReplayCache, Seen};

/// One tenant as the callback routes know it.
pub struct CallbackTenant {
    pub crypt: WxCrypt,
    /// A third-party (suite) callback's `AuthCorpId` must name this corp: the receive id is then
    /// the suite's, shared by every corp that installed it.
    pub corp_id: String,
    /// Its number in the replay cache (names would make entries variable in size).
    id: u32,
}

/// What the callback routes need: each tenant's crypto, the replay cache and the inbound
/// hand-off.
#[derive(Clone)]
pub struct CallbackState {
    pub tenants: Arc<HashMap<String, CallbackTenant>>,
    pub inbound: Inbound,
    /// Maximum distance between the signed `timestamp` and now; `None` disables the check.
    pub timestamp_window: Option<u64>,
    /// `None` only with the timestamp check off (`http.allow_replay`).
    replays: Option<Arc<ReplayCache>>,
}

impl CallbackState {
    pub fn new(tenants: &[WecomTenant], inbound: Inbound, http: &HttpConfig) -> Result<Self, CryptoError> {
        let tenants = tenants
            .iter()
            .zip(0u32..)
            .map(|(t, id)| Ok((t.tenant.clone(), CallbackTenant { crypt: t.crypt()?, corp_id: t.corp_id.clone(), id })))
            .collect::<Result<HashMap<_, _>, CryptoError>>()?;
        let window = Some(http.timestamp_window_secs).filter(|w| *w > 0);
        let replays = window.map(|w| ReplayCache::new(std::time::Duration::from_secs(w), http.replay_cache_entries));
        Ok(Self { tenants: Arc::new(tenants), inbound, timestamp_window: window, replays })
    }
}

/// Why a callback was refused. `Display` carries the details for the debug log (it may quote
/// attacker input or a decrypted field); the HTTP answer is [`CallbackError::public_message`],
/// a fixed string per outcome.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("unknown tenant")]
    UnknownTenant,
    #[error("missing query parameter {0}")]
    MissingParam(&'static str),
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("envelope: {0}")]
    Envelope(ParseError),
    #[error("event: {0}")]
    Event(ParseError),
    /// A third-party callback for another corp than the tenant's, signed with the suite's keys.
    #[error("AuthCorpId of the event is not the tenant's corp_id")]
    AuthCorpMismatch,
    /// A signed GET whose plaintext is not shaped like WeCom's echostr: answering it would
    /// make the verification route decrypt any captured `Encrypt` for whoever asks.
    #[error("decrypted echostr is not a verification string")]
    NotEchostr,
    #[error("event could not be handed off: {0}")]
    Unavailable(#[from] crate::queue::inbound::HandOffError),
    /// The same signed callback is being handed off by another request at this moment; it
    /// cannot be acknowledged before that hand-off is confirmed.
    #[error("the same callback is being handed off")]
    ReplayInFlight,
}

impl CallbackError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownTenant => StatusCode::NOT_FOUND,
            Self::MissingParam("msg_signature" | "timestamp" | "nonce") => StatusCode::UNAUTHORIZED,
            Self::Crypto(CryptoError::BadSignature) | Self::StaleTimestamp => StatusCode::UNAUTHORIZED,
            Self::MissingParam(_)
            | Self::Crypto(_)
            | Self::NotUtf8
            | Self::Envelope(_)
            | Self::Event(_)
            | Self::AuthCorpMismatch
            | Self::NotEchostr => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) | Self::ReplayInFlight => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownTenant => "unknown_tenant",
            Self::MissingParam(_) | Self::Crypto(CryptoError::BadSignature) => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::Crypto(CryptoError::ReceiveIdMismatch) | Self::AuthCorpMismatch => "wrong_receive_id",
            Self::Crypto(_) | Self::NotUtf8 | Self::Envelope(_) => "malformed",
            Self::Event(_) => "bad_event",
            Self::NotEchostr => "bad_echostr",
            Self::Unavailable(_) => "unavailable",
            Self::ReplayInFlight => "replay_in_flight",
        }
    }

    /// The answer's body: fixed per outcome, so that no error echoes the request body (a parser
    /// error quotes it) or a decrypted value.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::UnknownTenant => "unknown tenant",
            Self::MissingParam("echostr") => "missing query parameter echostr",
            Self::MissingParam(_) | Self::Crypto(CryptoError::BadSignature) => "missing or bad signature",
            Self::StaleTimestamp => "timestamp outside the accepted window",
            Self::Crypto(CryptoError::ReceiveIdMismatch) | Self::AuthCorpMismatch => "receive id does not match",
            Self::Crypto(_) => "ciphertext cannot be decrypted",
            Self::NotUtf8 | Self::Envelope(_) => "malformed envelope",
            Self::Event(_) => "invalid event",
            Self::NotEchostr => "not a verification request",
            Self::Unavailable(_) | Self::ReplayInFlight => "event could not be handed off; retry",
        }
    }
}

impl IntoResponse for CallbackError {
    fn into_response(self) -> Response {
        (self.status(), [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.public_message()).into_response()
    }
}

/// WeCom's echostr decrypts to a short decimal string (`1616140317555161061`); allow a little
/// more (letters, up to 64 characters) but nothing that could be a message: no markup, no spaces.
fn is_echostr(plain: &str) -> bool {
    (1..=64).contains(&plain.len()) && plain.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The signed query parameters. Parsed by hand: a form decoder would turn a literal `+` of a
/// base64 `echostr` into a space and break the signature.
#[derive(Debug, Default)]
struct SignedQuery<'q> {
    msg_signature: Option<Cow<'q, str>>,
    timestamp: Option<Cow<'q, str>>,
    nonce: Option<Cow<'q, str>>,
    echostr: Option<Cow<'q, str>>,
}

impl<'q> SignedQuery<'q> {
    /// Borrows from the raw query; only a percent-encoded value is copied.
    fn parse(raw: Option<&'q str>) -> Self {
        let mut q = Self::default();
        for pair in raw.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            match name {
                "msg_signature" => q.msg_signature = Some(value),
                "timestamp" => q.timestamp = Some(value),
                "nonce" => q.nonce = Some(value),
                "echostr" => q.echostr = Some(value),
                _ => {}
            }
        }
        q
    }

    fn require<'a>(field: &'a Option<Cow<'q, str>>, name: &'static str) -> Result<&'a str, CallbackError> {
        field.as_deref().filter(|v| !v.is_empty()).ok_or(CallbackError::MissingParam(name))
    }

    /// (msg_signature, timestamp, nonce)
    fn signature_parts(&self) -> Result<(&str, &str, &str), CallbackError> {
        Ok((
            Self::require(&self.msg_signature, "msg_signature")?,
            Self::require(&self.timestamp, "timestamp")?,
            Self::require(&self.nonce, "nonce")?,
        ))
    }
}

impl CallbackState {
    fn tenant(&self, tenant: &str) -> Result<&CallbackTenant, CallbackError> {
        self.tenants.get(tenant).ok_or(CallbackError::UnknownTenant)
    }

    /// Refuses a replayed (or badly clocked) request before any crypto work.
    fn check_timestamp(&self, timestamp: &str) -> Result<(), CallbackError> {
        let Some(window) = self.timestamp_window else { return Ok(()) };
        let ts: i64 = timestamp.parse().map_err(|_| CallbackError::StaleTimestamp)?;
        let now = now_ms() / 1000;
        if ts.abs_diff(now) > window {
            return Err(CallbackError::StaleTimestamp);
        }
        Ok(())
    }
}

fn record(tenant: &str, outcome: &'static str, started: Instant) {
    // Unknown tenants are attacker-chosen strings: do not let them create metric series.
    let tenant = if outcome == "unknown_tenant" { "unknown" } else { tenant };
    metrics::counter!("groupwatch_callbacks_total", "tenant" => tenant.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!("groupwatch_callback_seconds", "outcome" => outcome).record(started.elapsed());
}

/// `GET /wecom/{tenant}/callback`: answers the decrypted `echostr`, exactly, as plain text.
pub async fn verify_url(
    State(state): State<CallbackState>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let started = Instant::now();
    let result = (|| {
        let crypt = &state.tenant(&tenant)?.crypt;
        let q = SignedQuery::parse(query.as_deref());
        let (sig, ts, nonce) = q.signature_parts()?;
        state.check_timestamp(ts)?;
        let echostr = SignedQuery::require(&q.echostr, "echostr")?;
        let plain = crypt.verify_and_decrypt(sig, ts, nonce, echostr)?;
        if !is_echostr(&plain) {
            return Err(CallbackError::NotEchostr);
        }
        Ok::<_, CallbackError>(plain)
    })();
    match result {
        Ok(plain) => {
            record(&tenant, "verified", started);
            tracing::info!(tenant, "callback URL verified");
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], plain).into_response()
        }
        Err(e) => reject(&tenant, e, started),
    }
}

fn reject(tenant: &str, e: CallbackError, started: Instant) -> Response {
    record(tenant, e.outcome(), started);
    if matches!(e, CallbackError::Unavailable(_)) {
        tracing::warn!(tenant, error = %e, "callback not accepted; WeCom will retry");
    } else {
        tracing::debug!(tenant, error = %e, "callback rejected");
    }
    e.into_response()
}

/// `POST /wecom/{tenant}/callback`: verify, decrypt, parse, hand off durably, then `success`.
pub async fn receive_event(
    State(state): State<CallbackState>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    match accept_event(&state, &tenant, query.as_deref(), &body).await {
        Ok(outcome) => {
            record(&tenant, outcome, started);
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "success").into_response()
        }
        Err(e) => reject(&tenant, e, started),
    }
}

async fn accept_event(
    state: &CallbackState,
    tenant: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<&'static str, CallbackError> {
    let known = state.tenant(tenant)?;
    let crypt = &known.crypt;
    let q = SignedQuery::parse(query);
    let (sig, ts, nonce) = q.signature_parts()?;
    state.check_timestamp(ts)?;
    let body = std::str::from_utf8(body).map_err(|_| CallbackError::NotUtf8)?;
    let encrypted = xml::parse_envelope(body).map_err(CallbackError::Envelope)?;
    let plain = crypt.verify_and_decrypt(sig, ts, nonce, &encrypted)?;
    let callback = xml::parse_callback(&plain).map_err(CallbackError::Event)?;
    if let Callback::ChangeExternalChat(ev) = &callback {
        if ev.auth_corp_id.as_ref().is_some_and(|corp| *corp != known.corp_id) {
            return Err(CallbackError::AuthCorpMismatch);
        }
    }
    // Only verified, well-formed callbacks reach the cache: nobody can fill it with made-up
    // signatures, and a broken request gets its 4xx however often it comes.
    let reservation = match &state.replays {
        None => None,
        Some(cache) => match cache.check(known.id, signature_digest(sig)) {
            Seen::New(reservation) => Some(reservation),
            Seen::Accepted => return Ok("replayed"),
            Seen::InFlight => return Err(CallbackError::ReplayInFlight),
        },
    };
    let outcome = match callback {
        Callback::Other { kind } => {
            metrics::counter!("groupwatch_callbacks_ignored_total", "kind" => kind.clone()).increment(1);
            tracing::debug!(tenant, kind, "ignoring a callback that is not change_external_chat");
            "ignored"
        }
        Callback::ChangeExternalChat(ev) => {
            let chat_id = ev.chat_id.clone();
            let key = wecom::callback::dedupe_key(tenant, &ev);
            let inbound = InboundEvent::change(
                Provider::Wecom,
                tenant,
                &chat_id,
                key.clone(),
                wecom::callback::dedupable(&ev),
                vec![wecom::report_of(&ev)],
                now_ms(),
            );
            state.inbound.hand_off(inbound).await?;
            tracing::info!(tenant, chat_id, event_key = key, "callback accepted");
            "accepted"
        }
    };
    if let Some(reservation) = reservation {
        reservation.commit();
    }
    Ok(outcome)
}

/// The verified `msg_signature` (40 lower-case hex digits) as its 20 bytes.
fn signature_digest(sig: &str) -> [u8; 20] {
    let mut digest = [0u8; 20];
    // Verified just before: it is 40 hex digits.
    let _ = hex::decode_to_slice(sig, &mut digest);
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_literal_plus_and_decodes_percent() {
        let q = SignedQuery::parse(Some("msg_signature=ab&timestamp=1&nonce=2&echostr=a+b%2Fc%3D%3D"));
        assert_eq!(q.echostr.as_deref(), Some("a+b/c=="));
        assert_eq!(q.signature_parts().unwrap(), ("ab", "1", "2"));
    }

    #[test]
    fn echostr_shape() {
        assert!(is_echostr("1616140317555161061"));
        assert!(is_echostr("abcXYZ09"));
        for bad in ["", "<xml></xml>", "12 34", "1616140317555161061\n", &"9".repeat(65), "１２"] {
            assert!(!is_echostr(bad), "{bad:?}");
        }
    }

    #[test]
    fn answers_are_fixed_strings() {
        let e = CallbackError::Event(ParseError::Invalid { element: "ChangeType", value: "secret-value".into() });
        assert!(e.to_string().contains("secret-value"), "the log line keeps the detail");
        assert_eq!(e.public_message(), "invalid event");
        let e = CallbackError::Envelope(ParseError::Xml("entity &attacker; unknown".into()));
        assert_eq!(e.public_message(), "malformed envelope");
    }

    #[test]
    fn missing_signature_is_401_and_missing_echostr_400() {
        let q = SignedQuery::parse(Some("timestamp=1&nonce=2"));
        let e = q.signature_parts().unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(SignedQuery::require(&q.echostr, "echostr").unwrap_err().status(), StatusCode::BAD_REQUEST);
    }
}
