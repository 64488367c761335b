//! The JSON-lines trace: one object per line for every state transition, LLM call and tool
//! call. Writing happens on a dedicated thread, so actors never block on file I/O.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// A handle to the trace; cheap to clone. A disabled trace drops every event.
#[derive(Clone, Default)]
pub struct Trace {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: Mutex<Option<Sender<String>>>,
    thread: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Trace {
    /// A trace that records nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Creates (truncates) `path` and starts the writer thread.
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let (tx, rx) = mpsc::channel::<String>();
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
            inner: Some(Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            })),
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
        let line = Value::Object(obj).to_string();
        if let Ok(guard) = inner.tx.lock() {
            if let Some(tx) = guard.as_ref() {
                let _ = tx.send(line);
            }
        }
    }

    /// Flushes and closes the file; later events are dropped. Returns the writer's I/O error.
    pub fn close(&self) -> std::io::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if let Ok(mut tx) = inner.tx.lock() {
            tx.take();
        }
        let handle = inner.thread.lock().ok().and_then(|mut t| t.take());
        match handle {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("trace writer panicked"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let trace = Trace::to_file(&path).unwrap();
        trace.emit(
            "task_state",
            serde_json::json!({"task": "w/a", "to": "ready"}),
        );
        trace.emit("llm_call", serde_json::json!({"tokens": 3}));
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
    }
}
