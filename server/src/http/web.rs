//! The browser UI: the files of `web/` compiled into the binary and served at `/` by their
//! paths, and the security headers every response carries.
//!
//! The UI is plain ES modules with no build step, so what is in `web/` is what the browser
//! runs. Its scripts are files, never inline, which lets the Content-Security-Policy
//! refuse every inline script: model, tool and skill text that slipped into the page as
//! HTML could still not run.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{ETAG, IF_NONE_MATCH};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use include_dir::{include_dir, Dir};
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;

static WEB: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../web");

/// Sent with every response. `connect-src 'self'` keeps the page from sending anything
/// (a token included) to another origin; `frame-ancestors 'none'` stops clickjacking.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The bytes of one embedded UI file.
pub fn file(path: &str) -> Option<&'static [u8]> {
    WEB.get_file(path).map(|f| f.contents())
}

/// One embedded file, revalidated by its hash: a browser asks again on each load and gets
/// a 304 while the binary (and so the file) is the same.
fn serve(path: &str, request: &Request) -> Option<Response> {
    let file = WEB.get_file(path)?;
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(file.contents()))[..32]);
    let fresh = request.headers().get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { Body::from(file.contents()).into_response() };
    let headers = response.headers_mut();
    headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(ETAG, HeaderValue::from_str(&etag).expect("hex is a valid header value"));
    Some(response)
}

/// What no route matched: a UI file for a GET of its path (`/` is `index.html`), else the
/// API's JSON not-found.
pub async fn file_or_not_found(request: Request) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        let path = request.uri().path().trim_start_matches('/');
        let path = if path.is_empty() { "index.html" } else { path };
        // API paths never fall back to the UI: a mistyped endpoint stays a JSON 404.
        if !path.starts_with("api/") && !path.starts_with("v1/") {
            if let Some(response) = serve(path, &request) {
                return response;
            }
        }
    }
    ApiError::NotFound("no such endpoint".into(), "unknown_endpoint").into_response()
}

/// Adds the security headers to every response, the API's included.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}
