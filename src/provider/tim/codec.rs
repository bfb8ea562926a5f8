//! Tencent IM's callbacks as a [`CallbackCodec`]: the query (`SdkAppid`, `CallbackCommand`,
//! `Sign`, `RequestTime`, ...), the JSON body, the `{"ActionStatus":"OK",...}` answer; and the
//! inverse, a signed POST for a plaintext body.
//!
//! `Sign` = hex(sha256(callback_token + RequestTime)) authenticates only the token and the time,
//! not the body (Tencent's design, protocols.md §5.1): it is required here, compared in constant
//! time, and `RequestTime` must be within 60 s of now.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::callback::{self, Callback};
use super::config::TimTenant;
use crate::config::Secret;
use crate::provider::{
    Accepted, CallbackCodec, CallbackError, CallbackRequest, Change, ChatRef, Decoded, Method, Reply, SignedRequest,
};

/// Tencent's anti-replay rule: refuse a `RequestTime` more than this far from now.
pub const MAX_SKEW_SECS: u64 = 60;

/// What Tencent expects back from an after-callback.
pub const REPLY: &[u8] = br#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;

/// One Tencent IM tenant's callbacks.
pub struct TimCodec {
    tenant: String,
    sdk_app_id: u64,
    token: Secret,
    /// `None` disables the time check (`http.allow_replay`, for replaying old captures).
    window_secs: Option<u64>,
}

/// `hex(sha256(token + request_time))`, lower case.
pub fn sign(token: &str, request_time: &str) -> String {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(request_time.as_bytes());
    hex::encode(h.finalize())
}

#[derive(Default)]
struct Query {
    sdk_app_id: Option<String>,
    command: Option<String>,
    sign: Option<String>,
    request_time: Option<String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        let mut q = Self::default();
        for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let slot = match name.as_ref() {
                "SdkAppid" => &mut q.sdk_app_id,
                "CallbackCommand" => &mut q.command,
                "Sign" => &mut q.sign,
                "RequestTime" => &mut q.request_time,
                _ => continue,
            };
            // The first occurrence wins: a second `Sign` appended by a proxy changes nothing.
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        q
    }
}

impl TimCodec {
    /// `window_secs`: the configured timestamp window (`None`: checks off); Tencent's own 60 s
    /// applies when it is larger.
    pub fn new(tenant: &TimTenant, window_secs: Option<u64>) -> Self {
        Self {
            tenant: tenant.tenant.clone(),
            sdk_app_id: tenant.sdk_app_id,
            token: tenant.callback_token.clone(),
            window_secs: window_secs.map(|w| w.min(MAX_SKEW_SECS)),
        }
    }

    fn verify(&self, q: &Query, now_ms: i64) -> Result<(), CallbackError> {
        let sig = q.sign.as_deref().filter(|s| !s.is_empty());
        let time = q.request_time.as_deref().filter(|s| !s.is_empty());
        let (Some(sig), Some(time)) = (sig, time) else {
            return Err(CallbackError::Unauthorized("missing Sign or RequestTime".into()));
        };
        let expected = sign(self.token.expose(), time);
        if !bool::from(expected.as_bytes().ct_eq(sig.to_ascii_lowercase().as_bytes())) {
            return Err(CallbackError::Unauthorized("Sign does not match".into()));
        }
        if let Some(window) = self.window_secs {
            let at: i64 = time.parse().map_err(|_| CallbackError::StaleTimestamp)?;
            if at.abs_diff(now_ms / 1000) > window {
                return Err(CallbackError::StaleTimestamp);
            }
        }
        Ok(())
    }
}

/// Identifies this exact request: `Sign` alone repeats for every callback of one second.
fn replay_id(q: &Query, body: &[u8]) -> [u8; 20] {
    let mut h = Sha256::new();
    for part in [&q.sign, &q.request_time, &q.sdk_app_id, &q.command] {
        h.update(part.as_deref().unwrap_or_default().as_bytes());
        h.update([0x1f]);
    }
    h.update(body);
    let mut id = [0u8; 20];
    id.copy_from_slice(&h.finalize()[..20]);
    id
}

