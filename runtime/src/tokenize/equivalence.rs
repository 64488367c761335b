//! The ids must be tiktoken's: every test here encodes the same text with `tiktoken-rs`'s
//! `encode_ordinary` and with [`Encoding`], for both encodings.

use std::time::Instant;

use proptest::prelude::*;
use tiktoken_rs::CoreBPE;

use super::Encoding;

fn reference(encoding: Encoding) -> &'static CoreBPE {
    match encoding {
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
    }
}

fn check(text: &str) -> Result<(), TestCaseError> {
    for encoding in Encoding::ALL {
        let want = reference(encoding).encode_ordinary(text);
        let got = encoding.encode(text);
        prop_assert_eq!(&got, &want, "{} ids of {:?}", encoding, text);
        prop_assert_eq!(encoding.count(text), want.len(), "{} count", encoding);
    }
    Ok(())
}

/// Text the split patterns treat specially, including case-folding corners of the
/// contractions (`'S`, the long s `ſ`, the Kelvin sign) and whitespace that is not ASCII.
const FRAGMENTS: &[&str] = &[
    "I'm",
    "they'll",
    "we've",
    "you're",
    "he'd",
    "it's",
    "IT'S",
    "'S",
    "'ſ",
    "ſ",
    "'LL",
    "'Ve",
    "don't",
    "O'Neil",
    "'",
    "''",
    "\u{212a}",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\n\n",
    " \n ",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{85}",
    "\u{b}",
    "\u{c}",
    "fn main() {",
    "}",
    "    ",
    "let x = vec![1, 2, 3];",
    "// comment",
    "/*",
    "*/",
    "a/b/c",
    "http://example.com/x?y=1",
    "<|endoftext|>",
    "<|endofprompt|>",
    "12345",
    "3.14159",
    "1,000,000",
    "٣٤٥",
    "½",
    "Ⅻ",
    "😀",
    "👍🏽",
    "🏳️‍🌈",
    "👨‍👩‍👧",
    "日本語",
    "中文字符",
    "한국어",
    "Ελληνικά",
    "Привет",
    "ǅungla",
    "e\u{301}",
    "\u{301}",
    "\u{300}\u{301}",
    "ABCdef",
    "CamelCase",
    "HTTPServer",
    "x_y_z",
    "--flag",
    "!!!",
    "...",
    "?!",
    "$$",
    "#[derive(Debug)]",
    "\"quoted\"",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "\u{200b}",
    "\u{fffd}",
];

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(FRAGMENTS).prop_map(str::to_owned),
        2 => "[ \t\n\r\u{a0}\u{3000}\u{2028}]{1,8}",
        1 => "[0-9]{1,9}",
        2 => "[a-zA-Z]{1,12}",
        1 => "[\\p{Han}\\p{Hiragana}]{1,6}",
        1 => "[!-/:-@\\[-`{-~]{1,5}",
        1 => any::<char>().prop_map(String::from),
    ]
}

fn mixed() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..40).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mixed_text_matches_tiktoken(text in mixed()) {
        check(&text)?;
    }

    #[test]
    fn any_unicode_matches_tiktoken(chars in prop::collection::vec(any::<char>(), 0..48)) {
        check(&chars.into_iter().collect::<String>())?;
    }

    #[test]
    fn whitespace_and_digit_runs_match_tiktoken(
        text in "([ \t\n\r\u{a0}\u{3000}]{0,6}[0-9a-z'.]{0,4}){0,12}",
    ) {
        check(&text)?;
    }
}

/// A few kilobytes of prose and code, the kind of text a context page holds.
fn sample_text() -> String {
    let prose = "The scheduler leases a task to an agent, which builds its prompt from the \
        context pager's pages. If a page doesn't fit the budget, it's evicted; they'll be \
        swapped back in when the agent reads them again. We've measured 1,234 steps/s at \
        p99 = 3.5 ms.\n\n";
    let code = "fn count(&self, text: &str) -> usize {\n    if text.is_empty() {\n        \
        return 0;\n    }\n    let mut n = 0;\n    self.encode(text, |_| n += 1);\n    n\n}\n\n";
    let mut text = String::new();
    while text.len() < 2048 {
        text.push_str(prose);
        text.push_str(code);
    }
    text
}

#[test]
fn every_token_has_tiktokens_rank() {
    for encoding in Encoding::ALL {
        let vocab = &encoding.tokenizer().vocab;
        let reference = reference(encoding);
        for rank in 0..vocab.len() as u32 {
            let bytes = reference.decode_bytes(&[rank]).unwrap();
            assert_eq!(vocab.rank(&bytes), Some(rank), "{encoding} token {bytes:?}");
        }
    }
}

#[test]
fn long_inputs_match_tiktoken() {
    let mut long = sample_text().repeat(40);
    long.push_str(&" ".repeat(10_000));
    long.push('x');
    long.push_str(&"\n \t".repeat(2_000));
    long.push_str(&"9".repeat(3_001));
    long.push_str(&"a".repeat(2_000));
    long.push_str(&"=".repeat(1_500));
    long.push_str(&"日本語のテキスト".repeat(300));
    long.push_str(&"😀👍🏽".repeat(300));
    long.push_str(&" ".repeat(77));
    check(&long).unwrap();
}

#[test]
fn edge_cases_match_tiktoken() {
    for text in [
        "",
        " ",
        "  ",
        " a",
        "  a",
        "\n",
        " \n",
        "\n ",
        "a ",
        "a  ",
        "a\t\tb",
        "a \u{a0}b",
        "\u{3000}\u{3000}x",
        " \r\n\r\n  x",
        "x \n",
        "I'm",
        " they'll",
        "'s",
        "''s",
        "'ſ",
        "IT'S",
        "12345678",
        " 1",
        "  1",
        "x/\ny",
        " !!\n\n",
        "<|endoftext|>",
    ] {
        check(text).unwrap();
    }
}

/// Encoding speed against `tiktoken-rs` on a 2 KB text; run with
/// `cargo test --release -p agentos-runtime tokenize::equivalence::encode_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a timing, not a check"]
fn encode_speed() {
    let text = sample_text();
    for encoding in Encoding::ALL {
        let reference = reference(encoding);
        assert_eq!(encoding.encode(&text), reference.encode_ordinary(&text));
        let ours = median_micros(|| encoding.encode(&text).len());
        let theirs = median_micros(|| reference.encode_ordinary(&text).len());
        let counted = median_micros(|| encoding.count(&text));
        println!(
            "{encoding}, {} bytes: encode {ours:.1} µs, count {counted:.1} µs, tiktoken-rs {theirs:.1} µs",
            text.len()
        );
    }
}

fn median_micros(mut f: impl FnMut() -> usize) -> f64 {
    let mut times: Vec<f64> = (0..2001)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
