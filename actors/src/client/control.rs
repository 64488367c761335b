//! `agentos suspend|resume|kill AGENT` and `agentos cancel WORKFLOW`.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use super::inspect::array;
use super::{print, print_json, table, Client, ClientError};

/// `POST /api/agents/{agent}/{action}`; prints each instance's state afterwards.
pub(super) async fn agent(
    client: &Client,
    agent: &str,
    action: &str,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let url = client.url(&["api", "agents", agent, action]);
    let (_, answer) = client.send(client.request(Method::POST, url)).await?;
    if json {
        print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let empty = Value::Array(Vec::new());
    let blocks = array(
        client,
        answer.get("control_blocks").unwrap_or(&empty),
        "control_blocks",
    )?;
    let states: Vec<String> = blocks
        .iter()
        .map(|b| format!("{} {}", table::instance(b), table::text(b, "state")))
        .collect();
    let instances = match states.len() {
        0 => "no instances".to_owned(),
        1 => format!("1 instance: {}", states[0]),
        n => format!("{n} instances: {}", states.join(", ")),
    };
    print(&format!("{action}: agent \"{agent}\" ({instances})\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// `DELETE /api/workflows/{id}`; prints the workflow's tasks afterwards.
pub(super) async fn cancel(
    client: &Client,
    workflow: &str,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let url = client.url(&["api", "workflows", workflow]);
    let (_, view) = client.send(client.request(Method::DELETE, url)).await?;
    if json {
        print_json(&view)?;
        return Ok(ExitCode::SUCCESS);
    }
    let empty = Value::Array(Vec::new());
    let tasks = array(client, view.get("tasks").unwrap_or(&empty), "tasks")?;
    print(&format!(
        "cancelled workflow {}: {} ({})\n{}",
        table::text(&view, "id"),
        table::text(&view, "state"),
        table::counts_summary(view.get("counts").unwrap_or(&Value::Null)),
        table::tasks(tasks)
    ))?;
    Ok(ExitCode::SUCCESS)
}
