//! What `agentos ps` adds from `GET /api/quotas`: two columns per agent instance (what is
//! left of its agent's rate limit, what its agent's budget has spent) and, under the table,
//! the scheduler's concurrency limit with its reason, what the process spent, the other
//! scopes (global, backends, workflows) and the fair shares.
//!
//! The answer is read loosely, like the other tables: a missing field shows as `-`, and an
//! answer without `scopes` or `scheduling` adds nothing. Everything stays readable with
//! hundreds of agents: numbers are compact (`12k`, `1.5M`), the scope table shows at most
//! [`MAX_SCOPES`] rows and the fair-share table at most [`MAX_FLOWS`] flows, each saying how
//! many more the JSON answer holds.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::table::{self, Align, Table};

/// Most rows of the scope table.
pub const MAX_SCOPES: usize = 20;

/// Most rows of the fair-share table.
pub const MAX_FLOWS: usize = 8;

/// The quota columns of the instance table.
const COLUMNS: &[(&str, Align)] = &[("RATE LEFT", Align::Right), ("BUDGET SPENT", Align::Left)];

/// The instance table (with the quota columns when some agent has a rate limit or a budget),
/// then the scheduling line and the other scopes. Without `quotas` (an older server), the
/// plain instance table.
pub fn ps(blocks: &[Value], quotas: Option<&Value>, now_ms: u64) -> String {
    let Some(quotas) = quotas else {
        return table::agents(blocks);
    };
    let scopes: Vec<&Value> = quotas
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let agent_scope = |agent: &str| {
        let key = format!("agent:{agent}");
        scopes
            .iter()
            .copied()
            .find(|s| s.get("scope").and_then(Value::as_str) == Some(key.as_str()))
    };
    let limited = |s: &Value| has_rate(s) || has_budget(s);
    let agents_in_table: Vec<String> = blocks
        .iter()
        .filter_map(|b| b.pointer("/id/agent").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let with_columns = agents_in_table
        .iter()
        .any(|a| agent_scope(a).is_some_and(limited));
    let mut out = if with_columns {
        table::agents_with(blocks, COLUMNS, |b| {
            let scope = b
                .pointer("/id/agent")
                .and_then(Value::as_str)
                .and_then(agent_scope);
            vec![
                scope.map_or_else(|| "-".into(), rate_cell),
                scope.map_or_else(|| "-".into(), budget_cell),
            ]
        })
        .render()
    } else {
        table::agents(blocks)
    };
    out.push_str(&footer(quotas, &scopes, &agents_in_table, now_ms));
    out
}

/// Milliseconds since the Unix epoch, for "resets in ...".
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Everything under the instance table, starting with an empty line.
fn footer(quotas: &Value, scopes: &[&Value], agents_in_table: &[String], now_ms: u64) -> String {
    let mut out = String::new();
    if let Some(s) = quotas.get("scheduling").filter(|s| s.is_object()) {
        let _ = writeln!(
            out,
            "\nscheduling: {}, concurrency limit {} of {}, {} running: {}",
            table::text(s, "policy"),
            table::text(s, "limit"),
            table::text(s, "max"),
            table::count(s, "running"),
            table::text(s, "reason"),
        );
    }
    let spent = quotas.get("spent");
    let usd = spent.and_then(|s| s.get("usd")).and_then(Value::as_f64);
    let tokens = spent.and_then(|s| s.get("tokens")).and_then(Value::as_u64);
    if !scopes.is_empty() || usd.is_some_and(|u| u > 0.0) || tokens.is_some_and(|t| t > 0) {
        let _ = writeln!(
            out,
            "spent since the server started: {} and {} tokens",
            usd.map_or_else(|| "-".into(), dollars),
            tokens.map_or_else(|| "-".into(), compact),
        );
    }
    // Agents in the table have their columns; every other scope gets a row here.
    let others: Vec<&Value> = scopes
        .iter()
        .copied()
        .filter(|s| {
            let key = s.get("scope").and_then(Value::as_str).unwrap_or_default();
            key.strip_prefix("agent:")
                .is_none_or(|a| !agents_in_table.iter().any(|t| t == a))
        })
        .collect();
    if !others.is_empty() {
        let mut t = Table::new(&[
            ("SCOPE", Align::Left),
            ("RATE LEFT", Align::Right),
            ("BUDGET SPENT", Align::Left),
            ("RESETS", Align::Left),
            ("IN FLIGHT", Align::Right),
            ("CALL LIMIT", Align::Right),
        ]);
        for s in others.iter().take(MAX_SCOPES) {
            t.row(vec![
                table::text(s, "scope"),
                rate_cell(s),
                budget_cell(s),
                resets(s, now_ms),
                table::count(s, "in_flight").to_string(),
                table::text(s, "concurrency_limit"),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
        if others.len() > MAX_SCOPES {
            let _ = writeln!(
                out,
                "... and {} more scopes (all of them: GET /api/quotas)",
                others.len() - MAX_SCOPES
            );
        }
    }
    if let Some(shares) = quotas.pointer("/scheduling/shares").and_then(shares_table) {
        out.push('\n');
        out.push_str(&shares);
    }
    out
}

fn has_rate(s: &Value) -> bool {
    ["tokens_capacity", "requests_capacity"]
        .iter()
        .any(|k| s.get(*k).is_some_and(|v| !v.is_null()))
}

fn has_budget(s: &Value) -> bool {
    s.get("budget").is_some_and(Value::is_object)
}

/// `1.2k/1.5k tok, 3/10 req`: what is left of each bucket, of its size; `-` without a rate.
fn rate_cell(s: &Value) -> String {
    let mut parts = Vec::new();
    for (kind, unit) in [("tokens", "tok"), ("requests", "req")] {
        let cap = s.get(format!("{kind}_capacity")).and_then(Value::as_u64);
        let left = s.get(format!("{kind}_available")).and_then(Value::as_u64);
        if let Some(cap) = cap {
            let left = left.map_or_else(|| "-".into(), compact);
            parts.push(format!("{left}/{} {unit}", compact(cap)));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// `$0.0044/$5.00, 2.3k/400k tok day`: spent of each limit, then the window, then `soft` or
/// `EXHAUSTED` once reached; `-` without a budget.
fn budget_cell(s: &Value) -> String {
    let Some(b) = s.get("budget").filter(|b| b.is_object()) else {
        return "-".into();
    };
    let mut parts = Vec::new();
    if let Some(limit) = b.get("limit_usd").and_then(Value::as_f64) {
        let spent = b.get("spent_usd").and_then(Value::as_f64).unwrap_or(0.0);
        parts.push(format!("{}/{}", dollars(spent), dollars(limit)));
    }
    if let Some(limit) = b.get("limit_tokens").and_then(Value::as_u64) {
        let spent = b.get("spent_tokens").and_then(Value::as_u64).unwrap_or(0);
        parts.push(format!("{}/{} tok", compact(spent), compact(limit)));
    }
    let mut cell = format!("{} {}", parts.join(", "), table::text(b, "window"));
    if b.get("exhausted").and_then(Value::as_bool) == Some(true) {
        cell.push_str(" EXHAUSTED");
    } else if b.get("soft_reached").and_then(Value::as_bool) == Some(true) {
        cell.push_str(" soft");
    }
    cell.trim().to_owned()
}

/// When the budget's window resets: `in 6h55m`, `never` for a run budget, `-` without one.
fn resets(s: &Value, now_ms: u64) -> String {
    let Some(b) = s.get("budget").filter(|b| b.is_object()) else {
        return "-".into();
    };
    match b.get("resets_at_ms").and_then(Value::as_u64) {
        Some(at) => format!("in {}", duration(at.saturating_sub(now_ms) / 1000)),
        None if b.get("window").and_then(Value::as_str) == Some("run") => "never".into(),
        None => "-".into(),
    }
}

/// The fair-share flows, most served first: tokens, their share of all served, weight; at
/// most [`MAX_FLOWS`] rows. `None` without flows (fair share is off).
fn shares_table(shares: &Value) -> Option<String> {
    let mut flows: Vec<(String, u64, f64)> = shares
        .as_array()?
        .iter()
        .map(|f| {
            (
                table::text(f, "flow"),
                table::count(f, "tokens"),
                f.get("weight").and_then(Value::as_f64).unwrap_or(1.0),
            )
        })
        .collect();
    if flows.is_empty() {
        return None;
    }
    flows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total: u64 = flows.iter().map(|f| f.1).sum();
    let mut t = Table::new(&[
        ("FAIR SHARE", Align::Left),
        ("TOKENS", Align::Right),
        ("SHARE", Align::Right),
        ("WEIGHT", Align::Right),
    ]);
    for (flow, tokens, weight) in flows.iter().take(MAX_FLOWS) {
        let pct = if total == 0 {
            0.0
        } else {
            *tokens as f64 * 100.0 / total as f64
        };
        t.row(vec![
            flow.clone(),
            compact(*tokens),
            format!("{pct:.0}%"),
            trim_float(*weight),
        ]);
    }
    let mut out = t.render();
    if flows.len() > MAX_FLOWS {
        let _ = writeln!(
            out,
            "... and {} more flows (all of them: GET /api/quotas)",
            flows.len() - MAX_FLOWS
        );
    }
    Some(out)
}

/// `950`, `9999`, `12k`, `398k`, `1.5M`, `12M`.
fn compact(n: u64) -> String {
    let f = n as f64;
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.0}k", f / 1e3),
        1_000_000..=9_999_999 => format!("{}M", trim_float((f / 1e5).round() / 10.0)),
        _ => format!("{:.0}M", f / 1e6),
    }
}

/// `$0.0044` for fractions of a cent, else `$0.50`, `$4.99`.
fn dollars(usd: f64) -> String {
    if usd.abs() >= 1.0 || ((usd * 100.0).round() - usd * 100.0).abs() < 1e-9 {
        format!("${usd:.2}")
    } else {
        format!("${usd:.4}")
    }
}

/// `3`, `0.5`: a weight without trailing zeros.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `45s`, `12m05s`, `6h55m`, `3d04h`.
fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3_599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3_600..=86_399 => format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_796_144_400_000;

    fn block(agent: &str, replica: u32) -> Value {
        json!({"pid": 1, "id": {"agent": agent, "replica": replica}, "state": "ready",
               "current_task": null, "steps": 4, "llm_calls": 4, "tool_calls": 3,
               "tokens_in": 545, "tokens_out": 32, "tasks_done": 1, "busy": 1.0})
    }

    /// `GET /api/quotas` as a server with `config/quotas.ron` answers it.
    fn answer() -> Value {
        json!({
            "scopes": [
                {"scope": "global", "tokens_available": 20000, "tokens_capacity": 20000,
                 "requests_available": 118, "requests_capacity": 120, "in_flight": 2,
                 "concurrency_limit": null,
                 "budget": {"window": "day", "spent_usd": 0.0104625, "limit_usd": 5.0,
                            "spent_tokens": 5192, "limit_tokens": null,
                            "resets_at_ms": NOW + 6 * 3_600_000 + 55 * 60_000,
                            "soft_reached": false, "exhausted": false}},
                {"scope": "backend:sim", "tokens_available": 7400, "tokens_capacity": 8000,
                 "requests_available": null, "requests_capacity": null, "in_flight": 2,
                 "concurrency_limit": 6, "budget": null},
                {"scope": "agent:analyst", "tokens_available": null, "tokens_capacity": null,
                 "in_flight": 1,
                 "budget": {"window": "hour", "spent_usd": 0.0044, "limit_usd": null,
                            "spent_tokens": 397664, "limit_tokens": 400000,
                            "resets_at_ms": NOW + 600_000, "soft_reached": true,
                            "exhausted": false}},
                {"scope": "agent:researcher", "tokens_available": 300, "tokens_capacity": 1500,
                 "requests_available": 3, "requests_capacity": 10, "in_flight": 1,
                 "budget": null},
                {"scope": "workflow:incident", "in_flight": 0,
                 "budget": {"window": "run", "spent_usd": 0.5, "limit_usd": 0.5,
                            "resets_at_ms": null, "exhausted": true}},
            ],
            "spent": {"usd": 0.0104625, "tokens": 5192},
            "scheduling": {"policy": "fair_share", "limit": 4, "max": 6, "running": 4,
                           "reason": "cpu 95% above 90% (injected)",
                           "shares": [{"flow": "researcher", "weight": 1.0, "tokens": 2308},
                                      {"flow": "analyst", "weight": 3.0, "tokens": 6924}]},
        })
    }

    fn line<'a>(out: &'a str, start: &str) -> &'a str {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?}:\n{out}"))
    }

    #[test]
    fn agent_rows_get_what_is_left_of_their_rate_and_what_their_budget_spent() {
        let blocks = [
            block("analyst", 0),
            block("researcher", 0),
            block("oncall", 0),
        ];
        let out = ps(&blocks, Some(&answer()), NOW);
        let header = line(&out, "INSTANCE");
        assert!(
            header.contains("  BUSY  ") && header.ends_with("RATE LEFT  BUDGET SPENT"),
            "{out}"
        );
        assert!(
            line(&out, "analyst#0")
                .ends_with("1.00s                       -  398k/400k tok hour soft"),
            "{out}"
        );
        assert!(
            line(&out, "researcher#0").ends_with("300/1500 tok, 3/10 req  -"),
            "{out}"
        );
        // An agent without quotas shows dashes, not figures of another scope.
        assert!(line(&out, "oncall#0").ends_with("-  -"), "{out}");
    }

    #[test]
    fn the_footer_names_the_concurrency_limit_its_reason_and_the_other_scopes() {
        let out = ps(&[block("analyst", 0)], Some(&answer()), NOW);
        assert!(out.contains(
            "\nscheduling: fair_share, concurrency limit 4 of 6, 4 running: cpu 95% above 90% (injected)\n"
        ), "{out}");
        assert!(
            out.contains("spent since the server started: $0.0105 and 5192 tokens"),
            "{out}"
        );
        let global = line(&out, "global ");
        assert!(
            global.contains("20k/20k tok, 118/120 req")
                && global.contains("$0.0105/$5.00 day")
                && global.contains("in 6h55m"),
            "{out}"
        );
        let backend: Vec<&str> = line(&out, "backend:sim").split_whitespace().collect();
        assert_eq!(
            backend,
            ["backend:sim", "7400/8000", "tok", "-", "-", "2", "6"],
            "{out}"
        );
        let incident = line(&out, "workflow:incident");
        assert!(
            incident.contains("$0.50/$0.50 run EXHAUSTED") && incident.contains("never"),
            "{out}"
        );
        // The researcher has no instance in this table, so its scope gets a row.
        assert!(
            line(&out, "agent:researcher").contains("300/1500 tok"),
            "{out}"
        );
        assert!(!out.contains("agent:analyst"), "{out}");
        assert!(
            out.ends_with(
                "\nFAIR SHARE  TOKENS  SHARE  WEIGHT\n\
                 analyst       6924    75%       3\n\
                 researcher    2308    25%       1\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn without_quotas_the_table_is_the_plain_one_plus_the_scheduling_line() {
        let blocks = [block("coder", 0)];
        let none = json!({"scopes": [], "spent": {"usd": 0.0, "tokens": 0},
            "scheduling": {"policy": "priority", "limit": 4, "max": 4, "running": 0,
                           "reason": "configured max_concurrency", "shares": []}});
        let out = ps(&blocks, Some(&none), NOW);
        assert!(out.starts_with(&table::agents(&blocks)), "{out}");
        assert!(
            out.ends_with(
                "\nscheduling: priority, concurrency limit 4 of 4, 0 running: configured max_concurrency\n"
            ),
            "{out}"
        );
        // An older server without /api/quotas: the plain table.
        assert_eq!(ps(&blocks, None, NOW), table::agents(&blocks));
    }

    #[test]
    fn five_hundred_agents_stay_readable() {
        let blocks: Vec<Value> = (0..500)
            .map(|i| block(&format!("agent-{i:03}"), 0))
            .collect();
        let mut scopes: Vec<Value> = (0..500)
            .map(|i| {
                json!({"scope": format!("agent:agent-{i:03}"), "tokens_available": 1_234_567,
                       "tokens_capacity": 12_000_000, "in_flight": 0,
                       "budget": {"window": "day", "spent_usd": 12.5, "limit_usd": 100.0,
                                  "spent_tokens": 9_876_543, "limit_tokens": 50_000_000}})
            })
            .collect();
        scopes.extend((0..40).map(|i| {
            json!({"scope": format!("workflow:batch-{i}"), "in_flight": 0,
                   "budget": {"window": "day", "spent_usd": 0.1, "limit_usd": 1.0,
                              "resets_at_ms": NOW + 45_000}})
        }));
        let shares: Vec<Value> = (0..500)
            .map(|i| json!({"flow": format!("agent-{i:03}"), "weight": 1.0, "tokens": 1000 + i}))
            .collect();
        let answer = json!({"scopes": scopes, "spent": {"usd": 6250.0, "tokens": 4_938_271_500u64},
            "scheduling": {"policy": "fair_share", "limit": 64, "max": 64, "running": 64,
                           "reason": "configured max_concurrency", "shares": shares}});
        let out = ps(&blocks, Some(&answer), NOW);
        let row = line(&out, "agent-042#0");
        assert!(
            row.ends_with("1.2M/12M tok  $12.50/$100.00, 9.9M/50M tok day"),
            "{row}"
        );
        let widest = out.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(widest <= 160, "a line of {widest} characters:\n{out}");
        // One row per instance, MAX_SCOPES scope rows, and a note for the rest.
        let instances = out
            .lines()
            .filter(|l| l.starts_with("agent-") && l.contains("#0"));
        assert_eq!(instances.count(), 500);
        assert_eq!(
            out.lines().filter(|l| l.starts_with("workflow:")).count(),
            MAX_SCOPES
        );
        assert!(
            out.contains("... and 20 more scopes (all of them: GET /api/quotas)"),
            "{out}"
        );
        assert!(
            line(&out, "agent-499 ").ends_with("1499     0%       1"),
            "{out}"
        );
        assert!(
            out.ends_with("... and 492 more flows (all of them: GET /api/quotas)\n"),
            "{out}"
        );
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(compact(950), "950");
        assert_eq!(compact(9_999), "9999");
        assert_eq!(compact(12_345), "12k");
        assert_eq!(compact(397_664), "398k");
        assert_eq!(compact(1_500_000), "1.5M");
        assert_eq!(compact(2_000_000), "2M");
        assert_eq!(compact(12_345_678), "12M");
        assert_eq!(dollars(0.0104625), "$0.0105");
        assert_eq!(dollars(4.989), "$4.99");
        assert_eq!(dollars(0.5), "$0.50");
        assert_eq!(dollars(0.0), "$0.00");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(725), "12m05s");
        assert_eq!(duration(24_900), "6h55m");
        assert_eq!(duration(273_600), "3d04h");
    }
}
