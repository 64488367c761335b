//! `agentos submit FILE [--wait] [--idempotency-key KEY]`.
//!
//! What FILE may hold, and how each workflow is sent:
//! - one workflow in RON, `(name: "...", tasks: [...])`: sent as it is
//!   (`content-type: application/ron`), so the server's error positions are positions in
//!   FILE;
//! - a whole config in RON (`version: 1`, ..., `workflows: [...]`): every workflow is sent, as
//!   JSON built from the parsed file (errors then name the entity, without a position);
//! - `.json`: one workflow object, sent as it is, or an array of them, each sent on its own.
//!
//! The file is parsed here first, with the same strict shapes the server uses, so a typo or a
//! stray field is reported with `FILE:LINE:COL` and exit 2 before anything is sent. Whether
//! the agents exist and the DAG holds is for the server to say (a 422 listing every error).

use std::path::Path;
use std::process::ExitCode;

use agentos_runtime::config::raw::{RawConfig, RawTask, RawWorkflow};
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::{json, Value};

use super::progress::{Figures, Progress, POLL};
use super::{print, print_json, table, Client, ClientError};

const RON: &str = "application/ron";
const JSON: &str = "application/json";

/// One workflow to send.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Submission {
    /// Its name (for messages and per-workflow idempotency keys).
    name: String,
    /// The request body.
    body: String,
    /// Its content type.
    content_type: &'static str,
    /// The file the body is, byte for byte: the server's error positions point into it.
    verbatim_of: Option<String>,
}

/// Reads FILE into the workflows it holds (at least one).
pub(super) fn read(path: &Path) -> Result<Vec<Submission>, ClientError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Input(format!("cannot read {shown}: {e}")))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let subs = if is_json {
        from_json(&text, &shown)?
    } else {
        from_ron(&text, &shown)?
    };
    if subs.is_empty() {
        return Err(ClientError::Input(format!(
            "{shown} holds no workflows: nothing to submit"
        )));
    }
    Ok(subs)
}

fn from_json(text: &str, shown: &str) -> Result<Vec<Submission>, ClientError> {
    let invalid = |e: serde_json::Error, what: &str| {
        ClientError::Input(format!(
            "{shown}:{}:{}: invalid {what}: {e}",
            e.line(),
            e.column()
        ))
    };
    let value: Value = serde_json::from_str(text).map_err(|e| invalid(e, "JSON"))?;
    match value {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let w: RawWorkflow = serde_json::from_value(item.clone()).map_err(|e| {
                    ClientError::Input(format!("{shown}: workflow [{i}]: invalid workflow: {e}"))
                })?;
                Ok(Submission {
                    name: w.name,
                    body: item.to_string(),
                    content_type: JSON,
                    verbatim_of: None,
                })
            })
            .collect(),
        _ => {
            // Parsed again from the text, so that shape errors carry their position.
            let w: RawWorkflow = serde_json::from_str(text).map_err(|e| invalid(e, "workflow"))?;
            Ok(vec![Submission {
                name: w.name,
                body: text.to_owned(),
                content_type: JSON,
                verbatim_of: Some(shown.to_owned()),
            }])
        }
    }
}

fn from_ron(text: &str, shown: &str) -> Result<Vec<Submission>, ClientError> {
    // The config loader's options: `Some(..)` may be left out.
    let options =
        ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
    let as_workflow = match options.from_str::<RawWorkflow>(text) {
        Ok(w) => {
            return Ok(vec![Submission {
                name: w.name,
                body: text.to_owned(),
                content_type: RON,
                verbatim_of: Some(shown.to_owned()),
            }])
        }
        Err(e) => e,
    };
    let as_config = match options.from_str::<RawConfig>(text) {
        Ok(cfg) => return Ok(cfg.workflows.into_iter().map(from_config).collect()),
        Err(e) => e,
    };
    // Neither shape fits. The reading that got further into the text is the one the file
    // was meant to have; its error is the one worth showing.
    let at = |e: &ron::error::SpannedError| (e.span.start.line, e.span.start.col);
    let (what, e) = if at(&as_config) > at(&as_workflow) {
        ("config", as_config)
    } else {
        ("workflow", as_workflow)
    };
    Err(ClientError::Input(format!(
        "{shown}:{}:{}: invalid {what}: {}\n  (a workflow file holds one `(name: \"...\", tasks: [...])`; \
         a config file holds `version: 1` and `workflows: [...]`)",
        e.span.start.line, e.span.start.col, e.code
    )))
}

