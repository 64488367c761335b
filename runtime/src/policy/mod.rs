//! Policies as plain structs, owned and driven by actors: backoff, the ready queue and
//! supervision (restart types, strategies, intensity); token buckets for rate limits.

pub mod backoff;
pub mod bucket;
pub mod ready_queue;
pub mod supervision;
