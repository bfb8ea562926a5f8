//! DingTalk's HTTP push as a [`CallbackCodec`]: the signed query (`signature` or
//! `msg_signature`, `timestamp` or `timeStamp` in milliseconds, `nonce`), the `{"encrypt":…}`
//! body, WXBizMsgCrypt with the owner key as receiver, the six group events, and the encrypted
//! `success` answer; and the inverse, a signed POST for a plaintext event.

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Deserialize;
use std::borrow::Cow;

use super::config::DingtalkTenant;
use super::events::{self, Envelope};
use crate::provider::wxbiz::{CryptoError, WxCrypt};
use crate::provider::{Accepted, CallbackCodec, CallbackError, CallbackRequest, Decoded, Reply, SignedRequest};

/// One HTTP-mode DingTalk tenant's callbacks.
pub struct DingtalkCodec {
    tenant: String,
    crypt: WxCrypt,
    /// Maximum distance between the signed timestamp and now; `None` disables the check.
    window_secs: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("http mode needs token and aes_key (43 characters)")]
pub struct NoCrypto;

impl DingtalkCodec {
    pub fn new(tenant: &DingtalkTenant, window_secs: Option<u64>) -> Result<Self, NoCrypto> {
        Ok(Self { tenant: tenant.tenant.clone(), crypt: tenant.crypt().ok_or(NoCrypto)?, window_secs })
    }

    /// DingTalk signs milliseconds (`1608001896814`).
    fn check_timestamp(&self, timestamp: &str, now_ms: i64) -> Result<(), CallbackError> {
        let Some(window) = self.window_secs else { return Ok(()) };
        let ts: i64 = timestamp.parse().map_err(|_| CallbackError::StaleTimestamp)?;
        if ts.abs_diff(now_ms) > window.saturating_mul(1000) {
            return Err(CallbackError::StaleTimestamp);
        }
        Ok(())
    }

    /// The answer DingTalk expects: `success`, encrypted and signed like a push.
    fn success(&self, now_ms: i64) -> Reply {
        let signed = signed_body(&self.crypt, b"success", now_ms);
        let body = serde_json::json!({
            "msg_signature": signed.signature,
            "timeStamp": signed.timestamp,
            "nonce": signed.nonce,
            "encrypt": signed.encrypt,
        });
        Reply { content_type: "application/json", body: body.to_string().into_bytes() }
    }
}

fn crypto_error(e: CryptoError) -> CallbackError {
    match e {
        CryptoError::BadSignature => CallbackError::Unauthorized(e.to_string()),
        CryptoError::ReceiveIdMismatch => CallbackError::WrongReceiver("owner key does not match".into()),
        other => CallbackError::Malformed(other.to_string()),
    }
}

/// The signed query; both spellings DingTalk has used are accepted (protocols.md §4.1).
#[derive(Debug, Default)]
struct SignedQuery<'q> {
    signature: Option<Cow<'q, str>>,
    timestamp: Option<Cow<'q, str>>,
    nonce: Option<Cow<'q, str>>,
}

impl<'q> SignedQuery<'q> {
    fn parse(raw: Option<&'q str>) -> Self {
        let mut q = Self::default();
        for pair in raw.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            if value.is_empty() {
                continue;
            }
            let slot = match name {
                "signature" | "msg_signature" => &mut q.signature,
                "timestamp" | "timeStamp" => &mut q.timestamp,
                "nonce" => &mut q.nonce,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        q
    }

    fn parts(&self) -> Result<(&str, &str, &str), CallbackError> {
        let missing = |name: &str| CallbackError::Unauthorized(format!("missing query parameter {name}"));
        Ok((
            self.signature.as_deref().ok_or_else(|| missing("signature"))?,
            self.timestamp.as_deref().ok_or_else(|| missing("timestamp"))?,
            self.nonce.as_deref().ok_or_else(|| missing("nonce"))?,
        ))
    }
}

#[derive(Deserialize)]
struct Body {
    encrypt: String,
}

/// Parses the `{"encrypt":"…"}` envelope.
pub fn parse_envelope(body: &[u8]) -> Result<String, CallbackError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| CallbackError::Malformed(format!("envelope: {e}")))?;
    if body.encrypt.is_empty() {
        return Err(CallbackError::Malformed("envelope: empty encrypt".into()));
    }
    Ok(body.encrypt)
}

