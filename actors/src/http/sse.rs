//! `GET /api/events`: the trace as Server-Sent Events.
//!
//! Each event is `id: N`, `event: <kind>`, `data: <the trace's JSON line>`. The stream:
//! 1. resumes after `Last-Event-ID` (header, as browsers send it on reconnect) or the
//!    `last_event_id` query parameter: the events after it that the trace's window still
//!    holds come first (`0` replays the whole window). Without either, the whole window comes
//!    first too (what the server still holds), then the live events;
//! 2. says `event: lagged` with `{"missed": n}` (and no id, so a client's last id stays its
//!    last real event) when events were lost: older than the window at resumption, or
//!    overwritten because this client read too slowly;
//! 3. sends a `: keep-alive` comment line after every quiet [`HttpState::keep_alive`];
//! 4. ends when the server shuts down or the trace is closed.
//!
//! Filters (query parameters, all optional, combined with "and"): `workflow` (the event's
//! `workflow` field, else the workflow part of its `task`), `task` (`wf/task`, or a bare task
//! id: within `workflow` if given, else in any workflow), `agent` (the event's `agent` field,
//! else the agent part of its `instance`). An event without the field a filter asks about does
//! not pass that filter.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use agentos_runtime::trace::{Subscription, TraceEvent};
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::reply::{self, ApiResponse};
use super::{ApiRequest, HttpState};

/// Most query parameters read; more is a 400.
const MAX_QUERY_PAIRS: usize = 16;
/// Longest filter value, in bytes.
const MAX_FILTER_BYTES: usize = 256;

/// Which events a client wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Workflow id.
    pub workflow: Option<String>,
    /// `wf/task` or a bare task id.
    pub task: Option<String>,
    /// Agent name.
    pub agent: Option<String>,
}

impl EventFilter {
    fn is_empty(&self) -> bool {
        self.workflow.is_none() && self.task.is_none() && self.agent.is_none()
    }

    /// Whether the trace line `line` passes every filter.
    pub fn matches(&self, line: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        let field = |name: &str| v.get(name).and_then(Value::as_str);
        let task = field("task");
        if let Some(want) = &self.workflow {
            let workflow =
                field("workflow").or_else(|| task.and_then(|t| t.split_once('/')).map(|(w, _)| w));
            if workflow != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(want) = &self.task {
            let Some(task) = task else { return false };
            let pass = if want.contains('/') {
                task == want
            } else {
                match (&self.workflow, task.split_once('/')) {
                    (Some(w), _) => {
                        task.strip_prefix(w.as_str())
                            .and_then(|r| r.strip_prefix('/'))
                            == Some(want)
                    }
                    (None, Some((_, id))) => id == want,
                    (None, None) => task == want,
                }
            };
            if !pass {
                return false;
            }
        }
        if let Some(want) = &self.agent {
            let agent = field("agent")
                .or_else(|| field("instance").map(|i| i.split('#').next().unwrap_or(i)));
            if agent != Some(want.as_str()) {
                return false;
            }
        }
        true
    }
}

/// Decodes an `application/x-www-form-urlencoded` query: `+` is a space, `%XX` a byte.
pub(super) fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_QUERY_PAIRS {
            return Err(format!("more than {MAX_QUERY_PAIRS} query parameters"));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "a query parameter is not UTF-8 once percent-decoded".to_owned())
        };
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

/// The filter and the `last_event_id` of a query.
fn read_query(query: &str) -> Result<(EventFilter, Option<u64>), String> {
    let mut filter = EventFilter::default();
    let mut last = None;
    for (k, v) in parse_query(query)? {
        if v.is_empty() || v.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "query parameter {k:?} must be 1 to {MAX_FILTER_BYTES} bytes long"
            ));
        }
        let slot = match k.as_str() {
            "workflow" => &mut filter.workflow,
            "task" => &mut filter.task,
            "agent" => &mut filter.agent,
            "last_event_id" => {
                last = Some(parse_id(&v)?);
                continue;
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(format!(
                    "unknown query parameter {shown:?}; use workflow, task, agent or last_event_id"
                ));
            }
        };
        *slot = Some(v);
    }
    Ok((filter, last))
}

fn parse_id(v: &str) -> Result<u64, String> {
    v.trim()
        .parse()
        .map_err(|_| "an event id is a non-negative integer".to_owned())
}

/// `GET /api/events`.
pub(crate) fn events(req: &ApiRequest, state: &HttpState) -> ApiResponse {
    let (filter, query_last) = match read_query(req.query.as_deref().unwrap_or_default()) {
        Ok(x) => x,
        Err(why) => return reply::error(StatusCode::BAD_REQUEST, why),
    };
    let header_last = match req.headers.get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => match parse_id(v) {
            Ok(id) => Some(id),
            Err(why) => {
                return reply::error(StatusCode::BAD_REQUEST, format!("Last-Event-ID: {why}"))
            }
        },
        Some(Err(_)) => {
            return reply::error(StatusCode::BAD_REQUEST, "Last-Event-ID: not visible ASCII")
        }
    };
    let Some(sub) = state.trace.subscribe(header_last.or(query_last)) else {
        return reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event stream is off: the trace keeps no event window (api.event_window is 0)",
        );
    };
    let stream = EventStream::new(sub, filter, state.shutdown.clone(), state.keep_alive);
    let body = futures::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), s))
    });
    let mut resp = Response::new(StreamBody::new(body.boxed()).boxed_unsync());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The state of one client's stream.
struct EventStream {
    /// A `lagged` notice to send first.
    notice: Option<u64>,
    backlog: VecDeque<TraceEvent>,
    live: broadcast::Receiver<TraceEvent>,
    filter: EventFilter,
    shutdown: watch::Receiver<bool>,
    keep_alive: Interval,
}

