//! Every metric AgentOS exports, defined once: names, help texts, units and histogram buckets.
//!
//! Names follow `agentos_<subsystem>_<name>_<unit>`; counters end in `_total`; units are base
//! units. Labels are bounded: agent and backend names come from the config, `tool` from the
//! built-in list, `outcome`/`state`/`kind` from fixed sets. Never a task or request id.
//! Histograms need explicit buckets ([`HISTOGRAM_BUCKETS`]), or the Prometheus exporter would
//! render summaries.
//!
//! Only the events of this module ([`crate::events`]) record into these metrics; callers emit an
//! event instead of calling the `metrics` macros.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

use super::labels::{BusDropReason, SUPERVISED_KINDS};
use crate::model::TaskState;

/// Gauge, label `state`: tasks in each [`crate::model::TaskState`].
pub const SCHED_TASKS: &str = "agentos_scheduler_tasks";
/// Counter, labels `agent`, `outcome` (`succeeded`/`failed`): finished attempts.
pub const SCHED_TASK_ATTEMPTS: &str = "agentos_scheduler_task_attempts_total";
/// Counter, label `agent`: attempts scheduled again after a failure.
pub const SCHED_TASK_RETRIES: &str = "agentos_scheduler_task_retries_total";
/// Counter, labels `from`, `to`: tasks handed to a fallback agent.
pub const SCHED_TASK_FALLBACKS: &str = "agentos_scheduler_task_fallbacks_total";
/// Counter, label `state`: tasks that reached a terminal state.
pub const SCHED_TASKS_FINISHED: &str = "agentos_scheduler_tasks_finished_total";
/// Counter: leases revoked because the agent did not report in time.
pub const SCHED_LEASE_EXPIRED: &str = "agentos_scheduler_lease_expirations_total";
/// Counter: reports refused because their lease was no longer live.
pub const SCHED_STALE_REPORTS: &str = "agentos_scheduler_stale_reports_total";
/// Histogram, label `state`: time from first dispatch to a terminal state.
pub const SCHED_TASK_DURATION: &str = "agentos_scheduler_task_duration_seconds";
/// Counter, label `origin` (`declared`/`submitted`): workflows accepted.
pub const SCHED_WORKFLOWS_ACCEPTED: &str = "agentos_scheduler_workflows_accepted_total";
/// Counter, label `state` (`succeeded`/`failed`/`cancelled`): workflows finished.
pub const SCHED_WORKFLOWS_FINISHED: &str = "agentos_scheduler_workflows_finished_total";
/// Counter, label `agent`: tasks spawned at run time (`spawn_task`), by the agent that runs them.
pub const SCHED_TASKS_SPAWNED: &str = "agentos_scheduler_tasks_spawned_total";
/// Counter, labels `agent`, `action` (`suspend`/`resume`/`kill`): operator actions on agents.
pub const SCHED_AGENT_CONTROLS: &str = "agentos_scheduler_agent_controls_total";
/// Counter, label `agent`: running attempts stopped because their task was cancelled.
pub const SCHED_ATTEMPTS_CANCELLED: &str = "agentos_scheduler_attempts_cancelled_total";

/// Gauge, label `state`: agent instances in each [`crate::model::AgentState`].
pub const AGENTS: &str = "agentos_agent_instances";
/// Histogram, label `agent`: one step (LLM call plus its tool calls).
pub const AGENT_STEP_DURATION: &str = "agentos_agent_step_duration_seconds";
/// Counter, label `agent`: steps taken.
pub const AGENT_STEPS: &str = "agentos_agent_steps_total";

/// Counter, labels `backend`, `outcome` (`ok`, an error label, or `abandoned` when the call
/// was cut short by a panic or the attempt timeout): LLM requests.
pub const LLM_REQUESTS: &str = "agentos_llm_requests_total";
/// Histogram, label `backend`: LLM request latency.
pub const LLM_REQUEST_DURATION: &str = "agentos_llm_request_duration_seconds";
/// Counter, labels `backend`, `agent`: prompt tokens.
pub const LLM_PROMPT_TOKENS: &str = "agentos_llm_prompt_tokens_total";
/// Counter, labels `backend`, `agent`: completion tokens.
pub const LLM_COMPLETION_TOKENS: &str = "agentos_llm_completion_tokens_total";

