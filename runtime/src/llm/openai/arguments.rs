//! Lenient parsing of tool-call arguments.
//!
//! Models, small local ones above all, send arguments that strict JSON refuses: raw control
//! characters (newlines, tabs) inside strings, a Markdown code fence around the object, a
//! trailing comma before `}` or `]`. [`parse`] tries strict JSON first; when that fails it
//! repairs those three things in one pass over the text and parses again. Nothing else is
//! guessed: truncated or garbled text stays an error.

use serde_json::Value;

/// Parses `text` as JSON, repairing what lenient parsers accept when the strict parse fails.
///
/// On failure the error is the one for the repaired text, that is the problem that remains
/// (a control character the repair escaped is no longer worth reporting).
pub(super) fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let strict = match serde_json::from_str(text) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    match repair(text) {
        Some(repaired) => serde_json::from_str(&repaired),
        None => Err(strict),
    }
}

/// `text` without a surrounding code fence or whitespace, with control characters inside
/// strings escaped and commas before `}` or `]` dropped; `None` when nothing changed.
fn repair(text: &str) -> Option<String> {
    let body = strip_fence(text.trim());
    let mut out = String::with_capacity(body.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    for c in body.chars() {
        if in_string {
            match c {
                _ if escaped => {
                    escaped = false;
                    out.push(c);
                }
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                '\u{0}'..='\u{1f}' => push_escaped(&mut out, c),
                _ => out.push(c),
            }
        } else {
            match c {
                '"' => {
                    in_string = true;
                    out.push(c);
                }
                '}' | ']' => {
                    drop_trailing_comma(&mut out);
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
    }
    (out != text).then_some(out)
}

/// The text inside a Markdown code fence (```` ```json ... ``` ````), or `text` itself.
fn strip_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    // The info string (`json`) follows the opening fence.
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// Appends the JSON escape of control character `c`.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        _ => out.push_str(&format!("\\u{:04x}", c as u32)),
    }
}

/// Removes a structural comma that ends `out`, ignoring whitespace after it. Called outside
/// strings only, where a final `,` can only be a separator (a string would end in `"`).
fn drop_trailing_comma(out: &mut String) {
    let kept = out.trim_end_matches([' ', '\t', '\n', '\r']).len();
    if out[..kept].ends_with(',') {
        // `,` is one byte, so `kept - 1` is the char boundary where it starts.
        out.remove(kept - 1);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn valid_json_is_parsed_as_is() {
        let text = r#"{"expression": "2 + 3", "list": [1, 2], "nested": {"s": "a,]"}}"#;
        assert_eq!(
            parse(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(repair(text), None);
    }

    #[test]
    fn control_characters_inside_strings_are_escaped() {
        let text = "{\"expression\": \"2 +\n3\t*\r4\u{1}\", \"note\": \"a\u{8}\u{c}\"}";
        assert!(
            serde_json::from_str::<Value>(text).is_err(),
            "strict JSON refuses it"
        );
        assert_eq!(
            parse(text).unwrap(),
            json!({"expression": "2 +\n3\t*\r4\u{1}", "note": "a\u{8}\u{c}"})
        );
    }

    #[test]
    fn control_characters_outside_strings_stay_whitespace() {
        let text = "{\n\t\"a\": \"x\ny\",\r\n\"b\": [1,\n2]\n}";
        assert_eq!(parse(text).unwrap(), json!({"a": "x\ny", "b": [1, 2]}));
    }

    #[test]
    fn escaped_quotes_and_backslashes_do_not_end_the_string() {
        let text = "{\"s\": \"say \\\"hi\\\"\n\\\\\", \"t\": \"\t\"}";
        assert_eq!(
            parse(text).unwrap(),
            json!({"s": "say \"hi\"\n\\", "t": "\t"})
        );
    }

    #[test]
    fn code_fences_and_surrounding_whitespace_are_dropped() {
        for text in [
            "```json\n{\"a\": 1}\n```",
            "  ```\n{\"a\": 1}\n```  \n",
            "```{\"a\": 1}```",
            "```JSON\n{\"a\": 1}",
        ] {
            assert_eq!(parse(text).unwrap(), json!({"a": 1}), "{text:?}");
        }
    }

    #[test]
    fn trailing_commas_are_dropped_outside_strings_only() {
        assert_eq!(
            parse("{\"a\": [1, 2, ], \"b\": {\"c\": 3,\n},\n}").unwrap(),
            json!({"a": [1, 2], "b": {"c": 3}})
        );
        assert_eq!(
            parse("{\"s\": \",}\", \"t\": \",]\",}").unwrap(),
            json!({"s": ",}", "t": ",]"})
        );
    }

    #[test]
    fn truncated_or_garbled_text_stays_an_error() {
        for text in [
            "{\"expression\": \"2 +\n3",
            "{\"expression\": 6*7",
            "calculator(2+3)",
            "{\"a\": 1,, }",
            "```",
            "\"unterminated",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn the_error_is_about_what_remains_after_repair() {
        let e = parse("{\"expression\": \"2 +\n3").unwrap_err();
        assert!(e.is_eof(), "{e}");
        assert!(!e.to_string().contains("control character"), "{e}");
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(text in ".{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_json_like_text(text in r#"[{}\[\],:"\\ \n\t\r\x00-\x1fa-z0-9`]{0,120}"#) {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text);
        }

        #[test]
        fn valid_json_parses_unchanged(value in json_value()) {
            let text = value.to_string();
            prop_assert_eq!(parse(&text).unwrap(), value.clone());
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            prop_assert_eq!(parse(&pretty).unwrap(), value);
        }

        #[test]
        fn raw_control_characters_in_strings_are_kept(s in "[a-z\x00-\x1f\"\\\\]{0,40}") {
            let value = json!({"s": s});
            // The same document with every escaped control character written raw.
            let raw = raw_controls(&value.to_string());
            prop_assert_eq!(parse(&raw).unwrap(), value);
        }
    }

    /// `text` with JSON escapes of control characters (other than `\"` and `\\`) replaced by
    /// the characters themselves.
    fn raw_controls(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16).expect("serde writes 4 hex digits");
                    out.push(char::from_u32(code).expect("a control character"));
                }
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        }
        out
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
