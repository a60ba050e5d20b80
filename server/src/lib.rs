//! The skillhive server, in layers that only point down:
//!
//! - `http`: the routers, one per resource, the `AppState` they share, errors as JSON;
//! - `services`: what sits between HTTP and storage (quotas and metered engines, ...);
//! - `storage`: the storage traits and their domain types, knowing no SQL driver;
//! - `sqlite`, `postgres`: one backend per database, each owning its SQL and migrations;
//! - `database`: the one place that picks a backend (from the database URL);
//! - `cli`, `config`: the binary's commands and settings; `sync_client`: the client side.
//!
//! `http::app(state)` builds the router apart from `main`, so tests drive it in-process;
//! `cli::run_server(config, listener, shutdown)` is the whole server, which the `serve`
//! command runs on its address and its signals, and tests run in-process.

pub mod cli;
pub mod config;
pub mod database;
pub mod http;
pub mod postgres;
pub mod rl_commands;
pub mod services;
pub mod sqlite;
pub mod storage;
pub mod sync_client;
pub mod testing;

/// Helpers for the in-process API tests.
#[cfg(test)]
pub(crate) mod test_support {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    /// Sends one request to the router as the holder of `token`; the reply's status and
    /// JSON body (`Null` when the body is not JSON).
    pub async fn request(router: &axum::Router, token: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let builder = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
        let request = match body {
            Some(body) => builder.header("content-type", "application/json").body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}
