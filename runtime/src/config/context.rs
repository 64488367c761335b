//! Validation of an agent's context settings (`context: (...)` or the older
//! `context_budget_tokens`), including the load-time check that the pinned pages fit.

use super::raw::{RawAgent, RawConfig};
use super::ContextSpec;
use crate::context::PolicyKind;
use crate::llm::ChatMessage;
use crate::model::template;
use crate::tokenize::{Encoding, REPLY_PRIMING_TOKENS};

/// Smallest budget accepted.
pub const MIN_BUDGET_TOKENS: u64 = 256;

/// The prompt budget `a` declares, before validation: the most prompt tokens the pager lets
/// it send (other checks, such as the KV-cache capacity, size themselves by it).
pub(super) fn declared_budget_tokens(a: &RawAgent) -> u64 {
    match (a.context_budget_tokens, &a.context) {
        (Some(budget), _) => budget,
        (None, Some(c)) => c.window_tokens.saturating_sub(c.reserve_output_tokens),
        (None, None) => {
            let c = super::raw::RawContext::default();
            c.window_tokens.saturating_sub(c.reserve_output_tokens)
        }
    }
}

/// The context spec of `a` and the problems found, as `(field, message)`.
pub(super) fn check(a: &RawAgent, raw: &RawConfig) -> (ContextSpec, Vec<(&'static str, String)>) {
    let mut problems = Vec::new();
    let spec = match (&a.context, a.context_budget_tokens) {
        (Some(_), Some(_)) => {
            problems.push((
                "context_budget_tokens",
                "set either context_budget_tokens or context, not both".to_owned(),
            ));
            None
        }
        (None, Some(budget)) => Some(ContextSpec {
            window_tokens: budget,
            reserve_output_tokens: 0,
            policy: PolicyKind::default(),
        }),
        (c, None) => {
            let c = c.clone().unwrap_or_default();
            let policy = PolicyKind::from_name(&c.policy).unwrap_or_else(|| {
                let known: Vec<_> = PolicyKind::ALL.iter().map(|p| p.name()).collect();
                problems.push((
                    "context",
                    format!(
                        "unknown context.policy {:?}; known policies: {}",
                        c.policy,
                        known.join(", ")
                    ),
                ));
                PolicyKind::default()
            });
            if let Some(s) = &c.summarizer {
                // Accepted by the schema so the message can say what to do, but refused: a
                // setting that silently did nothing would mislead whoever tunes summaries.
                let why = if raw.backends.iter().any(|b| &b.name == s) {
                    ""
                } else {
                    " (and no backend of that name is declared)"
                };
                problems.push((
                    "context",
                    format!(
                        "context.summarizer \"{s}\": model-written summaries are not supported yet{why}; remove the field (evicted pages get the built-in extractive summary)"
                    ),
                ));
            }
            if c.reserve_output_tokens >= c.window_tokens {
                problems.push((
                    "context",
                    format!(
                        "context.reserve_output_tokens ({}) must be smaller than context.window_tokens ({})",
                        c.reserve_output_tokens, c.window_tokens
                    ),
                ));
            }
            Some(ContextSpec {
                window_tokens: c.window_tokens,
                reserve_output_tokens: c.reserve_output_tokens,
                policy,
            })
        }
    };
    let spec = spec.unwrap_or(ContextSpec {
        window_tokens: 8192,
        reserve_output_tokens: 1024,
        policy: PolicyKind::default(),
    });
    let field = if a.context_budget_tokens.is_some() {
        "context_budget_tokens"
    } else {
        "context"
    };
    let budget = spec.budget_tokens();
    if spec.window_tokens > 10_000_000 {
        problems.push((
            field,
            format!(
                "context window must be at most 10000000 tokens, got {}",
                spec.window_tokens
            ),
        ));
    }
    if budget < MIN_BUDGET_TOKENS && spec.reserve_output_tokens < spec.window_tokens {
        problems.push((
            field,
            format!(
                "context budget (window {} minus reserved output {}) must be at least {MIN_BUDGET_TOKENS} tokens, got {budget}",
                spec.window_tokens, spec.reserve_output_tokens
            ),
        ));
    } else if budget >= MIN_BUDGET_TOKENS {
        if let Some(p) = pinned_overflow(a, raw, budget) {
            problems.push((field, p));
        }
    }
    (spec, problems)
}

/// The first task of `a` whose pinned pages (system prompt + the task input, without what
/// templates will add) cannot fit `budget`, as a message.
fn pinned_overflow(a: &RawAgent, raw: &RawConfig, budget: u64) -> Option<String> {
    let encoding = raw
        .backends
        .iter()
        .find(|b| b.name == a.backend)
        .and_then(|b| b.tokenizer.as_deref())
        .and_then(Encoding::from_name)
        .unwrap_or_default();
    let system = encoding.count_message(&ChatMessage::system(a.role.clone())) as u64;
    let mut worst: Option<(u64, String)> = None;
    for w in &raw.workflows {
        for t in w.tasks.iter().filter(|t| t.agent == a.name) {
            let known = template::render(&t.input, |_| Some(String::new()));
            let input = encoding.count_message(&ChatMessage::user(known)) as u64;
            let needed = REPLY_PRIMING_TOKENS as u64 + system + input;
            if needed > budget && worst.as_ref().is_none_or(|(n, _)| needed > *n) {
                worst = Some((needed, format!("{}/{}", w.name, t.id)));
            }
        }
    }
    if let Some((needed, task)) = worst {
        return Some(format!(
            "context budget {budget} tokens cannot hold the pinned pages of task {task}: system prompt and task input need {needed} tokens ({})",
            encoding.name()
        ));
    }
    let bare = REPLY_PRIMING_TOKENS as u64 + system;
    (bare > budget).then(|| {
        format!(
            "context budget {budget} tokens cannot hold the system prompt ({bare} tokens, {})",
            encoding.name()
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::context::PolicyKind;

    fn cfg(agent_extra: &str, input: &str) -> Result<Config, String> {
        let text = format!(
            r#"(version: 1,
    backends: [(name: "sim", kind: Sim(()), tokenizer: "cl100k_base")],
    agents: [(name: "a", role: "You help.", backend: "sim", {agent_extra})],
    workflows: [(name: "w", tasks: [(id: "t", agent: "a", input: "{input}")])],
)"#
        );
        Config::parse(&text, "t.ron", std::path::Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_the_legacy_field() {
        let c = cfg("", "hi").unwrap();
        let a = &c.agents[0];
        assert_eq!(a.context_budget_tokens, 8192 - 1024);
        assert_eq!(a.context.policy, PolicyKind::LruImportance);
        let c = cfg("context_budget_tokens: 4000", "hi").unwrap();
        assert_eq!(c.agents[0].context_budget_tokens, 4000);
        let c = cfg(
            r#"context: (window_tokens: 2048, reserve_output_tokens: 512, policy: "lru")"#,
            "hi",
        )
        .unwrap();
        assert_eq!(c.agents[0].context_budget_tokens, 1536);
        assert_eq!(c.agents[0].context.policy, PolicyKind::Lru);
    }

    #[test]
    fn bad_context_settings_name_the_agent() {
        let e = cfg(r#"context: (policy: "fifo", summarizer: "nope")"#, "hi").unwrap_err();
        assert!(
            e.contains("agent \"a\": unknown context.policy \"fifo\""),
            "{e}"
        );
        assert!(
            e.contains("context.summarizer \"nope\": model-written summaries are not supported yet (and no backend of that name is declared)"),
            "{e}"
        );
        // A declared backend is refused too: the setting would do nothing.
        let e = cfg(r#"context: (summarizer: "sim")"#, "hi").unwrap_err();
        assert!(
            e.contains("context.summarizer \"sim\": model-written summaries are not supported yet; remove the field"),
            "{e}"
        );
        let e = cfg(
            r#"context: (window_tokens: 1000, reserve_output_tokens: 1000)"#,
            "hi",
        )
        .unwrap_err();
        assert!(
            e.contains("must be smaller than context.window_tokens"),
            "{e}"
        );
        let e = cfg(r#"context_budget_tokens: 300, context: ()"#, "hi").unwrap_err();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn a_budget_smaller_than_the_pinned_pages_is_a_config_error() {
        let long = "word ".repeat(400);
        let e = cfg(
            r#"context: (window_tokens: 600, reserve_output_tokens: 200)"#,
            &long,
        )
        .unwrap_err();
        assert!(
            e.contains(
                "agent \"a\": context budget 400 tokens cannot hold the pinned pages of task w/t"
            ),
            "{e}"
        );
        assert!(
            e.contains("t.ron:3:61:"),
            "points at the context field: {e}"
        );
    }
}
