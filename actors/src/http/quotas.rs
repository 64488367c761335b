//! `GET /api/quotas`: what is left of every limit, per scope, and the scheduler's concurrency
//! and fair-share figures.
//!
//! ```json
//! {"scopes": [{"scope": "agent:coder", "tokens_available": 1200, "tokens_capacity": 9000,
//!              "requests_available": null, "requests_capacity": null, "in_flight": 2,
//!              "concurrency_limit": null,
//!              "budget": {"window": "day", "spent_usd": 1.25, "limit_usd": 5.0,
//!                         "remaining_usd": 3.75, "resets_at_ms": 1764633600000, ...}}],
//!  "spent": {"usd": 1.25, "tokens": 48210},
//!  "scheduling": {"policy": "fair_share", "limit": 8, "max": 8,
//!                 "reason": "configured max_concurrency", "running": 8,
//!                 "shares": [{"flow": "coder", "weight": 1.0, "tokens": 48210}]}}
//! ```
//!
//! A run with no quota configured answers the same shape with no scopes.

use hyper::StatusCode;
use serde_json::json;

use super::reply::{self, ApiResponse};
use super::HttpState;

/// `GET /api/quotas`.
pub(crate) async fn quotas(state: &HttpState) -> ApiResponse {
    let (scopes, (usd, tokens)) = match &state.quotas {
        Some(gate) => (gate.status(), gate.spent_total()),
        None => (Vec::new(), (0.0, 0)),
    };
    let sched = state
        .board
        .sched
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    reply::json(
        StatusCode::OK,
        &json!({
            "scopes": scopes,
            "spent": {"usd": usd, "tokens": tokens},
            "scheduling": sched,
        }),
    )
}