/// The verified signature (40 hex digits) as its 20 bytes.
fn signature_digest(sig: &str) -> [u8; 20] {
    let mut digest = [0u8; 20];
    let _ = hex::decode_to_slice(sig, &mut digest);
    digest
}

impl CallbackCodec for DingtalkCodec {
    fn accept(&self, request: &CallbackRequest<'_>) -> Result<Accepted, CallbackError> {
        let q = SignedQuery::parse(request.query);
        let (sig, ts, nonce) = q.parts()?;
        self.check_timestamp(ts, request.now_ms)?;
        let encrypted = parse_envelope(request.body)?;
        let plain = self.crypt.verify_and_decrypt(sig, ts, nonce, &encrypted).map_err(crypto_error)?;
        let object = events::object(&plain).map_err(|e| CallbackError::BadEvent(e.to_string()))?;
        let reply = self.success(request.now_ms);
        if events::payload_type(&object) == Some("check_url") {
            return Ok(Accepted { decoded: Decoded::Handshake, reply, replay_id: None });
        }
        let decoded = events::decode(&self.tenant, Envelope::default(), &object, request.now_ms)
            .map_err(|e| CallbackError::BadEvent(e.to_string()))?;
        Ok(Accepted { decoded, reply, replay_id: Some(signature_digest(sig)) })
    }

    fn encode(&self, plaintext: &[u8], now_ms: i64) -> SignedRequest {
        sign(&self.crypt, plaintext, now_ms)
    }
}

struct Signed {
    signature: String,
    timestamp: String,
    nonce: String,
    encrypt: String,
}

fn signed_body(crypt: &WxCrypt, plaintext: &[u8], now_ms: i64) -> Signed {
    let encrypt = crypt.encrypt(plaintext);
    let timestamp = now_ms.to_string();
    let nonce: String = rand::thread_rng().sample_iter(&Alphanumeric).take(8).map(char::from).collect();
    let signature = crypt.signature(&timestamp, &nonce, &encrypt);
    Signed { signature, timestamp, nonce, encrypt }
}

/// DingTalk's POST for a plaintext event signed at `now_ms`.
pub fn sign(crypt: &WxCrypt, plaintext: &[u8], now_ms: i64) -> SignedRequest {
    let s = signed_body(crypt, plaintext, now_ms);
    SignedRequest {
        query: vec![("signature".into(), s.signature), ("timestamp".into(), s.timestamp), ("nonce".into(), s.nonce)],
        body: serde_json::json!({ "encrypt": s.encrypt }).to_string().into_bytes(),
        content_type: "application/json",
    }
}

/// A Stream-mode tenant without HTTP crypto: its events come over the WebSocket, and a POST to
/// its callback route can carry no valid signature.
pub struct StreamOnly;

impl CallbackCodec for StreamOnly {
    fn accept(&self, _request: &CallbackRequest<'_>) -> Result<Accepted, CallbackError> {
        Err(CallbackError::Unauthorized("a stream-mode tenant without token and aes_key takes no HTTP pushes".into()))
    }

