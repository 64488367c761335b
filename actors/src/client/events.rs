//! `agentos events`: reads `GET /api/events`, a Server-Sent Events stream.
//!
//! Without `--follow` the command prints the events the server still holds and stops once no
//! event has come for [`IDLE`]: the cut-off is the client's, so it works against any server.
//! Comments (the server's keep-alives) do not count as events. With `--follow` it keeps
//! printing; when the stream breaks it reconnects, sending `Last-Event-ID` with the last id
//! it saw, so nothing is printed twice and nothing is missed that the server still holds. A
//! server that stays away for [`RECONNECT_FOR`] ends the command (exit 3).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::header::ACCEPT;
use reqwest::Method;
use serde_json::{json, Value};

use super::{print, print_json, Client, ClientError};

/// How long a stream may stay silent before `events` (without `--follow`) stops.
pub const IDLE: Duration = Duration::from_millis(500);

/// How long `--follow` keeps trying to reconnect.
pub const RECONNECT_FOR: Duration = Duration::from_secs(10);

/// Pause between reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Which events to ask for (sent as query parameters).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `workflow=`.
    pub workflow: Option<String>,
    /// `task=`.
    pub task: Option<String>,
    /// `agent=`.
    pub agent: Option<String>,
}

/// How to read the stream.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep reading and reconnect.
    pub follow: bool,
    /// Start after this event id.
    pub after: Option<String>,
    /// Print one JSON object per event instead of a line for people.
    pub json: bool,
    /// Without `follow`: stop after this long without an event.
    pub idle: Duration,
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `id:`, if the event had one.
    pub id: Option<String>,
    /// `event:` (`message` when absent, as the SSE standard says).
    pub kind: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// An incremental SSE parser: feed it bytes as they come, take whole events out.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    id: Option<String>,
    kind: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Feeds `bytes`; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if let Some(e) = self.line(line) {
                events.push(e);
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            // A blank line ends the event; one without data is not dispatched.
            let id = self.id.take();
            let kind = self.kind.take();
            let data = self.data.take()?;
            return Some(Event {
                id,
                kind: kind.unwrap_or_else(|| "message".into()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "event" => self.kind = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// Streams events as `opts` says.
pub(super) async fn run(
    client: &Client,
    filter: &Filter,
    opts: &Options,
) -> Result<ExitCode, ClientError> {
    let mut last_id = opts.after.clone();
    // The first connection must succeed; later ones (with --follow) may fail for a while.
    let mut resp = open(client, filter, last_id.as_deref()).await?;
    loop {
        let mut parser = Parser::default();
        let mut last_event = Instant::now();
        loop {
            let chunk = if opts.follow {
                resp.chunk().await
            } else {
                let until = tokio::time::Instant::from_std(last_event + opts.idle);
                match tokio::time::timeout_at(until, resp.chunk()).await {
                    Ok(c) => c,
                    Err(_) => return Ok(ExitCode::SUCCESS),
                }
            };
            let bytes = match chunk {
                Ok(Some(b)) => b,
                // The server ended the stream, or it broke.
                Ok(None) | Err(_) => break,
            };
            for event in parser.push(&bytes) {
                last_event = Instant::now();
                if event.id.is_some() {
                    last_id.clone_from(&event.id);
                }
                show(&event, opts.json)?;
            }
        }
        if !opts.follow {
            return Ok(ExitCode::SUCCESS);
        }
        resp = reconnect(client, filter, last_id.as_deref()).await?;
    }
}

async fn open(
    client: &Client,
    filter: &Filter,
    last_id: Option<&str>,
) -> Result<reqwest::Response, ClientError> {
    let mut url = client.url(&["api", "events"]);
    {
        let mut q = url.query_pairs_mut();
        for (key, value) in [
            ("workflow", &filter.workflow),
            ("task", &filter.task),
            ("agent", &filter.agent),
        ] {
            if let Some(v) = value {
                q.append_pair(key, v);
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let mut req = client
        .request(Method::GET, url)
        .header(ACCEPT, "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    client.open(req).await
}

async fn reconnect(
    client: &Client,
    filter: &Filter,
    last_id: Option<&str>,
) -> Result<reqwest::Response, ClientError> {
    let after = last_id
        .map(|id| format!(" after event {id}"))
        .unwrap_or_default();
    eprintln!("events: the stream ended; reconnecting{after}");
    let give_up = Instant::now() + RECONNECT_FOR;
    loop {
        tokio::time::sleep(RECONNECT_PAUSE).await;
        match open(client, filter, last_id).await {
            Ok(resp) => return Ok(resp),
            Err(e @ ClientError::Unreachable { .. }) if Instant::now() >= give_up => return Err(e),
            Err(ClientError::Unreachable { .. }) => {}
            Err(e) => return Err(e),
        }
    }
}

fn show(event: &Event, json: bool) -> Result<(), ClientError> {
    let data: Value =
        serde_json::from_str(&event.data).unwrap_or_else(|_| Value::String(event.data.clone()));
    if json {
        let id = match &event.id {
            Some(id) => id.parse::<u64>().map(Value::from).unwrap_or(json!(id)),
            None => Value::Null,
        };
        return print_json(&json!({"id": id, "event": event.kind, "data": data}));
    }
    print(&format!(
        "{:>6}  {:<14}  {}\n",
        event.id.as_deref().unwrap_or("-"),
        event.kind,
        fields(&data)
    ))
}

/// An event's data for people: `key=value ...` for an object, the text otherwise.
fn fields(data: &Value) -> String {
    let Some(map) = data.as_object() else {
        return match data {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    };
    map.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) => s.clone(),
                Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            let short: String = v.chars().take(120).collect();
            let cut = if v.chars().count() > 120 { "..." } else { "" };
            format!("{k}={short}{cut}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_across_chunks() {
        let mut p = Parser::default();
        assert!(p.push(b"id: 7\nevent: task_st").is_empty());
        let got =
            p.push(b"ate\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\nid:8\ndata:x\ndata: y\n\n");
        assert_eq!(
            got,
            [
                Event {
                    id: Some("7".into()),
                    kind: "task_state".into(),
                    data: "{\"a\":1}".into(),
                },
                Event {
                    id: Some("8".into()),
                    kind: "message".into(),
                    data: "x\ny".into(),
                },
            ]
        );
    }

    #[test]
    fn a_character_split_between_chunks_survives() {
        let mut p = Parser::default();
        let text = "data: é\n\n".as_bytes();
        assert!(p.push(&text[..7]).is_empty());
        assert_eq!(p.push(&text[7..])[0].data, "é");
    }

    #[test]
    fn people_see_key_value_pairs() {
        let data =
            json!({"task": "w/a", "to": "running", "reason": "two words", "n": 3, "x": null});
        assert_eq!(
            fields(&data),
            "n=3 reason=\"two words\" task=w/a to=running"
        );
        assert_eq!(fields(&json!("plain")), "plain");
    }
}
