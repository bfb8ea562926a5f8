//! Tencent Cloud IM UserSig (TLSSigAPIv2): the credential every REST call carries in its query,
//! made from the app's secret key. Pure: no clock reads, no I/O; the caller passes `now`.
//!
//! The algorithm (protocols.md §5.3, after the official tls-sig-api-v2-python):
//! 1. `content` = `TLS.identifier:{id}\nTLS.sdkappid:{app}\nTLS.time:{now}\nTLS.expire:{expire}\n`;
//! 2. `TLS.sig` = base64 (standard) of HMAC-SHA256 over `content`, keyed with the secret key;
//! 3. a JSON object with `TLS.ver` "2.0", `TLS.identifier`, `TLS.sdkappid`, `TLS.expire`,
//!    `TLS.time` and `TLS.sig`;
//! 4. zlib (RFC 1950, default level);
//! 5. base64 (standard), then `+` → `*`, `/` → `-`, `=` → `_`.

use base64::Engine as _;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::io::Write as _;

/// The lifetime Tencent's own tools default to: 180 days.
pub const DEFAULT_EXPIRE_SECS: i64 = 180 * 86_400;

/// The least time a cached UserSig must have left to be handed out again.
const MIN_RENEW_MARGIN_SECS: i64 = 3_600;

/// The string TLSSigAPIv2 signs (no `TLS.userbuf` line: IM does not use one).
fn content(sdk_app_id: u64, identifier: &str, now_secs: i64, expire_secs: i64) -> String {
    format!("TLS.identifier:{identifier}\nTLS.sdkappid:{sdk_app_id}\nTLS.time:{now_secs}\nTLS.expire:{expire_secs}\n")
}

