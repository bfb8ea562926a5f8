//! UserSig verification, the simulator's own (it must not share code with the service's
//! generator in `provider::tim::usersig`): undo the URL-safe base64, inflate, parse the JSON,
//! match it to the request, recompute the HMAC, check the lifetime.
//!
//! The codes are the REST API's public account errors (cloud.tencent.com 269/1671 "REST API 公共
//! 错误码"): 70001 expired, 70003 cannot be parsed, 70009 verification failed (signed with another
//! key), 70013 UserID differs from the request's, 70014 SDKAppID differs from the request's.

use super::*;
use flate2::read::ZlibDecoder;
use hmac::{Hmac, Mac};
use std::io::Read as _;

/// A real UserSig inflates to about 200 bytes; anything far larger is not one.
const MAX_INFLATED: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SigError {
    /// 70001
    Expired,
    /// 70003
    Malformed,
    /// 70009
    BadSignature,
    /// 70013
    IdentifierMismatch,
    /// 70014
    AppMismatch,
}

impl SigError {
    pub(super) fn code(self) -> i64 {
        match self {
            SigError::Expired => 70001,
            SigError::Malformed => 70003,
            SigError::BadSignature => 70009,
            SigError::IdentifierMismatch => 70013,
            SigError::AppMismatch => 70014,
        }
    }
}

/// The inflated UserSig. Strict: TLSSigAPIv2 writes exactly these keys (`TLS.userbuf` only when
/// a userbuf is used).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SigDoc {
    #[serde(rename = "TLS.ver")]
    ver: String,
    #[serde(rename = "TLS.identifier")]
    identifier: String,
    #[serde(rename = "TLS.sdkappid")]
    sdkappid: u64,
    #[serde(rename = "TLS.expire")]
    expire: i64,
    #[serde(rename = "TLS.time")]
    time: i64,
    #[serde(rename = "TLS.sig")]
    sig: String,
    #[serde(rename = "TLS.userbuf", default)]
    userbuf: Option<String>,
}

fn decode(usersig: &str) -> Result<SigDoc, SigError> {
    // TLSSigAPIv2 substitutes `+`, `/` and `=`; a sig that still has them was not made by it
    // (and its `+` would turn into a space in a URL that does not escape it). Stricter than
    // Tencent may be, on purpose.
    if !usersig.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'_')) {
        return Err(SigError::Malformed);
    }
    let standard: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let compressed = base64::engine::general_purpose::STANDARD.decode(standard).map_err(|_| SigError::Malformed)?;
    let mut json = Vec::new();
    ZlibDecoder::new(&compressed[..]).take(MAX_INFLATED + 1).read_to_end(&mut json).map_err(|_| SigError::Malformed)?;
    if json.len() as u64 > MAX_INFLATED {
        return Err(SigError::Malformed);
    }
    let doc: SigDoc = serde_json::from_slice(&json).map_err(|_| SigError::Malformed)?;
    if doc.ver != "2.0" {
        return Err(SigError::Malformed);
    }
    Ok(doc)
}

/// The request a UserSig came with, and what the simulator knows about the app.
pub(super) struct SigCheck<'a> {
    pub sdk_app_id: u64,
    pub identifier: &'a str,
    pub secret_key: &'a str,
    pub now: i64,
    /// The `expire_usersig_before` fault: sigs issued before this are refused as expired.
    pub not_before: Option<i64>,
}

