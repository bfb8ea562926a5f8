//! Reading a vendor API's answer, the same way for every provider: bounded in size (a proxy or a
//! vendor having a bad moment must not make groupwatch buffer without limit), and never with
//! the URL in an error (URLs carry access tokens, app secrets and UserSigs).

use super::ApiError;

/// A failed request, without its URL: retry later.
pub fn transport(e: reqwest::Error) -> ApiError {
    ApiError::Transient(e.without_url().to_string())
}

/// The answer's JSON body; bodies over `limit` bytes are refused (transient) without being
/// buffered.
pub async fn read_json(
    mut resp: reqwest::Response,
    api_name: &str,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    let too_large = || ApiError::Transient(format!("{api_name}: answer larger than {limit} bytes"));
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::Transient(format!("{api_name}: unexpected answer: {e}")))
}
