//! Where an agent's step events go: typed events (metrics, trace, logs) and the agent's own
//! entry on the [`Board`]; and [`follow_switch`], which shows an agent's suspend switch on the
//! entries of all its instances.
//!
//! An entry's state is written under the entry's lock, with the switch read under that lock
//! too. So when the switch moves, an instance's own write either sees the move or comes
//! before [`follow_switch`] rewrites the entry: the entry ends up showing the switch either
//! way.

use std::sync::{Arc, Weak};

use agentos_runtime::agent::{EventSink, StepEvent};
use agentos_runtime::events::agent::{AgentMetrics, AgentStateChanged};
use agentos_runtime::model::{AgentState, InstanceId};
use agentos_runtime::trace::Trace;
use tokio::sync::watch;

use crate::board::Board;

/// One instance's sink; it writes only that instance's control block.
#[derive(Debug, Clone)]
pub struct AgentSink {
    instance: InstanceId,
    board: Arc<Board>,
    trace: Trace,
    suspended: watch::Receiver<bool>,
    /// The agent's step series, shared by its replicas.
    metrics: Arc<AgentMetrics>,
}

impl AgentSink {
    /// A sink for `instance`; `suspended` is its agent's suspend switch, `metrics` its
    /// agent's series.
    pub fn new(
        instance: InstanceId,
        board: Arc<Board>,
        trace: Trace,
        suspended: watch::Receiver<bool>,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        Self {
            instance,
            board,
            trace,
            suspended,
            metrics,
        }
    }

    /// Moves the instance's control block to `to`, keeping the per-state gauge balanced. While
    /// the agent is suspended it shows Suspended whatever it is doing (an attempt finishing
    /// its current call), until it terminates.
    pub fn set_state(&self, to: AgentState) {
        let mut moved = None;
        self.board.update(&self.instance, |cb| {
            let to = if *self.suspended.borrow() && to != AgentState::Terminated {
                AgentState::Suspended
            } else {
                to
            };
            if cb.state != to {
                moved = Some((cb.state, to));
                cb.state = to;
            }
        });
        if let Some((from, to)) = moved {
            AgentStateChanged {
                from: Some(from),
                to: Some(to),
            }
            .emit_with(&self.metrics);
        }
    }

    /// The suspend switch moved: show Suspended, or what the instance is doing.
    pub fn switch_moved(&self) {
        show_switch(&self.board, &self.instance, &self.suspended);
    }
}

/// Shows Suspended on `instance`'s control block while `switch` is on, else what it is doing
/// (Running with a task, Ready without); a terminated instance stays Terminated.
fn show_switch(board: &Board, instance: &InstanceId, switch: &watch::Receiver<bool>) {
    let mut moved = None;
    board.update(instance, |cb| {
        let to = match cb.state {
            AgentState::Terminated => return,
            _ if *switch.borrow() => AgentState::Suspended,
            _ if cb.current_task.is_some() => AgentState::Running,
            _ => AgentState::Ready,
        };
        if cb.state != to {
            moved = Some((cb.state, to));
            cb.state = to;
        }
    });
    emit_moved(moved);
}

fn emit_moved(moved: Option<(AgentState, AgentState)>) {
    if let Some((from, to)) = moved {
        AgentStateChanged {
            from: Some(from),
            to: Some(to),
        }
        .emit();
    }
}

/// Follows `agent`'s suspend switch for its instances `0..replicas`: each time it moves,
/// every instance's control block shows it ([`AgentSink::switch_moved`]). One task for all
/// the instances of an agent (a task each would cost every idle instance as much again as
/// the rest of it); an instance shows the switch by itself when it starts. It holds the board
/// weakly: the switch's sender lives there, so a strong hold would keep the switch, and this
/// task, alive for ever. Ends when the board is gone.
pub async fn follow_switch(
    board: Weak<Board>,
    agent: Arc<str>,
    replicas: u32,
    mut switch: watch::Receiver<bool>,
) {
    while switch.changed().await.is_ok() {
        let Some(board) = board.upgrade() else {
            return;
        };
        for replica in 0..replicas {
            let instance = InstanceId {
                agent: agent.clone(),
                replica,
            };
            show_switch(&board, &instance, &switch);
        }
    }
}

impl EventSink for AgentSink {
    fn emit(&self, event: StepEvent<'_>) {
        match event {
            StepEvent::State(to) => self.set_state(to),
            StepEvent::LlmFinished(e) => {
                e.emit_with(&self.trace, &self.metrics);
                self.board.update(&self.instance, |cb| {
                    cb.steps += 1;
                    cb.llm_calls += 1;
                    cb.tokens_in += e.usage.prompt_tokens;
                    cb.tokens_out += e.usage.completion_tokens;
                });
            }
            StepEvent::LlmFailed(e) => {
                e.emit(&self.trace);
                self.board.update(&self.instance, |cb| cb.llm_calls += 1);
            }
            StepEvent::LlmAbandoned(e) => e.emit(),
            StepEvent::ToolCalled(e) => {
                e.emit(&self.trace);
                self.board.update(&self.instance, |cb| cb.tool_calls += 1);
            }
            StepEvent::StepFinished(e) => e.emit_with(&self.metrics),
            StepEvent::PagerRequest(e) => e.emit_with(&self.metrics),
            StepEvent::Resumed(e) => e.emit(&self.trace),
            StepEvent::CallInterrupted(e) => e.emit(&self.trace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_runtime::model::ControlBlock;

    fn id(replica: u32) -> InstanceId {
        InstanceId {
            agent: "a".into(),
            replica,
        }
    }

    fn state(board: &Board, replica: u32) -> AgentState {
        board.agents.get(&id(replica)).map(|cb| cb.state).unwrap()
    }

    #[actix_rt::test]
    async fn the_follower_shows_the_switch_on_every_instance_but_a_terminated_one() {
        let board = Arc::new(Board::new(["a"]));
        for r in 0..3 {
            board.agents.insert(id(r), ControlBlock::new(1, id(r)));
        }
        board.update(&id(1), |cb| {
            cb.current_task = Some("w/t".into());
            cb.state = AgentState::Waiting;
        });
        board.update(&id(2), |cb| cb.state = AgentState::Terminated);
        let follower = actix_rt::spawn(follow_switch(
            Arc::downgrade(&board),
            "a".into(),
            3,
            board.suspend_switch("a"),
        ));
        let shows = |want: [AgentState; 3]| {
            let board = board.clone();
            async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while (0..3).map(|r| state(&board, r)).ne(want) {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "never showed {want:?}"
                    );
                    actix_rt::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        };
        board.suspended["a"].send_replace(true);
        shows([
            AgentState::Suspended,
            AgentState::Suspended,
            AgentState::Terminated,
        ])
        .await;
        // An instance's own write while suspended shows Suspended too.
        let sink = AgentSink::new(
            id(0),
            board.clone(),
            Trace::disabled(),
            board.suspend_switch("a"),
            Arc::new(AgentMetrics::of("a", "sim")),
        );
        sink.set_state(AgentState::Running);
        assert_eq!(state(&board, 0), AgentState::Suspended);
        board.suspended["a"].send_replace(false);
        shows([
            AgentState::Ready,
            AgentState::Running,
            AgentState::Terminated,
        ])
        .await;
        // Once the board is gone (its switches with it), the follower ends.
        drop(sink);
        drop(board);
        actix_rt::time::timeout(std::time::Duration::from_secs(5), follower)
            .await
            .expect("the follower ended")
            .unwrap();
    }
}
