//! `GET /api/audit`: the store's audit log (see [`agentos_runtime::store::audit`]) for this
//! run or another run of the same data directory.
//!
//! Query parameters, all optional: `run` (default: the run this server runs), `agent`,
//! `task` (`workflow/task`), `since` (an age such as `10m`, `2h`, `7d`, or an RFC 3339 time),
//! `limit` (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]; the newest entries). A bad
//! parameter is a 400 naming it; an unknown run a 404.
//!
//! The read runs on a blocking thread with its own connection to the store file: SQLite may
//! wait on the writer's lock (up to its busy timeout), and no actor thread may block on that.

use std::time::{SystemTime, UNIX_EPOCH};

use agentos_runtime::store::audit::parse_since;
use agentos_runtime::store::{AuditEntry, AuditQuery, Store, StoreError};
use hyper::StatusCode;
use serde_json::json;

use super::reply::{self, ApiResponse};
use super::sse::parse_query;
use super::{ApiRequest, HttpState};

/// Entries answered when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most entries one request may ask for.
pub const MAX_LIMIT: usize = 10_000;
/// Longest parameter value, in bytes.
const MAX_VALUE_BYTES: usize = 256;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads the query string (`now_ms` anchors a relative `since`); `run` stays `None` when not
/// given.
pub(crate) fn read_query(query: &str, now_ms: i64) -> Result<AuditQuery, String> {
    let mut q = AuditQuery {
        limit: DEFAULT_LIMIT,
        ..AuditQuery::default()
    };
    for (k, v) in parse_query(query)? {
        if v.is_empty() || v.len() > MAX_VALUE_BYTES {
            let shown: String = k.chars().take(64).collect();
            return Err(format!(
                "query parameter {shown:?} must be 1 to {MAX_VALUE_BYTES} bytes long"
            ));
        }
        match k.as_str() {
            "run" => q.run = Some(v),
            "agent" => q.agent = Some(v),
            "task" => {
                if !v.contains('/') {
                    return Err(format!(
                        "task {v:?}: name a task as workflow/task (e.g. fix/plan)"
                    ));
                }
                q.task = Some(v);
            }
            "since" => {
                q.since_ms = Some(parse_since(&v, now_ms).map_err(|e| format!("since: {e}"))?)
            }
            "limit" => {
                q.limit = v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit must be a whole number from 1 to {MAX_LIMIT}"))?;
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(format!(
                    "unknown query parameter {shown:?}; use run, agent, task, since or limit"
                ));
            }
        }
    }
    Ok(q)
}

/// What the blocking read found.
enum Read {
    Entries(String, Vec<AuditEntry>),
    NoRun(String),
    NoStore,
}

fn read_store(state: &HttpState, mut q: AuditQuery) -> Result<Read, StoreError> {
    if !state.store_path.is_file() {
        return Ok(Read::NoStore);
    }
    let store = Store::open(&state.store_path)?;
    let run = q.run.take().unwrap_or_else(|| state.run_id.clone());
    if store.run(&run)?.is_none() {
        return Ok(Read::NoRun(run));
    }
    q.run = Some(run.clone());
    Ok(Read::Entries(run, store.audit(&q)?))
}

/// `GET /api/audit`.
pub(crate) async fn audit(req: &ApiRequest, state: &HttpState) -> ApiResponse {
    let params = match read_query(req.query.as_deref().unwrap_or_default(), now_ms()) {
        Ok(p) => p,
        Err(why) => return reply::error(StatusCode::BAD_REQUEST, why),
    };
    let for_read = state.clone();
    let read = tokio::task::spawn_blocking(move || read_store(&for_read, params)).await;
    match read {
        Ok(Ok(Read::Entries(run, entries))) => reply::json(
            StatusCode::OK,
            &json!({"run": run, "count": entries.len(), "entries": entries}),
        ),
        Ok(Ok(Read::NoRun(run))) => reply::error(
            StatusCode::NOT_FOUND,
            format!("no run {run:?} in the store {}", state.store_path.display()),
        ),
        Ok(Ok(Read::NoStore)) => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no store at {}", state.store_path.display()),
        ),
        Ok(Err(e)) => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the audit log could not be read: {e}"),
        ),
        Err(e) => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the audit read did not finish: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_validated_with_clear_messages() {
        let p = read_query("run=r1&agent=a&task=w%2Ft&since=10m&limit=5", 1_000_000).unwrap();
        assert_eq!(
            p,
            AuditQuery {
                run: Some("r1".into()),
                agent: Some("a".into()),
                task: Some("w/t".into()),
                since_ms: Some(400_000),
                limit: 5,
            }
        );
        assert_eq!(read_query("", 0).unwrap().limit, DEFAULT_LIMIT);
        let err = |q: &str| read_query(q, 0).unwrap_err();
        assert!(err("limit=0").contains("limit"));
        assert!(err("limit=10001").contains("1 to 10000"));
        assert!(err("limit=x").contains("limit"));
        assert!(err("since=soon").contains("since"));
        assert!(err("task=plan").contains("workflow/task"));
        assert!(err("agent=").contains("1 to 256"));
        assert!(err("wokrflow=x").contains("unknown query parameter"));
        assert!(err("agent=%FF").contains("UTF-8"));
    }
}
