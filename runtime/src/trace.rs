//! The trace: one JSON object per state transition, LLM call and tool call.
//!
//! A trace has up to two outputs, chosen when it is opened:
//! - a JSON-lines **file**, written on a dedicated thread, so actors never block on file I/O;
//! - an in-memory **window** of the last N events, each numbered from 1 in emission order,
//!   with a live broadcast of every new one. The control plane's event stream
//!   (`GET /api/events`) reads it through [`Trace::subscribe`]: a client that reconnects with
//!   the id of the last event it saw gets what it missed, as long as the window still holds it.
//!
//! Emitting never waits: the file channel is unbounded (the writer thread drains it), the
//! window drops its oldest event when full, and the broadcast overwrites what its slowest
//! reader has not read (that reader is told how many it lost). With neither output, `emit` is
//! an early return and builds nothing.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// Most events buffered for live readers of the window (see [`Subscription::live`]); a reader
/// that falls further behind is told how many it missed.
pub const LIVE_CAPACITY: usize = 1024;

/// A handle to the trace; cheap to clone. A disabled trace drops every event.
#[derive(Clone, Default)]
pub struct Trace {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    file: Option<FileWriter>,
    window: Option<Window>,
}

struct FileWriter {
    // std Mutex: held only to clone the sender or take it on close, never across I/O. A
    // poisoned lock still holds a valid sender, so poisoning is ignored.
    tx: Mutex<Option<Sender<Arc<str>>>>,
    thread: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

struct Window {
    capacity: usize,
    // std Mutex: held only to number one event, push it and hand it to the broadcast (which
    // never waits), or to copy the backlog for a new subscriber; no await and no I/O while
    // held. Numbering, storing and broadcasting under one lock is what lets a subscriber see
    // every event exactly once: the backlog up to id N, then live events from N + 1. Every
    // mutation leaves the state consistent, so a poisoned lock is used as it is.
    state: Mutex<WindowState>,
}

struct WindowState {
    /// Id of the last event emitted (0 before the first).
    last_id: u64,
    /// The last `capacity` events, oldest first.
    events: VecDeque<TraceEvent>,
    /// `None` once the trace is closed: live readers see the end of the stream.
    live: Option<broadcast::Sender<TraceEvent>>,
}

/// One event as the window keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Position in emission order, from 1.
    pub id: u64,
    /// The kind (`task_state`, `llm_call`, ...), also under `"event"` in the line.
    pub kind: Arc<str>,
    /// The JSON line, exactly as the file gets it (without the newline).
    pub line: Arc<str>,
}

/// What [`Trace::subscribe`] hands a reader of the window.
#[derive(Debug)]
pub struct Subscription {
    /// Events the reader asked for that the window no longer holds (they are lost to it).
    pub missed: u64,
    /// Events after the reader's last one, still in the window, oldest first.
    pub backlog: Vec<TraceEvent>,
    /// Every event emitted after the backlog. It yields `Lagged(n)` when the reader fell more
    /// than [`LIVE_CAPACITY`] events behind, and `Closed` once the trace is closed.
    pub live: broadcast::Receiver<TraceEvent>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field(
                "file",
                &self.inner.as_ref().is_some_and(|i| i.file.is_some()),
            )
            .field(
                "window",
                &self
                    .inner
                    .as_ref()
                    .and_then(|i| i.window.as_ref())
                    .map(|w| w.capacity),
            )
            .finish()
    }
}