impl EventStream {
    fn new(
        sub: Subscription,
        filter: EventFilter,
        shutdown: watch::Receiver<bool>,
        every: Duration,
    ) -> Self {
        let every = every.max(Duration::from_millis(10));
        let mut keep_alive = tokio::time::interval_at(Instant::now() + every, every);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            notice: (sub.missed > 0).then_some(sub.missed),
            backlog: sub.backlog.into(),
            live: sub.live,
            filter,
            shutdown,
            keep_alive,
        }
    }

    /// The next bytes to send, or `None` at the end of the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if *self.shutdown.borrow() {
            return None;
        }
        if let Some(n) = self.notice.take() {
            return Some(lagged(n));
        }
        while let Some(e) = self.backlog.pop_front() {
            if self.filter.matches(&e.line) {
                self.keep_alive.reset();
                return Some(message(&e));
            }
        }
        loop {
            let wake = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|s| *s) => Wake::Stop,
                r = self.live.recv() => Wake::Live(r),
                _ = self.keep_alive.tick() => Wake::Quiet,
            };
            match wake {
                Wake::Stop | Wake::Live(Err(broadcast::error::RecvError::Closed)) => return None,
                Wake::Live(Err(broadcast::error::RecvError::Lagged(n))) => return Some(lagged(n)),
                Wake::Live(Ok(e)) if self.filter.matches(&e.line) => {
                    self.keep_alive.reset();
                    return Some(message(&e));
                }
                Wake::Live(Ok(_)) => {}
                Wake::Quiet => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }
}

/// What woke a waiting stream.
enum Wake {
    /// The server is shutting down.
    Stop,
    /// An event, a lag notice, or the end of the trace.
    Live(Result<TraceEvent, broadcast::error::RecvError>),
    /// Nothing was sent for a keep-alive period.
    Quiet,
}

/// One SSE message. A kind with a line break (the trace's kinds have none) would end the
/// field early, so such characters are replaced.
fn message(e: &TraceEvent) -> Bytes {
    let kind: String = e
        .kind
        .chars()
        .map(|c| if c == '\n' || c == '\r' { '_' } else { c })
        .collect();
    Bytes::from(format!("id: {}\nevent: {kind}\ndata: {}\n\n", e.id, e.line))
}

fn lagged(missed: u64) -> Bytes {
    Bytes::from(format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(workflow: Option<&str>, task: Option<&str>, agent: Option<&str>) -> EventFilter {
        EventFilter {
            workflow: workflow.map(Into::into),
            task: task.map(Into::into),
            agent: agent.map(Into::into),
        }
    }

    const STATE: &str = r#"{"event":"task_state","task":"w1/plan","agent":"planner"}"#;
    const LLM: &str = r#"{"event":"llm_call","task":"w2/plan","instance":"coder#1"}"#;
    const ACCEPTED: &str = r#"{"event":"workflow_accepted","workflow":"w3"}"#;
    const RUN: &str = r#"{"event":"run_started"}"#;

    #[test]
    fn workflow_filter_reads_the_workflow_field_or_the_task_prefix() {
        let w1 = f(Some("w1"), None, None);
        assert!(w1.matches(STATE));
        assert!(!w1.matches(LLM));
        assert!(!w1.matches(RUN));
        assert!(f(Some("w3"), None, None).matches(ACCEPTED));
    }

    #[test]
    fn task_filter_takes_a_key_or_a_bare_id() {
        assert!(f(None, Some("w1/plan"), None).matches(STATE));
        assert!(!f(None, Some("w2/plan"), None).matches(STATE));
        assert!(
            f(None, Some("plan"), None).matches(STATE),
            "bare id, any workflow"
        );
        assert!(f(None, Some("plan"), None).matches(LLM));
        assert!(f(Some("w2"), Some("plan"), None).matches(LLM));
        assert!(!f(Some("w1"), Some("plan"), None).matches(LLM));
        assert!(!f(None, Some("plan"), None).matches(ACCEPTED));
    }

    #[test]
    fn agent_filter_reads_the_agent_field_or_the_instance_prefix() {
        assert!(f(None, None, Some("planner")).matches(STATE));
        assert!(f(None, None, Some("coder")).matches(LLM));
        assert!(!f(None, None, Some("coder")).matches(STATE));
        assert!(!f(None, None, Some("coder")).matches(RUN));
        assert!(
            f(None, None, None).matches(RUN),
            "no filter passes everything"
        );
        assert!(!f(None, None, Some("x")).matches("not json"));
    }

    #[test]
    fn queries_decode_and_unknown_parameters_are_refused() {
        let (filter, last) = read_query("workflow=w%201&agent=a+b&last_event_id=7").unwrap();
        assert_eq!(filter, f(Some("w 1"), None, Some("a b")));
        assert_eq!(last, Some(7));
        assert!(read_query("wokrflow=x")
            .unwrap_err()
            .contains("unknown query parameter"));
        assert!(read_query("last_event_id=-1").is_err());
        assert!(read_query("agent=").is_err());
        assert!(read_query("agent=%FF").is_err());
        assert!(read_query(&"a=1&".repeat(MAX_QUERY_PAIRS + 1)).is_err());
        assert_eq!(read_query("").unwrap(), (EventFilter::default(), None));
    }

    #[test]
    fn messages_are_sse_frames() {
        let e = TraceEvent {
            id: 4,
            kind: "task_state".into(),
            line: STATE.into(),
        };
        assert_eq!(
            message(&e),
            Bytes::from(format!("id: 4\nevent: task_state\ndata: {STATE}\n\n"))
        );
        assert_eq!(
            lagged(3),
            Bytes::from("event: lagged\ndata: {\"missed\":3}\n\n")
        );
    }
}