/// Counter, labels `tool`, `outcome` (`ok` or an error label): tool calls.
pub const TOOL_CALLS: &str = "agentos_tool_calls_total";
/// Histogram, label `tool`: tool call latency.
pub const TOOL_CALL_DURATION: &str = "agentos_tool_call_duration_seconds";

/// Counter, label `kind` (`agent`, `scheduler`, `bus`, `agent_supervisor`, ...): restarts.
pub const SUPERVISOR_RESTARTS: &str = "agentos_supervisor_restarts_total";
/// Counter, label `supervisor`: restart intensity exceeded, escalated to the parent.
pub const SUPERVISOR_ESCALATIONS: &str = "agentos_supervisor_escalations_total";

/// Counter, label `kind` (`direct`, `publish`): messages accepted by the bus.
pub const BUS_SENT: &str = "agentos_bus_messages_sent_total";
/// Counter: messages placed in an inbox (a publish counts once per subscriber).
pub const BUS_DELIVERED: &str = "agentos_bus_messages_delivered_total";
/// Counter, label `reason` (`inbox_full`, `no_such_agent`, `no_subscribers`): messages dropped.
pub const BUS_DROPPED: &str = "agentos_bus_messages_dropped_total";

/// Gauge, labels `backend`, `replica`, `state` (`active`, `cached`, `free`): KV blocks of each
/// replica as the KV-cache pool models them; the states sum to the replica's capacity.
pub const KV_BLOCKS: &str = "agentos_kvcache_blocks";
/// Counter, labels `backend`, `replica`: prompt tokens looked up in the prefix cache.
pub const KV_PREFIX_QUERY_TOKENS: &str = "agentos_kvcache_prefix_query_tokens_total";
/// Counter, labels `backend`, `replica`: prompt tokens found cached (hit rate = hits / queries).
pub const KV_PREFIX_HIT_TOKENS: &str = "agentos_kvcache_prefix_hit_tokens_total";
/// Counter, labels `backend`, `replica`: copy-on-write copies of shared partial blocks.
pub const KV_COW_COPIES: &str = "agentos_kvcache_cow_copies_total";
/// Counter, labels `backend`, `replica`: cached blocks evicted to make room.
pub const KV_EVICTIONS: &str = "agentos_kvcache_evictions_total";
/// Counter, labels `backend`, `replica`: prompts whose blocks found no room (every block
/// referenced); the call still ran, unrecorded.
pub const KV_ALLOC_FAILURES: &str = "agentos_kvcache_allocation_failures_total";
/// Counter, labels `backend`, `policy` (a routing policy, or `fallback` when the pool could not
/// be asked), `outcome` (`hit`, `miss`, `overloaded`, `unavailable`): routing decisions.
pub const KV_ROUTING_DECISIONS: &str = "agentos_kvcache_routing_decisions_total";
/// Gauge, labels `backend`, `replica`: LLM calls in flight on each replica (leases held).
pub const KV_REPLICA_INFLIGHT: &str = "agentos_kvcache_replica_inflight_calls";
/// Gauge, labels `backend`, `block_size`, `capacity_blocks`, `replicas`, `routing`: always 1;
/// carries each backend's cache configuration.
pub const KV_CACHE_CONFIG_INFO: &str = "agentos_kvcache_cache_config_info";
/// Gauge, label `agent`: resident pages of the agent's open contexts.
pub const PAGER_RESIDENT_PAGES: &str = "agentos_pager_resident_pages";
/// Gauge, label `agent`: tokens of those resident pages.
pub const PAGER_RESIDENT_TOKENS: &str = "agentos_pager_resident_tokens";
/// Gauge, label `agent`: swapped-out pages of the agent's open contexts (in the store only).
pub const PAGER_SWAPPED_PAGES: &str = "agentos_pager_swapped_pages";
/// Gauge, label `agent`: tokens of those swapped pages.
pub const PAGER_SWAPPED_TOKENS: &str = "agentos_pager_swapped_tokens";
/// Counter, label `agent`: pages faulted back in from the store.
pub const PAGER_FAULTS: &str = "agentos_pager_page_faults_total";
/// Counter, label `agent`: tokens faulted back in.
pub const PAGER_SWAP_IN_TOKENS: &str = "agentos_pager_swap_in_tokens_total";
/// Counter, label `agent`: tokens evicted from the resident set.
pub const PAGER_SWAP_OUT_TOKENS: &str = "agentos_pager_swap_out_tokens_total";
/// Counter, labels `agent`, `policy`: pages evicted.
pub const PAGER_EVICTIONS: &str = "agentos_pager_evictions_total";
/// Counter, label `agent`: prompt tokens summaries stood in for, minus their own tokens.
pub const PAGER_TOKENS_SAVED: &str = "agentos_pager_compression_saved_tokens_total";
/// Counter, label `agent`: prompts built by the pager.
pub const PAGER_PROMPTS: &str = "agentos_pager_prompts_built_total";
/// Histogram, label `agent`: prompt tokens / budget of every built prompt, 0..1.
pub const PAGER_BUDGET_UTILISATION: &str = "agentos_pager_prompt_budget_utilisation_ratio";
/// Counter, labels `agent`, `outcome` (`ok`, `budget`, `store`, `unavailable`, `other`): pager
/// requests that failed or succeeded, as seen by agents.
pub const PAGER_REQUESTS: &str = "agentos_pager_requests_total";
/// Histogram: one store write transaction.
pub const STORE_WRITE_DURATION: &str = "agentos_store_write_duration_seconds";
/// Histogram: one store read.
pub const STORE_READ_DURATION: &str = "agentos_store_read_duration_seconds";

