//! Account administration for admins: users (create, disable, make admin, set a
//! password) and their groups. Anyone else gets 403 and learns nothing about other users.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::json::JsonBody;
use crate::http::AppState;
use crate::services::accounts::{check_password, hash_password};
use crate::storage::accounts::{Account, AccountChange};

fn require_admin(user: &AuthUser) -> Result<(), ApiError> {
    if user.0.is_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("account administration is for admins".into()))
    }
}

fn no_user(id: &str) -> ApiError {
    ApiError::NotFound(format!("no user `{id}`"), "user_not_found")
}

/// An account with its groups, as the admin API answers.
async fn account_body(state: &AppState, account: Account) -> Result<Value, ApiError> {
    let groups = state.skills.store.viewer(&account.id).await?.groups;
    let mut body = json!(account);
    body["groups"] = json!(groups);
    Ok(body)
}

async fn account_of(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let account = state.store.account(id).await?.ok_or_else(|| no_user(id))?;
    account_body(state, account).await
}

async fn password_hash(password: &str) -> Result<String, ApiError> {
    check_password(password).map_err(|message| ApiError::bad_request(message, "invalid_value", Some("password")))?;
    let password = password.to_string();
    // Hashing is deliberately slow; it runs off the async workers.
    Ok(tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(anyhow::Error::from)??)
}

/// `GET /api/admin/users`: every user, by name.
pub async fn list_users(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let mut users = Vec::new();
    for account in state.store.accounts().await? {
        users.push(account_body(&state, account).await?);
    }
    Ok(Json(json!({ "users": users })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    #[serde(default)]
    is_admin: bool,
    #[serde(default)]
    password: Option<String>,
}

/// `POST /api/admin/users`: a new user and their first API token, shown this once.
pub async fn create_user(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&user)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("a user name is 1 to 64 characters", "invalid_value", Some("name")));
    }
    // Checked before the user exists, so that a refused password creates nobody.
    let hash = match &body.password {
        Some(password) => Some(password_hash(password).await?),
        None => None,
    };
    let (created, token) = crate::http::auth::create_user_with_token(state.store.as_ref(), name, body.is_admin).await.map_err(|error| {
        match error.downcast::<crate::storage::CreateUserError>() {
            Ok(crate::storage::CreateUserError::NameTaken(name)) => ApiError::Conflict(format!("a user named `{name}` already exists")),
            Ok(other) => ApiError::Internal(other.into()),
            Err(error) => ApiError::Internal(error),
        }
    })?;
    if let Some(hash) = &hash {
        state.store.set_password(&created.id, Some(hash)).await?;
    }
    Ok((StatusCode::CREATED, Json(json!({ "user": account_of(&state, &created.id).await?, "token": token }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    is_admin: Option<bool>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    password: Option<String>,
}

/// `PATCH /api/admin/users/{id}`: make admin or not, disable or enable, set a password.
/// An admin cannot disable themselves or take away their own admin rights: the last
/// admin would lock everyone out of administration.
pub async fn change_user(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UserPatch>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    if id == user.0.id && (body.disabled == Some(true) || body.is_admin == Some(false)) {
        return Err(ApiError::Conflict("you cannot disable yourself or drop your own admin rights".into()));
    }
    state.store.account(&id).await?.ok_or_else(|| no_user(&id))?;
    if let Some(password) = &body.password {
        let hash = password_hash(password).await?;
        state.store.set_password(&id, Some(&hash)).await?;
    }
    let change = AccountChange { is_admin: body.is_admin, disabled: body.disabled };
    if change != AccountChange::default() && !state.store.change_account(&id, &change).await? {
        return Err(no_user(&id));
    }
    state.skills.forget_viewers();
    Ok(Json(account_of(&state, &id).await?))
}

/// `PUT /api/admin/users/{id}/groups/{group}`: adds the user to a group.
pub async fn join_group(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, group)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    state.store.account(&id).await?.ok_or_else(|| no_user(&id))?;
    if !crate::storage::skills::valid_group_name(&group) {
        return Err(ApiError::bad_request("a group name is 1 to 64 letters, digits, `-` or `_`", "invalid_value", Some("group")));
    }
    state.skills.store.add_group_member(&group, &id).await?;
    state.skills.forget_viewers();
    Ok(Json(account_of(&state, &id).await?))
}

/// `DELETE /api/admin/users/{id}/groups/{group}`: takes the user out of a group.
pub async fn leave_group(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, group)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    state.store.account(&id).await?.ok_or_else(|| no_user(&id))?;
    if !state.skills.store.remove_group_member(&group, &id).await? {
        return Err(ApiError::NotFound(format!("the user is not in group `{group}`"), "group_member_not_found"));
    }
    state.skills.forget_viewers();
    Ok(Json(account_of(&state, &id).await?))
}
