//! Stable ids: one hash writer for event ids, so the same inputs give the same id in every
//! process and version.

use sha2::{Digest, Sha256};

/// A UUID-formatted SHA-256 of `parts`, each followed by the unit separator 0x1f.
pub fn event_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    let d = h.finalize();
    // Formatted as a UUID so consumers can store it in a uuid column.
    let x = hex::encode(&d[..16]);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}
