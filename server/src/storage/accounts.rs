//! Accounts: passwords, disabled users and browser sessions, and the listing an admin
//! works from. API tokens stay with [`super::Store`]; this is what browser sign-in and
//! account administration add.

use async_trait::async_trait;

use super::User;

/// A user as an admin sees them: never a password hash or a token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
    /// A disabled user is refused by every way in: token, password and browser session.
    pub disabled: bool,
    pub has_password: bool,
    pub created_at: String,
}

/// What an admin may change about a user besides their password and groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChange {
    pub is_admin: Option<bool>,
    pub disabled: Option<bool>,
}

/// An account as every backend reads it: id, name, admin, disabled, has password, created.
pub type AccountRow = (String, String, bool, bool, bool, String);

impl From<AccountRow> for Account {
    fn from((id, name, is_admin, disabled, has_password, created_at): AccountRow) -> Self {
        Account { id, name, is_admin, disabled, has_password, created_at }
    }
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Sets (or, with `None`, removes) a user's password hash and ends their browser
    /// sessions, so that a changed password signs everyone else out. False when there is
    /// no such user.
    async fn set_password(&self, user_id: &str, password_hash: Option<&str>) -> anyhow::Result<bool>;
    /// An enabled user named `name` and their password hash, if they have one.
    async fn credentials(&self, name: &str) -> anyhow::Result<Option<(User, Option<String>)>>;
    /// Every user, by name.
    async fn accounts(&self) -> anyhow::Result<Vec<Account>>;
    async fn account(&self, user_id: &str) -> anyhow::Result<Option<Account>>;
    /// Applies an admin's change; disabling a user also ends their browser sessions and
    /// drops every node's cached tokens. False when there is no such user.
    async fn change_account(&self, user_id: &str, change: &AccountChange) -> anyhow::Result<bool>;
    /// Records a browser session by the sha256 of its cookie's secret.
    async fn add_web_session(&self, user_id: &str, session_hash: &str, expires_at: i64) -> anyhow::Result<()>;
    /// The enabled user behind a browser session that has not expired at `now` (Unix seconds).
    async fn user_by_web_session(&self, session_hash: &str, now: i64) -> anyhow::Result<Option<User>>;
    /// Ends a browser session; false when there was none.
    async fn end_web_session(&self, session_hash: &str) -> anyhow::Result<bool>;
}
