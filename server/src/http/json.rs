//! The one JSON body extractor: every malformed body becomes the same clear `ApiError`
//! (400, code `invalid_json`, with what serde found), and an oversized one a 413.
//! It does not insist on a `Content-Type`, so that `curl -d` works as users expect.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;

/// A request body parsed as JSON into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// `bytes` as JSON into `T`, or the error a client is sent.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"), "invalid_json", None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn a_malformed_body_is_a_400_that_says_what_is_wrong() {
        for (bytes, says) in [(&b"{"[..], "EOF"), (b"{\"name\": 3}", "invalid type"), (b"{}", "missing field `name`")] {
            match parse::<Body>(bytes) {
                Err(ApiError::BadRequest { message, code, .. }) => {
                    assert_eq!(code, "invalid_json");
                    assert!(message.contains(says), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(parse::<Body>(b"{\"name\": \"a\"}").is_ok());
    }
}
