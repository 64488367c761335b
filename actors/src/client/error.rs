//! [`ClientError`]: why a client command did not get what it asked for, its exit code, and
//! how a refusal is printed (the server's `error` and every error it listed).

use std::fmt::Write as _;

use reqwest::StatusCode;
use serde_json::Value;

use super::TOKEN_ENV;

/// Why a client command did not get what it asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Wrong input, found before anything was sent (exit 2).
    #[error("{0}")]
    Input(String),
    /// The server could not be reached (exit 3).
    #[error("cannot reach the AgentOS server at {server}: {reason}")]
    Unreachable {
        /// The base URL.
        server: String,
        /// What went wrong, with its causes.
        reason: String,
    },
    /// The server answered, but not like an AgentOS server (exit 3).
    #[error("unexpected answer from {server}: {reason}")]
    BadAnswer {
        /// The base URL.
        server: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The server refused the request: a 4xx or 5xx answer (exit 2).
    #[error("the server refused the request: {status}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The answer's body: JSON `{"error": ..., "errors": [...]}` as the API sends it, or
        /// the raw text as a JSON string.
        body: Value,
        /// Set when the request body was a file sent as it is: error positions are then
        /// positions in that file, and are printed as `FILE:LINE:COL`.
        file: Option<String>,
        /// Whether a token was sent (for the hint on 401).
        token_sent: bool,
    },
    /// Stdout was closed by the reader; stop without a word (exit 0).
    #[error("stdout closed")]
    StdoutClosed,
}

impl ClientError {
    /// The exit code this error ends the command with.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::StdoutClosed => 0,
            ClientError::Input(_) | ClientError::Refused { .. } => 2,
            ClientError::Unreachable { .. } | ClientError::BadAnswer { .. } => 3,
        }
    }

    /// Says that positions in a refusal are positions in `file`.
    pub fn in_file(mut self, path: &str) -> Self {
        if let ClientError::Refused { file, .. } = &mut self {
            *file = Some(path.to_owned());
        }
        self
    }

    /// What to print: `error: ...` and, for a refusal, every error the server listed, then a
    /// hint where one helps. Ends with a newline.
    pub fn report(&self) -> String {
        let ClientError::Refused {
            status,
            body,
            file,
            token_sent,
        } = self
        else {
            return format!("error: {self}\n");
        };
        let mut out = String::new();
        let message = match body {
            Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
            v => v
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    status
                        .canonical_reason()
                        .unwrap_or("no reason given")
                        .to_owned()
                }),
        };
        let _ = writeln!(
            out,
            "error: the server refused the request ({}): {message}",
            status.as_u16()
        );
        for e in body
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(out, "  {}", listed_error(e, file.as_deref()));
        }
        if *status == StatusCode::UNAUTHORIZED {
            let hint = if *token_sent {
                format!("hint: ${TOKEN_ENV} does not hold the token the server expects")
            } else {
                format!("hint: this server needs a bearer token; set ${TOKEN_ENV}")
            };
            let _ = writeln!(out, "{hint}");
        }
        out
    }
}

/// One entry of a refusal's `errors`: `[FILE:LINE:COL: ]ENTITY: MESSAGE`.
fn listed_error(e: &Value, file: Option<&str>) -> String {
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| e.to_string());
    let entity = e
        .get("entity")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let line = e.get("line").and_then(Value::as_u64);
    let col = e.get("col").and_then(Value::as_u64);
    let mut out = String::new();
    // Positions point into the request body; they mean something to the user only when
    // that body was their file, sent as it is.
    if let (Some(f), Some(l)) = (file, line) {
        let _ = write!(out, "{f}:{l}:{}: ", col.unwrap_or(1));
    }
    if let Some(entity) = entity {
        let _ = write!(out, "{entity}: ");
    }
    out.push_str(&message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refusal_prints_the_servers_error_and_every_listed_error() {
        let e = ClientError::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({"error": "workflow has 2 errors", "errors": [
                {"entity": "task \"w/a\"", "message": "agent \"nope\" is not declared", "line": 3, "col": 7},
                {"entity": "", "message": "workflow has no name", "line": null, "col": null},
            ]}),
            file: None,
            token_sent: false,
        }
        .in_file("flow.ron");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.report(),
            "error: the server refused the request (422): workflow has 2 errors\n  \
             flow.ron:3:7: task \"w/a\": agent \"nope\" is not declared\n  \
             workflow has no name\n"
        );
    }

    #[test]
    fn a_401_says_what_to_do_about_the_token() {
        let refused = |token_sent| ClientError::Refused {
            status: StatusCode::UNAUTHORIZED,
            body: json!({"error": "missing bearer token"}),
            file: None,
            token_sent,
        };
        let r = refused(false).report();
        assert!(r.contains("(401): missing bearer token"), "{r}");
        assert!(r.contains("set $AGENTOS_TOKEN"), "{r}");
        assert!(refused(true).report().contains("does not hold the token"));
    }

    #[test]
    fn a_refusal_without_json_shows_the_text_or_the_status() {
        let e = ClientError::Refused {
            status: StatusCode::BAD_GATEWAY,
            body: Value::String("upstream down\n".into()),
            file: None,
            token_sent: false,
        };
        assert_eq!(
            e.report(),
            "error: the server refused the request (502): upstream down\n"
        );
        let e = ClientError::Refused {
            status: StatusCode::NOT_FOUND,
            body: json!({}),
            file: None,
            token_sent: false,
        };
        assert!(e.report().contains("(404): Not Found"), "{}", e.report());
    }
}
