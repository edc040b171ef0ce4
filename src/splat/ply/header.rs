//! Reading and checking a PLY header.

use std::io::{BufRead, Read};
use std::path::Path;

use super::PlyEncoding;
use crate::splat::scene::ScalarType;
use crate::{Error, Result};

/// The header may not be longer than this without `end_header`.
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Nor have more lines than this.
const MAX_HEADER_LINES: usize = 10_000;

/// What the header says.
pub(super) struct Header {
    pub(super) encoding: PlyEncoding,
    pub(super) comments: Vec<String>,
    /// Vertex count.
    pub(super) count: u64,
    /// Vertex properties: (name, type, type as spelled).
    pub(super) props: Vec<(String, ScalarType, String)>,
    /// Header bytes, through the `end_header` line break.
    pub(super) len: u64,
    /// Header lines, `ply` and `end_header` included.
    pub(super) lines: usize,
}

/// One `element` of the header.
struct Element {
    name: String,
    count: u64,
    props: Vec<(String, ScalarType, String)>,
}

/// Strips a trailing `\n` or `\r\n`.
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads and checks the header, leaving `reader` at the first body byte.
pub(super) fn read_header(reader: &mut impl BufRead, path: &Path) -> Result<Header> {
    let io_err = |e| Error::io(path, e);
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(8)
        .read_until(b'\n', &mut line)
        .map_err(io_err)?;
    if strip_eol(&line) != b"ply" || !line.ends_with(b"\n") {
        return Err(Error::format(
            path,
            "magic",
            "not a PLY file: it does not start with a `ply` line",
        ));
    }
    let mut len = line.len() as u64;
    let mut lines = 1;
    let mut encoding = None;
    let mut comments = Vec::new();
    let mut elements: Vec<Element> = Vec::new();
    loop {
        if lines >= MAX_HEADER_LINES {
            return Err(Error::format(
                path,
                "header",
                format!("no end_header within the first {MAX_HEADER_LINES} lines"),
            ));
        }
        line.clear();
        let budget = MAX_HEADER_BYTES - len;
        let got = reader
            .by_ref()
            .take(budget)
            .read_until(b'\n', &mut line)
            .map_err(io_err)?;
        len += got as u64;
        lines += 1;
        if got == 0 || (!line.ends_with(b"\n") && len >= MAX_HEADER_BYTES) {
            let why = if got == 0 && budget > 0 {
                format!(
                    "missing end_header: the file ends after {} header lines",
                    lines - 1
                )
            } else {
                format!("no end_header within the first {MAX_HEADER_BYTES} bytes")
            };
            return Err(Error::format(path, "header", why));
        }
        let at = format!("header line {lines}");
        let text = std::str::from_utf8(strip_eol(&line))
            .map_err(|_| Error::format(path, &at, "not text (binary data before end_header?)"))?;
        let bad = |why: String| Error::format(path, &at, why);
        let toks: Vec<&str> = text.split_ascii_whitespace().collect();
        match toks.as_slice() {
            [] => {}
            ["end_header"] => break,
            ["format", enc, version] => {
                if encoding.is_some() {
                    return Err(bad("a second format line".into()));
                }
                let e = PlyEncoding::from_ply_name(enc)
                    .ok_or_else(|| bad(format!("unknown format `{enc}`")))?;
                if *version != "1.0" {
                    return Err(bad(format!("format version `{version}`; only 1.0 exists")));
                }
                encoding = Some(e);
            }
            ["comment", ..] => {
                let rest = text.trim_start().strip_prefix("comment").unwrap_or("");
                let rest = rest
                    .strip_prefix(' ')
                    .or_else(|| rest.strip_prefix('\t'))
                    .unwrap_or(rest);
                comments.push(rest.to_owned());
            }
            ["obj_info", ..] => {}
            ["element", name, count] => {
                let count: u64 = count.parse().map_err(|_| {
                    Error::format(
                        path,
                        format!("element {name}"),
                        format!("count `{count}` is not an integer in 0..2^64"),
                    )
                })?;
                if elements.iter().any(|e| e.name == *name) {
                    return Err(Error::format(
                        path,
                        format!("element {name}"),
                        "declared twice",
                    ));
                }
                elements.push(Element {
                    name: (*name).to_owned(),
                    count,
                    props: Vec::new(),
                });
            }
            ["property", "list", .., name] => {
                let el = elements
                    .last_mut()
                    .ok_or_else(|| bad(format!("property {name} before any element")))?;
                if el.name == "vertex" {
                    return Err(Error::format(
                        path,
                        format!("property {name}"),
                        format!(
                            "`{name}` is a list property; the vertex element only supports scalars"
                        ),
                    ));
                }
            }
            ["property", ty, name] => {
                let el = elements
                    .last_mut()
                    .ok_or_else(|| bad(format!("property {name} before any element")))?;
                let t = ScalarType::from_ply_name(ty).ok_or_else(|| {
                    Error::format(
                        path,
                        format!("property {name}"),
                        format!("unknown type `{ty}` of `{name}`"),
                    )
                })?;
                el.props.push(((*name).to_owned(), t, (*ty).to_owned()));
            }
            [kw, ..] => return Err(bad(format!("unexpected `{kw}` line: {text:?}"))),
        }
    }
    let encoding = encoding.ok_or_else(|| Error::format(path, "format", "no format line"))?;
    let mut vertex = None;
    for el in elements {
        if el.name == "vertex" {
            vertex = Some(el);
        } else if el.count > 0 {
            return Err(Error::format(
                path,
                format!("element {}", el.name),
                format!(
                    "{} `{}` entries; only the vertex element of a 3DGS PLY is supported",
                    el.count, el.name
                ),
            ));
        }
    }
    let vertex =
        vertex.ok_or_else(|| Error::format(path, "element vertex", "no vertex element"))?;
    Ok(Header {
        encoding,
        comments,
        count: vertex.count,
        props: vertex.props,
        len,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keeps_comments_and_counts_bytes() {
        let text = "ply\r\nformat ascii 1.0\r\ncomment  spaced \r\ncomment\r\nelement vertex 2\r\nend_header\r\n1 2\n";
        let mut r = text.as_bytes();
        let h = read_header(&mut r, Path::new("h.ply")).unwrap();
        assert_eq!(h.comments, [" spaced ", ""]);
        assert_eq!(h.count, 2);
        assert_eq!(h.encoding, PlyEncoding::Ascii);
        assert_eq!(h.lines, 6);
        assert_eq!(h.len as usize, text.len() - 4);
        assert_eq!(r, b"1 2\n");
    }
}
