//! WeCom's callbacks as a [`CallbackCodec`]: the signed query (`msg_signature`, `timestamp`,
//! `nonce`), the XML envelope, WXBizMsgCrypt, the `change_external_chat` event, the `success`
//! answer; and the inverse, a signed POST for a plaintext event.

use rand::Rng;
use std::borrow::Cow;

use super::callback::{dedupable, dedupe_key, report_of};
use super::config::WecomTenant;
use super::xml::{self, Callback};
use crate::provider::wxbiz::{CryptoError, WxCrypt};
use crate::provider::{
    Accepted, CallbackCodec, CallbackError, CallbackRequest, Change, ChatRef, Decoded, Method, Reply, SignedRequest,
};

/// One WeCom tenant's callbacks.
pub struct WecomCodec {
    tenant: String,
    crypt: WxCrypt,
    /// A third-party (suite) callback's `AuthCorpId` must name this corp: the receive id is then
    /// the suite's, shared by every corp that installed it.
    corp_id: String,
    /// Maximum distance between the signed `timestamp` and now; `None` disables the check.
    window_secs: Option<u64>,
}

impl WecomCodec {
    pub fn new(tenant: &WecomTenant, window_secs: Option<u64>) -> Result<Self, CryptoError> {
        Ok(Self { tenant: tenant.tenant.clone(), crypt: tenant.crypt()?, corp_id: tenant.corp_id.clone(), window_secs })
    }

    /// Refuses a replayed (or badly clocked) request before any crypto work.
    fn check_timestamp(&self, timestamp: &str, now_ms: i64) -> Result<(), CallbackError> {
        let Some(window) = self.window_secs else { return Ok(()) };
        let ts: i64 = timestamp.parse().map_err(|_| CallbackError::StaleTimestamp)?;
        if ts.abs_diff(now_ms / 1000) > window {
            return Err(CallbackError::StaleTimestamp);
        }
        Ok(())
    }
}

fn crypto_error(e: CryptoError) -> CallbackError {
    match e {
        CryptoError::BadSignature => CallbackError::Unauthorized(e.to_string()),
        CryptoError::ReceiveIdMismatch => CallbackError::WrongReceiver(e.to_string()),
        other => CallbackError::Malformed(other.to_string()),
    }
}

/// WeCom's echostr decrypts to a short decimal string (`1616140317555161061`); allow a little
/// more (letters, up to 64 characters) but nothing that could be a message: no markup, no spaces.
fn is_echostr(plain: &str) -> bool {
    (1..=64).contains(&plain.len()) && plain.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The verified `msg_signature` (40 lower-case hex digits) as its 20 bytes.
fn signature_digest(sig: &str) -> [u8; 20] {
    let mut digest = [0u8; 20];
    // Verified just before: it is 40 hex digits.
    let _ = hex::decode_to_slice(sig, &mut digest);
    digest
}

/// The signed query parameters. Parsed by hand: a form decoder would turn a literal `+` of a
/// base64 `echostr` into a space and break the signature.
#[derive(Debug, Default)]
struct SignedQuery<'q> {
    msg_signature: Option<Cow<'q, str>>,
    timestamp: Option<Cow<'q, str>>,
    nonce: Option<Cow<'q, str>>,
    echostr: Option<Cow<'q, str>>,
}

impl<'q> SignedQuery<'q> {
    /// Borrows from the raw query; only a percent-encoded value is copied.
    fn parse(raw: Option<&'q str>) -> Self {
        let mut q = Self::default();
        for pair in raw.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            match name {
                "msg_signature" => q.msg_signature = Some(value),
                "timestamp" => q.timestamp = Some(value),
                "nonce" => q.nonce = Some(value),
                "echostr" => q.echostr = Some(value),
                _ => {}
            }
        }
        q
    }

    /// A parameter's value; WeCom never sends an empty one.
    fn present<'a>(field: &'a Option<Cow<'q, str>>) -> Option<&'a str> {
        field.as_deref().filter(|v| !v.is_empty())
    }

    /// (msg_signature, timestamp, nonce); a missing one is a missing signature.
    fn signature_parts(&self) -> Result<(&str, &str, &str), CallbackError> {
        let missing = |name: &str| CallbackError::Unauthorized(format!("missing query parameter {name}"));
        Ok((
            Self::present(&self.msg_signature).ok_or_else(|| missing("msg_signature"))?,
            Self::present(&self.timestamp).ok_or_else(|| missing("timestamp"))?,
            Self::present(&self.nonce).ok_or_else(|| missing("nonce"))?,
        ))
    }
}

