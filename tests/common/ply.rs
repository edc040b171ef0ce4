//! Hand-built PLY files.

/// A header from its lines, each ended with `eol`.
pub fn header(lines: &[String], eol: &str) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}{eol}").into_bytes())
        .collect()
}

/// Asserts that an error message names every one of `parts`.
pub fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}
