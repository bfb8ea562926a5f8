//! The read API: who is in a group now, its event history, and which groups a member is in,
//! answered from the store (snapshots, the outbox kept as history, and the members index that
//! `commit` keeps in the snapshot's transaction). Mounted on the ops listener only, behind
//! `Authorization: Bearer` tokens from `[api] tokens`; with no token configured it is not
//! mounted at all (404). Described in `schema/api.openapi.yaml`.
//!
//! Handlers are thin: authenticate, parse the path and query, build the view (`view`), answer.
//! Errors are fixed strings: nothing of the request is echoed.

pub mod cli;
pub mod retention;
pub mod view;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::core::model::{GroupKey, Provider};
use crate::store::SnapshotStore;
use view::{ViewError, DEFAULT_LIMIT};

/// Longest chat id, userid or cursor accepted (WeCom's are under 64 bytes).
pub const MAX_ID_BYTES: usize = 256;

/// Why a request is refused, by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Send a valid token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// Nothing to ask again: the provider or group is not known.
    #[error("{0}")]
    NotFound(&'static str),
    /// Fix the request; the reason is one line.
    #[error("{0}")]
    BadRequest(&'static str),
    /// Retry later.
    #[error("store unavailable, retry later")]
    Unavailable,
    /// Not the caller's fault; retrying will not help.
    #[error("internal error")]
    Internal,
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Unavailable(source) => {
                tracing::warn!(error = %source, "read API: store unavailable");
                ApiError::Unavailable
            }
            ViewError::Failed(source) => {
                tracing::error!(error = %source, "read API: store error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        match self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The accepted tokens, kept as SHA-256 digests: comparing digests of equal length in constant
/// time tells nothing about a token's length or prefix.
#[derive(Clone)]
pub struct Tokens(Arc<Vec<[u8; 32]>>);

impl Tokens {
    pub fn new(tokens: &[Secret]) -> Self {
        Self(Arc::new(tokens.iter().map(|t| Sha256::digest(t.expose().as_bytes()).into()).collect()))
    }

    /// Whether `presented` is one of the tokens; every token is compared, whichever matches.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = subtle::Choice::from(0);
        for token in self.0.iter() {
            found |= token.ct_eq(&digest);
        }
        found.into()
    }
}

#[derive(Clone)]
struct ApiState {
    store: Arc<dyn SnapshotStore>,
}

/// The `/v1` routes, or `None` when no token is configured (the API is off).
pub fn router(store: Arc<dyn SnapshotStore>, tokens: &[Secret]) -> Option<Router> {
    if tokens.is_empty() {
        return None;
    }
    let tokens = Tokens::new(tokens);
    Some(
        Router::new()
            .route("/v1/groups/{provider}/{tenant}", get(list_groups))
            .route("/v1/groups/{provider}/{tenant}/{chat_id}", get(group))
            .route("/v1/groups/{provider}/{tenant}/{chat_id}/events", get(events))
            .route("/v1/members/{provider}/{tenant}/{userid}/groups", get(member_groups))
            .route_layer(middleware::from_fn_with_state(tokens, authenticate))
            .with_state(ApiState { store }),
    )
}

/// Checked before anything else, so an unauthenticated caller learns nothing, not even whether
/// a group exists.
async fn authenticate(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110), the token is not.
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if tokens.accepts(token) => next.run(request).await,
        _ => {
            metrics::counter!("groupwatch_api_unauthorized_total").increment(1);
            ApiError::Unauthorized.into_response()
        }
    }
}

fn provider(name: &str) -> Result<Provider, ApiError> {
    Provider::parse(name).ok_or(ApiError::NotFound("unknown provider (expected wecom, dingtalk or tim)"))
}

fn tenant(name: &str) -> Result<&str, ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(name)
    } else {
        Err(ApiError::BadRequest("tenant must match [a-z0-9_-]{1,64}"))
    }
}

fn id<'a>(value: &'a str, bad: &'static str) -> Result<&'a str, ApiError> {
    if value.is_empty() || value.len() > MAX_ID_BYTES || value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(bad));
    }
    Ok(value)
}

/// The query parameters of the paged routes. Unknown parameters are refused rather than
/// ignored: a misspelt `limit` would silently page differently.
#[derive(Debug, Default, PartialEq, Eq)]
struct Page {
    after_seq: i64,
    cursor: String,
    limit: i64,
}

impl Page {
    fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut page = Page { limit: DEFAULT_LIMIT, ..Default::default() };
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(ApiError::BadRequest(if allowed.contains(&"after_seq") {
                    "unknown query parameter (allowed: after_seq, limit)"
                } else {
                    "unknown query parameter (allowed: cursor, limit)"
                }));
            }
            match name.as_ref() {
                "after_seq" => {
                    page.after_seq = value
                        .parse()
                        .ok()
                        .filter(|n: &i64| *n >= 0)
                        .ok_or(ApiError::BadRequest("after_seq must be an integer >= 0"))?;
                }
                "limit" => {
                    // Above the maximum is capped, not refused: the answer says where to go on.
                    let limit: u64 = value
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or(ApiError::BadRequest("limit must be an integer >= 1"))?;
                    page.limit = limit.min(view::MAX_LIMIT as u64) as i64;
                }
                "cursor" => {
                    if value.len() > MAX_ID_BYTES {
                        return Err(ApiError::BadRequest("cursor is too long"));
                    }
                    page.cursor = value.into_owned();
                }
                _ => unreachable!("checked against allowed"),
            }
        }
        Ok(page)
    }
}

