//! The audit log, read back. It is a view, not a third copy of anything: [`Store::audit`]
//! merges
//! - the rows of the `audit` table (task state transitions, API actions, agent controls, run
//!   starts and resumes), as they are;
//! - the step journal joined with its pages: an LLM reply is an `llm_call` entry (the reply,
//!   its usage, and the prompt it answered: the context's pages before it), a tool result a
//!   `tool_call` entry (tool, arguments, result), and the start marker of an at-most-once
//!   call a `tool_started` entry.
//!
//! Entries come back in time order: the newest [`AuditQuery::limit`] entries that pass the
//! filters, oldest first (like `tail`). Long texts (prompts, tool results, replies) are cut at
//! a few KiB with a note saying how much was left out; the pages keep them whole.
//!
//! Both reads use existing indexes: the journal's and the pages' primary keys start with the
//! run id, the `audit` table has `(run_id, at_ms)`. A run's rows are sorted by time in memory.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::journal::kind as jkind;
use super::{Store, StoreError};

/// Longest prompt text an `llm_call` entry carries, in bytes.
pub const PROMPT_CAP_BYTES: usize = 4096;
/// Longest tool result (and tool-call arguments) an entry carries, in bytes.
pub const RESULT_CAP_BYTES: usize = 4096;
/// Longest reply text an `llm_call` entry carries, in bytes.
pub const REPLY_CAP_BYTES: usize = 16 * 1024;

/// Entry kinds made from journal rows (the `audit` table's own kinds pass through as written).
pub mod kind {
    /// A journaled LLM reply.
    pub const LLM_CALL: &str = "llm_call";
    /// A journaled tool result.
    pub const TOOL_CALL: &str = "tool_call";
    /// An at-most-once tool call about to run (its start marker).
    pub const TOOL_STARTED: &str = "tool_started";
}

/// Which entries to read. Filters combine with "and".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this run (every run when `None`).
    pub run: Option<String>,
    /// Only entries about this agent.
    pub agent: Option<String>,
    /// Only entries about this task (`workflow/task`).
    pub task: Option<String>,
    /// Only entries at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// At most this many entries: the newest ones.
    pub limit: usize,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            run: None,
            agent: None,
            task: None,
            since_ms: None,
            limit: 100,
        }
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// The run.
    pub run: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The same time, RFC 3339 in UTC with milliseconds.
    pub at: String,
    /// `llm_call`, `tool_call`, `tool_started`, or a kind of the `audit` table (`task_state`,
    /// `workflow_accepted`, `workflow_cancelled`, `agent_control`, `run_started`, `run_resumed`, ...).
    pub kind: String,
    /// Who did it: an agent instance, an API caller, `scheduler`, `system`.
    pub actor: String,
    /// Agent concerned.
    pub agent: Option<String>,
    /// Instance concerned.
    pub instance: Option<String>,
    /// Task concerned (`workflow/task`).
    pub task: Option<String>,
    /// Attempt (over every agent).
    pub attempt: Option<u32>,
    /// Step within the attempt.
    pub step: Option<u32>,
    /// The rest, by kind.
    pub detail: Value,
}