/// Gauge: resident memory of the process.
pub const PROCESS_RESIDENT_MEMORY: &str = "agentos_monitor_resident_memory_bytes";
/// Gauge: CPU use of the process, 0..1 per core summed over cores.
pub const PROCESS_CPU_RATIO: &str = "agentos_monitor_cpu_usage_ratio";
/// Gauge, label `version`: always 1; carries build facts.
pub const BUILD_INFO: &str = "agentos_build_info";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const TASK_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

const STORE_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0,
];
const RATIO_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0];

/// Explicit buckets of every histogram.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (AGENT_STEP_DURATION, LATENCY_BUCKETS),
    (LLM_REQUEST_DURATION, LATENCY_BUCKETS),
    (TOOL_CALL_DURATION, LATENCY_BUCKETS),
    (SCHED_TASK_DURATION, TASK_BUCKETS),
    (STORE_WRITE_DURATION, STORE_BUCKETS),
    (STORE_READ_DURATION, STORE_BUCKETS),
    (PAGER_BUDGET_UTILISATION, RATIO_BUCKETS),
    (API_REQUEST_DURATION, API_BUCKETS),
    (STORE_COMMIT_BATCH_ROWS, COMMIT_ROWS_BUCKETS),
    (STORE_COMMIT_DURATION, COMMIT_DURATION_BUCKETS),
    (QUOTA_THROTTLE_WAIT, LATENCY_BUCKETS),
];

