//! The KV-routing scenario at a tiny size: the report is complete and sane.

use agentos_benches::kv_routing::{render_markdown, run, POLICIES, TURNS};

#[test]
fn tiny_kv_routing_report_is_sane() {
    let n = 8;
    let report = run(n).expect("scenario runs");
    assert_eq!(report.workloads.len(), 2);
    for w in &report.workloads {
        assert_eq!(w.policies.len(), POLICIES.len());
        let calls_per_agent = if w.name == "multi_turn" { TURNS } else { 1 };
        for p in &w.policies {
            assert_eq!(p.failed_tasks, 0, "{}/{}", w.name, p.policy);
            assert_eq!(
                p.calls,
                (n * calls_per_agent) as u64,
                "every call was routed by the pool"
            );
            assert!(p.prompt_tokens > 0 && p.cached_tokens <= p.prompt_tokens);
            assert!(
                p.hit_rate > 0.0,
                "{}/{}: the shared system prompt must hit",
                w.name,
                p.policy
            );
            assert!(
                p.hit_rate <= p.upper_bound_hit_rate + 1e-9,
                "{}/{}: hit rate {} above the upper bound {}",
                w.name,
                p.policy,
                p.hit_rate,
                p.upper_bound_hit_rate
            );
            assert!((0.0..=1.0).contains(&p.blocks_saved_ratio));
            assert!(p.makespan_secs > 0.0 && p.calls_per_sec > 0.0);
        }
    }
    let multi = &report.workloads[0];
    let (prefix, rr) = (&multi.policies[0], &multi.policies[1]);
    assert_eq!(
        (prefix.policy.as_str(), rr.policy.as_str()),
        ("prefix_aware", "round_robin")
    );
    assert!(
        prefix.hit_rate > rr.hit_rate,
        "prefix-aware routing must beat round robin on multi-turn agents: {} vs {}",
        prefix.hit_rate,
        rr.hit_rate
    );
    let fork = &report.workloads[1];
    assert!(
        fork.policies.iter().any(|p| p.blocks_saved_ratio > 0.0),
        "continuations share the document's blocks"
    );
    let md = render_markdown(&report);
    assert!(
        md.contains("| prefix_aware |") && md.contains("**fork**"),
        "{md}"
    );
}
