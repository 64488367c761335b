//! What `serve` (and `run --metrics-addr`) settle before the system boots, and say once it
//! listens: the API token, the rule that only loopback addresses may go without one, and the
//! start-up banner.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;

use agentos_runtime::config::Config;

/// The API's bearer token, and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ApiToken {
    /// The environment variable named (by the flag or the config), if any.
    pub(super) var: Option<String>,
    /// Its value, if set and not empty.
    pub(super) value: Option<String>,
}

/// Finds the API token for a listener on `addr`: the variable named by `flag`, else by
/// `runtime.api.token_env`. Without a token, only loopback addresses are allowed (exit 2
/// otherwise, with what to do about it).
pub(super) fn api_token(
    cfg: &Config,
    flag: Option<&str>,
    addr: SocketAddr,
) -> Result<ApiToken, ExitCode> {
    let var = flag.or(cfg.runtime.api.token_env.as_deref());
    let token = resolve_token(var, |v| std::env::var_os(v)).map_err(|why| {
        eprintln!("error: {why}");
        ExitCode::from(2)
    })?;
    check_listen(addr, &token).map_err(|why| {
        eprintln!("error: {why}");
        ExitCode::from(2)
    })?;
    if let (Some(var), None) = (&token.var, &token.value) {
        eprintln!("warning: ${var} is unset or empty: the API requires no token (loopback only)");
    }
    Ok(token)
}