/// Registers help texts and units with the installed recorder.
pub fn describe_all() {
    describe_sandbox();
    describe_durability();
    describe_quotas();
    describe_gauge!(SCHED_TASKS, "Tasks in each state.");
    describe_counter!(
        SCHED_TASK_ATTEMPTS,
        "Finished task attempts by agent and outcome."
    );
    describe_counter!(
        SCHED_TASK_RETRIES,
        "Failed attempts scheduled again on the same agent."
    );
    describe_counter!(SCHED_TASK_FALLBACKS, "Tasks handed to a fallback agent.");
    describe_counter!(SCHED_TASKS_FINISHED, "Tasks that reached a terminal state.");
    describe_counter!(
        SCHED_LEASE_EXPIRED,
        "Leases revoked because the agent did not report in time."
    );
    describe_counter!(
        SCHED_STALE_REPORTS,
        "Reports refused because their lease was no longer live."
    );
    describe_histogram!(
        SCHED_TASK_DURATION,
        Unit::Seconds,
        "Time from first dispatch to a terminal state."
    );
    describe_counter!(
        SCHED_WORKFLOWS_ACCEPTED,
        "Workflows accepted, declared or submitted."
    );
    describe_counter!(
        SCHED_WORKFLOWS_FINISHED,
        "Workflows finished, by how they ended."
    );
    describe_counter!(SCHED_TASKS_SPAWNED, "Tasks spawned at run time.");
    describe_counter!(
        SCHED_AGENT_CONTROLS,
        "Operator actions on agents (suspend, resume, kill)."
    );
    describe_counter!(
        SCHED_ATTEMPTS_CANCELLED,
        "Running attempts stopped because their task was cancelled."
    );
    describe_gauge!(AGENTS, "Agent instances in each state.");
    describe_histogram!(
        AGENT_STEP_DURATION,
        Unit::Seconds,
        "One agent step: LLM call plus its tool calls."
    );
    describe_counter!(AGENT_STEPS, "Agent steps taken.");
    describe_counter!(LLM_REQUESTS, "LLM requests by backend and outcome.");
    describe_histogram!(LLM_REQUEST_DURATION, Unit::Seconds, "LLM request latency.");
    describe_counter!(LLM_PROMPT_TOKENS, "Prompt tokens sent.");
    describe_counter!(LLM_COMPLETION_TOKENS, "Completion tokens received.");
    describe_counter!(TOOL_CALLS, "Tool calls by tool and outcome.");
    describe_histogram!(TOOL_CALL_DURATION, Unit::Seconds, "Tool call latency.");
    describe_counter!(SUPERVISOR_RESTARTS, "Child restarts by actor kind.");
    describe_counter!(
        SUPERVISOR_ESCALATIONS,
        "Restart intensity exceeded; escalated to the parent."
    );
    describe_counter!(BUS_SENT, "Messages accepted by the bus.");
    describe_counter!(BUS_DELIVERED, "Messages placed in an inbox.");
    describe_counter!(BUS_DROPPED, "Messages dropped by the bus, by reason.");
    describe_gauge!(
        KV_BLOCKS,
        "KV blocks per replica by state (active, cached, free)."
    );
    describe_counter!(
        KV_PREFIX_QUERY_TOKENS,
        "Prompt tokens looked up in the prefix cache."
    );
    describe_counter!(
        KV_PREFIX_HIT_TOKENS,
        "Prompt tokens found in the prefix cache."
    );
    describe_counter!(
        KV_COW_COPIES,
        "Copy-on-write copies of shared partial KV blocks."
    );
    describe_counter!(KV_EVICTIONS, "Cached KV blocks evicted to make room.");
    describe_counter!(
        KV_ALLOC_FAILURES,
        "Prompts whose KV blocks found no room because every block was referenced."
    );
    describe_counter!(
        KV_ROUTING_DECISIONS,
        "Replica routing decisions by policy and outcome."
    );
    describe_gauge!(
        KV_REPLICA_INFLIGHT,
        "LLM calls in flight per backend replica."
    );
    describe_gauge!(
        KV_CACHE_CONFIG_INFO,
        "KV-cache configuration per backend; always 1."
    );
    describe_gauge!(
        PAGER_RESIDENT_PAGES,
        "Resident context pages of open contexts."
    );
    describe_gauge!(PAGER_RESIDENT_TOKENS, "Tokens of resident context pages.");
    describe_gauge!(
        PAGER_SWAPPED_PAGES,
        "Context pages swapped out to the store."
    );
    describe_gauge!(PAGER_SWAPPED_TOKENS, "Tokens of swapped-out context pages.");
    describe_counter!(
        PAGER_FAULTS,
        "Context pages faulted back in from the store."
    );
    describe_counter!(
        PAGER_SWAP_IN_TOKENS,
        "Tokens faulted back in from the store."
    );
    describe_counter!(
        PAGER_SWAP_OUT_TOKENS,
        "Tokens evicted from the resident set."
    );
    describe_counter!(PAGER_EVICTIONS, "Context pages evicted, by policy.");
    describe_counter!(
        PAGER_TOKENS_SAVED,
        "Prompt tokens that summaries stood in for, minus the summaries' own tokens."
    );
    describe_counter!(PAGER_PROMPTS, "Prompts built by the context pager.");
    describe_histogram!(
        PAGER_BUDGET_UTILISATION,
        "Prompt tokens divided by the agent's context budget, per built prompt."
    );
    describe_counter!(
        PAGER_REQUESTS,
        "Context pager requests by agent and outcome."
    );
    describe_histogram!(
        STORE_WRITE_DURATION,
        Unit::Seconds,
        "One store write transaction."
    );
    describe_histogram!(STORE_READ_DURATION, Unit::Seconds, "One store read.");
    describe_gauge!(
        PROCESS_RESIDENT_MEMORY,
        Unit::Bytes,
        "Resident memory of the process."
    );
    describe_gauge!(
        PROCESS_CPU_RATIO,
        "CPU use of the process (1.0 = one core busy)."
    );
    describe_gauge!(BUILD_INFO, "Build facts; always 1.");
    describe_api();
}

