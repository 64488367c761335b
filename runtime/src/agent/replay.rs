//! A resumed attempt: replaying the journal its context was reopened with.
//!
//! The journaled replies' usage counts toward the attempt. A journal that ends in a final
//! answer ends the attempt at once, with no LLM call. One that ends in a reply whose tool
//! results are not all recorded fills them in, in call order: an at-most-once call with a
//! start marker is not run again (the model reads
//! [`interrupted_result`](crate::durable::interrupted_result)); any other call runs, with
//! its records as usual. The loop then goes on with the next step; the prompt it builds
//! holds every journaled page, so nothing is asked again.

use crate::context::JournaledStep;
use crate::durable::SideEffect;
use crate::llm::Usage;
use crate::sched::Outcome;

use super::calls::Attempt;
use super::{AttemptResumed, StepEvent};

/// Replays `journal`; answers the step to go on with, or how the attempt ended.
pub(super) async fn resume(
    a: &Attempt<'_>,
    journal: &[JournaledStep],
    usage: &mut Usage,
) -> Result<u32, Outcome> {
    let Some(last) = journal.last() else {
        return Ok(0);
    };
    for s in journal {
        *usage += s.usage;
    }
    a.sink().emit(StepEvent::Resumed(&AttemptResumed {
        agent: a.agent,
        task: &a.task,
        context: &a.context,
        steps_replayed: journal.len(),
    }));
    if last.is_final() {
        let cut_off = last.finish_reason == "length";
        return Err(a
            .final_answer(last.step, last.reply.content.clone(), cut_off)
            .await);
    }
    for (i, call) in last.reply.tool_calls.iter().enumerate() {
        if last.has_result(i) {
            continue;
        }
        let index = i as u32;
        if last.started.contains(&index) && a.class_of(&call.name) == SideEffect::AtMostOnce {
            a.interrupted(last.step, index, call).await?;
        } else {
            a.run_call(last.step, index, call).await?;
        }
    }
    Ok(last.step + 1)
}
