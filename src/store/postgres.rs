//! The shared backend: PostgreSQL, for several instances keeping one set of snapshots.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

use super::StoreError;

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

    /// The read API's pool, apart from the workers' (count it in the server's connection limit).
    pub(super) async fn connect_reader(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::connect(url, e))?;
        let pool = PgPoolOptions::new()
            .max_connections(super::READER_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A ping before every query would double the round trips of these one-statement
            // reads; a broken connection fails its query (503, retried) and leaves the pool.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }
}

super::sql_store!(PostgresStore, sqlx::Postgres, "BEGIN");
super::coordination::sql_coordination!(PostgresStore, sqlx::Postgres);