/// Creates the zero-valued series of counters whose label sets are fixed, so that their first
/// event shows up in `rate()`/`increase()` instead of only creating the series.
pub fn register_zeroes() {
    for state in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
        metrics::counter!(SCHED_TASKS_FINISHED, "state" => state.label()).increment(0);
    }
    for kind in SUPERVISED_KINDS {
        metrics::counter!(SUPERVISOR_RESTARTS, "kind" => *kind).increment(0);
    }
    for reason in BusDropReason::ALL {
        metrics::counter!(BUS_DROPPED, "reason" => reason.label()).increment(0);
    }
    metrics::counter!(SCHED_LEASE_EXPIRED).increment(0);
    metrics::counter!(SCHED_STALE_REPORTS).increment(0);
}

// ---------------------------------------------------------------------------------------------
// Durable execution (`crate::events::durability`): store commits, resumed attempts and runs.
// ---------------------------------------------------------------------------------------------

/// Counter, label `writer` (`pager`, `scheduler`, `bus`): store transactions committed.
pub const STORE_COMMITS: &str = "agentos_store_commits_total";
/// Histogram, label `writer`: rows made durable by one commit.
pub const STORE_COMMIT_BATCH_ROWS: &str = "agentos_store_commit_batch_rows";
/// Histogram, label `writer`: one commit, from the batch's first write to its commit.
pub const STORE_COMMIT_DURATION: &str = "agentos_store_commit_duration_seconds";
/// Counter, label `writer`: commits that failed (their rows were not stored).
pub const STORE_COMMIT_FAILURES: &str = "agentos_store_commit_failures_total";
/// Counter, label `agent`: attempts resumed from their journal.
pub const JOURNAL_RESUMED_ATTEMPTS: &str = "agentos_journal_resumed_attempts_total";
/// Counter, label `agent`: journaled steps replayed instead of run again.
pub const JOURNAL_REPLAYED_STEPS: &str = "agentos_journal_replayed_steps_total";
/// Counter, labels `agent`, `tool`: at-most-once calls started before a restart whose outcome
/// is unknown; not run again, the model was told.
pub const JOURNAL_INTERRUPTED_CALLS: &str = "agentos_journal_interrupted_calls_total";
/// Counter: runs resumed after a restart.
pub const RUNS_RESUMED: &str = "agentos_runs_resumed_total";

const COMMIT_ROWS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const COMMIT_DURATION_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Describes the durability metrics (called by [`describe_all`]).
pub fn describe_durability() {
    describe_counter!(STORE_COMMITS, "Store transactions committed, by writer.");
    describe_histogram!(
        STORE_COMMIT_BATCH_ROWS,
        "Rows made durable by one store commit, by writer."
    );
    describe_histogram!(
        STORE_COMMIT_DURATION,
        Unit::Seconds,
        "One store commit, from its batch's first write to the commit, by writer."
    );
    describe_counter!(
        STORE_COMMIT_FAILURES,
        "Store commits that failed (their rows were not stored), by writer."
    );
    describe_counter!(
        JOURNAL_RESUMED_ATTEMPTS,
        "Attempts resumed from their step journal after a restart."
    );
    describe_counter!(
        JOURNAL_REPLAYED_STEPS,
        "Journaled steps replayed instead of run again."
    );
    describe_counter!(
        JOURNAL_INTERRUPTED_CALLS,
        "At-most-once tool calls interrupted by a restart: not run again, the model was told."
    );
    describe_counter!(RUNS_RESUMED, "Runs resumed after a restart.");
}

