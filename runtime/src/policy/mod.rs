//! Policies as plain structs, owned and driven by actors: backoff, the ready queue and
//! supervision (restart types, strategies, intensity); rate limits and budgets (token buckets
//! and the quota book), adaptive concurrency (AIMD on backend signals, a governor on host
//! pressure), and fairness between flows (weighted fair share on tokens, least attained
//! service levels).

pub mod aimd;
pub mod backoff;
pub mod bucket;
pub mod fair;
pub mod governor;
pub mod las;
pub mod quota;
pub mod ready_queue;
pub mod supervision;
pub mod window;
