//! `spawn_task`: a running task adds a task to its own workflow, through the context's
//! [`SpawnPort`] (the scheduler).
//!
//! Arguments: `{"agent": name, "input": string, "depends_on"?: [task id, ...]}`. Result data:
//! `{"task": "workflow/id", "id": id}`. The new task's id is the spawning task's id with a
//! counter (`plan.1`, `plan.2`, ...). Its `depends_on` may name only tasks of the workflow that
//! do not wait for the spawning task; the spawning task's dependents wait for every task it
//! spawned. Past `runtime.spawn` limits, or with a bad agent or dependency, the model reads a
//! tool error; nothing else happens.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::json;

use super::{arg_str, SpawnPort, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;
use crate::sched::SpawnRequest;

/// Most `depends_on` entries one spawn may list.
pub const MAX_DEPENDS_ON: usize = 64;

/// The `spawn_task` tool.
#[derive(Debug, Clone, Copy)]
pub struct SpawnTask;

fn request(args: &serde_json::Value) -> Result<SpawnRequest, ToolError> {
    let agent = arg_str(args, "agent")?.trim().to_owned();
    if agent.is_empty() {
        return Err(ToolError::InvalidArguments(
            "`agent` must not be empty".into(),
        ));
    }
    let input = arg_str(args, "input")?.to_owned();
    let depends_on = match args.get("depends_on") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => {
            if items.len() > MAX_DEPENDS_ON {
                return Err(ToolError::InvalidArguments(format!(
                    "`depends_on` lists {} tasks; at most {MAX_DEPENDS_ON}",
                    items.len()
                )));
            }
            items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        ToolError::InvalidArguments(
                            "`depends_on` must be an array of task ids (strings)".into(),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => {
            return Err(ToolError::InvalidArguments(
                "`depends_on` must be an array of task ids (strings)".into(),
            ))
        }
    };
    Ok(SpawnRequest {
        agent,
        input,
        depends_on,
        call: None,
    })
}

fn port(ctx: &ToolContext) -> Result<Arc<dyn SpawnPort>, ToolError> {
    ctx.spawner
        .clone()
        .ok_or_else(|| ToolError::Failed("spawning tasks is not available here".into()))
}

impl Tool for SpawnTask {
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::Idempotent
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "spawn_task".into(),
            description: "Add a task to the current workflow, run by the named agent. The \
                          current task's dependents also wait for it."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "description": "Agent that runs the new task."},
                    "input": {"type": "string", "description": "The new task's input."},
                    "depends_on": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Ids of existing tasks of this workflow to wait for."
                    }
                },
                "required": ["agent", "input"],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let call = ctx.call.as_ref().map(ToString::to_string);
        let started = request(&args)
            .and_then(|req| Ok(port(ctx)?.spawn(&ctx.task, SpawnRequest { call, ..req })));
        Box::pin(async move {
            let key = started?.await?;
            let id = key
                .rsplit_once('/')
                .map_or(key.as_str(), |(_, id)| id)
                .to_owned();
            Ok(ToolOutput {
                content: format!("spawned task `{id}` ({key})"),
                data: json!({"task": key, "id": id}),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_support::context;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeScheduler {
        seen: Mutex<Vec<(String, SpawnRequest)>>,
    }

    impl SpawnPort for FakeScheduler {
        fn spawn(
            &self,
            parent: &str,
            req: SpawnRequest,
        ) -> BoxFuture<'static, Result<String, ToolError>> {
            let refused = req.agent == "ghost";
            self.seen.lock().unwrap().push((parent.to_owned(), req));
            Box::pin(async move {
                if refused {
                    Err(ToolError::Failed("agent \"ghost\" is not declared".into()))
                } else {
                    Ok("wf/task.1".into())
                }
            })
        }
    }

    #[tokio::test]
    async fn spawns_through_the_port_as_the_current_task() {
        let sched = Arc::new(FakeScheduler::default());
        let mut ctx = context(None);
        ctx.spawner = Some(sched.clone());
        let out = SpawnTask
            .call(
                &ctx,
                json!({"agent": "w", "input": "part 1", "depends_on": ["a"]}),
            )
            .await
            .unwrap();
        assert_eq!(out.data, json!({"task": "wf/task.1", "id": "task.1"}));
        let seen = sched.seen.lock().unwrap();
        assert_eq!(seen[0].0, "wf/task");
        assert_eq!(seen[0].1.depends_on, vec!["a".to_string()]);
        assert_eq!(
            seen[0].1.call, None,
            "no call identity outside the step core"
        );
    }

    #[tokio::test]
    async fn the_call_identity_reaches_the_scheduler() {
        let sched = Arc::new(FakeScheduler::default());
        let mut ctx = context(None);
        ctx.spawner = Some(sched.clone());
        ctx.call = Some(crate::durable::CallId {
            context: "wf/task#3".into(),
            step: 2,
            call: 1,
        });
        SpawnTask
            .call(&ctx, json!({"agent": "w", "input": "part 1"}))
            .await
            .unwrap();
        let seen = sched.seen.lock().unwrap();
        assert_eq!(seen[0].1.call.as_deref(), Some("wf/task#3/s2/c1"));
    }

    #[tokio::test]
    async fn bad_arguments_and_refusals_are_tool_errors() {
        let sched = Arc::new(FakeScheduler::default());
        let mut ctx = context(None);
        ctx.spawner = Some(sched.clone());
        for args in [
            json!({"input": "x"}),
            json!({"agent": " ", "input": "x"}),
            json!({"agent": "w", "input": "x", "depends_on": "a"}),
            json!({"agent": "w", "input": "x", "depends_on": [1]}),
            json!({"agent": "w", "input": "x", "depends_on": vec!["a"; 65]}),
        ] {
            let err = SpawnTask.call(&ctx, args.clone()).await.unwrap_err();
            assert!(
                matches!(err, ToolError::InvalidArguments(_)),
                "{args}: {err}"
            );
        }
        assert!(
            sched.seen.lock().unwrap().is_empty(),
            "nothing reached the scheduler"
        );
        let err = SpawnTask
            .call(&ctx, json!({"agent": "ghost", "input": "x"}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not declared"));
        let err = SpawnTask
            .call(&context(None), json!({"agent": "w", "input": "x"}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not available"));
    }
}
