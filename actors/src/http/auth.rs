//! The bearer token. When the server has one, every `/api/*` request must carry
//! `Authorization: Bearer <token>`; `/healthz` and `/metrics` stay open, so probes and
//! Prometheus need no secret.
//!
//! The comparison takes the same time whatever the client sent: every byte of the expected
//! token is compared (with `subtle`, which keeps the compiler from stopping early), a shorter
//! or longer candidate included, so the time tells nothing about how much of a guess was
//! right. Only the token's own length could show, and it is not the secret.

use hyper::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::StatusCode;
use subtle::{Choice, ConstantTimeEq};

use super::reply::{self, ApiResponse};

/// Whether `path` is under the API (and so needs the token, when there is one).
pub(crate) fn guarded(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// `None` when the request may proceed: no token is set, or it carries the right one.
/// Otherwise the 401 to send.
pub(crate) fn check(headers: &HeaderMap, token: Option<&str>) -> Option<ApiResponse> {
    let expected = token?;
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()))
        .unwrap_or_default();
    if bool::from(constant_time_eq(given, expected.as_bytes())) {
        return None;
    }
    let message = if headers.contains_key(AUTHORIZATION) {
        "invalid bearer token"
    } else {
        "this endpoint needs `Authorization: Bearer <token>`"
    };
    Some(reply::with_header(
        reply::error(StatusCode::UNAUTHORIZED, message),
        WWW_AUTHENTICATE,
        "Bearer realm=\"agentos\"",
    ))
}

/// The credentials of a `Bearer` authorization (the scheme is case-insensitive, RFC 9110).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"Bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

/// Whether `given == expected`, in time that depends only on `expected.len()`.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> Choice {
    let mut same = given.len().ct_eq(&expected.len());
    for (i, e) in expected.iter().enumerate() {
        // Past the end of a short candidate, compare against a byte that no token byte can
        // equal (0 is not a valid header byte), so the loop always runs in full.
        let g = given.get(i).copied().unwrap_or(0);
        same &= g.ct_eq(e);
    }
    same
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn equal_only_when_every_byte_and_the_length_match() {
        let ct = |a: &str, b: &str| bool::from(constant_time_eq(a.as_bytes(), b.as_bytes()));
        assert!(ct("s3cret", "s3cret"));
        assert!(!ct("s3creT", "s3cret"));
        assert!(!ct("s3cre", "s3cret"));
        assert!(!ct("s3cretx", "s3cret"));
        assert!(!ct("", "s3cret"));
        assert!(ct("", ""));
    }

    #[test]
    fn no_token_lets_everything_through() {
        assert!(check(&HeaderMap::new(), None).is_none());
        assert!(check(&with_auth("Bearer whatever"), None).is_none());
    }

    #[test]
    fn a_token_needs_the_exact_bearer_header() {
        for good in ["Bearer s3cret", "bearer s3cret", "Bearer  s3cret"] {
            assert!(check(&with_auth(good), Some("s3cret")).is_none(), "{good}");
        }
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret ",
            "Basic s3cret",
            "s3cret",
            "Bearer",
            "Bearer ",
        ] {
            let resp = check(&with_auth(bad), Some("s3cret")).expect(bad);
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad}");
            assert_eq!(resp.headers()[WWW_AUTHENTICATE], "Bearer realm=\"agentos\"");
        }
        assert!(check(&HeaderMap::new(), Some("s3cret")).is_some());
    }

    #[test]
    fn only_the_api_is_guarded() {
        assert!(guarded("/api/workflows"));
        assert!(guarded("/api"));
        assert!(!guarded("/healthz"));
        assert!(!guarded("/metrics"));
        assert!(!guarded("/apiary"));
    }
}
