//! Resumed attempts (a journal comes back from `open`) and journal records, with the fakes of
//! the parent module.

use super::*;

fn call(id: &str, name: &str) -> ToolCall {
    ToolCall::new(id, name, json!({}))
}

/// A journaled step whose reply calls `calls`; `results` answers some of them by index.
fn journaled(step: u32, calls: Vec<ToolCall>, results: &[usize], started: &[u32]) -> JournaledStep {
    JournaledStep {
        step,
        results: results
            .iter()
            .map(|i| (calls[*i].id.clone(), format!("journaled result {i}")))
            .collect(),
        reply: ChatMessage {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: calls,
            tool_call_id: None,
        },
        usage: USAGE,
        finish_reason: "tool_calls".into(),
        started: started.to_vec(),
    }
}

fn final_step(step: u32, text: &str) -> JournaledStep {
    JournaledStep {
        step,
        reply: ChatMessage {
            role: Role::Assistant,
            content: text.into(),
            tool_calls: vec![],
            tool_call_id: None,
        },
        usage: USAGE,
        finish_reason: "stop".into(),
        results: vec![],
        started: vec![],
    }
}

const TOOLS: &str = r#""calculator", "launch""#;

#[tokio::test]
async fn a_journal_ending_in_a_final_answer_succeeds_with_no_llm_call() {
    let journal = vec![
        journaled(0, vec![call("a", "calculator")], &[0], &[]),
        final_step(1, "the answer is 4"),
    ];
    let r = rig(vec![], TOOLS, 5, FakePrompts::resumed(journal));
    let result = r.run().await;
    assert_eq!(output(&result), "the answer is 4");
    assert_eq!(r.backend.calls(), 0, "nothing asked again");
    assert!(r.tools.ran().is_empty(), "nothing run again");
    assert_eq!(
        result.usage.prompt_tokens, 20,
        "the journaled replies' usage counts"
    );
    assert_eq!(r.prompts.shared.lock().unwrap()[0].text, "the answer is 4");
    assert!(r.prompts.records().is_empty(), "nothing recorded twice");
    assert_eq!(r.events.count("resumed 2"), 1);
    r.assert_released();
}

#[tokio::test]
async fn a_started_at_most_once_call_is_not_run_again_and_the_model_is_told() {
    let journal = vec![journaled(0, vec![call("x", "launch")], &[], &[0])];
    let r = rig(
        vec![Reply::Answer("checked")],
        TOOLS,
        5,
        FakePrompts::resumed(journal),
    );
    let result = r.run().await;
    assert_eq!(output(&result), "checked");
    assert!(
        r.tools.ran().is_empty(),
        "the at-most-once call did not run again"
    );
    assert_eq!(
        r.prompts.records(),
        ["result s0 c0 interrupted", "reply s1"]
    );
    // The model's next prompt carries the interrupted result, answering the journaled call.
    let prompt = r.backend.last_request().messages;
    let told = prompt.last().unwrap();
    assert_eq!(told.tool_call_id.as_deref(), Some("x"));
    assert_eq!(told.content, crate::durable::interrupted_result("launch"));
    assert_eq!(
        r.backend.last_request().meta.step,
        1,
        "the loop goes on at step 1"
    );
    assert_eq!(
        result.usage.prompt_tokens, 20,
        "journaled reply + the new one"
    );
    assert_eq!(r.events.count("interrupted launch w/t#1/s0/c0"), 1);
    assert_eq!(r.events.count("resumed 1"), 1);
    r.assert_released();
}

#[tokio::test]
async fn a_missing_pure_result_is_run_again_and_recorded_ones_are_not() {
    let journal = vec![journaled(
        0,
        vec![call("a", "calculator"), call("b", "calculator")],
        &[0],
        &[],
    )];
    let r = rig(
        vec![Reply::Answer("4 and 4")],
        TOOLS,
        5,
        FakePrompts::resumed(journal),
    );
    let result = r.run().await;
    assert_eq!(output(&result), "4 and 4");
    assert_eq!(
        r.tools.ran(),
        [("calculator".to_owned(), Some("w/t#1/s0/c1".to_owned()))],
        "only the call with no result ran, with its original identity"
    );
    assert_eq!(r.prompts.records(), ["result s0 c1 ok", "reply s1"]);
    let prompt = r.backend.last_request().messages;
    assert_eq!(prompt.len(), 2 + 3, "pinned, reply, two results");
    r.assert_released();
}

#[tokio::test]
async fn a_started_call_of_a_pure_tool_runs_again() {
    // A start marker of a call whose tool is not at-most-once (any more) does not stop it.
    let journal = vec![journaled(0, vec![call("a", "calculator")], &[], &[0])];
    let r = rig(
        vec![Reply::Answer("4")],
        TOOLS,
        5,
        FakePrompts::resumed(journal),
    );
    r.run().await;
    assert_eq!(r.tools.ran().len(), 1);
    assert_eq!(r.events.count("interrupted"), 0);
}

