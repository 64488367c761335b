//! The sim-server's replicas: which one a path addresses, and each one's queue and figures.
//!
//! Replica `i` is served under `/r/{i}/v1/...`; the plain `/v1/...` paths are replica 0, so a
//! client that knows nothing of replicas keeps working. A client with several base URLs
//! (`base_urls: ["http://H:P/r/0/v1", "http://H:P/r/1/v1"]`) reaches distinct replicas, each
//! with its own prefix cache, batch slots and queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use agentos_runtime::kvcache::KvStats;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// What a request path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST .../v1/chat/completions` of a replica.
    Completions(usize),
    /// `GET .../v1/models` of a replica.
    Models(usize),
    /// `GET /healthz`: the whole server.
    Health,
}

impl Endpoint {
    /// The one method the endpoint answers.
    pub fn method(self) -> hyper::Method {
        match self {
            Endpoint::Completions(_) => hyper::Method::POST,
            Endpoint::Models(_) | Endpoint::Health => hyper::Method::GET,
        }
    }
}

/// Most digits accepted in a replica index (the bound is 1024 replicas).
const MAX_INDEX_DIGITS: usize = 6;

/// The endpoint `path` names on a server of `replicas` replicas, or the message of an HTTP
/// 404. Replica indices are plain decimal digits (no sign, no spaces); an index past the last
/// replica is a 404 that says how many there are.
pub fn parse_path(path: &str, replicas: usize) -> Result<Endpoint, String> {
    let routes = "this simulator serves POST /v1/chat/completions, GET /v1/models, \
                  POST /r/{i}/v1/chat/completions, GET /r/{i}/v1/models, GET /healthz";
    let not_found = || format!("no such endpoint: {path} ({routes})");
    let (replica, rest) = match path.strip_prefix("/r/") {
        None => (0, path),
        Some(tail) => {
            let (index, rest) = tail.split_once('/').unwrap_or((tail, ""));
            if index.is_empty()
                || index.len() > MAX_INDEX_DIGITS
                || !index.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!(
                    "no such endpoint: {path} (the replica index must be a number 0..={}; {routes})",
                    replicas.saturating_sub(1)
                ));
            }
            // Up to six ASCII digits always parse.
            let i: usize = index.parse().unwrap_or(usize::MAX);
            if i >= replicas {
                return Err(format!(
                    "no replica {i}: this simulator has {replicas} replica(s), 0..={}",
                    replicas.saturating_sub(1)
                ));
            }
            if rest.is_empty() {
                return Err(not_found());
            }
            (i, &path[path.len() - rest.len() - 1..])
        }
    };
    match rest {
        "/v1/chat/completions" => Ok(Endpoint::Completions(replica)),
        "/v1/models" => Ok(Endpoint::Models(replica)),
        "/healthz" if !path.starts_with("/r/") => Ok(Endpoint::Health),
        _ => Err(not_found()),
    }
}

/// One replica's admission state and counters.
#[derive(Debug)]
pub struct Replica {
    /// `max_concurrent` batch slots; `None` when unlimited.
    pub slots: Option<Semaphore>,
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Requests holding a slot.
    pub in_flight: AtomicUsize,
    /// Chat completions answered with HTTP 200.
    pub served: AtomicU64,
}

impl Replica {
    /// A replica with `max_concurrent` slots (`0`: unlimited).
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            slots: (max_concurrent > 0)
                .then(|| Semaphore::new(max_concurrent.min(Semaphore::MAX_PERMITS))),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// The replica's `/healthz` entry: its queue and, with a prefix cache, its cache figures.
    pub fn health(&self, index: usize, cache: Option<&KvStats>) -> Value {
        let cache = cache.map_or(Value::Null, |s| {
            json!({
                "query_tokens": s.query_tokens,
                "hit_tokens": s.hit_tokens,
                "hit_rate": s.hit_rate(),
                "acquires": s.acquires,
                "evictions": s.evictions,
                "alloc_failures": s.alloc_failures,
                "blocks": {
                    "active": s.active_blocks,
                    "cached": s.cached_blocks,
                    "free": s.free_blocks,
                    "capacity": s.capacity_blocks,
                },
            })
        });
        json!({
            "replica": index,
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "queued": self.queued.load(Ordering::Relaxed),
            "served_total": self.served.load(Ordering::Relaxed),
            "cache": cache,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_replicas_and_bad_indices_are_404_messages() {
        assert_eq!(
            parse_path("/v1/chat/completions", 2),
            Ok(Endpoint::Completions(0))
        );
        assert_eq!(parse_path("/v1/models", 2), Ok(Endpoint::Models(0)));
        assert_eq!(parse_path("/healthz", 2), Ok(Endpoint::Health));
        assert_eq!(
            parse_path("/r/1/v1/chat/completions", 2),
            Ok(Endpoint::Completions(1))
        );
        assert_eq!(parse_path("/r/0/v1/models", 2), Ok(Endpoint::Models(0)));
        let e = parse_path("/r/2/v1/chat/completions", 2).unwrap_err();
        assert!(e.contains("no replica 2") && e.contains("0..=1"), "{e}");
        for bad in [
            "/r//v1/models",
            "/r/+1/v1/models",
            "/r/-1/v1/models",
            "/r/1x/v1/models",
            "/r/ 1/v1/models",
            "/r/99999999999999999999999/v1/models",
            "/r/١/v1/models",
        ] {
            let e = parse_path(bad, 2).unwrap_err();
            assert!(e.contains("replica index must be a number"), "{bad}: {e}");
        }
        for bad in ["/r/1", "/r/1/", "/r/1/healthz", "/r/1/v1", "/v2/x", "/", ""] {
            let e = parse_path(bad, 2).unwrap_err();
            assert!(e.starts_with("no such endpoint"), "{bad}: {e}");
        }
    }
}