/// A config's workflow as the JSON body of a submission.
fn from_config(w: RawWorkflow) -> Submission {
    let tasks: Vec<Value> = w
        .tasks
        .into_iter()
        .map(|t| {
            // Every field, by name: a field added to tasks must be added here too.
            let RawTask {
                id,
                agent,
                input,
                depends_on,
                priority_boost,
            } = t;
            json!({"id": id, "agent": agent, "input": input, "depends_on": depends_on,
                   "priority_boost": priority_boost})
        })
        .collect();
    Submission {
        body: json!({"name": w.name, "tasks": tasks}).to_string(),
        name: w.name,
        content_type: JSON,
        verbatim_of: None,
    }
}

/// Sends every submission; with `wait`, waits for every workflow to finish and prints its
/// tasks. Stops at the first refusal.
pub(super) async fn run(
    client: &Client,
    subs: &[Submission],
    wait: bool,
    key: Option<&str>,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let mut ids: Vec<String> = Vec::new();
    for s in subs {
        let key = key.map(|k| {
            if subs.len() == 1 {
                k.to_owned()
            } else {
                format!("{k}/{}", s.name)
            }
        });
        let answer = match send(client, s, key.as_deref()).await {
            Ok(a) => a,
            Err(e) => {
                if !ids.is_empty() {
                    eprintln!(
                        "submitted before the error: {} (the rest was not sent)",
                        ids.join(", ")
                    );
                }
                return Err(e);
            }
        };
        let Accepted {
            id,
            created,
            answer,
        } = answer;
        if json {
            if !wait {
                print_json(&answer)?;
            }
        } else {
            print(&format!("{id}\n"))?;
            if created {
                eprintln!("submitted workflow \"{}\" as {id}", s.name);
            } else {
                eprintln!(
                    "workflow \"{}\" was already submitted with this idempotency key: {id}",
                    s.name
                );
            }
        }
        ids.push(id);
    }
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let views = wait_for(client, &ids).await?;
    let mut all_succeeded = true;
    for v in &views {
        all_succeeded &= state(client, v)? == "succeeded";
        if json {
            print_json(v)?;
        } else {
            let tasks = v
                .get("tasks")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            print(&format!(
                "workflow {} ({}): {}\n{}",
                table::text(v, "id"),
                table::text(v, "name"),
                table::text(v, "state"),
                table::tasks(tasks)
            ))?;
        }
    }
    Ok(if all_succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What the server said to one submission.
struct Accepted {
    /// The workflow's id.
    id: String,
    /// `false`: an earlier submit with the same key was returned.
    created: bool,
    /// The answer as the server gave it.
    answer: Value,
}

/// Posts one submission.
async fn send(client: &Client, s: &Submission, key: Option<&str>) -> Result<Accepted, ClientError> {
    let mut req = client
        .request(Method::POST, client.url(&["api", "workflows"]))
        .header(CONTENT_TYPE, s.content_type)
        .body(s.body.clone());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let (status, answer) = client.send(req).await.map_err(|e| match &s.verbatim_of {
        Some(file) => e.in_file(file),
        None => e,
    })?;
    let id = answer
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::BadAnswer {
            server: client.server().to_owned(),
            reason: format!("a submit answered {status} without an id: {answer}"),
        })?;
    let created = answer
        .get("created")
        .and_then(Value::as_bool)
        .unwrap_or(status == reqwest::StatusCode::CREATED);
    Ok(Accepted {
        id: id.to_owned(),
        created,
        answer,
    })
}

/// A workflow view's state.
fn state<'a>(client: &Client, view: &'a Value) -> Result<&'a str, ClientError> {
    view.get("state")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::BadAnswer {
            server: client.server().to_owned(),
            reason: format!("a workflow without a state: {view}"),
        })
}

