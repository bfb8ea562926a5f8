//! `groupwatch replay`: plays a vendor. Signs (and, where the vendor encrypts, encrypts) plaintext
//! events with a tenant's callback codec and POSTs them to a callback URL exactly as the vendor
//! would.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::core::model::Provider;
use crate::provider::registry::Registry;
use crate::provider::tim::config::TimTenant;
use crate::provider::tim::TimCodec;
use crate::provider::wecom::codec::WecomCodec;
use crate::provider::wecom::config::WecomTenant;
use crate::provider::CallbackCodec;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("bad callback URL {0:?}")]
    Url(String),
    #[error("{0}")]
    Tenant(String),
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
}

pub struct Replayer {
    codec: Arc<dyn CallbackCodec>,
    url: url::Url,
    http: reqwest::Client,
}

impl Replayer {
    pub fn new(codec: Arc<dyn CallbackCodec>, url: &str) -> Result<Self, ReplayError> {
        let url = url::Url::parse(url).map_err(|_| ReplayError::Url(url.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ReplayError::Url(url.to_string()));
        }
        Ok(Self { codec, url, http: reqwest::Client::new() })
    }

    /// Plays the WeCom tenant `tenant`.
    pub fn wecom(tenant: &WecomTenant, url: &str) -> Result<Self, ReplayError> {
        let codec =
            WecomCodec::new(tenant, None).map_err(|e| ReplayError::Tenant(format!("tenant has a bad key: {e}")))?;
        Self::new(Arc::new(codec), url)
    }

    /// Plays the Tencent IM tenant `tenant`: `SdkAppid`, `Sign` and `RequestTime` as Tencent
    /// appends them, `CallbackCommand` from the body.
    pub fn tim(tenant: &TimTenant, url: &str) -> Result<Self, ReplayError> {
        Self::new(Arc::new(TimCodec::new(tenant, None)), url)
    }

    /// Plays the tenant named `tenant` of `provider` (any provider with a tenant of that name
    /// when `None`, which must then be unique).
    pub fn for_tenant(
        config: &Config,
        provider: Option<Provider>,
        tenant: &str,
        url: &str,
    ) -> Result<Self, ReplayError> {
        let registry = Registry::build(config).map_err(|e| ReplayError::Tenant(e.to_string()))?;
        let found: Vec<Provider> = Provider::ALL
            .into_iter()
            .filter(|p| provider.is_none_or(|want| want == *p) && registry.tenant(*p, tenant).is_some())
            .collect();
        match found.as_slice() {
            [p] => Self::new(registry.tenant(*p, tenant).expect("found").codec.clone(), url),
            [] => Err(ReplayError::Tenant(format!("{tenant:?} is not a configured tenant"))),
            _ => Err(ReplayError::Tenant(format!(
                "{tenant:?} is a tenant of several providers: name one with --provider"
            ))),
        }
    }

    /// POSTs one plaintext event and returns the HTTP status.
    pub async fn post(&self, plaintext: &[u8]) -> Result<reqwest::StatusCode, ReplayError> {
        let signed = self.codec.encode(plaintext, crate::core::clock::now_ms());
        let mut url = self.url.clone();
        url.query_pairs_mut().extend_pairs(signed.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let response = self.http.post(url).header("content-type", signed.content_type).body(signed.body).send().await?;
        Ok(response.status())
    }

    pub async fn post_file(&self, path: &Path) -> Result<reqwest::StatusCode, ReplayError> {
        let plaintext = std::fs::read(path).map_err(|source| ReplayError::Read { path: path.into(), source })?;
        self.post(&plaintext).await
    }
}
