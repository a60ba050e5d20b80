//! API tokens and the `AuthUser` extractor.
//!
//! A token is shown once, when it is made; the database keeps only its sha256, so a
//! leaked database does not leak working tokens.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
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

/// The user behind the request's `Authorization: Bearer` token. Handlers that take it
/// cannot run for anonymous requests.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let hash = token_hash(&parts.headers)?;
        match state.store.user_by_token(&hash).await? {
            Some(user) => {
                state.quotas.admit_request(&user.id)?;
                Ok(AuthUser(user))
            }
            None => Err(ApiError::Unauthorized("the token is not valid")),
        }
    }
}

/// The sha256 of the request's `Authorization: Bearer` token.
pub fn token_hash(headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
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

/// `GET /api/me`: who the caller is: id, name, whether an admin, and their groups.
pub async fn me(
    axum::extract::State(state): axum::extract::State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let viewer = state.skills.viewer(&user.0.id).await?;
    Ok(axum::Json(serde_json::json!({
        "id": user.0.id,
        "name": user.0.name,
        "is_admin": user.0.is_admin,
        "groups": viewer.groups,
    })))
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
