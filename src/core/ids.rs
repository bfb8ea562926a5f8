//! Stable ids and keys: one hash writer, so the same inputs give the same id in every process
//! and version.

use sha2::{Digest, Sha256};

/// 32 hex digits of SHA-256 over `parts`, each followed by the unit separator 0x1f.
pub fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    hex::encode(&h.finalize()[..16])
}

/// [`short_hash`] formatted as a UUID, so consumers can store event ids in a uuid column.
pub fn event_id(parts: &[&str]) -> String {
    let x = short_hash(parts);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

/// Feeds formatted text straight into a hash, with no temporary strings.
pub struct HashWriter(pub Sha256);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}
