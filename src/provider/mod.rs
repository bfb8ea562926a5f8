//! Group-detail sources, one per chat platform, behind one trait. The pipeline only sees
//! provider-neutral snapshots and a classified error.

pub mod tim;
pub mod wecom;
pub mod wxbiz;

use async_trait::async_trait;
use std::time::Duration;

use crate::core::model::GroupSnapshot;

/// Why a fetch failed, classified by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
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

impl FetchError {
    pub fn errcode(&self) -> Option<i64> {
        match self {
            FetchError::Transient(_) => None,
            FetchError::RateLimited { errcode, .. }
            | FetchError::Permanent { errcode, .. }
            | FetchError::Gone { errcode } => Some(*errcode),
        }
    }
}

#[async_trait]
pub trait GroupSource: Send + Sync {
    /// The current state of one group.
    async fn fetch_group(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, FetchError>;
}