/// Returns `TLS.time` of a valid sig.
pub(super) fn verify(usersig: &str, check: &SigCheck<'_>) -> Result<i64, SigError> {
    let doc = decode(usersig)?;
    if doc.sdkappid != check.sdk_app_id {
        return Err(SigError::AppMismatch);
    }
    if doc.identifier != check.identifier {
        return Err(SigError::IdentifierMismatch);
    }
    let mut content = format!(
        "TLS.identifier:{}\nTLS.sdkappid:{}\nTLS.time:{}\nTLS.expire:{}\n",
        doc.identifier, doc.sdkappid, doc.time, doc.expire
    );
    if let Some(userbuf) = &doc.userbuf {
        content.push_str(&format!("TLS.userbuf:{userbuf}\n"));
    }
    let expected = base64::engine::general_purpose::STANDARD.decode(&doc.sig).map_err(|_| SigError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(check.secret_key.as_bytes()).map_err(|_| SigError::BadSignature)?;
    mac.update(content.as_bytes());
    // Constant time.
    mac.verify_slice(&expected).map_err(|_| SigError::BadSignature)?;
    // Valid through TLS.time + TLS.expire inclusive (chosen: the official verifiers differ by a
    // second at most, and no test should live on that edge).
    if doc.expire <= 0 || check.now > doc.time.saturating_add(doc.expire) {
        return Err(SigError::Expired);
    }
    if check.not_before.is_some_and(|t| doc.time < t) {
        return Err(SigError::Expired);
    }
    Ok(doc.time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::ZlibEncoder;
    use std::io::Write as _;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A sig built by hand from a JSON document, so the verifier is tested against the §5.3
    /// vector rather than against another copy of the same encoder.
    fn encode(doc: &serde_json::Value) -> String {
        let mut zlib = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        zlib.write_all(doc.to_string().as_bytes()).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(zlib.finish().unwrap())
            .replace('+', "*")
            .replace('/', "-")
            .replace('=', "_")
    }

    fn vector_doc() -> serde_json::Value {
        serde_json::json!({
            "TLS.ver": "2.0", "TLS.identifier": "administrator", "TLS.sdkappid": 1400000000u64,
            "TLS.expire": 86400, "TLS.time": 1700000000,
            "TLS.sig": "9awWeUL8MxxbBn8dhB0Jvuo0JKIh4dNCLkGIX4n5fd0=",
        })
    }

    fn check(now: i64) -> SigCheck<'static> {
        SigCheck { sdk_app_id: 1_400_000_000, identifier: "administrator", secret_key: KEY, now, not_before: None }
    }

    #[test]
    fn the_protocols_vector_verifies_within_its_lifetime_only() {
        let sig = encode(&vector_doc());
        assert_eq!(verify(&sig, &check(1_700_000_000)), Ok(1_700_000_000));
        assert_eq!(verify(&sig, &check(1_700_086_400)), Ok(1_700_000_000), "last valid second");
        assert_eq!(verify(&sig, &check(1_700_086_401)), Err(SigError::Expired));
    }

    #[test]
    fn mismatches_and_tampering_have_their_codes() {
        let sig = encode(&vector_doc());
        let other_key = SigCheck { secret_key: "another key", ..check(1_700_000_000) };
        assert_eq!(verify(&sig, &other_key), Err(SigError::BadSignature));
        let other_app = SigCheck { sdk_app_id: 1_400_000_001, ..check(1_700_000_000) };
        assert_eq!(verify(&sig, &other_app), Err(SigError::AppMismatch));
        let other_user = SigCheck { identifier: "bob", ..check(1_700_000_000) };
        assert_eq!(verify(&sig, &other_user), Err(SigError::IdentifierMismatch));

        let mut longer = vector_doc();
        longer["TLS.expire"] = 864000.into();
        assert_eq!(verify(&encode(&longer), &check(1_700_000_000)), Err(SigError::BadSignature), "expire is signed");

        let mut v1 = vector_doc();
        v1["TLS.ver"] = "1.0".into();
        assert_eq!(verify(&encode(&v1), &check(1_700_000_000)), Err(SigError::Malformed));
        let mut extra = vector_doc();
        extra["TLS.extra"] = 1.into();
        assert_eq!(verify(&encode(&extra), &check(1_700_000_000)), Err(SigError::Malformed));
        let unsubstituted = sig.replace('*', "+").replace('-', "/").replace('_', "=");
        assert_ne!(unsubstituted, sig, "the vector's sig has a substituted character");
        for garbage in ["", "not base64!", "eJwDAAAAAAE_", &sig[..sig.len() / 2], &unsubstituted] {
            assert_eq!(verify(garbage, &check(1_700_000_000)), Err(SigError::Malformed), "{garbage}");
        }
    }

    #[test]
    fn not_before_refuses_older_sigs_as_expired() {
        let sig = encode(&vector_doc());
        let revoked = SigCheck { not_before: Some(1_700_000_001), ..check(1_700_000_100) };
        assert_eq!(verify(&sig, &revoked), Err(SigError::Expired));
        let same_second = SigCheck { not_before: Some(1_700_000_000), ..check(1_700_000_100) };
        assert_eq!(verify(&sig, &same_second), Ok(1_700_000_000));
    }
}