/// `TLS.sig`: base64 (standard alphabet, padded) of HMAC-SHA256(secret_key, content).
pub fn hmac_sig(sdk_app_id: u64, identifier: &str, secret_key: &str, now_secs: i64, expire_secs: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(content(sdk_app_id, identifier, now_secs, expire_secs).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A UserSig for `identifier` (the app admin account), valid from `now_secs` for `expire_secs`.
pub fn gen_usersig(sdk_app_id: u64, identifier: &str, secret_key: &str, now_secs: i64, expire_secs: i64) -> String {
    let doc = serde_json::json!({
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdk_app_id,
        "TLS.expire": expire_secs,
        "TLS.time": now_secs,
        "TLS.sig": hmac_sig(sdk_app_id, identifier, secret_key, now_secs, expire_secs),
    });
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    zlib.write_all(doc.to_string().as_bytes()).expect("zlib into memory");
    let compressed = zlib.finish().expect("zlib into memory");
    base64::engine::general_purpose::STANDARD
        .encode(compressed)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// One app admin's UserSig, generated once and handed out again until little of its lifetime is
/// left. Keep it behind a mutex if several tasks share it; it reads no clock itself.
///
/// Renewal margin: 10% of the lifetime, at least an hour, but never more than half the lifetime
/// (so that short test lifetimes still reuse the sig for a while).
pub struct UserSigCache {
    sdk_app_id: u64,
    identifier: String,
    secret_key: String,
    expire_secs: i64,
    current: Option<Issued>,
}

struct Issued {
    usersig: String,
    issued_at: i64,
}

impl UserSigCache {
    pub fn new(
        sdk_app_id: u64,
        identifier: impl Into<String>,
        secret_key: impl Into<String>,
        expire_secs: i64,
    ) -> Self {
        Self {
            sdk_app_id,
            identifier: identifier.into(),
            secret_key: secret_key.into(),
            expire_secs: expire_secs.max(1),
            current: None,
        }
    }

    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    pub fn sdk_app_id(&self) -> u64 {
        self.sdk_app_id
    }

    /// How long before expiry a sig is replaced.
    pub fn renew_margin_secs(&self) -> i64 {
        (self.expire_secs / 10).max(MIN_RENEW_MARGIN_SECS).min(self.expire_secs / 2)
    }

    /// The cached sig, or a fresh one if there is none, if it has less than the margin left, or if
    /// `now_secs` is before it was issued (the clock went back).
    pub fn get(&mut self, now_secs: i64) -> String {
        let margin = self.renew_margin_secs();
        let usable = self.current.as_ref().filter(|issued| {
            let expires_at = issued.issued_at.saturating_add(self.expire_secs);
            now_secs >= issued.issued_at && expires_at.saturating_sub(now_secs) > margin
        });
        if let Some(issued) = usable {
            return issued.usersig.clone();
        }
        let usersig = gen_usersig(self.sdk_app_id, &self.identifier, &self.secret_key, now_secs, self.expire_secs);
        self.current = Some(Issued { usersig: usersig.clone(), issued_at: now_secs });
        usersig
    }

    /// Forgets the cached sig, e.g. after Tencent answered 70001 (expired) for it.
    pub fn invalidate(&mut self) {
        self.current = None;
    }
}

/// The secret key and the sig itself (a bearer credential) stay out of logs.
impl fmt::Debug for UserSigCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSigCache")
            .field("sdk_app_id", &self.sdk_app_id)
            .field("identifier", &self.identifier)
            .field("secret_key", &"<redacted>")
            .field("expire_secs", &self.expire_secs)
            .field("issued_at", &self.current.as_ref().map(|i| i.issued_at))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read as _;

    // protocols.md §5.3: a self-computed HMAC check (not an official vector), step 2 only.
    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const APP: u64 = 1_400_000_000;
    const ADMIN: &str = "administrator";
    const VECTOR_SIG: &str = "9awWeUL8MxxbBn8dhB0Jvuo0JKIh4dNCLkGIX4n5fd0=";

    /// Undoes steps 5 and 4 and parses step 3, independently of the encoder above.
    fn decode(usersig: &str) -> serde_json::Value {
        let b64: String = usersig
            .chars()
            .map(|c| match c {
                '*' => '+',
                '-' => '/',
                '_' => '=',
                c => c,
            })
            .collect();
        let compressed = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
        let mut json = String::new();
        ZlibDecoder::new(&compressed[..]).read_to_string(&mut json).expect("zlib");
        serde_json::from_str(&json).expect("json")
    }

    #[test]
    fn hmac_matches_the_protocols_vector() {
        assert_eq!(hmac_sig(APP, ADMIN, KEY, 1_700_000_000, 86_400), VECTOR_SIG);
        assert_ne!(hmac_sig(APP, ADMIN, KEY, 1_700_000_001, 86_400), VECTOR_SIG, "time is signed");
        assert_ne!(hmac_sig(APP, "admin", KEY, 1_700_000_000, 86_400), VECTOR_SIG, "identifier is signed");
    }

    #[test]
    fn usersig_round_trips_and_carries_the_vector_sig() {
        let usersig = gen_usersig(APP, ADMIN, KEY, 1_700_000_000, 86_400);
        assert!(!usersig.contains(['+', '/', '=']), "URL-unsafe characters are substituted: {usersig}");
        let doc = decode(&usersig);
        assert_eq!(doc["TLS.ver"], "2.0");
        assert_eq!(doc["TLS.identifier"], ADMIN);
        assert_eq!(doc["TLS.sdkappid"], APP, "an integer, not a string");
        assert_eq!(doc["TLS.time"], 1_700_000_000);
        assert_eq!(doc["TLS.expire"], 86_400);
        assert_eq!(doc["TLS.sig"], VECTOR_SIG);
        assert_eq!(doc.as_object().unwrap().len(), 6, "{doc}");

        // Recompute the HMAC from the decoded fields alone.
        let content = format!(
            "TLS.identifier:{}\nTLS.sdkappid:{}\nTLS.time:{}\nTLS.expire:{}\n",
            doc["TLS.identifier"].as_str().unwrap(),
            doc["TLS.sdkappid"],
            doc["TLS.time"],
            doc["TLS.expire"]
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
        mac.update(content.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.decode(doc["TLS.sig"].as_str().unwrap()).unwrap();
        mac.verify_slice(&sig).expect("the HMAC verifies");
    }

    #[test]
    fn substitution_covers_every_url_unsafe_character() {
        // Enough different sigs that '+', '/' and '=' all occur in the plain base64 of some.
        let mut seen = [false; 3];
        for t in 0..200 {
            let sig = gen_usersig(APP, ADMIN, KEY, 1_700_000_000 + t, 86_400);
            assert!(!sig.contains(['+', '/', '=']), "{sig}");
            for (i, c) in ['*', '-', '_'].into_iter().enumerate() {
                seen[i] |= sig.contains(c);
            }
            assert_eq!(decode(&sig)["TLS.time"], 1_700_000_000 + t);
        }
        assert_eq!(seen, [true; 3], "the sample exercised every substitution");
    }

    #[test]
    fn cache_reuses_until_the_margin_then_renews() {
        let lifetime = 100_000;
        let mut cache = UserSigCache::new(APP, ADMIN, KEY, lifetime);
        assert_eq!(cache.renew_margin_secs(), 10_000, "10% of the lifetime");
        let t0 = 1_700_000_000;
        let first = cache.get(t0);
        assert_eq!(decode(&first)["TLS.time"], t0);
        assert_eq!(cache.get(t0 + 1), first);
        assert_eq!(cache.get(t0 + lifetime - 10_001), first, "10 001 s left: still reused");
        let renewed = cache.get(t0 + lifetime - 10_000);
        assert_ne!(renewed, first, "only the margin left: renewed");
        assert_eq!(decode(&renewed)["TLS.time"], t0 + lifetime - 10_000);
        assert_eq!(cache.get(t0 + lifetime - 9_000), renewed);
    }

    #[test]
    fn cache_margin_is_at_least_an_hour_and_at_most_half() {
        assert_eq!(UserSigCache::new(APP, ADMIN, KEY, DEFAULT_EXPIRE_SECS).renew_margin_secs(), 1_555_200);
        assert_eq!(UserSigCache::new(APP, ADMIN, KEY, 20_000).renew_margin_secs(), 3_600);
        assert_eq!(UserSigCache::new(APP, ADMIN, KEY, 600).renew_margin_secs(), 300);
    }

    #[test]
    fn cache_renews_after_invalidate_and_when_the_clock_goes_back() {
        let mut cache = UserSigCache::new(APP, ADMIN, KEY, 86_400);
        let first = cache.get(1_700_000_000);
        cache.invalidate();
        let second = cache.get(1_700_000_005);
        assert_ne!(second, first);
        let earlier = cache.get(1_699_999_000);
        assert_eq!(decode(&earlier)["TLS.time"], 1_699_999_000);
    }

    #[test]
    fn debug_shows_neither_key_nor_sig() {
        let mut cache = UserSigCache::new(APP, ADMIN, KEY, 86_400);
        let sig = cache.get(1_700_000_000);
        let shown = format!("{cache:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains(&sig), "{shown}");
        assert!(shown.contains("administrator"), "{shown}");
    }
}
