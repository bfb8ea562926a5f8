//! The `[[tim]]` tenant table: one Tencent Cloud IM app whose group callbacks groupwatch
//! receives and whose REST API it calls as an app admin.

use serde::Deserialize;

use crate::config::{check_api_base, check_tenant_name, string_like, ConfigError, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimTenant {
    #[serde(deserialize_with = "string_like")]
    pub tenant: String,
    pub sdk_app_id: u64,
    /// An App admin account, for REST calls.
    #[serde(deserialize_with = "string_like")]
    pub identifier: String,
    /// The app's key, to make UserSigs.
    pub secret_key: Secret,
    /// The callback auth token: `Sign` and `RequestTime` are required on every callback.
    pub callback_token: Secret,
    #[serde(default = "default_api_base")]
    pub api_base: String,
}

fn default_api_base() -> String {
    "https://console.tim.qq.com".into()
}

impl TimTenant {
    /// Checks the table at `at` (`tim[0]`); errors name the key.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        check_tenant_name(&key("tenant"), &self.tenant)?;
        if self.sdk_app_id == 0 {
            return Err(ConfigError::new(key("sdk_app_id"), "must be the app's SDKAppID"));
        }
        if self.identifier.trim().is_empty() {
            return Err(ConfigError::new(key("identifier"), "must name an App admin account"));
        }
        if self.secret_key.expose().is_empty() {
            return Err(ConfigError::new(key("secret_key"), "must not be empty"));
        }
        // Tencent IM's console accepts 1..=128 characters.
        if !(1..=128).contains(&self.callback_token.expose().chars().count()) {
            return Err(ConfigError::new(key("callback_token"), "must be 1 to 128 characters"));
        }
        check_api_base(&key("api_base"), &self.api_base)?;
        Ok(())
    }
}
