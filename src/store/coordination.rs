//! What several instances on one store share: who is alive, leases for work that must run once,
//! the vendors' access tokens and rate-limit pauses.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// One instance as its heartbeat records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    pub instance_id: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub worker: bool,
    pub info: InstanceInfo,
}

/// What an instance tells the others (and `groupwatch status`) about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub pid: u32,
    /// The inbound shards it consumes.
    #[serde(default)]
    pub shards: Vec<u16>,
    /// API calls per vendor account in the last minute.
    #[serde(default)]
    pub calls_per_minute: std::collections::BTreeMap<String, u64>,
}

#[async_trait]
pub trait Coordination: Send + Sync {
    /// Records that the instance is alive (insert or refresh).
    async fn heartbeat(&self, instance: &InstanceRow) -> Result<(), StoreError>;
    /// Forgets an instance (it stops cleanly, or its heartbeat is long gone).
    async fn leave(&self, instance_id: &str) -> Result<(), StoreError>;
    /// Forgets every instance whose last heartbeat is before `before_ms` (killed, never left).
    async fn forget_instances(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Every instance with a heartbeat at or after `since_ms`.
    async fn instances(&self, since_ms: i64) -> Result<Vec<InstanceRow>, StoreError>;
    /// Takes the lease `name` for `holder` until `until_ms`, if it is free (expired before
    /// `now_ms`) or already the holder's. Returns whether the holder has it.
    async fn try_lease(&self, name: &str, holder: &str, until_ms: i64, now_ms: i64) -> Result<bool, StoreError>;
    /// Gives a lease back (only the holder's).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// The access token stored for a vendor account, with its expiry.
    async fn api_token(&self, account: &str) -> Result<Option<(String, i64)>, StoreError>;
    async fn put_api_token(&self, account: &str, token: &str, expires_at_ms: i64) -> Result<(), StoreError>;
    /// Every stored token's account and expiry, without the tokens (for `groupwatch status`).
    async fn api_token_expiries(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Pauses an account's API calls until `until_ms` (a vendor said "too many calls").
    async fn pause_api(&self, account: &str, until_ms: i64) -> Result<(), StoreError>;
    /// Every pause still running at `now_ms`.
    async fn api_pauses(&self, now_ms: i64) -> Result<Vec<(String, i64)>, StoreError>;
}

/// The statements of both backends, as in `store::sql`.
pub(super) mod sql {
    pub const HEARTBEAT: &str = "INSERT INTO instances (instance_id, started_at_ms, heartbeat_at_ms, worker, info) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (instance_id) DO UPDATE SET \
         heartbeat_at_ms = excluded.heartbeat_at_ms, worker = excluded.worker, info = excluded.info";
    pub const LEAVE: &str = "DELETE FROM instances WHERE instance_id = $1";
    pub const FORGET: &str = "DELETE FROM instances WHERE heartbeat_at_ms < $1";
    pub const INSTANCES: &str = "SELECT instance_id, started_at_ms, heartbeat_at_ms, worker, info FROM instances \
         WHERE heartbeat_at_ms >= $1 ORDER BY instance_id";
    pub const TRY_LEASE: &str = "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
         WHERE leases.until_ms < $4 OR leases.holder = excluded.holder";
    pub const RELEASE_LEASE: &str = "DELETE FROM leases WHERE name = $1 AND holder = $2";
    pub const TOKEN: &str = "SELECT token, expires_at_ms FROM api_tokens WHERE account = $1";
    pub const PUT_TOKEN: &str = "INSERT INTO api_tokens (account, token, expires_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (account) DO UPDATE SET token = excluded.token, expires_at_ms = excluded.expires_at_ms";
    pub const TOKEN_EXPIRIES: &str = "SELECT account, expires_at_ms FROM api_tokens ORDER BY account";
    pub const PAUSE: &str = "INSERT INTO api_pauses (account, until_ms) VALUES ($1, $2) \
         ON CONFLICT (account) DO UPDATE SET until_ms = excluded.until_ms";
    pub const PAUSES: &str = "SELECT account, until_ms FROM api_pauses WHERE until_ms > $1";
}

/// Implements [`Coordination`] for a backend with a `pool: sqlx::Pool<$db>`.
macro_rules! sql_coordination {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::coordination::Coordination for $store {
            async fn heartbeat(
                &self,
                i: &$crate::store::coordination::InstanceRow,
            ) -> Result<(), $crate::store::StoreError> {
                let info = serde_json::to_string(&i.info).expect("instance info serialises");
                sqlx::query::<$db>($crate::store::coordination::sql::HEARTBEAT)
                    .bind(&i.instance_id)
                    .bind(i.started_at_ms)
                    .bind(i.heartbeat_at_ms)
                    .bind(i.worker)
                    .bind(info)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn leave(&self, instance_id: &str) -> Result<(), $crate::store::StoreError> {
                sqlx::query::<$db>($crate::store::coordination::sql::LEAVE)
                    .bind(instance_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn forget_instances(&self, before_ms: i64) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query::<$db>($crate::store::coordination::sql::FORGET)
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn instances(
                &self,
                since_ms: i64,
            ) -> Result<Vec<$crate::store::coordination::InstanceRow>, $crate::store::StoreError> {
                let rows: Vec<(String, i64, i64, bool, String)> =
                    sqlx::query_as($crate::store::coordination::sql::INSTANCES)
                        .bind(since_ms)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(instance_id, started_at_ms, heartbeat_at_ms, worker, info)| {
                        $crate::store::coordination::InstanceRow {
                            instance_id,
                            started_at_ms,
                            heartbeat_at_ms,
                            worker,
                            // An unreadable info is only less detail for `status`.
                            info: serde_json::from_str(&info).unwrap_or_default(),
                        }
                    })
                    .collect())
            }

            async fn try_lease(
                &self,
                name: &str,
                holder: &str,
                until_ms: i64,
                now_ms: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query::<$db>($crate::store::coordination::sql::TRY_LEASE)
                    .bind(name)
                    .bind(holder)
                    .bind(until_ms)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_lease(&self, name: &str, holder: &str) -> Result<(), $crate::store::StoreError> {
                sqlx::query::<$db>($crate::store::coordination::sql::RELEASE_LEASE)
                    .bind(name)
                    .bind(holder)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn api_token(&self, account: &str) -> Result<Option<(String, i64)>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::coordination::sql::TOKEN)
                    .bind(account)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn put_api_token(
                &self,
                account: &str,
                token: &str,
                expires_at_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query::<$db>($crate::store::coordination::sql::PUT_TOKEN)
                    .bind(account)
                    .bind(token)
                    .bind(expires_at_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn api_token_expiries(&self) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::coordination::sql::TOKEN_EXPIRIES).fetch_all(&self.pool).await?)
            }

            async fn pause_api(&self, account: &str, until_ms: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query::<$db>($crate::store::coordination::sql::PAUSE)
                    .bind(account)
                    .bind(until_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn api_pauses(&self, now_ms: i64) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::coordination::sql::PAUSES).bind(now_ms).fetch_all(&self.pool).await?)
            }
        }
    };
}
pub(super) use sql_coordination;