impl CallbackCodec for TimCodec {
    fn accept(&self, request: &CallbackRequest<'_>) -> Result<Accepted, CallbackError> {
        if request.method != Method::Post {
            return Err(CallbackError::Malformed("Tencent IM callbacks are POSTs".into()));
        }
        let q = Query::parse(request.query);
        self.verify(&q, request.now_ms)?;
        let app = q.sdk_app_id.as_deref().unwrap_or_default();
        if app.parse::<u64>().ok() != Some(self.sdk_app_id) {
            return Err(CallbackError::WrongReceiver(format!("SdkAppid {app:?} is not the tenant's")));
        }
        let decoded = match callback::parse(request.body, q.command.as_deref()) {
            Ok(Callback::Other { command }) => Decoded::Ignored { kind: command },
            Ok(Callback::Group(g)) => Decoded::Change(Change {
                chat: ChatRef::Id(g.group_id.clone()),
                aliases: Vec::new(),
                key: callback::dedupe_key(&self.tenant, &g),
                dedupe: callback::dedupable(&g),
                reports: g.reports,
            }),
            Err(e @ callback::ParseError::Json(_)) => return Err(CallbackError::Malformed(e.to_string())),
            Err(e) => return Err(CallbackError::BadEvent(e.to_string())),
        };
        let reply = Reply { content_type: "application/json", body: REPLY.to_vec() };
        Ok(Accepted { decoded, reply, replay_id: Some(replay_id(&q, request.body)) })
    }

    fn encode(&self, plaintext: &[u8], now_ms: i64) -> SignedRequest {
        sign_request(self.sdk_app_id, self.token.expose(), plaintext, now_ms / 1000)
    }
}

