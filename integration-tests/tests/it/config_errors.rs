//! Bad configs are rejected with every problem named: entity and position.

use agentos_runtime::config::Config;

use crate::helpers::repo;

fn errors(text: &str) -> String {
    match Config::parse(text, "bad.ron", &repo().join("config")) {
        Ok(_) => panic!("config should be rejected"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str = r#"(
    version: 1,
    backends: [(name: "sim", kind: Sim(()))],
    agents: [
        (name: "planner", role: "plans", backend: "sim"),
        (name: "coder", role: "codes", backend: BACKEND),
    ],
    workflows: [(name: "w", tasks: [
        (id: "a", agent: "planner", depends_on: DEPS),
        (id: "b", agent: "coder", depends_on: ["a"]),
    ])],
)"#;

#[test]
fn every_config_in_the_repo_is_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ron") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 3, "expected the example configs, found {n}");
}

#[test]
fn a_dependency_cycle_is_named() {
    let e = errors(
        &BASE
            .replace("BACKEND", "\"sim\"")
            .replace("DEPS", "[\"b\"]"),
    );
    assert!(e.contains("task \"w/a\""), "{e}");
    assert!(e.contains("dependency cycle: a -> b -> a"), "{e}");
    assert!(e.contains("bad.ron:9:"), "position missing: {e}");
}

#[test]
fn a_dangling_reference_is_named_with_its_line() {
    let e = errors(
        &BASE
            .replace("BACKEND", "\"gpt\"")
            .replace("DEPS", "[\"zzz\"]"),
    );
    assert!(
        e.contains("bad.ron:6:") && e.contains("agent \"coder\": backend \"gpt\" is not declared"),
        "{e}"
    );
    assert!(e.contains("task \"w/a\": depends on \"zzz\""), "{e}");
    assert!(
        e.starts_with("2 config errors"),
        "all errors are collected: {e}"
    );
}

#[test]
fn an_unknown_field_is_rejected_with_the_entity() {
    let text = BASE
        .replace("BACKEND", "\"sim\"")
        .replace("DEPS", "[]")
        .replace("role: \"codes\"", "role: \"codes\", temprature: 0.3");
    let e = errors(&text);
    assert!(e.contains("agent \"coder\""), "{e}");
    assert!(e.contains("temprature"), "{e}");
    assert!(e.contains("bad.ron:6:"), "{e}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for text in [
        "",
        "(",
        "((((((",
        "version: 1",
        "\u{0}\u{1}",
        "(version: \"one\")",
        "[1, 2, 3]",
    ] {
        let _ = errors(text);
    }
}

#[test]
fn absurd_durations_are_rejected_not_overflowed() {
    let text = BASE
        .replace("BACKEND", "\"sim\"")
        .replace("DEPS", "[]")
        .replace("role: \"codes\"", "role: \"codes\", timeout_secs: 1e18");
    let e = errors(&text);
    assert!(
        e.contains("agent \"coder\": timeout_secs must be > 0 and at most 31536000"),
        "{e}"
    );
}

#[test]
fn an_unknown_tokenizer_names_the_backend() {
    let text = BASE
        .replace("BACKEND", "\"sim\"")
        .replace("DEPS", "[]")
        .replace("kind: Sim(())", "kind: Sim(()), tokenizer: \"gpt9\"");
    let e = errors(&text);
    assert!(
        e.contains("backend \"sim\": unknown tokenizer \"gpt9\"") && e.contains("o200k_base"),
        "{e}"
    );
    assert!(e.contains("bad.ron:3:"), "{e}");
}

/// A config with one backend `kv` (kind and cache given) and one agent on it.
fn kv_config(kind: &str, cache: &str) -> String {
    format!(
        r#"(
    version: 1,
    backends: [
        (name: "kv", kind: {kind},
         cache: {cache}),
    ],
    agents: [(name: "a", role: "r", backend: "kv", context_budget_tokens: 4096)],
    workflows: [(name: "w", tasks: [(id: "t", agent: "a")])],
)"#
    )
}

#[test]
fn kv_cache_bad_input_names_the_backend_and_its_line() {
    let cases = [
        ("Sim(())", "(block_size: 0)", "cache.block_size must be within 1..=4096 tokens, got 0"),
        (
            "Sim(())",
            "(block_size: 16, capacity_blocks: 100)",
            "smaller than one prompt of agent \"a\" (context budget 4096 tokens); it needs at least 256 blocks of 16",
        ),
        ("Sim(())", "(routing: \"random\")", "unknown routing policy \"random\"; known policies: round_robin, least_loaded, prefix_aware"),
        ("Sim((replicas: 0))", "()", "0 is an empty replica list"),
        ("OpenAi((base_urls: [], model: \"m\"))", "()", "base_urls (the replica list) is empty"),
        ("Sim(())", "(load_slack: -1.0)", "cache.load_slack must be within 0..=100"),
    ];
    for (kind, cache, want) in cases {
        let e = errors(&kv_config(kind, cache));
        assert!(
            e.contains(&format!("backend \"kv\": {want}"))
                || (e.contains("backend \"kv\"") && e.contains(want)),
            "{kind} {cache}: {e}"
        );
        assert!(
            e.contains("bad.ron:4:") || e.contains("bad.ron:5:"),
            "{kind} {cache}: line missing: {e}"
        );
    }
}

