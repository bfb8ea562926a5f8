//! The embedded backend: one SQLite file, for a single instance.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;
use std::time::Duration;

use super::{GroupRow, SnapshotStore, StoreError, GROUP_COLUMNS};
use crate::core::model::{GroupKey, Provider, StoredGroup};

/// How long a statement waits for another connection's write lock before failing with "database
/// is locked"; SQLite allows one writer at a time, even in WAL mode.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Readers run in parallel under WAL; more connections would only queue on the single writer.
const MAX_CONNECTIONS: u32 = 4;

pub(super) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub(super) async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::connect(url, e))?
            .create_if_missing(true)
            // WAL lets /readyz and loads read while a save writes. `synchronous` stays at sqlx's
            // FULL: a save lost to a power cut would make the next diff publish events again.
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::connect(url, e))?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl SnapshotStore for SqliteStore {
    async fn load(&self, key: &GroupKey) -> Result<Option<StoredGroup>, StoreError> {
        let sql =
            format!("SELECT {GROUP_COLUMNS} FROM group_snapshots WHERE provider = ? AND tenant = ? AND chat_id = ?");
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
        let ids = sqlx::query_scalar(
            "SELECT chat_id FROM group_snapshots WHERE provider = ? AND tenant = ? ORDER BY chat_id",
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
