//! `groupwatch replay`: plays WeCom. Encrypts and signs fixture events with a tenant's Token and
//! EncodingAESKey and POSTs them to a callback URL exactly as WeCom would.

use rand::Rng;
use std::path::{Path, PathBuf};

use crate::config::WecomTenant;
use crate::provider::wxbiz::WxCrypt;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("bad callback URL {0:?}")]
    Url(String),
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
}

/// A signed, encrypted POST as WeCom sends it.
pub struct SignedCallback {
    pub query: Vec<(&'static str, String)>,
    pub body: String,
}

/// Builds WeCom's POST for a plaintext event: the `<xml>` envelope and the signed query.
pub fn sign_event(crypt: &WxCrypt, plaintext: &[u8], timestamp: i64) -> SignedCallback {
    let encrypted = crypt.encrypt(plaintext);
    let timestamp = timestamp.to_string();
    let nonce = rand::thread_rng().gen_range(1_000_000_000u64..10_000_000_000).to_string();
    let signature = crypt.signature(&timestamp, &nonce, &encrypted);
    let body = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>",
        crypt.receive_id()
    );
    SignedCallback { query: vec![("msg_signature", signature), ("timestamp", timestamp), ("nonce", nonce)], body }
}

pub struct Replayer {
    crypt: WxCrypt,
    url: url::Url,
    http: reqwest::Client,
}

impl Replayer {
    pub fn new(tenant: &WecomTenant, url: &str) -> Result<Self, ReplayError> {
        let url = url::Url::parse(url).map_err(|_| ReplayError::Url(url.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ReplayError::Url(url.to_string()));
        }
        let crypt = tenant.crypt().map_err(|_| ReplayError::Url("tenant has a bad key".into()))?;
        Ok(Self { crypt, url, http: reqwest::Client::new() })
    }

    /// POSTs one plaintext event and returns the HTTP status.
    pub async fn post(&self, plaintext: &[u8]) -> Result<reqwest::StatusCode, ReplayError> {
        let signed = sign_event(&self.crypt, plaintext, crate::core::clock::now_ms() / 1000);
        let mut url = self.url.clone();
        url.query_pairs_mut().extend_pairs(signed.query.iter().map(|(k, v)| (*k, v.as_str())));
        let response = self.http.post(url).header("content-type", "text/xml").body(signed.body).send().await?;
        Ok(response.status())
    }

    pub async fn post_file(&self, path: &Path) -> Result<reqwest::StatusCode, ReplayError> {
        let xml = std::fs::read(path).map_err(|source| ReplayError::Read { path: path.into(), source })?;
        self.post(&xml).await
    }
}