/// Tencent's POST for a callback body, signed at `request_time` (Unix seconds). The
/// `CallbackCommand` is taken from the body.
pub fn sign_request(sdk_app_id: u64, token: &str, body: &[u8], request_time: i64) -> SignedRequest {
    let command = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("CallbackCommand").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let time = request_time.to_string();
    SignedRequest {
        query: vec![
            ("SdkAppid".into(), sdk_app_id.to_string()),
            ("CallbackCommand".into(), command),
            ("contenttype".into(), "json".into()),
            ("ClientIP".into(), "127.0.0.1".into()),
            ("OptPlatform".into(), "RESTAPI".into()),
            ("Sign".into(), sign(token, &time)),
            ("RequestTime".into(), time),
        ],
        body: body.to_vec(),
        content_type: "application/json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::report::ReportKind;

    const APP: u64 = 1_400_000_000;
    const NOW_MS: i64 = 1_700_000_000_000;

    fn tenant() -> TimTenant {
        toml::from_str(&format!(
            r#"tenant = "acme-im"
            sdk_app_id = {APP}
            identifier = "administrator"
            secret_key = "key"
            callback_token = "xxxxyyyy""#
        ))
        .unwrap()
    }

    fn codec() -> TimCodec {
        TimCodec::new(&tenant(), Some(300))
    }

    fn query_string(q: &[(String, String)]) -> String {
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish()
    }

    fn accept(codec: &TimCodec, query: &str, body: &[u8], now_ms: i64) -> Result<Accepted, CallbackError> {
        codec.accept(&CallbackRequest { method: Method::Post, query: Some(query), body, now_ms })
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/tim/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_documented_sign_example() {
        assert_eq!(sign("xxxxyyyy", "1669872112"), "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061");
    }

    #[test]
    fn encoded_fixtures_are_accepted_with_the_ok_reply() {
        let c = codec();
        let body = fixture("after_member_exit.json");
        let signed = c.encode(&body, NOW_MS);
        let accepted = accept(&c, &query_string(&signed.query), &signed.body, NOW_MS + 30_000).unwrap();
        assert_eq!(accepted.reply.body, REPLY);
        let Decoded::Change(change) = accepted.decoded else { panic!() };
        assert_eq!(change.chat, ChatRef::Id("@TGS#2J4SZEAEL".into()));
        assert_eq!(change.reports[0].kind, ReportKind::MembersLeft);
        assert_eq!(change.reports[0].quit_scene, Some(1));
        assert!(change.dedupe);
        assert!(accepted.replay_id.is_some());
    }

    #[test]
    fn refusals() {
        let c = codec();
        let body = fixture("after_new_member_join.json");
        let signed = c.encode(&body, NOW_MS);
        let mut q = signed.query.clone();
        let set = |q: &mut Vec<(String, String)>, k: &str, v: &str| {
            q.iter_mut().find(|(n, _)| n == k).unwrap().1 = v.into();
        };
        let status =
            |q: &[(String, String)], body: &[u8], now: i64| accept(&c, &query_string(q), body, now).unwrap_err();

        set(&mut q, "Sign", &"0".repeat(64));
        assert!(matches!(status(&q, &body, NOW_MS), CallbackError::Unauthorized(_)));
        let without: Vec<_> = signed.query.iter().filter(|(n, _)| n != "Sign").cloned().collect();
        assert_eq!(status(&without, &body, NOW_MS).status(), 401);
        assert_eq!(status(&signed.query, &body, NOW_MS + 61_000), CallbackError::StaleTimestamp);
        assert_eq!(status(&signed.query, &body, NOW_MS - 61_000), CallbackError::StaleTimestamp);
        let mut q = signed.query.clone();
        set(&mut q, "SdkAppid", "1400000001");
        assert!(matches!(status(&q, &body, NOW_MS), CallbackError::WrongReceiver(_)));
        assert_eq!(status(&signed.query, b"{not json", NOW_MS).status(), 400);
        assert!(matches!(
            status(&signed.query, br#"{"GroupId":"g","EventTime":1}"#, NOW_MS),
            CallbackError::BadEvent(_)
        ));
        let get = c.accept(&CallbackRequest {
            method: Method::Get,
            query: Some(&query_string(&signed.query)),
            body: b"",
            now_ms: NOW_MS,
        });
        assert_eq!(get.unwrap_err().status(), 400);
    }

    #[test]
    fn the_window_is_at_most_sixty_seconds_and_can_be_off() {
        let body = fixture("after_new_member_join.json");
        let off = TimCodec::new(&tenant(), None);
        let signed = off.encode(&body, NOW_MS);
        assert!(accept(&off, &query_string(&signed.query), &body, NOW_MS + 3_600_000).is_ok());
        let narrow = TimCodec::new(&tenant(), Some(10));
        assert!(accept(&narrow, &query_string(&signed.query), &body, NOW_MS + 11_000).is_err());
    }

    #[test]
    fn other_commands_are_answered_and_ignored() {
        let c = codec();
        let body = br#"{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":"g","EventTime":1}"#;
        let signed = c.encode(body, NOW_MS);
        let accepted = accept(&c, &query_string(&signed.query), body, NOW_MS).unwrap();
        assert_eq!(accepted.decoded, Decoded::Ignored { kind: "Group.CallbackAfterSendMsg".into() });
        assert_eq!(accepted.reply.body, REPLY);
    }

    #[test]
    fn replay_ids_differ_for_two_callbacks_of_one_second() {
        let c = codec();
        let a = c.encode(&fixture("after_new_member_join.json"), NOW_MS);
        let b = c.encode(&fixture("after_member_exit.json"), NOW_MS);
        let id = |s: &SignedRequest| accept(&c, &query_string(&s.query), &s.body, NOW_MS).unwrap().replay_id;
        assert_eq!(a.query.iter().find(|(n, _)| n == "Sign"), b.query.iter().find(|(n, _)| n == "Sign"));
        assert_ne!(id(&a), id(&b));
        assert_eq!(id(&a), id(&a));
    }
}