// ---------------------------------------------------------------------------------------------
// Sandbox (`crate::events::sandbox`): what confines `run_command` on this machine, and what it
// stopped.
// ---------------------------------------------------------------------------------------------

/// Gauge, label `feature` (`filesystem`, `network`, `processes`, `limits`): 1 when commands run
/// confined in that respect, 0 when the mode is `off` or the machine lacks the feature.
pub const SANDBOX_ENFORCED: &str = "agentos_sandbox_enforced";
/// Counter, labels `agent`, `kind` (`filesystem`, `network`, `processes`, `memory`, `cpu`,
/// `file_size`): commands the sandbox stopped, by what stopped them.
pub const SANDBOX_DENIALS: &str = "agentos_sandbox_denials_total";

/// Describes the sandbox metrics (called by [`describe_all`]).
pub fn describe_sandbox() {
    describe_gauge!(
        SANDBOX_ENFORCED,
        "1 when run_command children are confined in this respect (feature), 0 when not."
    );
    describe_counter!(
        SANDBOX_DENIALS,
        "Commands stopped by the sandbox, by agent and by what stopped them (kind)."
    );
}

// ---------------------------------------------------------------------------------------------
// The control plane's HTTP API (`serve`).
// ---------------------------------------------------------------------------------------------

/// Counter, labels `route` (a route template such as `/api/workflows/{id}`, or `unmatched`;
/// never a raw path), `method` (`GET`, `HEAD`, `POST`, `DELETE`, `other`), `status` (the
/// three-digit code): requests answered by the API.
pub const API_REQUESTS: &str = "agentos_api_requests_total";
/// Histogram, label `route`: time from a request's head to its response's head.
pub const API_REQUEST_DURATION: &str = "agentos_api_request_duration_seconds";

const API_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Registers the help texts of the API's metrics (called by [`describe_all`]).
pub fn describe_api() {
    describe_counter!(
        API_REQUESTS,
        "Requests answered by the HTTP API, by route template, method and status."
    );
    describe_histogram!(
        API_REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request's head to its response's head, by route template."
    );
}

// ---------------------------------------------------------------------------------------------
// Quotas, rate limits, fairness and preemption
// ---------------------------------------------------------------------------------------------

/// Counter, labels `agent`, `backend`: tokens (prompt + completion) the servers counted.
pub const QUOTA_TOKENS: &str = "agentos_quota_tokens_total";
/// Gauge (only rises), labels `agent`, `backend`: US dollars spent, by the backends' price
/// tables (a gauge because dollars are fractional).
pub const QUOTA_USD: &str = "agentos_quota_usd_spent";
/// Gauge, labels `scope`, `kind` (`tokens`, `requests`, `budget_usd`, `budget_tokens`): what
/// is left of each limit now.
pub const QUOTA_REMAINING: &str = "agentos_quota_remaining";
/// Counter, labels `scope`, `limit` (`rate`, `concurrency`): LLM calls held back before they
/// were sent.
pub const QUOTA_THROTTLED: &str = "agentos_quota_throttled_total";
/// Histogram, label `scope`: how long a held-back LLM call waited for its limit.
pub const QUOTA_THROTTLE_WAIT: &str = "agentos_quota_throttle_wait_seconds";
/// Counter, labels `scope`, `level` (`soft`, `hard`): budget limits reached.
pub const QUOTA_BUDGET_LIMITS: &str = "agentos_quota_budget_limits_total";
/// Counter, label `backend`: calls held back by the backend's own rate limit (configured or
/// learned from its headers): each a 429 the server did not have to send.
pub const RATELIMIT_AVOIDED: &str = "agentos_ratelimit_429_avoided_total";
/// Counter, label `backend`: overload replies received (HTTP 429, and 503).
pub const RATELIMIT_RECEIVED: &str = "agentos_ratelimit_429_received_total";
/// Counter, label `backend`: times the server's `x-ratelimit-remaining-*` lowered a bucket.
pub const RATELIMIT_LEARNED: &str = "agentos_ratelimit_server_corrections_total";
/// Gauge, label `scope` (`global`, `backend:NAME`): the concurrency limit in force.
pub const CONCURRENCY_LIMIT: &str = "agentos_concurrency_limit";
/// Gauge, label `scope`: tasks (global) or LLM calls (backend) running now.
pub const CONCURRENCY_CURRENT: &str = "agentos_concurrency_current";
/// Counter, labels `agent`, `kind` (`preempted`, `budget_wait`): attempts that gave way at a
/// step boundary (not failures).
pub const SCHED_PREEMPTIONS: &str = "agentos_sched_preemptions_total";
/// Gauge, label `flow`: tokens served to each fair-share flow.
pub const FAIR_SHARE_TOKENS: &str = "agentos_fair_share_tokens";