async fn group(
    State(api): State<ApiState>,
    Path((p, t, chat)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let key = GroupKey::new(provider(&p)?, tenant(&t)?, id(&chat, "chat_id must be 1 to 256 bytes")?);
    let found = view::group(&api.store, &key).await?.ok_or(ApiError::NotFound("no such group"))?;
    Ok(Json(found).into_response())
}

async fn events(
    State(api): State<ApiState>,
    Path((p, t, chat)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let key = GroupKey::new(provider(&p)?, tenant(&t)?, id(&chat, "chat_id must be 1 to 256 bytes")?);
    let page = Page::parse(query.as_deref(), &["after_seq", "limit"])?;
    let found =
        view::events(&api.store, &key, page.after_seq, page.limit).await?.ok_or(ApiError::NotFound("no such group"))?;
    Ok(Json(found).into_response())
}

async fn member_groups(
    State(api): State<ApiState>,
    Path((p, t, userid)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (provider, tenant) = (provider(&p)?, tenant(&t)?);
    let userid = id(&userid, "userid must be 1 to 256 bytes")?;
    let page = Page::parse(query.as_deref(), &["cursor", "limit"])?;
    let found = view::member_groups(&api.store, provider, tenant, userid, &page.cursor, page.limit).await?;
    Ok(Json(found).into_response())
}

async fn list_groups(
    State(api): State<ApiState>,
    Path((p, t)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (provider, tenant) = (provider(&p)?, tenant(&t)?);
    let page = Page::parse(query.as_deref(), &["cursor", "limit"])?;
    let found = view::groups(&api.store, provider, tenant, &page.cursor, page.limit).await?;
    Ok(Json(found).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let tokens = Tokens::new(&[Secret::new("0123456789abcdef-one"), Secret::new("0123456789abcdef-two")]);
        assert!(tokens.accepts("0123456789abcdef-one") && tokens.accepts("0123456789abcdef-two"));
        for wrong in ["", "0123456789abcdef-on", "0123456789abcdef-one ", "0123456789ABCDEF-one", "x"] {
            assert!(!tokens.accepts(wrong), "{wrong:?}");
        }
        assert!(!Tokens::new(&[]).accepts(""));
    }

    #[test]
    fn paging_parameters() {
        let events = |q: &str| Page::parse(Some(q), &["after_seq", "limit"]);
        assert_eq!(events("").unwrap(), Page { after_seq: 0, cursor: String::new(), limit: DEFAULT_LIMIT });
        assert_eq!(events("after_seq=7&limit=3").unwrap(), Page { after_seq: 7, cursor: String::new(), limit: 3 });
        assert_eq!(events("limit=99999999999999999999").unwrap_err().to_string(), "limit must be an integer >= 1");
        assert_eq!(events("limit=5000").unwrap().limit, view::MAX_LIMIT, "capped");
        for bad in ["after_seq=-1", "after_seq=x", "limit=0", "limit=-3", "cursor=a", "after_sq=1"] {
            let err = events(bad).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{bad}: {err}");
            assert!(!err.to_string().contains('\n'));
        }
        let lists = |q: &str| Page::parse(Some(q), &["cursor", "limit"]);
        assert_eq!(lists("cursor=wr%2F1&limit=2").unwrap(), Page { after_seq: 0, cursor: "wr/1".into(), limit: 2 });
        assert!(lists("after_seq=1").is_err());
        assert!(lists(&format!("cursor={}", "a".repeat(MAX_ID_BYTES + 1))).is_err());
    }

    #[test]
    fn errors_are_classified_by_what_the_caller_should_do() {
        use crate::store::StoreError;
        let busy = ApiError::from(ViewError::from(StoreError::Database(sqlx::Error::PoolTimedOut))).into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1", "retry later");
        let broken = ApiError::from(ViewError::from(StoreError::Database(sqlx::Error::RowNotFound))).into_response();
        assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!broken.headers().contains_key(header::RETRY_AFTER), "retrying will not help");
        let denied = ApiError::Unauthorized.into_response();
        assert_eq!(
            (denied.status(), &denied.headers()[header::WWW_AUTHENTICATE]),
            (StatusCode::UNAUTHORIZED, &HeaderValue::from_static("Bearer"))
        );
    }

    #[test]
    fn path_values() {
        assert!(provider("wecom").is_ok() && provider("tim").is_ok() && provider("dingtalk").is_ok());
        assert!(matches!(provider("slack"), Err(ApiError::NotFound(_))));
        assert!(tenant("acme_2-x").is_ok());
        for bad in ["", "Acme", "a b", &"a".repeat(65)] {
            assert!(matches!(tenant(bad), Err(ApiError::BadRequest(_))), "{bad}");
        }
        assert!(id("wr/odd id", "bad").is_ok());
        assert!(id("", "bad").is_err() && id("a\nb", "bad").is_err() && id(&"x".repeat(257), "bad").is_err());
    }
}