impl Trace {
    /// A trace that records nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Creates (truncates) `path` and starts the writer thread; no window.
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        Self::open(Some(path), 0)
    }

    /// A trace writing to `file` (created or truncated), if given, and keeping the last
    /// `window` events in memory for [`subscribe`](Self::subscribe), if `window > 0`. With
    /// neither it is [`disabled`](Self::disabled).
    pub fn open(file: Option<&Path>, window: usize) -> std::io::Result<Self> {
        let file = file.map(FileWriter::start).transpose()?;
        let window = (window > 0).then(|| Window {
            capacity: window,
            state: Mutex::new(WindowState {
                last_id: 0,
                events: VecDeque::with_capacity(window.min(LIVE_CAPACITY)),
                live: Some(broadcast::channel(window.min(LIVE_CAPACITY)).0),
            }),
        });
        if file.is_none() && window.is_none() {
            return Ok(Self::disabled());
        }
        Ok(Self {
            inner: Some(Arc::new(Inner { file, window })),
        })
    }

    /// Whether events are recorded.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Records one event: `{"ts": <unix seconds>, "event": kind, ...fields}`. `fields` should be
    /// a JSON object; anything else is stored under `"data"`.
    pub fn emit(&self, kind: &str, fields: Value) {
        let Some(inner) = &self.inner else { return };
        let mut obj = Map::new();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        obj.insert("ts".into(), Value::from(ts));
        obj.insert("event".into(), Value::from(kind));
        match fields {
            Value::Object(m) => obj.extend(m),
            Value::Null => {}
            other => {
                obj.insert("data".into(), other);
            }
        }
        let line: Arc<str> = Value::Object(obj).to_string().into();
        if let Some(file) = &inner.file {
            if let Some(tx) = file.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let _ = tx.send(line.clone());
            }
        }
        if let Some(window) = &inner.window {
            window.push(kind, line);
        }
    }

    /// Reads the window: the events after `after` that it still holds, and every later one
    /// live. `None` when this trace keeps no window.
    ///
    /// - `after: None` (a first connection): the whole window, nothing counted as missed.
    /// - `after: Some(n)`: the events with id > n. Those the window dropped already are
    ///   counted in [`Subscription::missed`].
    /// - An `n` beyond the last id emitted (a reader of an earlier process, whose ids started
    ///   again at 1) is treated as `Some(0)`: the whole window, and the count of what came
    ///   before it.
    pub fn subscribe(&self, after: Option<u64>) -> Option<Subscription> {
        let window = self.inner.as_ref()?.window.as_ref()?;
        let state = window.state.lock().unwrap_or_else(|e| e.into_inner());
        let live = match &state.live {
            Some(tx) => tx.subscribe(),
            // Closed: a receiver whose sender is gone reports the end at once.
            None => broadcast::channel(1).1,
        };
        let first_kept = state.events.front().map_or(state.last_id + 1, |e| e.id);
        let (missed, backlog) = match after {
            // A first connection gets what the window holds, then the live events.
            None => (0, state.events.iter().cloned().collect()),
            Some(n) => {
                let n = if n > state.last_id { 0 } else { n };
                let missed = first_kept.saturating_sub(n + 1);
                let backlog = state.events.iter().filter(|e| e.id > n).cloned().collect();
                (missed, backlog)
            }
        };
        Some(Subscription {
            missed,
            backlog,
            live,
        })
    }

    /// Id of the last event the window numbered (0 before the first, or without a window).
    pub fn last_id(&self) -> u64 {
        self.inner
            .as_ref()
            .and_then(|i| i.window.as_ref())
            .map_or(0, |w| {
                w.state.lock().unwrap_or_else(|e| e.into_inner()).last_id
            })
    }

    /// Flushes and closes the file and ends the window's live stream; later events are
    /// dropped by the file and still kept by the window. Returns the writer's I/O error.
    pub fn close(&self) -> std::io::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if let Some(window) = &inner.window {
            window
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .live
                .take();
        }
        let Some(file) = &inner.file else {
            return Ok(());
        };
        file.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let handle = file.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match handle {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("trace writer panicked"))),
            None => Ok(()),
        }
    }
}

