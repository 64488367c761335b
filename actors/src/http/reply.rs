//! Building responses: JSON bodies, the `{"error": ...}` shape every failure uses, and the one
//! body type every response has (a full body, or the event stream).

use std::convert::Infallible;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;

/// The body of every response: a full body, or the event stream of `GET /api/events`.
pub type ApiBody = UnsyncBoxBody<Bytes, Infallible>;

/// Every response the API sends.
pub type ApiResponse = Response<ApiBody>;

/// A response with a complete body.
pub(crate) fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> ApiResponse {
    let mut resp = Response::new(Full::new(body).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `value` as JSON. A value that does not serialize (a map with non-string keys, say) is a
/// bug of ours, answered 500 rather than a panic.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> ApiResponse {
    match serde_json::to_vec(value) {
        Ok(body) => full(status, "application/json", Bytes::from(body)),
        Err(e) => {
            tracing::error!(error = %e, "a response did not serialize");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "response did not serialize",
            )
        }
    }
}

/// `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> ApiResponse {
    let body = json!({ "error": message.to_string() }).to_string();
    full(status, "application/json", Bytes::from(body))
}

/// Adds a header whose value came from us or was checked already; a value that is not a
/// valid header value (it cannot happen for the ones we build) is left out, with a log line.
pub(crate) fn with_header(mut resp: ApiResponse, name: HeaderName, value: &str) -> ApiResponse {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            resp.headers_mut().insert(name, v);
        }
        Err(_) => tracing::error!(header = %name, "a response header value was not valid"),
    }
    resp
}
