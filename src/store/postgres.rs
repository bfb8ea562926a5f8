//! The shared backend: PostgreSQL, for several instances keeping one set of snapshots.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

use super::{GroupRow, SnapshotStore, StoreError, GROUP_COLUMNS};
use crate::core::model::{GroupKey, Provider, StoredGroup};

/// Each operation is one short statement, so a few connections serve an instance; several
/// instances share the server's connection limit.
const MAX_CONNECTIONS: u32 = 5;

/// Bounds how long an operation (and so /readyz) waits for a connection when the server is
/// unreachable or the pool is exhausted, instead of sqlx's default of 30 s.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub(super) async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::connect(url, e))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::connect(url, e))?;
        // sqlx holds an advisory lock while migrating, so instances starting together are safe.
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn load(&self, key: &GroupKey) -> Result<Option<StoredGroup>, StoreError> {
        let sql =
            format!("SELECT {GROUP_COLUMNS} FROM group_snapshots WHERE provider = $1 AND tenant = $2 AND chat_id = $3");
        let row: Option<GroupRow> = sqlx::query_as(&sql)
            .bind(key.provider.as_str())
            .bind(&key.tenant)
            .bind(&key.chat_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.decode(key)).transpose()
    }

    async fn save(&self, key: &GroupKey, group: &StoredGroup) -> Result<(), StoreError> {
        let row = GroupRow::encode(key, group)?;
        sqlx::query(
            "INSERT INTO group_snapshots (provider, tenant, chat_id, name, owner, notice, create_time, \
                 member_version, dismissed, admins, members, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (provider, tenant, chat_id) DO UPDATE SET \
                 name = excluded.name, owner = excluded.owner, notice = excluded.notice, \
                 create_time = excluded.create_time, member_version = excluded.member_version, \
                 dismissed = excluded.dismissed, admins = excluded.admins, members = excluded.members, \
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(key.provider.as_str())
        .bind(&key.tenant)
        .bind(&key.chat_id)
        .bind(row.name)
        .bind(row.owner)
        .bind(row.notice)
        .bind(row.create_time)
        .bind(row.member_version)
        .bind(row.dismissed)
        .bind(row.admins)
        .bind(row.members)
        .bind(row.updated_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn chat_ids(&self, provider: Provider, tenant: &str) -> Result<Vec<String>, StoreError> {
        // The key columns are COLLATE "C", so this is byte order, as on SQLite.
        let ids = sqlx::query_scalar(
            "SELECT chat_id FROM group_snapshots WHERE provider = $1 AND tenant = $2 ORDER BY chat_id",
        )
        .bind(provider.as_str())
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
