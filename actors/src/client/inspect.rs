//! `agentos workflows`, `agentos tasks [--workflow ID]` and `agentos ps`: what a running
//! server holds, as tables or (`--json`) as the server's JSON.

use std::process::ExitCode;

use reqwest::StatusCode;
use serde_json::Value;

use super::{print, print_json, quotas, table, Client, ClientError};

/// `GET /api/workflows`: one row per workflow.
pub(super) async fn workflows(client: &Client, json: bool) -> Result<ExitCode, ClientError> {
    let list = client.get(&["api", "workflows"]).await?;
    if json {
        print_json(&list)?;
    } else {
        let views = array(client, &list, "the workflow list")?;
        print(&table::workflows(views))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `GET /api/tasks`, or with a workflow `GET /api/workflows/{id}` (an unknown id is the
/// server's 404): one row per task. `--json` prints the server's answer as it is: the task
/// list `{"done", "tasks"}`, or the workflow view.
pub(super) async fn tasks(
    client: &Client,
    workflow: Option<&str>,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let answer = match workflow {
        Some(id) => client.get(&["api", "workflows", id]).await?,
        None => client.get(&["api", "tasks"]).await?,
    };
    if json {
        print_json(&answer)?;
    } else {
        let tasks = answer
            .get("tasks")
            .ok_or_else(|| bad(client, format!("no \"tasks\" in {answer}")))?;
        print(&table::tasks(array(client, tasks, "the task list")?))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `GET /api/agents`: one row per agent instance; with `GET /api/quotas`, its agent's rate
/// limit and budget, then the concurrency limit, the other scopes and the fair shares.
/// `--json` prints the agent list only, as before (the quotas are `GET /api/quotas`).
pub(super) async fn ps(client: &Client, json: bool) -> Result<ExitCode, ClientError> {
    let list = client.get(&["api", "agents"]).await?;
    if json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let blocks = array(client, &list, "the agent list")?;
    let quotas = match client.get(&["api", "quotas"]).await {
        Ok(q) => Some(q),
        // A server from before quotas: the agent table alone.
        Err(ClientError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => None,
        Err(e) => {
            // The agents are what `ps` is for; the quotas are extra.
            eprintln!("ps: no quota figures: {e}");
            None
        }
    };
    print(&quotas::ps(blocks, quotas.as_ref(), quotas::now_ms()))?;
    Ok(ExitCode::SUCCESS)
}

/// `v` as an array, or a bad answer naming `what`.
pub(super) fn array<'a>(
    client: &Client,
    v: &'a Value,
    what: &str,
) -> Result<&'a [Value], ClientError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| bad(client, format!("{what} is not an array: {v}")))
}

fn bad(client: &Client, reason: String) -> ClientError {
    ClientError::BadAnswer {
        server: client.server().to_owned(),
        reason,
    }
}