/// Polls every workflow until none is running; answers their final views.
async fn wait_for(client: &Client, ids: &[String]) -> Result<Vec<Value>, ClientError> {
    let progress = Progress::on_stderr();
    let mut views: Vec<Option<Value>> = vec![None; ids.len()];
    loop {
        let mut running = false;
        for (id, view) in ids.iter().zip(views.iter_mut()) {
            if let Some(v) = view {
                if state(client, v)? != "running" {
                    continue;
                }
            }
            let v = client.get(&["api", "workflows", id]).await?;
            running |= state(client, &v)? == "running";
            *view = Some(v);
        }
        progress.show(&Figures::of_views(views.iter().flatten()));
        if !running {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    progress.finish();
    Ok(views.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_ron_workflow_is_sent_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"(name: "review", tasks: [(id: "a", agent: "coder", input: "hi")])"#;
        let subs = read(&file(dir.path(), "w.ron", text)).unwrap();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].name, "review");
        assert_eq!(subs[0].body, text);
        assert_eq!(subs[0].content_type, RON);
        assert!(subs[0].verbatim_of.as_deref().unwrap().ends_with("w.ron"));
    }

    #[test]
    fn a_config_sends_each_of_its_workflows_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"(version: 1,
            backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "sim")],
            workflows: [
                (name: "one", tasks: [(id: "x", agent: "a")]),
                (name: "two", tasks: [(id: "y", agent: "a", input: "{{x}}", depends_on: ["x"], priority_boost: 3)]),
            ])"#;
        let subs = read(&file(dir.path(), "c.ron", text)).unwrap();
        assert_eq!(
            subs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(subs
            .iter()
            .all(|s| s.content_type == JSON && s.verbatim_of.is_none()));
        let body: Value = serde_json::from_str(&subs[1].body).unwrap();
        assert_eq!(
            body,
            json!({"name": "two", "tasks": [{"id": "y", "agent": "a", "input": "{{x}}",
                   "depends_on": ["x"], "priority_boost": 3}]})
        );
    }

    #[test]
    fn a_config_without_workflows_has_nothing_to_submit() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "c.ron", "(version: 1, workflows: [])");
        let e = read(&p).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("holds no workflows"), "{e}");
    }

    #[test]
    fn errors_point_into_the_file_with_the_shape_it_was_meant_to_have() {
        let dir = tempfile::tempdir().unwrap();
        // A workflow with a stray field on line 2: the workflow reading gets further.
        let p = file(
            dir.path(),
            "w.ron",
            "(name: \"w\",\n tasks: [(id: \"a\", agent: \"x\", colour: 1)])",
        );
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("w.ron:2:") && e.contains("invalid workflow"),
            "{e}"
        );
        assert!(e.contains("colour"), "{e}");
        // A config with a broken agent on line 3: the config reading gets further.
        let p = file(
            dir.path(),
            "c.ron",
            "(version: 1,\n backends: [],\n agents: [(name: \"a\", rol: \"r\")])",
        );
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("c.ron:3:") && e.contains("invalid config"),
            "{e}"
        );
        // Not RON at all.
        let e = read(&file(dir.path(), "x.ron", "name = 'w'"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.ron:1:"), "{e}");
    }

    #[test]
    fn json_files_hold_one_workflow_or_an_array() {
        let dir = tempfile::tempdir().unwrap();
        let one = r#"{"name": "w", "tasks": [{"id": "a", "agent": "x"}]}"#;
        let subs = read(&file(dir.path(), "w.json", one)).unwrap();
        assert_eq!((subs[0].body.as_str(), subs[0].content_type), (one, JSON));
        assert!(subs[0].verbatim_of.is_some());
        let many = format!("[{one}, {}]", one.replace("\"w\"", "\"v\""));
        let subs = read(&file(dir.path(), "m.json", &many)).unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[1].name, "v");
        assert!(subs[1].verbatim_of.is_none());
        let e = read(&file(
            dir.path(),
            "b.json",
            "{\"name\": \"w\",\n \"task\": []}",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("b.json:2:") && e.contains("task"), "{e}");
        let e = read(&file(dir.path(), "s.json", "{nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.json:1:") && e.contains("invalid JSON"), "{e}");
    }

    #[test]
    fn a_missing_file_is_an_input_error() {
        let e = read(Path::new("/nonexistent/flow.ron")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/flow.ron:"),
            "{e}"
        );
    }
}