fn io(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

/// Where an entry sorts: time, then the `audit` table's id or the journal's step and call.
type SortKey = (i64, i64, i64);

/// A journal row joined with its page, before it becomes an entry.
struct Journaled {
    run: String,
    context: String,
    step: u32,
    call: u32,
    kind: String,
    agent: String,
    instance: String,
    task: String,
    attempt: u32,
    at_ms: i64,
    duration_ms: i64,
    page_id: Option<i64>,
    detail: String,
    message: Option<String>,
}

/// `WHERE` clause shared by both reads: parameters `?1` run, `?2` agent, `?3` task, `?4`
/// since, `?5` limit.
const FILTER: &str = "(?1 IS NULL OR x.run_id = ?1) AND (?2 IS NULL OR x.agent = ?2)
     AND (?3 IS NULL OR x.task = ?3) AND (?4 IS NULL OR x.at_ms >= ?4)";

impl Store {
    /// The audit log entries that pass `q`'s filters: the newest `q.limit`, oldest first.
    pub fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let op = "read audit log";
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let args = params![q.run, q.agent, q.task, q.since_ms, limit];
        let mut merged: Vec<(SortKey, Result<AuditEntry, Journaled>)> = Vec::new();
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT x.run_id, x.at_ms, x.kind, x.actor, x.agent, x.instance, x.task,
                 x.attempt, x.step, x.detail, x.id FROM audit x WHERE {FILTER}
                 ORDER BY x.at_ms DESC, x.id DESC LIMIT ?5"
            ))
            .map_err(io(op))?;
        let rows = stmt
            .query_map(args, |r| {
                let at_ms: i64 = r.get(1)?;
                let detail: String = r.get(9)?;
                let entry = AuditEntry {
                    run: r.get(0)?,
                    at_ms,
                    at: format_rfc3339_ms(at_ms),
                    kind: r.get(2)?,
                    actor: r.get(3)?,
                    agent: r.get(4)?,
                    instance: r.get(5)?,
                    task: r.get(6)?,
                    attempt: r.get::<_, Option<i64>>(7)?.map(|a| a.max(0) as u32),
                    step: r.get::<_, Option<i64>>(8)?.map(|s| s.max(0) as u32),
                    detail: parse_detail(&detail),
                };
                Ok(((at_ms, 0, r.get::<_, i64>(10)?), Ok(entry)))
            })
            .map_err(io(op))?;
        for row in rows {
            merged.push(row.map_err(io(op))?);
        }
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT x.run_id, x.context, x.step, x.call, x.kind, x.agent, x.instance,
                 x.task, x.attempt, x.at_ms, x.duration_ms, x.page_id, x.detail, p.message
                 FROM journal x LEFT JOIN pages p ON p.run_id = x.run_id
                 AND p.context = x.context AND p.page_id = x.page_id WHERE {FILTER}
                 ORDER BY x.at_ms DESC LIMIT ?5"
            ))
            .map_err(io(op))?;
        let rows = stmt
            .query_map(args, |r| {
                let j = Journaled {
                    run: r.get(0)?,
                    context: r.get(1)?,
                    step: r.get::<_, i64>(2)?.max(0) as u32,
                    call: r.get::<_, i64>(3)?.max(0) as u32,
                    kind: r.get(4)?,
                    agent: r.get(5)?,
                    instance: r.get(6)?,
                    task: r.get(7)?,
                    attempt: r.get::<_, i64>(8)?.max(0) as u32,
                    at_ms: r.get(9)?,
                    duration_ms: r.get(10)?,
                    page_id: r.get(11)?,
                    detail: r.get(12)?,
                    message: r.get(13)?,
                };
                // A reply sorts before the tool calls it asked for, at the same millisecond.
                let order = i64::from(j.step) * 4096
                    + i64::from(j.call) * 2
                    + i64::from(j.kind != jkind::REPLY);
                Ok(((j.at_ms, 1, order), Err(j)))
            })
            .map_err(io(op))?;
        for row in rows {
            merged.push(row.map_err(io(op))?);
        }
        merged.sort_by_key(|e| std::cmp::Reverse(e.0));
        merged.truncate(q.limit);
        merged.reverse();
        let mut contexts = ContextCache::default();
        merged
            .into_iter()
            .map(|(_, e)| match e {
                Ok(entry) => Ok(entry),
                Err(j) => self.journal_entry(j, &mut contexts),
            })
            .collect()
    }

    /// The entry of one journal row.
    fn journal_entry(
        &self,
        j: Journaled,
        contexts: &mut ContextCache,
    ) -> Result<AuditEntry, StoreError> {
        let mut detail = match parse_detail(&j.detail) {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => Map::from_iter([("journal".to_owned(), other)]),
        };
        detail.insert("context".into(), json!(j.context));
        detail.insert("call".into(), json!(j.call));
        detail.insert("duration_ms".into(), json!(j.duration_ms));
        let message = j.message.as_deref().map(parse_detail);
        let kind = match j.kind.as_str() {
            jkind::REPLY => {
                if let Some(mut reply) = message {
                    cap_field(&mut reply, "content", REPLY_CAP_BYTES);
                    detail.insert("reply".into(), reply);
                }
                if let Some(page) = j.page_id {
                    let (prompt, n) = contexts.prompt(self, &j.run, &j.context, page)?;
                    detail.insert("prompt".into(), json!(prompt));
                    detail.insert("prompt_messages".into(), json!(n));
                }
                kind::LLM_CALL
            }
            jkind::TOOL_RESULT => {
                let call_id = message
                    .as_ref()
                    .and_then(|m| m.get("tool_call_id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.fill_tool(&j, call_id.as_deref(), &mut detail)?;
                if let Some(m) = &message {
                    let content = m.get("content").and_then(Value::as_str).unwrap_or("");
                    detail.insert("result".into(), json!(cap(content, RESULT_CAP_BYTES)));
                }
                kind::TOOL_CALL
            }
            jkind::TOOL_START => {
                let call_id = detail
                    .get("call_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.fill_tool(&j, call_id.as_deref(), &mut detail)?;
                kind::TOOL_STARTED
            }
            other => other,
        };
        Ok(AuditEntry {
            run: j.run,
            at_ms: j.at_ms,
            at: format_rfc3339_ms(j.at_ms),
            kind: kind.to_owned(),
            actor: j.instance.clone(),
            agent: Some(j.agent),
            instance: Some(j.instance),
            task: Some(j.task),
            attempt: Some(j.attempt),
            step: Some(j.step),
            detail: Value::Object(detail),
        })
    }

    /// Adds `tool` and `arguments` to a tool entry's detail when the journal's detail lacks
    /// them, from the call of the step's reply that `call_id` names (or, without one, the
    /// call at the journal row's index: a start marker has no tool message yet).
    fn fill_tool(
        &self,
        j: &Journaled,
        call_id: Option<&str>,
        detail: &mut Map<String, Value>,
    ) -> Result<(), StoreError> {
        if let Some(name) = detail
            .get("name")
            .cloned()
            .filter(|_| !detail.contains_key("tool"))
        {
            detail.insert("tool".into(), name);
        }
        let want_args = !detail.contains_key("arguments");
        if detail.contains_key("tool") && !want_args {
            return Ok(());
        }
        let reply: Option<String> = self
            .conn
            .query_row(
                "SELECT p.message FROM journal j JOIN pages p ON p.run_id = j.run_id
                 AND p.context = j.context AND p.page_id = j.page_id
                 WHERE j.run_id = ?1 AND j.context = ?2 AND j.step = ?3 AND j.kind = ?4",
                params![j.run, j.context, i64::from(j.step), jkind::REPLY],
                |r| r.get(0),
            )
            .optional()
            .map_err(io("read audit log"))?;
        let reply = reply.map(|m| parse_detail(&m)).unwrap_or(Value::Null);
        let call =
            reply
                .get("tool_calls")
                .and_then(Value::as_array)
                .and_then(|calls| match call_id {
                    Some(id) => calls
                        .iter()
                        .find(|c| c.get("id").and_then(Value::as_str) == Some(id)),
                    None => calls.get(j.call as usize),
                });
        if let Some(call) = call {
            if let (false, Some(name)) = (detail.contains_key("tool"), call.get("name")) {
                detail.insert("tool".into(), name.clone());
            }
            if let (true, Some(args)) = (want_args, call.get("arguments")) {
                let text = match args {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let args = if text.len() > RESULT_CAP_BYTES {
                    json!(cap(&text, RESULT_CAP_BYTES))
                } else {
                    args.clone()
                };
                detail.insert("arguments".into(), args);
            }
        }
        Ok(())
    }
}

/// Contexts already read while building one answer, rendered message by message, so that the
/// prompts of many replies of one context cost one read.
#[derive(Default)]
struct ContextCache {
    pages: HashMap<(String, String), Vec<(i64, String)>>,
}

impl ContextCache {
    /// The prompt a reply on page `page` answered: the context's pages before it, rendered
    /// and capped at [`PROMPT_CAP_BYTES`], and how many messages it had.
    fn prompt(
        &mut self,
        store: &Store,
        run: &str,
        context: &str,
        page: i64,
    ) -> Result<(String, usize), StoreError> {
        let key = (run.to_owned(), context.to_owned());
        if !self.pages.contains_key(&key) {
            let op = "read audit log";
            let mut stmt = store
                .conn
                .prepare_cached(
                    "SELECT page_id, message FROM pages WHERE run_id = ?1 AND context = ?2
                     ORDER BY page_id",
                )
                .map_err(io(op))?;
            let rows = stmt
                .query_map(params![run, context], |r| {
                    Ok((r.get::<_, i64>(0)?, render(&r.get::<_, String>(1)?)))
                })
                .map_err(io(op))?;
            let rendered = rows.collect::<Result<Vec<_>, _>>().map_err(io(op))?;
            self.pages.insert(key.clone(), rendered);
        }
        let before: Vec<&str> = self.pages[&key]
            .iter()
            .take_while(|(id, _)| *id < page)
            .map(|(_, text)| text.as_str())
            .collect();
        Ok((cap(&before.join("\n"), PROMPT_CAP_BYTES), before.len()))
    }
}

/// One message as a line of a prompt: `[role] content`, with the calls it asks for.
fn render(message: &str) -> String {
    let v = parse_detail(message);
    let role = v.get("role").and_then(Value::as_str).unwrap_or("?");
    let content = v.get("content").and_then(Value::as_str).unwrap_or("");
    let mut out = format!("[{role}] {content}");
    for call in v
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = call.get("name").and_then(Value::as_str).unwrap_or("?");
        let args = call
            .get("arguments")
            .map(Value::to_string)
            .unwrap_or_default();
        out.push_str(&format!(" -> {name}({args})"));
    }
    out
}

/// The stored JSON, or the text itself as a JSON string when it does not parse.
fn parse_detail(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `text` cut to at most `max` bytes (on a character boundary), followed by
/// `… (N more bytes)` when something was cut.
pub fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// Caps the string field `field` of a JSON object in place.
fn cap_field(v: &mut Value, field: &str, max: usize) {
    if let Some(Value::String(s)) = v.get_mut(field) {
        if s.len() > max {
            *s = cap(s, max);
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Unix milliseconds as RFC 3339 in UTC: `2024-05-01T12:30:00.250Z`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rem % 1000
    )
}

/// Parses an RFC 3339 time (`2024-05-01T12:30:00Z`, `2024-05-01T14:30:00.5+02:00`; a space
/// may stand for the `T`) into Unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let s = text.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let sep = |i: usize, allowed: &[u8]| s.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = [
        31,
        28 + i64::from(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > days_in_month[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0;
    if sep(i, b".") {
        let start = i + 1;
        i = start;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        let n: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        frac_ms = n * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset_min = match s.get(i)? {
        b'Z' | b'z' if s.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if s.len() == i + 6 && sep(i + 3, b":") => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 60 + om;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59);
    Some((secs - offset_min * 60) * 1000 + frac_ms)
}

/// Parses an age: a whole number and a unit, `s`, `m`, `h`, `d` or `w` (`90s`, `10m`, `2h`,
/// `7d`).
pub fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let bad = || {
        format!("{t:?} is not an age: use a number and a unit (s, m, h, d, w), e.g. 10m, 2h or 7d")
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(bad)
}

/// Parses `--since` / `since=`: an age back from `now_ms` (`10m`, `2h`, `7d`) or an RFC 3339
/// time. Returns Unix milliseconds.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Some(ms) = parse_rfc3339_ms(text) {
        return Ok(ms);
    }
    match parse_age(text) {
        Ok(age) => Ok(now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "{:?} is neither an age (10m, 2h, 7d) nor an RFC 3339 time \
             (2024-05-01T12:00:00Z)",
            text.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditRow, JournalRow, PageRow};

    fn page(context: &str, id: u64, message: Value) -> PageRow {
        PageRow {
            context: context.into(),
            page_id: id,
            agent: "coder".into(),
            group: id,
            kind: "message".into(),
            pinned: false,
            importance: 0.5,
            tokens: 3,
            shared_key: None,
            message: message.to_string(),
        }
    }

    fn journal(context: &str, step: u32, call: u32, kind: &str, at_ms: i64) -> JournalRow {
        JournalRow {
            context: context.into(),
            step,
            call,
            kind: kind.into(),
            agent: "coder".into(),
            instance: "coder#0".into(),
            task: "w/t".into(),
            attempt: 1,
            at_ms,
            duration_ms: 12,
            page_id: None,
            detail: "{}".into(),
        }
    }

    fn audit_row(kind: &str, at_ms: i64, agent: Option<&str>) -> AuditRow {
        AuditRow {
            at_ms,
            kind: kind.into(),
            actor: "scheduler".into(),
            agent: agent.map(Into::into),
            instance: None,
            task: Some("w/t".into()),
            attempt: Some(1),
            step: None,
            detail: json!({"from": "ready", "to": "running"}).to_string(),
        }
    }

    /// A run `r` whose attempt `w/t#1` asked for one tool call and then answered.
    fn store() -> Store {
        let mut s = Store::open_in_memory().unwrap();
        let ctx = "w/t#1";
        s.put_pages(
            "r",
            &[
                page(ctx, 0, json!({"role": "system", "content": "you fix code"})),
                page(ctx, 1, json!({"role": "user", "content": "fix main.rs"})),
                page(
                    ctx,
                    2,
                    json!({"role": "assistant", "content": "",
                    "tool_calls": [{"id": "c1", "name": "read_file",
                                    "arguments": {"path": "main.rs"}}]}),
                ),
                page(
                    ctx,
                    3,
                    json!({"role": "tool", "content": "fn main() {}",
                                    "tool_call_id": "c1"}),
                ),
                page(ctx, 4, json!({"role": "assistant", "content": "done"})),
            ],
        )
        .unwrap();
        let mut reply0 = journal(ctx, 0, 0, jkind::REPLY, 1_000);
        reply0.page_id = Some(2);
        reply0.detail = json!({"usage": {"prompt_tokens": 9, "completion_tokens": 2}}).to_string();
        let mut tool = journal(ctx, 0, 0, jkind::TOOL_RESULT, 1_010);
        tool.page_id = Some(3);
        let mut reply1 = journal(ctx, 1, 0, jkind::REPLY, 1_020);
        reply1.page_id = Some(4);
        s.put_journal("r", &[reply0, tool, reply1]).unwrap();
        s.append_audit(
            "r",
            &[
                audit_row("run_started", 900, None),
                audit_row("task_state", 950, Some("coder")),
                audit_row("task_state", 1_030, Some("coder")),
            ],
        )
        .unwrap();
        s.append_audit("other", &[audit_row("run_started", 5, None)])
            .unwrap();
        s
    }

    fn kinds(entries: &[AuditEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn merges_the_audit_table_and_the_journal_in_time_order() {
        let s = store();
        let q = AuditQuery {
            run: Some("r".into()),
            ..AuditQuery::default()
        };
        let all = s.audit(&q).unwrap();
        assert_eq!(
            kinds(&all),
            [
                "run_started",
                "task_state",
                "llm_call",
                "tool_call",
                "llm_call",
                "task_state"
            ]
        );
        assert!(all.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(all.iter().all(|e| e.run == "r"));
        let call = &all[2];
        assert_eq!(call.actor, "coder#0");
        assert_eq!(call.at, "1970-01-01T00:00:01.000Z");
        assert_eq!(call.detail["usage"]["prompt_tokens"], 9);
        assert_eq!(call.detail["prompt_messages"], 2);
        assert_eq!(
            call.detail["prompt"],
            "[system] you fix code\n[user] fix main.rs"
        );
        assert_eq!(call.detail["reply"]["tool_calls"][0]["name"], "read_file");
        let tool = &all[3];
        assert_eq!(tool.detail["tool"], "read_file");
        assert_eq!(tool.detail["arguments"]["path"], "main.rs");
        assert_eq!(tool.detail["result"], "fn main() {}");
        assert_eq!(all[4].detail["prompt_messages"], 4);
        assert_eq!(all[5].detail["to"], "running");
    }

    #[test]
    fn filters_and_limit_keep_the_newest_entries() {
        let s = store();
        let every = s.audit(&AuditQuery::default()).unwrap();
        assert_eq!(every.len(), 7, "both runs");
        assert_eq!(every[0].run, "other");
        let q = AuditQuery {
            run: Some("r".into()),
            limit: 2,
            ..AuditQuery::default()
        };
        assert_eq!(kinds(&s.audit(&q).unwrap()), ["llm_call", "task_state"]);
        let q = AuditQuery {
            run: Some("r".into()),
            since_ms: Some(1_010),
            ..AuditQuery::default()
        };
        assert_eq!(
            kinds(&s.audit(&q).unwrap()),
            ["tool_call", "llm_call", "task_state"]
        );
        let q = AuditQuery {
            agent: Some("coder".into()),
            ..AuditQuery::default()
        };
        assert_eq!(s.audit(&q).unwrap().len(), 5, "run starts name no agent");
        let q = AuditQuery {
            task: Some("w/other".into()),
            ..AuditQuery::default()
        };
        assert!(s.audit(&q).unwrap().is_empty());
        let q = AuditQuery {
            limit: 0,
            ..AuditQuery::default()
        };
        assert!(s.audit(&q).unwrap().is_empty());
    }

    #[test]
    fn start_markers_and_long_texts() {
        let mut s = store();
        let ctx = "w/t#1";
        let long = "x".repeat(RESULT_CAP_BYTES + 10);
        s.put_pages(
            "r",
            &[page(
                ctx,
                5,
                json!({"role": "tool", "content": long,
                                              "tool_call_id": "gone"}),
            )],
        )
        .unwrap();
        let mut start = journal(ctx, 2, 0, jkind::TOOL_START, 2_000);
        start.detail = json!({"tool": "run_command", "class": "at_most_once"}).to_string();
        let mut result = journal(ctx, 2, 0, jkind::TOOL_RESULT, 2_001);
        result.page_id = Some(5);
        s.put_journal("r", &[start, result]).unwrap();
        let q = AuditQuery {
            since_ms: Some(2_000),
            ..AuditQuery::default()
        };
        let got = s.audit(&q).unwrap();
        assert_eq!(kinds(&got), ["tool_started", "tool_call"]);
        assert_eq!(got[0].detail["tool"], "run_command");
        let text = got[1].detail["result"].as_str().unwrap();
        assert!(text.ends_with("… (10 more bytes)"), "{text}");
        assert!(got[1].detail.get("tool").is_none(), "no call of that id");
    }

    #[test]
    fn a_start_marker_names_the_arguments_of_its_call() {
        let mut s = store();
        let ctx = "w/t#1";
        s.put_pages(
            "r",
            &[page(
                ctx,
                3,
                json!({"role": "assistant", "content": "",
                       "tool_calls": [{"id": "c1", "name": "run_command",
                                       "arguments": {"argv": ["make"]}}]}),
            )],
        )
        .unwrap();
        let mut reply = journal(ctx, 1, 0, jkind::REPLY, 1_000);
        reply.page_id = Some(3);
        let mut start = journal(ctx, 1, 0, jkind::TOOL_START, 1_001);
        start.detail = json!({"tool": "run_command", "class": "at_most_once"}).to_string();
        s.put_journal("r", &[reply, start]).unwrap();
        let got = s.audit(&AuditQuery::default()).unwrap();
        let started = got.iter().find(|e| e.kind == "tool_started").unwrap();
        assert_eq!(started.detail["arguments"], json!({"argv": ["make"]}));
    }

    #[test]
    fn caps_cut_on_character_boundaries() {
        assert_eq!(cap("abc", 3), "abc");
        assert_eq!(cap("abcd", 3), "abc… (1 more bytes)");
        assert_eq!(cap("ééé", 3), "é… (4 more bytes)");
    }

    #[test]
    fn times_round_trip_and_parse() {
        for ms in [0, 1, 86_399_999, 951_782_400_000, 1_714_566_600_250, -1_000] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            format_rfc3339_ms(1_714_566_600_250),
            "2024-05-01T12:30:00.250Z"
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:30:00+02:00"),
            Some(1_714_566_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01 12:30:00.5z"),
            Some(1_714_566_600_500)
        );
        for bad in [
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01T12:30:00",
            "2024-05-01T12:30:00+2:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(parse_age("7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_age("10m").unwrap().as_secs(), 600);
        assert!(parse_age("10").is_err());
        assert!(parse_age("m").is_err());
        assert!(parse_age("-1h").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
        assert_eq!(
            parse_since("2h", 10_000_000).unwrap(),
            10_000_000 - 7_200_000
        );
        assert_eq!(parse_since("1970-01-01T00:00:01Z", 0).unwrap(), 1_000);
        let err = parse_since("yesterday", 0).unwrap_err();
        assert!(err.contains("neither an age"), "{err}");
    }
}
