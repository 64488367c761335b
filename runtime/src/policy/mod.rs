//! Policies as plain structs, owned and driven by actors: backoff, the ready queue and
//! supervision (restart types, strategies, intensity).

pub mod backoff;
pub mod ready_queue;
pub mod supervision;
