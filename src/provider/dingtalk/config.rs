//! The `[[dingtalk]]` tenant table: one DingTalk app whose group events groupwatch receives, by
//! Stream mode (groupwatch connects out; the default) or HTTP push, and whose API it calls.

use serde::Deserialize;

use crate::config::{check_api_base, check_tenant_name, string_like, ConfigError, Secret};
use crate::provider::wxbiz;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// groupwatch opens a WebSocket to DingTalk: no public URL needed.
    #[default]
    Stream,
    /// DingTalk POSTs encrypted events to `/dingtalk/{tenant}/callback`.
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingtalkTenant {
    #[serde(deserialize_with = "string_like")]
    pub tenant: String,
    /// AppKey, also the Stream `clientId`.
    #[serde(deserialize_with = "string_like")]
    pub app_key: String,
    pub app_secret: Secret,
    #[serde(default)]
    pub mode: Mode,
    /// HTTP mode: the callback token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// HTTP mode: the callback aes_key, 43 characters.
    #[serde(default)]
    pub aes_key: Option<Secret>,
    /// HTTP mode: the key inside decrypted frames; `app_key` by default.
    #[serde(default)]
    pub owner_key: Option<String>,
    /// `gettoken`, `chat/get`.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// `v1.0/gateway/connections/open`.
    #[serde(default = "default_stream_base")]
    pub stream_base: String,
    /// Accepts DingTalk's published test vector's token and aes_key. For tests only.
    #[serde(default)]
    pub allow_documented_test_key: bool,
}

/// The token and aes_key of DingTalk's published callback-crypto test vector.
pub const DOCUMENTED_TEST_TOKEN: &str = "mryue";
pub const DOCUMENTED_TEST_KEY: &str = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7";

fn default_api_base() -> String {
    "https://oapi.dingtalk.com".into()
}

fn default_stream_base() -> String {
    "https://api.dingtalk.com".into()
}

impl DingtalkTenant {
    pub fn owner_key(&self) -> &str {
        self.owner_key.as_deref().unwrap_or(&self.app_key)
    }

    /// The HTTP-mode crypto; `None` in Stream mode.
    pub fn crypt(&self) -> Option<wxbiz::WxCrypt> {
        let (token, key) = (self.token.as_ref()?, self.aes_key.as_ref()?);
        wxbiz::WxCrypt::new(token.expose(), key.expose(), self.owner_key()).ok()
    }

    /// Checks the table at `at` (`dingtalk[0]`); errors name the key.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        check_tenant_name(&key("tenant"), &self.tenant)?;
        if self.app_key.trim().is_empty() {
            return Err(ConfigError::new(key("app_key"), "must not be empty"));
        }
        if self.app_secret.expose().is_empty() {
            return Err(ConfigError::new(key("app_secret"), "must not be empty"));
        }
        check_api_base(&key("api_base"), &self.api_base)?;
        check_api_base(&key("stream_base"), &self.stream_base)?;
        if self.owner_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err(ConfigError::new(key("owner_key"), "must not be empty (leave it out to use app_key)"));
        }
        if self.mode == Mode::Http {
            let token = self.token.as_ref().map(Secret::expose).unwrap_or_default();
            if token.is_empty() {
                return Err(ConfigError::new(key("token"), "is required in http mode"));
            }
            let aes = self.aes_key.as_ref().map(Secret::expose).unwrap_or_default();
            if wxbiz::decode_aes_key(aes).is_err() {
                return Err(ConfigError::new(
                    key("aes_key"),
                    "is required in http mode: 43 characters [A-Za-z0-9] that decode to a 32-byte key",
                ));
            }
            if (token == DOCUMENTED_TEST_TOKEN || aes == DOCUMENTED_TEST_KEY) && !self.allow_documented_test_key {
                return Err(ConfigError::new(
                    key(if aes == DOCUMENTED_TEST_KEY { "aes_key" } else { "token" }),
                    "is the public test value of DingTalk's documentation, with which anyone can sign callbacks; \
                     use your own (allow_documented_test_key = true is for tests only)",
                ));
            }
        }
        Ok(())
    }
}