    fn encode(&self, plaintext: &[u8], _now_ms: i64) -> SignedRequest {
        SignedRequest { query: Vec::new(), body: plaintext.to_vec(), content_type: "application/json" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Change, ChatRef, Method};
    use serde_json::Value;

    fn vector() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dingtalk/crypto_vector.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn tenant(v: &Value, window: Option<u64>) -> DingtalkCodec {
        let toml = format!(
            "tenant = \"acme-dt\"\napp_key = \"{}\"\napp_secret = \"s\"\nmode = \"http\"\ntoken = \"{}\"\naes_key = \"{}\"\nallow_documented_test_key = true",
            v["owner_key"].as_str().unwrap(),
            v["token"].as_str().unwrap(),
            v["aes_key"].as_str().unwrap()
        );
        let t: DingtalkTenant = toml::from_str(&toml).unwrap();
        DingtalkCodec::new(&t, window).unwrap()
    }

    fn request<'a>(query: &'a str, body: &'a [u8], now_ms: i64) -> CallbackRequest<'a> {
        CallbackRequest { method: Method::Post, query: Some(query), body, now_ms }
    }

    #[test]
    fn the_official_vector_is_a_url_check() {
        let v = vector();
        let codec = tenant(&v, Some(300));
        let ts: i64 = v["timeStamp"].as_str().unwrap().parse().unwrap();
        let body = serde_json::json!({ "encrypt": v["encrypt"] }).to_string();
        for query in [
            format!(
                "signature={}&timestamp={ts}&nonce={}",
                v["signature"].as_str().unwrap(),
                v["nonce"].as_str().unwrap()
            ),
            format!(
                "msg_signature={}&timeStamp={ts}&nonce={}",
                v["signature"].as_str().unwrap(),
                v["nonce"].as_str().unwrap()
            ),
        ] {
            let accepted = codec.accept(&request(&query, body.as_bytes(), ts + 1000)).unwrap();
            assert_eq!(accepted.decoded, Decoded::Handshake);
            assert_eq!(accepted.replay_id, None);
            // The answer decrypts to `success` and carries a valid signature.
            let reply: Value = serde_json::from_slice(&accepted.reply.body).unwrap();
            let crypt =
                WxCrypt::new("mryue", v["aes_key"].as_str().unwrap(), v["owner_key"].as_str().unwrap()).unwrap();
            let plain = crypt
                .verify_and_decrypt(
                    reply["msg_signature"].as_str().unwrap(),
                    reply["timeStamp"].as_str().unwrap(),
                    reply["nonce"].as_str().unwrap(),
                    reply["encrypt"].as_str().unwrap(),
                )
                .unwrap();
            assert_eq!(plain, "success");
            assert_eq!(accepted.reply.content_type, "application/json");
        }
        // Ten minutes later the same request is stale.
        let query = format!(
            "signature={}&timestamp={ts}&nonce={}",
            v["signature"].as_str().unwrap(),
            v["nonce"].as_str().unwrap()
        );
        let stale = codec.accept(&request(&query, body.as_bytes(), ts + 600_000));
        assert_eq!(stale.unwrap_err(), CallbackError::StaleTimestamp);
    }

    #[test]
    fn encoded_events_decode_and_bad_input_is_refused() {
        let v = vector();
        let codec = tenant(&v, Some(300));
        let now = 1_700_000_000_000;
        let event = include_bytes!("../../../fixtures/dingtalk/chat_remove_member.pascal.json");
        let signed = codec.encode(event, now);
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&signed.query).finish();
        let accepted = codec.accept(&request(&query, &signed.body, now)).unwrap();
        let Decoded::Change(Change { chat, reports, .. }) = accepted.decoded else { panic!() };
        assert_eq!(chat, ChatRef::Id("chat691a41db53b100115bec3603472d78a9".into()));
        assert_eq!(reports[0].members, ["011505184066774889"]);
        assert!(accepted.replay_id.is_some());

        let tampered = query.replace("signature=", "signature=0");
        assert_eq!(codec.accept(&request(&tampered, &signed.body, now)).unwrap_err().status(), 401);
        assert_eq!(codec.accept(&request("timestamp=1&nonce=2", &signed.body, now)).unwrap_err().status(), 401);
        let malformed = codec.accept(&request(&query, b"{\"Encrypt\":1}", now)).unwrap_err();
        assert!(matches!(malformed, CallbackError::Malformed(_)), "{malformed:?}");

        // Signed with the same token and key for another app: the owner key differs.
        let other = WxCrypt::new("mryue", v["aes_key"].as_str().unwrap(), "dingotherapp").unwrap();
        let signed = sign(&other, event, now);
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&signed.query).finish();
        let wrong = codec.accept(&request(&query, &signed.body, now)).unwrap_err();
        assert!(matches!(wrong, CallbackError::WrongReceiver(_)), "{wrong:?}");

        // Signed and encrypted, but not an event.
        let signed = codec.encode(b"not json", now);
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&signed.query).finish();
        assert!(matches!(codec.accept(&request(&query, &signed.body, now)), Err(CallbackError::BadEvent(_))));

        // Another event type: answered, not queued.
        let signed = codec.encode(br#"{"EventType":"user_add_org","UserId":["u"]}"#, now);
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&signed.query).finish();
        let ignored = codec.accept(&request(&query, &signed.body, now)).unwrap();
        assert_eq!(ignored.decoded, Decoded::Ignored { kind: "user_add_org".into() });
    }
}