impl FileWriter {
    fn start(path: &Path) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let (tx, rx) = mpsc::channel::<Arc<str>>();
        let thread = std::thread::Builder::new()
            .name("agentos-trace".into())
            .spawn(move || {
                let mut out = BufWriter::new(file);
                for line in rx {
                    out.write_all(line.as_bytes())?;
                    out.write_all(b"\n")?;
                }
                out.flush()
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Window {
    fn push(&self, kind: &str, line: Arc<str>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last_id += 1;
        let event = TraceEvent {
            id: state.last_id,
            kind: kind.into(),
            line,
        };
        if state.events.len() >= self.capacity {
            state.events.pop_front();
        }
        if let Some(tx) = &state.live {
            // An error only means nobody is listening right now.
            let _ = tx.send(event.clone());
        }
        state.events.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let trace = Trace::to_file(&path).unwrap();
        trace.emit("task_state", json!({"task": "w/a", "to": "ready"}));
        trace.emit("llm_call", json!({"tokens": 3}));
        trace.close().unwrap();
        trace.emit("dropped", Value::Null);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "task_state");
        assert_eq!(lines[0]["task"], "w/a");
        assert_eq!(lines[1]["tokens"], 3);
        assert!(
            trace.subscribe(None).is_none(),
            "a file-only trace has no window"
        );
    }

    #[test]
    fn neither_file_nor_window_is_disabled() {
        let trace = Trace::open(None, 0).unwrap();
        assert!(!trace.enabled());
        trace.emit("x", Value::Null);
        assert_eq!(trace.last_id(), 0);
        assert!(trace.subscribe(Some(0)).is_none());
    }

    fn ids(events: &[TraceEvent]) -> Vec<u64> {
        events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn the_window_numbers_events_from_one_and_keeps_the_last_n() {
        let trace = Trace::open(None, 3).unwrap();
        for i in 0..5 {
            trace.emit("tick", json!({"i": i}));
        }
        assert_eq!(trace.last_id(), 5);
        let sub = trace.subscribe(Some(0)).unwrap();
        assert_eq!(ids(&sub.backlog), vec![3, 4, 5]);
        assert_eq!(sub.missed, 2, "events 1 and 2 fell out of the window");
        let line: Value = serde_json::from_str(&sub.backlog[0].line).unwrap();
        assert_eq!(line["event"], "tick");
        assert_eq!(line["i"], 2);
        assert_eq!(&*sub.backlog[0].kind, "tick");
    }

    #[test]
    fn resume_replays_what_came_after_the_last_seen_id_then_goes_live() {
        let trace = Trace::open(None, 10).unwrap();
        for _ in 0..4 {
            trace.emit("a", Value::Null);
        }
        let mut sub = trace.subscribe(Some(2)).unwrap();
        assert_eq!(sub.missed, 0);
        assert_eq!(ids(&sub.backlog), vec![3, 4]);
        trace.emit("b", json!({"n": 1}));
        let live = sub.live.try_recv().unwrap();
        assert_eq!((live.id, &*live.kind), (5, "b"));
        assert!(sub.live.try_recv().is_err(), "nothing twice, nothing more");

        let fresh = trace.subscribe(None).unwrap();
        assert_eq!(
            ids(&fresh.backlog),
            vec![1, 2, 3, 4, 5],
            "no id: the whole window"
        );
        assert_eq!(fresh.missed, 0);
        let caught_up = trace.subscribe(Some(5)).unwrap();
        assert!(caught_up.backlog.is_empty());
        assert_eq!(caught_up.missed, 0);
    }

    #[test]
    fn an_id_from_an_earlier_process_replays_the_whole_window() {
        let trace = Trace::open(None, 2).unwrap();
        for _ in 0..3 {
            trace.emit("a", Value::Null);
        }
        let sub = trace.subscribe(Some(1_000)).unwrap();
        assert_eq!(ids(&sub.backlog), vec![2, 3]);
        assert_eq!(sub.missed, 1);
    }

    #[test]
    fn a_slow_live_reader_is_told_how_many_it_lost() {
        let trace = Trace::open(None, 1).unwrap();
        let mut sub = trace.subscribe(None).unwrap();
        // The live buffer holds min(window, LIVE_CAPACITY) = 1 event.
        trace.emit("a", Value::Null);
        trace.emit("b", Value::Null);
        trace.emit("c", Value::Null);
        assert_eq!(
            sub.live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(2))
        );
        assert_eq!(sub.live.try_recv().unwrap().id, 3);
    }

    #[test]
    fn close_ends_the_live_stream_but_keeps_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let trace = Trace::open(Some(&path), 8).unwrap();
        let mut before = trace.subscribe(None).unwrap();
        trace.emit("a", json!({"k": 1}));
        trace.close().unwrap();
        assert_eq!(before.live.try_recv().unwrap().id, 1);
        assert_eq!(
            before.live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        );
        let mut after = trace.subscribe(Some(0)).unwrap();
        assert_eq!(ids(&after.backlog), vec![1]);
        assert_eq!(
            after.live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "the file got the same line");
        assert_eq!(text.trim_end(), &*after.backlog[0].line);
    }
}
