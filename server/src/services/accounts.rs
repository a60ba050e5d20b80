//! Browser sign-in: passwords stored as argon2id hashes, browser sessions held in an
//! HttpOnly cookie, the CSRF token that goes with each, and a brake on password guessing.
//!
//! A browser session's secret lives only in the cookie; the database keeps its sha256, as
//! it does for API tokens. The CSRF token is derived from the secret, so a page that can
//! read it (the UI, same origin) proves it is not a cross-site form, and no second table is
//! needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

use crate::storage::{Store, User};

/// How long a browser session signs in without being used again.
pub const WEB_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Failed password attempts allowed per user name in [`FAILURE_WINDOW`] before sign-in
/// for that name is refused for the rest of the window.
const FAILURES_ALLOWED: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Bounds on a password's length, in characters.
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=1024;

/// Why a sign-in failed. Wrong name and wrong password are one case, so that the answer
/// does not tell which names exist.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the name or password is wrong")]
    InvalidCredentials,
    #[error("too many failed sign-ins for this name; try again in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A browser session just made: what the cookie carries and what the page is told.
pub struct WebSession {
    pub user: User,
    /// The cookie's value. Never stored, never sent anywhere but the `Set-Cookie` header.
    pub secret: String,
    pub csrf: String,
}

/// The argon2id hash of a password, with a fresh random salt, in PHC string form.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?
        .to_string())
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Refuses passwords too short to resist guessing, and absurdly long ones.
pub fn check_password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if PASSWORD_CHARS.contains(&chars) {
        Ok(())
    } else {
        Err(format!("a password has {} to {} characters", PASSWORD_CHARS.start(), PASSWORD_CHARS.end()))
    }
}

/// The CSRF token that goes with a browser session's secret.
pub fn csrf_token(secret: &str) -> String {
    hex::encode(Sha256::digest(format!("skillhive-csrf\0{secret}").as_bytes()))
}

fn session_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub struct Accounts {
    store: Arc<dyn Store>,
    /// Failed password sign-ins per name: when the window began, and how many.
    failures: Mutex<HashMap<String, (Instant, u32)>>,
    /// A hash to verify against when the name is unknown, so that an unknown name takes
    /// as long to refuse as a wrong password.
    decoy: String,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>) -> anyhow::Result<Self> {
        Ok(Accounts { store, failures: Mutex::new(HashMap::new()), decoy: hash_password("not a password of anyone")? })
    }

    /// Signs in with a user name and password.
    pub async fn sign_in_with_password(&self, name: &str, password: &str) -> Result<WebSession, SignInError> {
        self.check_throttle(name)?;
        let found = self.store.credentials(name).await?;
        let hash = found.as_ref().and_then(|(_, hash)| hash.clone()).unwrap_or_else(|| self.decoy.clone());
        let password = password.to_string();
        // Argon2 is deliberately slow (tens of milliseconds); it must not hold up the
        // runtime's other requests.
        let verified = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.map_err(anyhow::Error::from)?;
        match found {
            Some((user, Some(_))) if verified => {
                self.failures.lock().expect("sign-in failures").remove(name);
                self.start(user).await
            }
            _ => {
                self.record_failure(name);
                Err(SignInError::InvalidCredentials)
            }
        }
    }

    /// Signs in with an API token (the browser then holds a session, not the token).
    pub async fn sign_in_with_token(&self, token: &str) -> Result<WebSession, SignInError> {
        match self.store.user_by_token(&crate::http::auth::hash_token(token.trim())).await? {
            Some(user) => self.start(user).await,
            None => Err(SignInError::InvalidCredentials),
        }
    }

    async fn start(&self, user: User) -> Result<WebSession, SignInError> {
        let secret = crate::http::auth::new_token();
        let expires = unix_now() + WEB_SESSION_TTL.as_secs() as i64;
        self.store.add_web_session(&user.id, &session_hash(&secret), expires).await?;
        let csrf = csrf_token(&secret);
        Ok(WebSession { user, secret, csrf })
    }

    /// The user a browser session's cookie signs in, while it has not expired or ended.
    pub async fn user_by_cookie(&self, secret: &str) -> anyhow::Result<Option<User>> {
        self.store.user_by_web_session(&session_hash(secret), unix_now()).await
    }

    /// Ends a browser session on the server: its cookie signs in nobody afterwards.
    pub async fn sign_out(&self, secret: &str) -> anyhow::Result<()> {
        self.store.end_web_session(&session_hash(secret)).await?;
        Ok(())
    }

    fn check_throttle(&self, name: &str) -> Result<(), SignInError> {
        let failures = self.failures.lock().expect("sign-in failures");
        if let Some((since, count)) = failures.get(name) {
            let elapsed = since.elapsed();
            if elapsed < FAILURE_WINDOW && *count >= FAILURES_ALLOWED {
                return Err(SignInError::TooManyAttempts { retry_after_secs: (FAILURE_WINDOW - elapsed).as_secs().max(1) });
            }
        }
        Ok(())
    }

    fn record_failure(&self, name: &str) {
        let mut failures = self.failures.lock().expect("sign-in failures");
        // Names that no longer count are dropped, so guessing many names cannot grow
        // the map without bound.
        failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
        let entry = failures.entry(name.to_string()).or_insert((Instant::now(), 0));
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsf", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "each hash has its own salt");
        assert!(check_password("short").is_err() && check_password("long enough").is_ok());
    }
}