/// Reads the token from `var` through `lookup` (the environment). An unset or empty
/// variable is no token; one that is not UTF-8, or names no variable, is an error.
fn resolve_token(
    var: Option<&str>,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<ApiToken, String> {
    let Some(var) = var else {
        return Ok(ApiToken::default());
    };
    if var.is_empty() || var.contains('=') || var.contains('\0') {
        return Err(format!(
            "--token-env must name an environment variable, got {var:?}"
        ));
    }
    let value = match lookup(var) {
        None => None,
        Some(v) => match v.into_string() {
            Ok(s) if s.is_empty() => None,
            Ok(s) => Some(s),
            Err(_) => return Err(format!("${var} (the API token) is not valid UTF-8")),
        },
    };
    Ok(ApiToken {
        var: Some(var.to_owned()),
        value,
    })
}

/// Refuses a non-loopback address without a token: anyone who can reach it could submit
/// work, cancel workflows and kill agents.
fn check_listen(addr: SocketAddr, token: &ApiToken) -> Result<(), String> {
    if addr.ip().is_loopback() || token.value.is_some() {
        return Ok(());
    }
    let why = match &token.var {
        Some(var) => format!("${var} is unset or empty"),
        None => "no token is configured".to_owned(),
    };
    Err(format!(
        "refusing to listen on {addr} without an API token ({why}): anyone who can reach that \
         address could submit workflows, cancel them and kill agents.\n  \
         Set one, e.g. `export AGENTOS_API_TOKEN=$(openssl rand -hex 32)`, and pass \
         `--token-env AGENTOS_API_TOKEN` (or set `runtime: (api: (token_env: \"AGENTOS_API_TOKEN\"))` \
         in the config); clients send it from $AGENTOS_TOKEN.\n  \
         Or listen on a loopback address such as 127.0.0.1:{}.",
        addr.port()
    ))
}

/// What `serve` prints after its `listening on http://ADDR` line: where the API is, whether
/// it needs a token, what runs, and how to submit more.
pub(super) fn serve_banner(cfg: &Config, listen: SocketAddr, token: &ApiToken) -> String {
    let server = if listen.port() == 0 {
        match listen.ip() {
            std::net::IpAddr::V4(ip) => format!("http://{ip}:PORT` (PORT as printed above)"),
            std::net::IpAddr::V6(ip) => format!("http://[{ip}]:PORT` (PORT as printed above)"),
        }
    } else {
        format!("http://{listen}`")
    };
    let auth = match (&token.var, &token.value) {
        (Some(var), Some(_)) => format!(
            "a bearer token is required on /api/* (the value of ${var}): send \
             `Authorization: Bearer <token>`; the CLI sends $AGENTOS_TOKEN"
        ),
        _ => "no token required (loopback only; set one with --token-env VAR or \
              runtime.api.token_env)"
            .to_owned(),
    };
    let tasks: usize = cfg.workflows.iter().map(|w| w.tasks.len()).sum();
    format!(
        "api: /api/ (workflows, tasks, agents, events; OpenAPI document at /api/openapi.json), \
         /metrics, /healthz\n\
         auth: {auth}\n\
         workflows: {} declared ({tasks} tasks); submit more with \
         `agentos submit FILE --server {server}; stop with SIGINT/SIGTERM\n",
        cfg.workflows.len()
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn lookup(name: &'static str, value: &'static str) -> impl Fn(&str) -> Option<OsString> {
        move |v| (v == name).then(|| OsString::from(value))
    }

    #[test]
    fn the_token_comes_from_the_named_variable_and_empty_counts_as_unset() {
        let t = resolve_token(Some("TOK"), lookup("TOK", "s3cret")).unwrap();
        assert_eq!(t.var.as_deref(), Some("TOK"));
        assert_eq!(t.value.as_deref(), Some("s3cret"));
        let t = resolve_token(Some("TOK"), lookup("TOK", "")).unwrap();
        assert_eq!(t.value, None);
        let t = resolve_token(Some("OTHER"), lookup("TOK", "s3cret")).unwrap();
        assert_eq!(t.value, None);
        assert_eq!(
            resolve_token(None, lookup("TOK", "x")).unwrap(),
            ApiToken::default()
        );
        assert!(resolve_token(Some("A=B"), lookup("TOK", "x")).is_err());
        assert!(resolve_token(Some(""), lookup("TOK", "x")).is_err());
    }

    #[test]
    fn the_flag_names_the_variable_before_the_config() {
        let cfg = Config::parse(
            r#"(version: 1, runtime: (api: (token_env: "FROM_CONFIG")))"#,
            "t.ron",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(cfg.runtime.api.token_env.as_deref(), Some("FROM_CONFIG"));
        let flag: Option<&str> = Some("FROM_FLAG");
        assert_eq!(
            flag.or(cfg.runtime.api.token_env.as_deref()),
            Some("FROM_FLAG")
        );
    }

    #[test]
    fn off_loopback_a_token_is_required() {
        let any: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        let none = ApiToken::default();
        let e = check_listen(any, &none).unwrap_err();
        assert!(e.contains("0.0.0.0:9464 without an API token"), "{e}");
        assert!(
            e.contains("--token-env") && e.contains("127.0.0.1:9464"),
            "{e}"
        );
        let unset = ApiToken {
            var: Some("TOK".into()),
            value: None,
        };
        assert!(check_listen(any, &unset)
            .unwrap_err()
            .contains("$TOK is unset"));
        let set = ApiToken {
            var: Some("TOK".into()),
            value: Some("x".into()),
        };
        assert!(check_listen(any, &set).is_ok());
        for local in ["127.0.0.1:0", "[::1]:9464", "127.0.0.2:1"] {
            assert!(
                check_listen(local.parse().unwrap(), &none).is_ok(),
                "{local}"
            );
        }
        assert!(check_listen("[::]:9464".parse().unwrap(), &none).is_err());
    }

    #[test]
    fn the_banner_says_where_the_api_is_and_whether_it_needs_a_token() {
        let cfg = Config::parse("(version: 1)", "t.ron", Path::new(".")).unwrap();
        let b = serve_banner(
            &cfg,
            "127.0.0.1:9464".parse().unwrap(),
            &ApiToken::default(),
        );
        assert!(b.contains("no token required"), "{b}");
        assert!(b.contains("--server http://127.0.0.1:9464"), "{b}");
        assert!(b.contains("0 declared (0 tasks)"), "{b}");
        let token = ApiToken {
            var: Some("TOK".into()),
            value: Some("s3cr3t-value".into()),
        };
        let b = serve_banner(&cfg, "0.0.0.0:0".parse().unwrap(), &token);
        assert!(
            b.contains("bearer token is required") && b.contains("$TOK"),
            "{b}"
        );
        assert!(
            b.contains("--server http://0.0.0.0:PORT` (PORT as printed above)"),
            "{b}"
        );
        assert!(
            !b.contains("s3cr3t-value"),
            "the banner must not print the token: {b}"
        );
    }
}
