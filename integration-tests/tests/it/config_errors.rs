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
