//! Compression: the summary that stands in for a run of evicted groups.
//!
//! The default summary is deterministic and extractive: a header saying how many messages and
//! tokens were paged out, then one line per evicted group (its first page id, kind, size and
//! its first words), at most [`MAX_LINES`] lines. The same evicted run always gives the same
//! text, so prompts stay reproducible (and prefix-cacheable). When even that does not fit, the
//! compact form keeps only the header. The page ids let an operator (or a later `recall`
//! tool) find the full pages in the store.

use crate::llm::{ChatMessage, Role};

use super::{PageId, PageKind};

/// Most group lines in one summary.
pub const MAX_LINES: usize = 6;

/// Words of content quoted per group line.
pub const LINE_WORDS: usize = 12;

/// The one-line extract of an exchange group, computed once when the group is appended.
pub fn group_line(first: PageId, kind: PageKind, tokens: u64, messages: &[&ChatMessage]) -> String {
    let mut text = String::new();
    for m in messages {
        for c in &m.tool_calls {
            text.push_str(&format!("{}({}) ", c.name, c.arguments));
        }
        if !m.content.trim().is_empty() {
            text.push_str(m.content.trim());
            text.push(' ');
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut quote: String = words
        .iter()
        .take(LINE_WORDS)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    // Bound a pathological "word" (a long JSON blob without spaces).
    if quote.chars().count() > 120 {
        quote = quote.chars().take(120).collect();
    }
    let more = if words.len() > LINE_WORDS { " …" } else { "" };
    format!(
        "- page {first} {} ({tokens} tokens): {quote}{more}",
        kind.label()
    )
}

/// A summary message for a run of evicted groups.
pub fn run_summary<'a>(
    lines: impl Iterator<Item = &'a str>,
    groups: usize,
    pages: usize,
    tokens: u64,
    compact: bool,
) -> ChatMessage {
    let mut text = format!(
        "[context pager] {pages} earlier message(s) ({tokens} tokens) were paged out to the store to fit the context budget."
    );
    if !compact {
        text.push_str(" Extract:");
        for line in lines.take(MAX_LINES) {
            text.push('\n');
            text.push_str(line);
        }
        if groups > MAX_LINES {
            text.push_str(&format!(
                "\n- … and {} more exchange(s)",
                groups - MAX_LINES
            ));
        }
    }
    ChatMessage {
        role: Role::User,
        content: text,
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_quotes_the_first_words_and_the_call() {
        let m = ChatMessage::tool("c1", "alpha beta gamma ".repeat(10));
        let line = group_line(4, PageKind::ToolResult, 33, &[&m]);
        assert!(
            line.starts_with("- page 4 tool_result (33 tokens): alpha beta"),
            "{line}"
        );
        assert!(line.ends_with('…'));
    }

    #[test]
    fn summaries_are_deterministic_and_bounded() {
        let lines: Vec<String> = (0..10)
            .map(|i| format!("- page {i} message (5 tokens): x"))
            .collect();
        let a = run_summary(lines.iter().map(String::as_str), 10, 12, 99, false);
        let b = run_summary(lines.iter().map(String::as_str), 10, 12, 99, false);
        assert_eq!(a, b);
        assert_eq!(a.content.lines().count(), 1 + MAX_LINES + 1);
        assert!(a.content.contains("and 4 more"));
        let compact = run_summary(lines.iter().map(String::as_str), 10, 12, 99, true);
        assert_eq!(compact.content.lines().count(), 1);
    }
}