#[test]
fn kv_cache_defaults_keep_one_replica_and_replica_lists_parse() {
    let cfg = Config::parse(
        &kv_config(
            "Sim((replicas: 4))",
            "(routing: \"round_robin\", salt: \"tenant-a\")",
        ),
        "ok.ron",
        &repo().join("config"),
    )
    .unwrap();
    let b = cfg.backend("kv").unwrap();
    assert_eq!(b.replicas, 4);
    assert_eq!(b.cache.block_size, 16);
    assert_eq!(b.cache.routing.name(), "round_robin");
    let cfg = Config::parse(
        &kv_config(
            "OpenAi((base_urls: [\"http://a:1/v1\", \"http://b:2/v1/\"], model: \"m\"))",
            "()",
        ),
        "ok.ron",
        &repo().join("config"),
    )
    .unwrap();
    let b = cfg.backend("kv").unwrap();
    assert_eq!(b.replicas, 2);
    match &b.kind {
        agentos_runtime::config::BackendKind::OpenAi(o) => {
            assert_eq!(o.base_urls, ["http://a:1/v1", "http://b:2/v1"]);
            assert_eq!(o.base_url, "http://a:1/v1");
        }
        other => panic!("{other:?}"),
    }
    for path in ["demo.ron", "fanout.ron"] {
        let cfg = Config::load(&repo().join("config").join(path)).unwrap();
        assert!(cfg
            .backends
            .iter()
            .all(|b| b.replicas == 1 && b.cache.routing.name() == "prefix_aware"));
    }
}

/// A config whose quota and scheduling sections are all wrong.
const BAD_QUOTAS: &str = r#"(
    version: 1,
    runtime: (
        max_concurrency: 4,
        scheduling: (preemption: (slice_secs: 0.0)),
        quotas: (rate: (tokens: 1000, window_secs: 0.0)),
    ),
    backends: [(name: "sim", kind: Sim(()),
                price: (input: -1.0, output: 2.0))],
    agents: [
        (name: "planner", role: "plans", backend: "sim", weight: 0.0,
         quotas: (budget: (usd: -5.0))),
    ],
    workflows: [(name: "w", weight: 2.0, tasks: [(id: "a", agent: "planner")])],
)"#;

#[test]
fn quota_and_scheduling_errors_name_the_entity_and_the_line() {
    let e = errors(BAD_QUOTAS);
    for (expected, line) in [
        (
            "backend \"sim\": price.input must be a number >= 0",
            "bad.ron:9:",
        ),
        ("agent \"planner\": weight must be > 0", "bad.ron:11:"),
        (
            "agent \"planner\": quotas.budget.usd must be a number >= 0",
            "bad.ron:12:",
        ),
        ("runtime.quotas.rate.window_secs must be > 0", "bad.ron:6:"),
        (
            "runtime.scheduling.preemption.slice_secs must be > 0",
            "bad.ron:5:",
        ),
    ] {
        let line_of = e
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("no error {expected:?} in:\n{e}"));
        assert!(
            line_of.contains(line),
            "{expected:?} should be at {line}: {line_of}"
        );
    }
}

#[test]
fn an_unknown_policy_is_named_with_its_line() {
    let text = BASE
        .replace("BACKEND", "\"sim\"")
        .replace("DEPS", "[]")
        .replace(
            "version: 1,",
            "version: 1,\n    runtime: (scheduling: (policy: round_robin)),",
        );
    let e = errors(&text);
    assert!(e.contains("round_robin"), "{e}");
    assert!(
        e.contains("least_attained_service"),
        "the choices are listed: {e}"
    );
    assert!(e.contains("bad.ron:3:"), "position missing: {e}");
}

#[test]
fn workflow_quotas_that_nothing_could_enforce_are_refused() {
    let cfg = Config::parse(
        r#"(version: 1, backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "sim")])"#,
        "server.ron",
        &repo().join("config"),
    )
    .unwrap();
    let submitted = cfg.parse_workflow(
        r#"{"name": "w", "quotas": {"budget": {"tokens": 100}},
            "tasks": [{"id": "t", "agent": "a"}]}"#,
        agentos_runtime::config::WorkflowFormat::Json,
        "request",
    );
    let e = submitted.expect_err("no gate: refused").to_string();
    assert!(
        e.contains("workflow \"w\"") && e.contains("no quota gate"),
        "{e}"
    );
    // A dollar budget in a declared workflow needs a priced backend.
    let e = errors(
        r#"(version: 1, backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "sim")],
            workflows: [(name: "w", quotas: (budget: (usd: 5.0)),
                         tasks: [(id: "t", agent: "a")])])"#,
    );
    assert!(
        e.contains("workflow \"w\"") && e.contains("no backend has a price"),
        "{e}"
    );
}
