//! The `[[wecom]]` tenant table: one WeCom corp (or third-party installation) whose customer-group
//! callbacks groupwatch receives and whose API it calls. Loaded by `config`, checked here.

use serde::Deserialize;

use crate::config::{check_api_base, check_tenant_name, string_like, ConfigError, Secret};
use crate::provider::wxbiz as crypto;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WecomTenant {
    #[serde(deserialize_with = "string_like")]
    pub tenant: String,
    #[serde(deserialize_with = "string_like")]
    pub corp_id: String,
    /// The callback Token.
    pub token: Secret,
    /// The callback EncodingAESKey (43 characters).
    pub encoding_aes_key: Secret,
    /// Secret of an app allowed to call the customer-contact APIs.
    pub secret: Secret,
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The receive id inside encrypted messages; the corp id for self-built apps (the default),
    /// the suite id for a third-party app's instruction callback.
    #[serde(default)]
    pub receive_id: Option<String>,
    /// Group owners whose groups `resync` walks (in batches of 100). Empty: no owner filter,
    /// which WeCom refuses (81017) when the app sees more than 1000 people.
    #[serde(default)]
    pub owners: Vec<String>,
    /// A file with one owner userid per line, added to `owners`.
    #[serde(default)]
    pub owners_file: Option<std::path::PathBuf>,
    /// Accepts the Token and EncodingAESKey published in WeCom's documentation, with which
    /// anyone can sign callbacks. For `demo` and the tests only; `serve` warns when it is used.
    #[serde(default)]
    pub allow_documented_test_key: bool,
    /// Group chats created by an app (`appchat`): WeCom sends no callback for them, so `serve`
    /// polls `appchat/get` for each and publishes their changes like any other group's.
    #[serde(default)]
    pub appchats: Vec<String>,
    /// How often `serve` looks at each of `appchats`.
    #[serde(default = "default_appchat_poll_secs")]
    pub appchat_poll_secs: u64,
}

/// The Token and EncodingAESKey of WeCom's documentation (doc 90968), public and so worthless as
/// secrets: refused unless a tenant sets `allow_documented_test_key`.
pub const DOCUMENTED_TEST_TOKEN: &str = "QDG6eK";
pub const DOCUMENTED_TEST_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fn default_api_base() -> String {
    "https://qyapi.weixin.qq.com".into()
}

fn default_appchat_poll_secs() -> u64 {
    300
}

/// A day: polling an app chat less often than this is not watching it.
const APPCHAT_POLL_MAX_SECS: u64 = 86_400;

impl WecomTenant {
    pub fn receive_id(&self) -> &str {
        self.receive_id.as_deref().unwrap_or(&self.corp_id)
    }

    /// `owners` plus the lines of `owners_file` (blank lines and `#` comments skipped).
    pub fn resync_owners(&self) -> std::io::Result<Vec<String>> {
        let mut owners = self.owners.clone();
        if let Some(path) = &self.owners_file {
            let text = std::fs::read_to_string(path)?;
            owners.extend(
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned),
            );
        }
        owners.sort();
        owners.dedup();
        Ok(owners)
    }

    /// Whether the tenant uses the documentation's public Token or EncodingAESKey.
    pub fn uses_documented_test_key(&self) -> bool {
        self.token.expose() == DOCUMENTED_TEST_TOKEN || self.encoding_aes_key.expose() == DOCUMENTED_TEST_KEY
    }

    pub fn crypt(&self) -> Result<crypto::WxCrypt, crypto::CryptoError> {
        crypto::WxCrypt::new(self.token.expose(), self.encoding_aes_key.expose(), self.receive_id())
    }

    /// Checks the table at `at` (`wecom[0]`); errors name the key.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        check_tenant_name(&key("tenant"), &self.tenant)?;
        if self.corp_id.trim().is_empty() {
            return Err(ConfigError::new(key("corp_id"), "must not be empty"));
        }
        if self.token.expose().is_empty() {
            return Err(ConfigError::new(key("token"), "must not be empty"));
        }
        if crypto::decode_aes_key(self.encoding_aes_key.expose()).is_err() {
            return Err(ConfigError::new(
                key("encoding_aes_key"),
                "must be 43 characters [A-Za-z0-9] that decode to a 32-byte key",
            ));
        }
        if self.uses_documented_test_key() && !self.allow_documented_test_key {
            let field =
                if self.encoding_aes_key.expose() == DOCUMENTED_TEST_KEY { "encoding_aes_key" } else { "token" };
            return Err(ConfigError::new(
                key(field),
                "is the public test value of WeCom's documentation, with which anyone can sign callbacks; \
                     use your own (allow_documented_test_key = true is for demos and tests only)",
            ));
        }
        if self.secret.expose().is_empty() {
            return Err(ConfigError::new(key("secret"), "must not be empty"));
        }
        if self.receive_id.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(ConfigError::new(key("receive_id"), "must not be empty (leave it out to use corp_id)"));
        }
        check_api_base(&key("api_base"), &self.api_base)?;
        for (j, chat) in self.appchats.iter().enumerate() {
            if chat.trim().is_empty() {
                return Err(ConfigError::new(format!("{at}.appchats[{j}]"), "must not be empty"));
            }
            if self.appchats[..j].contains(chat) {
                return Err(ConfigError::new(format!("{at}.appchats[{j}]"), format!("{chat:?} is listed twice")));
            }
        }
        if !(1..=APPCHAT_POLL_MAX_SECS).contains(&self.appchat_poll_secs) {
            return Err(ConfigError::new(key("appchat_poll_secs"), "must be between 1 and 86400"));
        }
        if let Some(path) = &self.owners_file {
            if !path.is_file() {
                return Err(ConfigError::new(key("owners_file"), format!("{} is not a readable file", path.display())));
            }
        }
        Ok(())
    }
}