#[tokio::test]
async fn an_at_most_once_call_runs_only_after_its_start_marker() {
    let r = rig(
        vec![
            Reply::Calls(vec![("launch", json!({}))]),
            Reply::Answer("done"),
        ],
        TOOLS,
        5,
        FakePrompts::default(),
    );
    let result = r.run().await;
    assert_eq!(output(&result), "done");
    assert_eq!(
        r.prompts.records(),
        [
            "reply s0",
            "start s0 c0 launch",
            "result s0 c0 ok",
            "reply s1"
        ]
    );
    assert_eq!(r.tools.ran().len(), 1);
}

#[tokio::test]
async fn under_sync_a_failing_record_fails_the_attempt_for_a_retry() {
    let prompts = FakePrompts {
        fail_records: true,
        ..FakePrompts::default()
    };
    let r = rig(
        vec![Reply::Calls(vec![("calculator", json!({}))])],
        TOOLS,
        5,
        prompts,
    );
    let result = r.run().await;
    let (reason, retryable, _) = failure(&result);
    assert!(retryable, "{reason}");
    assert!(
        reason.contains("cannot record the reply of step 0"),
        "{reason}"
    );
    assert!(
        r.tools.ran().is_empty(),
        "no call ran past an unrecorded reply"
    );
    assert_eq!(
        result.usage.prompt_tokens, 10,
        "the call's tokens still count"
    );
    r.assert_released();
}

#[tokio::test]
async fn under_sync_a_pure_call_runs_before_its_reply_commits_and_a_lost_record_fails_at_the_boundary(
) {
    let prompts = FakePrompts {
        fail_records: true,
        slow_records: true,
        ..FakePrompts::default()
    };
    let r = rig(
        vec![
            Reply::Calls(vec![("calculator", json!({}))]),
            Reply::Answer("done"),
        ],
        TOOLS,
        5,
        prompts,
    );
    let result = r.run().await;
    let (reason, retryable, _) = failure(&result);
    assert!(retryable, "{reason}");
    assert!(
        reason.contains("cannot record the reply of step 0"),
        "the first lost record is the one reported: {reason}"
    );
    assert_eq!(r.tools.ran().len(), 1, "the pure call did not wait");
    assert_eq!(
        r.backend.calls(),
        1,
        "no LLM call went out before the step's records were confirmed"
    );
    r.assert_released();
}

#[tokio::test]
async fn under_sync_a_call_with_effects_waits_for_its_reply_to_commit() {
    let prompts = FakePrompts {
        fail_records: true,
        slow_records: true,
        ..FakePrompts::default()
    };
    let r = rig(
        vec![Reply::Calls(vec![
            ("calculator", json!({})),
            ("launch", json!({})),
        ])],
        TOOLS,
        5,
        prompts,
    );
    let result = r.run().await;
    let (reason, _, _) = failure(&result);
    assert!(
        reason.contains("cannot record the reply of step 0"),
        "{reason}"
    );
    assert!(
        r.tools.ran().is_empty(),
        "no call ran past an unrecorded reply that calls an at-most-once tool"
    );
}

#[tokio::test]
async fn under_async_records_do_not_hold_the_attempt_but_a_start_marker_still_does() {
    let prompts = FakePrompts {
        fail_records: true,
        ..FakePrompts::default()
    };
    let mut r = rig(
        vec![
            Reply::Calls(vec![("launch", json!({})), ("calculator", json!({}))]),
            Reply::Answer("done"),
        ],
        TOOLS,
        5,
        prompts,
    );
    r.setup.durability = Durability::Async;
    let result = r.run().await;
    assert_eq!(
        output(&result),
        "done",
        "lost records do not fail the attempt"
    );
    assert_eq!(
        r.tools.ran(),
        [("calculator".to_owned(), Some("w/t#1/s0/c1".to_owned()))],
        "the at-most-once call did not run without its marker; the pure one did"
    );
    assert_eq!(
        r.prompts.records(),
        [
            "reply s0",
            "start s0 c0 launch",
            "result s0 c0 failed",
            "result s0 c1 ok",
            "reply s1"
        ],
        "records are made in order, the loop just does not wait"
    );
    assert_eq!(
        r.prompts.reported.load(Ordering::SeqCst),
        4,
        "the four records nothing waits for were queued with no answer, their failures left to the source to report"
    );
}

#[tokio::test]
async fn an_override_in_the_agent_spec_decides_the_class() {
    let mut r = rig(
        vec![
            Reply::Calls(vec![("calculator", json!({}))]),
            Reply::Answer("4"),
        ],
        TOOLS,
        5,
        FakePrompts::default(),
    );
    let mut spec = (*r.setup.spec).clone();
    spec.side_effects
        .insert("calculator".into(), SideEffect::AtMostOnce);
    r.setup.spec = Arc::new(spec);
    r.run().await;
    assert_eq!(
        r.prompts.records(),
        [
            "reply s0",
            "start s0 c0 calculator",
            "result s0 c0 ok",
            "reply s1"
        ]
    );
}
