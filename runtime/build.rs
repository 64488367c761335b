//! Decodes the vendored `.tiktoken` vocabularies (`assets/`) into the form the tokenizer
//! embeds: every token's bytes back to back in rank order (`<name>.bytes`) and one length byte
//! per token (`<name>.lens`), written to `OUT_DIR`. Decoding 200k lines of base64 here rather
//! than at start-up saves every process that time, and the resident pages of the base64 text.

use std::path::Path;
use std::{env, fs};

/// The vocabularies `src/tokenize` embeds.
const VOCABULARIES: [&str; 2] = ["o200k_base", "cl100k_base"];

fn main() {
    let out = env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    for name in VOCABULARIES {
        let source = format!("assets/{name}.tiktoken");
        println!("cargo::rerun-if-changed={source}");
        let file = fs::read(&source).unwrap_or_else(|e| panic!("cannot read {source}: {e}"));
        let (bytes, lens) = decode(&file).unwrap_or_else(|e| panic!("{source}: {e}"));
        for (ext, data) in [("bytes", bytes), ("lens", lens)] {
            let path = Path::new(&out).join(format!("{name}.{ext}"));
            fs::write(&path, data)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
    }
}

/// The token bytes and lengths of a `.tiktoken` file: one `base64-token rank` line per token,
/// ranks counting up from zero in line order, which the tokenizer relies on (a token's rank
/// is its position in the lengths).
fn decode(file: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut bytes = Vec::with_capacity(file.len() / 2);
    let mut lens = Vec::new();
    let lines = file.split(|&b| b == b'\n').filter(|line| !line.is_empty());
    for (rank, line) in lines.enumerate() {
        let at = || format!("line {}", rank + 1);
        let line = std::str::from_utf8(line).map_err(|_| format!("{}: not UTF-8", at()))?;
        let (token, given) = line
            .split_once(' ')
            .ok_or_else(|| format!("{}: no rank", at()))?;
        if given.parse::<usize>() != Ok(rank) {
            return Err(format!("{}: rank {given}, not the line order {rank}", at()));
        }
        let start = bytes.len();
        if !decode_base64(token.as_bytes(), &mut bytes) {
            return Err(format!("{}: {token:?} is not base64", at()));
        }
        let len = u8::try_from(bytes.len() - start)
            .map_err(|_| format!("{}: a token longer than 255 bytes", at()))?;
        lens.push(len);
    }
    Ok((bytes, lens))
}

/// Appends the bytes `digits` (padded standard base64) encode to `out`; false if they are not
/// base64.
fn decode_base64(digits: &[u8], out: &mut Vec<u8>) -> bool {
    let value = |d: u8| match d {
        b'A'..=b'Z' => Some(u32::from(d - b'A')),
        b'a'..=b'z' => Some(u32::from(d - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(d - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits = digits
        .strip_suffix(b"==")
        .or_else(|| digits.strip_suffix(b"="))
        .unwrap_or(digits);
    for chunk in digits.chunks(4) {
        let mut n = 0;
        for (i, &d) in chunk.iter().enumerate() {
            let Some(v) = value(d) else { return false };
            n |= v << (18 - 6 * i);
        }
        // 2, 3 or 4 digits carry 1, 2 or 3 bytes.
        let Some(len) = chunk.len().checked_sub(1).filter(|&len| len > 0) else {
            return false;
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + len]);
    }
    true
}