impl CallbackCodec for WecomCodec {
    fn accept(&self, request: &CallbackRequest<'_>) -> Result<Accepted, CallbackError> {
        let q = SignedQuery::parse(request.query);
        let (sig, ts, nonce) = q.signature_parts()?;
        self.check_timestamp(ts, request.now_ms)?;
        if request.method == Method::Get {
            let echostr = SignedQuery::present(&q.echostr)
                .ok_or_else(|| CallbackError::Malformed("missing query parameter echostr".into()))?;
            let plain = self.crypt.verify_and_decrypt(sig, ts, nonce, echostr).map_err(crypto_error)?;
            if !is_echostr(&plain) {
                return Err(CallbackError::NotHandshake);
            }
            let reply = Reply { content_type: "text/plain", body: plain.into_bytes() };
            return Ok(Accepted { decoded: Decoded::Handshake, reply, replay_id: None });
        }
        let body =
            std::str::from_utf8(request.body).map_err(|_| CallbackError::Malformed("body is not UTF-8".into()))?;
        let encrypted = xml::parse_envelope(body).map_err(|e| CallbackError::Malformed(format!("envelope: {e}")))?;
        let plain = self.crypt.verify_and_decrypt(sig, ts, nonce, &encrypted).map_err(crypto_error)?;
        let decoded = match xml::parse_callback(&plain).map_err(|e| CallbackError::BadEvent(e.to_string()))? {
            Callback::Other { kind } => Decoded::Ignored { kind },
            Callback::ChangeExternalChat(ev) => {
                if ev.auth_corp_id.as_ref().is_some_and(|corp| *corp != self.corp_id) {
                    return Err(CallbackError::WrongReceiver(
                        "AuthCorpId of the event is not the tenant's corp_id".into(),
                    ));
                }
                Decoded::Change(Change {
                    chat: ChatRef::Id(ev.chat_id.clone()),
                    aliases: Vec::new(),
                    reports: vec![report_of(&ev)],
                    key: dedupe_key(&self.tenant, &ev),
                    dedupe: dedupable(&ev),
                })
            }
        };
        let reply = Reply { content_type: "text/plain", body: b"success".to_vec() };
        Ok(Accepted { decoded, reply, replay_id: Some(signature_digest(sig)) })
    }

    fn encode(&self, plaintext: &[u8], now_ms: i64) -> SignedRequest {
        sign(&self.crypt, plaintext, now_ms / 1000)
    }
}

/// WeCom's POST for a plaintext event signed at `timestamp` (unix seconds): the `<xml>` envelope
/// and the signed query.
pub fn sign(crypt: &WxCrypt, plaintext: &[u8], timestamp: i64) -> SignedRequest {
    let encrypted = crypt.encrypt(plaintext);
    let timestamp = timestamp.to_string();
    let nonce = rand::thread_rng().gen_range(1_000_000_000u64..10_000_000_000).to_string();
    let signature = crypt.signature(&timestamp, &nonce, &encrypted);
    let body = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>",
        crypt.receive_id()
    );
    SignedRequest {
        query: vec![("msg_signature".into(), signature), ("timestamp".into(), timestamp), ("nonce".into(), nonce)],
        body: body.into_bytes(),
        content_type: "text/xml",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_literal_plus_and_decodes_percent() {
        let q = SignedQuery::parse(Some("msg_signature=ab&timestamp=1&nonce=2&echostr=a+b%2Fc%3D%3D"));
        assert_eq!(q.echostr.as_deref(), Some("a+b/c=="));
        assert_eq!(q.signature_parts().unwrap(), ("ab", "1", "2"));
    }

    #[test]
    fn echostr_shape() {
        assert!(is_echostr("1616140317555161061"));
        assert!(is_echostr("abcXYZ09"));
        for bad in ["", "<xml></xml>", "12 34", "1616140317555161061\n", &"9".repeat(65), "１２"] {
            assert!(!is_echostr(bad), "{bad:?}");
        }
    }

    #[test]
    fn missing_signature_is_401() {
        let q = SignedQuery::parse(Some("timestamp=1&nonce=2"));
        assert_eq!(q.signature_parts().unwrap_err().status(), 401);
    }
}
