//! The embedded backend: one SQLite file, for a single instance.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;
use std::time::Duration;

use super::StoreError;

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
            // FULL: a commit lost to a power cut after its events were published would number the
            // next events again.
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

    /// The read API's pool: read-only connections of their own (WAL lets them read while a
    /// commit writes).
    pub(super) async fn connect_reader(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::connect(url, e))?
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(super::READER_CONNECTIONS)
            // Each query is one statement; a ping before it would only add a trip to the
            // connection's thread.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::connect(url, e))?;
        Ok(Self { pool })
    }
}

super::sql_store!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE");
super::coordination::sql_coordination!(SqliteStore, sqlx::Sqlite);
