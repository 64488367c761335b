//! The quota gate and preemption in the step loop.

use super::*;

use crate::agent::{CallGate, CallPermit, GateRefusal, GateRequest, Slice};

/// A gate that admits after `hold`, or refuses; records what it was asked and settled.
#[derive(Default)]
struct FakeGate {
    hold: Duration,
    refuse: Option<GateRefusal>,
    asked: Mutex<Vec<GateRequest>>,
    settled: Arc<Mutex<Vec<Option<Usage>>>>,
}

struct FakePermit(Arc<Mutex<Vec<Option<Usage>>>>);

impl CallPermit for FakePermit {
    fn settle(self: Box<Self>, usage: Option<Usage>, _: Duration, _: bool) {
        self.0.lock().unwrap().push(usage);
    }
}

impl CallGate for FakeGate {
    fn admit(
        &self,
        request: GateRequest,
    ) -> BoxFuture<'static, Result<Box<dyn CallPermit>, GateRefusal>> {
        self.asked.lock().unwrap().push(request);
        let (hold, refuse, settled) = (self.hold, self.refuse.clone(), self.settled.clone());
        Box::pin(async move {
            tokio::time::sleep(hold).await;
            match refuse {
                Some(r) => Err(r),
                None => Ok(Box::new(FakePermit(settled)) as Box<dyn CallPermit>),
            }
        })
    }
}

fn gated(replies: Vec<Reply>, gate: FakeGate) -> (Rig, Arc<FakeGate>) {
    let mut r = rig(replies, r#""calculator""#, 5, FakePrompts::default());
    r.setup.cap_calls = true;
    let gate = Arc::new(gate);
    r.ports.gate = Some(gate.clone());
    (r, gate)
}

#[tokio::test(start_paused = true)]
async fn every_call_is_admitted_with_its_prompt_and_cap_then_settled_with_its_usage() {
    let (r, gate) = gated(
        vec![
            Reply::Calls(vec![("calculator", json!({"expression": "2+2"}))]),
            Reply::Answer("4"),
        ],
        // Held back longer than the attempt may run: waiting for quota is not the attempt's time.
        FakeGate {
            hold: Duration::from_secs(90),
            ..FakeGate::default()
        },
    );
    let result = r.run().await;
    assert_eq!(output(&result), "4");
    let asked = gate.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0].agent, "a");
    assert_eq!(asked[0].workflow, "w");
    assert!(asked[0].prompt_tokens > 0);
    assert_eq!(asked[0].max_tokens, r.setup.call_max_tokens);
    assert_eq!(
        r.backend.last_request().max_tokens,
        Some(r.setup.call_max_tokens as u32),
        "the call carries the cap it reserved"
    );
    let settled = gate.settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 2);
    assert!(settled
        .iter()
        .all(|u| u.is_some_and(|u| u.prompt_tokens == 10)));
    r.assert_released();
}

#[tokio::test]
async fn an_exhausted_budget_fails_the_attempt_for_good_or_yields_it_until_the_reset() {
    let refusal = |wait| GateRefusal {
        reason: "agent:a daily budget exhausted: spent $5.01 of $5.00".into(),
        wait,
        resets_in: Some(Duration::from_secs(600)),
    };
    let (r, _) = gated(
        vec![Reply::Answer("never")],
        FakeGate {
            refuse: Some(refusal(false)),
            ..FakeGate::default()
        },
    );
    let result = r.run().await;
    let (reason, retryable, _) = failure(&result);
    assert!(
        reason.starts_with("budget exhausted: agent:a daily budget"),
        "{reason}"
    );
    assert!(!retryable);
    assert_eq!(r.backend.calls(), 0, "no call reached the backend");
    r.assert_released();

    let (r, _) = gated(
        vec![Reply::Answer("never")],
        FakeGate {
            refuse: Some(refusal(true)),
            ..FakeGate::default()
        },
    );
    match r.run().await.outcome {
        Outcome::Yielded {
            resume_after,
            preempted,
            reason,
        } => {
            assert_eq!(resume_after, Some(Duration::from_secs(600)));
            assert!(!preempted);
            assert!(reason.contains("waiting for quota"), "{reason}");
        }
        other => panic!("expected a yield, got {other:?}"),
    }
}

#[tokio::test]
async fn a_preempted_attempt_gives_way_only_at_a_step_boundary_after_its_slice() {
    let mut r = rig(
        vec![
            Reply::Calls(vec![("calculator", json!({"expression": "1+1"}))]),
            Reply::Calls(vec![("calculator", json!({"expression": "2+2"}))]),
            Reply::Answer("done"),
        ],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    r.setup.slice = Some(Slice {
        steps: Some(2),
        time: None,
    });
    let (_suspend_tx, suspended) = tokio::sync::watch::channel(false);
    let (_cancel_tx, cancelled) = tokio::sync::watch::channel(None);
    // Requested before the first step: the attempt still runs its slice of two steps.
    let (_preempt_tx, preempt) = tokio::sync::watch::channel(Some("urgent/h waits".to_owned()));
    let control = AttemptControl::new(suspended, cancelled).with_preempt(preempt);
    let result = run_attempt(
        &r.setup,
        &r.ports,
        &dispatch(Duration::from_secs(60)),
        &control,
    )
    .await;
    match result.outcome {
        Outcome::Yielded {
            reason, preempted, ..
        } => {
            assert!(preempted);
            assert!(
                reason.contains("at step 2") && reason.contains("urgent/h"),
                "{reason}"
            );
        }
        other => panic!("expected a preemption, got {other:?}"),
    }
    assert_eq!(
        r.backend.calls(),
        2,
        "two steps ran, both with their tool results"
    );
    assert_eq!(r.tools.ran().len(), 2);
    assert_eq!(result.usage.prompt_tokens, 20);
    r.assert_released();
}
