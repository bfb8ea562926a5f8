//! The provider boundary. Every vendor fact (tenant table and checks, wire formats both ways, API
//! client, mapping to reports) lives under `provider/<vendor>/`; the rest of groupwatch sees only
//! these traits and the neutral types of `core`:
//!
//! - [`CallbackCodec`]: one per tenant, pure and synchronous (no I/O, so it fits every vendor's
//!   answer deadline and stays fuzzable): a signed request in, what it says and the answer out;
//!   and its inverse, for `replay`, `demo` and the tests.
//! - [`GroupSource`]: one per provider: fetch a group (or several, for vendors that batch), and
//!   the consistency rule its fetches are judged by.
//! - [`GroupLister`]: the groups a tenant has, for resync.
//!
//! [`registry::Registry`] maps (provider, tenant) to codecs and providers to sources.

pub mod account;
pub mod answer;
pub mod batch;
pub mod dingtalk;
pub mod registry;
pub mod tim;
pub mod wecom;
pub mod wxbiz;

use async_trait::async_trait;
use std::time::Duration;

use crate::core::consistency::Consistency;
use crate::core::model::GroupSnapshot;
use crate::core::report::ChangeReport;

/// Why an API call failed, classified by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Busy, timed out, 5xx, concurrency limit: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Over the provider's rate limit: pause for at least `wait`.
    #[error("rate limited (errcode {errcode}); pausing {wait:?}")]
    RateLimited { errcode: i64, wait: Duration },
    /// Retrying will not help (bad secret, no permission, unknown chat, ...).
    #[error("errcode {errcode}: {errmsg}")]
    Permanent { errcode: i64, errmsg: String },
    /// The provider no longer has the group (dismissed): what confirms a dismiss.
    #[error("the group is gone (errcode {errcode})")]
    Gone { errcode: i64 },
}

impl ApiError {
    pub fn errcode(&self) -> Option<i64> {
        match self {
            ApiError::Transient(_) => None,
            ApiError::RateLimited { errcode, .. }
            | ApiError::Permanent { errcode, .. }
            | ApiError::Gone { errcode } => Some(*errcode),
        }
    }
}

#[async_trait]
pub trait GroupSource: Send + Sync {
    /// The rule this provider's fetches are judged by.
    fn consistency(&self) -> Consistency;

    /// The current state of one group.
    async fn fetch_group(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, ApiError>;

    /// The current state of several groups of one tenant, in the order asked. Vendors whose API
    /// takes several groups per call override it; the default asks one by one.
    async fn fetch_groups(&self, tenant: &str, chat_ids: &[String]) -> Vec<Result<GroupSnapshot, ApiError>> {
        let mut out = Vec::with_capacity(chat_ids.len());
        for chat_id in chat_ids {
            out.push(self.fetch_group(tenant, chat_id).await);
        }
        out
    }
}

/// The groups a tenant has, for resync. `owners` narrows the walk where the vendor can (WeCom).
#[async_trait]
pub trait GroupLister: Send + Sync {
    async fn list_groups(&self, tenant: &str, owners: &[String]) -> Result<Vec<String>, ApiError>;

    /// API calls made so far (resync's summary reports the listing's).
    fn calls(&self) -> u64 {
        0
    }
}

/// An HTTP callback as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct CallbackRequest<'a> {
    pub method: Method,
    /// The raw query string, still percent-encoded.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    /// Unix milliseconds, for the timestamp window.
    pub now_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// How a chat is named by a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatRef {
    Id(String),
    /// Another name of the chat (DingTalk's `openConversationId`), to be mapped to its id through
    /// what earlier notifications taught.
    Alias(String),
}

/// Reports about one chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub chat: ChatRef,
    /// Other names of the chat this notification teaches (DingTalk: its `openConversationId`).
    pub aliases: Vec<String>,
    pub reports: Vec<ChangeReport>,
    /// Identifies the notification: equal for the vendor's retries of it.
    pub key: String,
    /// Whether a repeat of `key` may be skipped as a retry (see `InboundEvent::dedupe`).
    pub dedupe: bool,
}

/// What a verified callback says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A URL verification (WeCom's GET echostr, DingTalk's `check_url`): answered, nothing queued.
    Handshake,
    Change(Change),
    /// Another event type: answered and counted, never queued.
    Ignored {
        kind: String,
    },
}

/// The answer a vendor expects once the callback is durably handed off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// A verified, decoded callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub decoded: Decoded,
    pub reply: Reply,
    /// Identifies this exact signed request for the replay cache; `None` for requests a replay
    /// of which does no harm (URL verification).
    pub replay_id: Option<[u8; 20]>,
}

/// Why a callback was refused, classified by the answer it gets. The text (for the debug log)
/// may quote attacker input or a decrypted field; the HTTP answer is the fixed
/// [`CallbackError::public_message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// Missing or wrong signature: 401.
    #[error("bad signature: {0}")]
    Unauthorized(String),
    /// A timestamp outside the accepted window: 401.
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    /// Signed for another receiver (WeCom receive id, DingTalk owner key, Tencent IM SdkAppid): 400.
    #[error("wrong receiver: {0}")]
    WrongReceiver(String),
    /// Not a well-formed signed request (envelope, ciphertext, encoding): 400.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Signed and well-formed, but the event inside is invalid: 400.
    #[error("invalid event: {0}")]
    BadEvent(String),
    /// A URL verification whose decrypted text is not a verification string: answering it would
    /// turn the route into a decryption oracle. 400.
    #[error("not a verification request")]
    NotHandshake,
}

impl CallbackError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized(_) | Self::StaleTimestamp => 401,
            _ => 400,
        }
    }

    /// The `outcome` label of `groupwatch_callbacks_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::WrongReceiver(_) => "wrong_receive_id",
            Self::Malformed(_) => "malformed",
            Self::BadEvent(_) => "bad_event",
            Self::NotHandshake => "bad_echostr",
        }
    }

    pub fn public_message(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "missing or bad signature",
            Self::StaleTimestamp => "timestamp outside the accepted window",
            Self::WrongReceiver(_) => "receive id does not match",
            Self::Malformed(_) => "malformed request",
            Self::BadEvent(_) => "invalid event",
            Self::NotHandshake => "not a verification request",
        }
    }
}

/// A request as the vendor would send it, for `replay`, `demo` and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Query parameters, not yet encoded.
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

/// One tenant's callbacks: verify, decrypt, parse, map to reports, build the answer. No I/O.
pub trait CallbackCodec: Send + Sync {
    fn accept(&self, request: &CallbackRequest<'_>) -> Result<Accepted, CallbackError>;

    /// The POST the vendor would send for this plaintext event, signed at `now_ms`.
    fn encode(&self, plaintext: &[u8], now_ms: i64) -> SignedRequest;
}
