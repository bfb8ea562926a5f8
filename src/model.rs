//! The provider-neutral core model: what a group and its members look like to the pipeline,
//! independent of HTTP, XML or AMQP.

use serde::{Deserialize, Serialize};

/// Where a group lives. Routing keys and stored snapshots are keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Wecom,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Wecom => "wecom",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
