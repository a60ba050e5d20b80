//! API tokens, browser sign-in, and the `AuthUser` extractor.
//!
//! A token is shown once, when it is made; the database keeps only its sha256, so a
//! leaked database does not leak working tokens. A browser signs in once (password or
//! token) and then holds an HttpOnly, SameSite=Strict cookie: the page's scripts never see
//! a credential, and every write it makes carries the session's CSRF token in a header.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;
use crate::http::AppState;
use crate::storage::{Store, User};

/// Prefix of every token, so that a leaked one is recognizable in logs and scanners.
pub const TOKEN_PREFIX: &str = "sh-";

/// A new random token (256 bits from the OS generator, via two v4 UUIDs).
pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a user with a first token; returns the user and the plain token.
pub async fn create_user_with_token(store: &dyn Store, name: &str, is_admin: bool) -> anyhow::Result<(User, String)> {
    let user = store.create_user(name, is_admin).await?;
    let token = new_token();
    store.add_token(&user.id, &hash_token(&token)).await?;
    Ok((user, token))
}

/// The cookie that holds a browser session's secret.
pub const SESSION_COOKIE: &str = "skillhive_session";
/// The header that carries the browser session's CSRF token on writes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The user behind the request: its `Authorization: Bearer` token, or else its browser
/// session cookie. Handlers that take it cannot run for anonymous requests.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = if parts.headers.contains_key(AUTHORIZATION) {
            let hash = token_hash(&parts.headers)?;
            state.store.user_by_token(&hash).await?.ok_or(ApiError::Unauthorized("the token is not valid"))?
        } else if let Some(secret) = session_cookie(&parts.headers) {
            // A cookie is sent by the browser whoever made the request; a write must show
            // it comes from our own page.
            if !is_safe(&parts.method) {
                check_same_origin(&parts.headers)?;
                let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
                if !constant_time_eq(sent.as_bytes(), crate::services::accounts::csrf_token(&secret).as_bytes()) {
                    return Err(ApiError::CsrfRefused);
                }
            }
            state.accounts.user_by_cookie(&secret).await?.ok_or(ApiError::Unauthorized("the browser session has ended; sign in again"))?
        } else {
            return Err(ApiError::Unauthorized("this endpoint needs `Authorization: Bearer <token>` or a signed-in browser"));
        };
        state.quotas.admit_request(&user.id)?;
        Ok(AuthUser(user))
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Compares two secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a cookie-authenticated write whose `Origin` names another host: a second wall
/// behind SameSite=Strict and the CSRF token. Browsers send `Origin` on every POST.
fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(ApiError::CsrfRefused)
    }
}

/// The browser session secret in the request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE && !c.value().is_empty())
        .map(|c| c.value().to_string())
}

/// The `Set-Cookie` value for a browser session (or, with `None`, one that clears it).
/// `Secure` is added when a TLS proxy in front says the browser used https.
fn session_set_cookie(secret: Option<&str>, headers: &HeaderMap) -> HeaderValue {
    let behind_tls = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let max_age = if secret.is_some() { crate::services::accounts::WEB_SESSION_TTL.as_secs() as i64 } else { 0 };
    let cookie = cookie::Cookie::build((SESSION_COOKIE, secret.unwrap_or_default().to_string()))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .secure(behind_tls)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build();
    HeaderValue::from_str(&cookie.to_string()).expect("a cookie is a valid header value")
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// `POST /api/auth/login`: a name and password, or an API token, for a browser session.
/// The answer sets the session cookie and tells the page who signed in and the CSRF token
/// its writes must carry.
pub async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    crate::http::json::JsonBody(body): crate::http::json::JsonBody<SignIn>,
) -> Result<Response, ApiError> {
    let session = match (body.username, body.password, body.token) {
        (Some(name), Some(password), None) => state.accounts.sign_in_with_password(name.trim(), &password).await?,
        (None, None, Some(token)) => state.accounts.sign_in_with_token(&token).await?,
        _ => return Err(ApiError::bad_request("send either `username` and `password`, or `token`", "invalid_request", None)),
    };
    let mut body = me_body(&state, &session.user).await?;
    body["csrf"] = serde_json::Value::String(session.csrf);
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(SET_COOKIE, session_set_cookie(Some(&session.secret), &headers));
    Ok(response)
}

/// `POST /api/auth/logout`: ends the browser session on the server and clears its cookie.
pub async fn logout(
    axum::extract::State(state): axum::extract::State<AppState>,
    _user: AuthUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(secret) = session_cookie(&headers) {
        state.accounts.sign_out(&secret).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(SET_COOKIE, session_set_cookie(None, &headers));
    Ok(response)
}

async fn me_body(state: &AppState, user: &User) -> Result<serde_json::Value, ApiError> {
    let viewer = state.skills.viewer(&user.id).await?;
    Ok(serde_json::json!({
        "id": user.id,
        "name": user.name,
        "is_admin": user.is_admin,
        "groups": viewer.groups,
    }))
}

/// The sha256 of the request's `Authorization: Bearer` token.
pub fn token_hash(headers: &HeaderMap) -> Result<String, ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized("this endpoint needs `Authorization: Bearer <token>`"))?;
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` works as `Bearer` does.
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized("the Authorization header must be `Bearer <token>`"))?;
    Ok(hash_token(token))
}

/// `GET /api/me`: who the caller is: id, name, whether an admin, and their groups; for a
/// browser session also its CSRF token, so that a reloaded page can write again.
pub async fn me(
    axum::extract::State(state): axum::extract::State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let mut body = me_body(&state, &user.0).await?;
    if !headers.contains_key(AUTHORIZATION) {
        if let Some(secret) = session_cookie(&headers) {
            body["csrf"] = serde_json::Value::String(crate::services::accounts::csrf_token(&secret));
        }
    }
    Ok(axum::Json(body))
}

/// `GET /api/tokens`: the caller's API tokens (their ids and ages, never the tokens).
pub async fn list_tokens(
    axum::extract::State(state): axum::extract::State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    Ok(axum::Json(serde_json::json!({ "tokens": state.store.tokens(&user.0.id).await? })))
}

/// `POST /api/tokens`: a new token for the caller, shown this once.
pub async fn create_token(
    axum::extract::State(state): axum::extract::State<AppState>,
    user: AuthUser,
) -> Result<(axum::http::StatusCode, axum::Json<serde_json::Value>), ApiError> {
    let token = new_token();
    let hash = hash_token(&token);
    state.store.add_token(&user.0.id, &hash).await?;
    let id = &hash[..crate::storage::TOKEN_ID_LEN];
    Ok((axum::http::StatusCode::CREATED, axum::Json(serde_json::json!({ "id": id, "token": token }))))
}

/// `DELETE /api/tokens/{id}`: revokes one of the caller's tokens, on every node at once.
pub async fn revoke_token(
    axum::extract::State(state): axum::extract::State<AppState>,
    user: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    if state.store.revoke_token(&user.0.id, &id).await? {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no token `{id}`"), "token_not_found"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(hash_token(&a).len(), 64);
    }
}