/// Registers the help texts of the quota metrics.
pub fn describe_quotas() {
    describe_counter!(
        QUOTA_TOKENS,
        "Tokens (prompt + completion) the servers counted, by agent and backend."
    );
    describe_gauge!(
        QUOTA_USD,
        "US dollars spent by the backends' price tables, by agent and backend (only rises)."
    );
    describe_gauge!(
        QUOTA_REMAINING,
        "What is left of each limit, by scope and kind."
    );
    describe_counter!(
        QUOTA_THROTTLED,
        "LLM calls held back by a rate or concurrency limit before they were sent."
    );
    describe_histogram!(
        QUOTA_THROTTLE_WAIT,
        Unit::Seconds,
        "How long a held-back LLM call waited for its rate or concurrency limit."
    );
    describe_counter!(QUOTA_BUDGET_LIMITS, "Budget limits reached (soft or hard).");
    describe_counter!(
        RATELIMIT_AVOIDED,
        "Calls held back by a backend's own rate limit: 429s the server did not send."
    );
    describe_counter!(
        RATELIMIT_RECEIVED,
        "Overload replies received (HTTP 429, and 503), by backend."
    );
    describe_counter!(
        RATELIMIT_LEARNED,
        "Times a server's x-ratelimit-remaining headers lowered a bucket."
    );
    describe_gauge!(
        CONCURRENCY_LIMIT,
        "The concurrency limit in force, by scope."
    );
    describe_gauge!(
        CONCURRENCY_CURRENT,
        "Tasks (global) or LLM calls (backend) running now."
    );
    describe_counter!(
        SCHED_PREEMPTIONS,
        "Attempts that gave way at a step boundary (preempted or waiting for a budget)."
    );
    describe_gauge!(FAIR_SHARE_TOKENS, "Tokens served to each fair-share flow.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::metrics_of;

    #[test]
    fn zero_series_cover_every_fixed_label() {
        let got = metrics_of(register_zeroes);
        for state in ["succeeded", "failed", "skipped", "cancelled"] {
            assert_eq!(
                got.counter(SCHED_TASKS_FINISHED, &[("state", state)]),
                Some(0)
            );
        }
        assert_eq!(
            got.counter(SUPERVISOR_RESTARTS, &[("kind", "agent_supervisor")]),
            Some(0)
        );
        assert_eq!(
            got.counter(BUS_DROPPED, &[("reason", "inbox_full")]),
            Some(0)
        );
        assert_eq!(got.counter(SCHED_LEASE_EXPIRED, &[]), Some(0));
        // 4 terminal states + 7 kinds + 3 reasons + 2 unlabelled.
        assert_eq!(got.len(), 4 + 7 + 3 + 2);
    }

    #[test]
    fn every_histogram_has_sorted_buckets() {
        for (name, buckets) in HISTOGRAM_BUCKETS {
            assert!(
                buckets.windows(2).all(|w| w[0] < w[1]),
                "{name}: buckets not increasing"
            );
        }
    }
}
