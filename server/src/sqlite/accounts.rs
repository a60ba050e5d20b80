//! [`AccountStore`] on SQLite.

use async_trait::async_trait;

use crate::storage::accounts::{Account, AccountChange, AccountRow, AccountStore};
use crate::storage::{Signal, Store, User};

use super::SqliteStore;

const ACCOUNT_COLUMNS: &str = "id, name, is_admin, disabled != 0, password_hash IS NOT NULL, created_at";

#[async_trait]
impl AccountStore for SqliteStore {
    async fn set_password(&self, user_id: &str, password_hash: Option<&str>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?").bind(password_hash).bind(user_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM web_sessions WHERE user_id = ?").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn credentials(&self, name: &str) -> anyhow::Result<Option<(User, Option<String>)>> {
        let row: Option<(String, String, bool, Option<String>)> =
            sqlx::query_as("SELECT id, name, is_admin, password_hash FROM users WHERE name = ? AND disabled = 0")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, name, is_admin, hash)| (User { id, name, is_admin }, hash)))
    }

    async fn accounts(&self) -> anyhow::Result<Vec<Account>> {
        let rows: Vec<AccountRow> =
            sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM users ORDER BY name")).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Account::from).collect())
    }

    async fn account(&self, user_id: &str) -> anyhow::Result<Option<Account>> {
        let row: Option<AccountRow> =
            sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = ?")).bind(user_id).fetch_optional(&self.pool).await?;
        Ok(row.map(Account::from))
    }

    async fn change_account(&self, user_id: &str, change: &AccountChange) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET is_admin = coalesce(?, is_admin), disabled = coalesce(?, disabled) WHERE id = ?")
            .bind(change.is_admin)
            .bind(change.disabled)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if change.disabled == Some(true) {
            sqlx::query("DELETE FROM web_sessions WHERE user_id = ?").bind(user_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // Cached token lookups carry the old admin flag and the old enabled state.
        self.send_signal(Signal::AuthChanged).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_web_session(&self, user_id: &str, session_hash: &str, expires_at: i64) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO web_sessions (session_hash, user_id, expires_at) VALUES (?, ?, ?)")
            .bind(session_hash)
            .bind(user_id)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn user_by_web_session(&self, session_hash: &str, now: i64) -> anyhow::Result<Option<User>> {
        let row: Option<(String, String, bool)> = sqlx::query_as(
            "SELECT users.id, users.name, users.is_admin FROM web_sessions JOIN users ON users.id = web_sessions.user_id
             WHERE web_sessions.session_hash = ? AND web_sessions.expires_at > ? AND users.disabled = 0",
        )
        .bind(session_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, name, is_admin)| User { id, name, is_admin }))
    }

    async fn end_web_session(&self, session_hash: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE session_hash = ?").bind(session_hash).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
