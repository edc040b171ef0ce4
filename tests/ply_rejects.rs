//! Every kind of bad PLY input: each is rejected with a one-line error that
//! names the file and the field, without a huge allocation. Files are
//! assembled here byte by byte, never with the writer.

mod common;
#[path = "common/tracking.rs"]
mod tracking;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use common::ply::{assert_has, header};
use tracking::largest_allocation;
use turboquant3d::Error;
use turboquant3d::splat::ply::{read_ply, read_ply_from};

// ---------------------------------------------------------------------------
// Bad input.

/// The 3DGS properties of an SH-degree-0 file, all float.
const BASE: [&str; 14] = [
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
];

/// A little-endian header over `props`, then `body`.
fn file(count: &str, props: &[String], body: &[u8]) -> Vec<u8> {
    let mut lines = vec![
        "ply".into(),
        "format binary_little_endian 1.0".into(),
        format!("element vertex {count}"),
    ];
    lines.extend(props.iter().cloned());
    lines.push("end_header".into());
    let mut bytes = header(&lines, "\n");
    bytes.extend_from_slice(body);
    bytes
}

fn base_props() -> Vec<String> {
    BASE.iter().map(|n| format!("property float {n}")).collect()
}

/// Reads `bytes` both with and without the file length and returns the
/// error message, which must be the same... or at least both must fail.
fn fail(bytes: &[u8]) -> String {
    let path = PathBuf::from("bad.ply");
    let with = read_ply_from(Cursor::new(bytes), &path, Some(bytes.len() as u64));
    let without = read_ply_from(Cursor::new(bytes), &path, None);
    let (Err(a), Err(b)) = (with, without) else {
        panic!(
            "expected an error for {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
        )
    };
    assert!(matches!(a, Error::Format { .. }), "{a:?}");
    let (a, b) = (a.to_string(), b.to_string());
    assert!(a.contains("bad.ply") && b.contains("bad.ply"), "{a} / {b}");
    a
}

#[test]
fn the_base_file_is_valid() {
    // So that each bad case below fails for its own reason.
    let bytes = file("2", &base_props(), &[0u8; 2 * 56]);
    let s = read_ply_from(
        Cursor::new(&bytes),
        Path::new("ok.ply"),
        Some(bytes.len() as u64),
    )
    .unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s.sh_degree, 0);
    assert!(s.normals.is_none());
}

#[test]
fn not_a_ply() {
    assert_has(&fail(b"PK\x03\x04 not a ply at all"), &["not a PLY"]);
    assert_has(&fail(b""), &["not a PLY"]);
    assert_has(&fail(&[0u8; 100]), &["not a PLY"]);
}

#[test]
fn missing_end_header() {
    let mut garbage = b"ply\nformat binary_little_endian 1.0\n".to_vec();
    garbage.extend(std::iter::repeat_n(b'a', 3 << 20));
    let (msg, big) = largest_allocation(|| fail(&garbage));
    assert_has(&msg, &["end_header"]);
    assert!(
        big < 8 << 20,
        "allocated {big} bytes for a 3 MiB garbage header"
    );

    assert_has(
        &fail(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"),
        &["end_header"],
    );
    let mut lines = b"ply\nformat ascii 1.0\n".to_vec();
    for _ in 0..20_000 {
        lines.extend(b"comment more\n");
    }
    assert_has(&fail(&lines), &["end_header"]);
}

#[test]
fn missing_required_property() {
    for drop in BASE {
        let props: Vec<String> = BASE
            .iter()
            .filter(|n| **n != drop)
            .map(|n| format!("property float {n}"))
            .collect();
        assert_has(&fail(&file("1", &props, &[0u8; 52])), &[drop, "missing"]);
    }
    let mut props = base_props();
    props.push("property float nx".into());
    props.push("property float nz".into());
    assert_has(&fail(&file("1", &props, &[0u8; 64])), &["ny"]);
}

#[test]
fn known_property_of_another_type() {
    let mut props = base_props();
    props[6] = "property double opacity".into();
    assert_has(
        &fail(&file("1", &props, &[0u8; 60])),
        &["opacity", "double"],
    );
    let mut props = base_props();
    props[0] = "property uchar x".into();
    assert_has(&fail(&file("1", &props, &[0u8; 53])), &["`x`", "uchar"]);
}

#[test]
fn bad_f_rest_counts() {
    let mut props = base_props();
    props.extend((0..10).map(|i| format!("property float f_rest_{i}")));
    assert_has(&fail(&file("1", &props, &[0u8; 96])), &["f_rest", "10"]);
    // Nine of them, but with a gap at 8.
    let mut props = base_props();
    props.extend(
        (0..10)
            .filter(|i| *i != 8)
            .map(|i| format!("property float f_rest_{i}")),
    );
    assert_has(&fail(&file("1", &props, &[0u8; 92])), &["f_rest_8"]);
}

#[test]
fn duplicate_property() {
    let mut props = base_props();
    props.push("property float scale_1".into());
    assert_has(&fail(&file("1", &props, &[0u8; 60])), &["scale_1", "twice"]);
    let mut props = base_props();
    props.push("property int extra".into());
    props.push("property uchar extra".into());
    assert_has(&fail(&file("1", &props, &[0u8; 61])), &["extra", "twice"]);
}

#[test]
fn list_property_on_vertex() {
    let mut props = base_props();
    props.push("property list uchar int vertex_indices".into());
    assert_has(
        &fail(&file("1", &props, &[0u8; 60])),
        &["vertex_indices", "list"],
    );
}

#[test]
fn another_element_with_entries() {
    let mut props = base_props();
    props.push("element face 2".into());
    props.push("property list uchar int vertex_indices".into());
    assert_has(&fail(&file("1", &props, &[0u8; 56 + 2 * 13])), &["face"]);
    // Before the vertex element too.
    let bytes = [
        b"ply\nformat binary_little_endian 1.0\nelement material 1\nproperty uchar red\nelement vertex 1\n".as_slice(),
        &base_props().iter().flat_map(|l| format!("{l}\n").into_bytes()).collect::<Vec<_>>(),
        b"end_header\n",
        &[0u8; 57],
    ]
    .concat();
    assert_has(&fail(&bytes), &["material"]);
}

#[test]
fn count_disagreeing_with_the_file_size() {
    let props = base_props();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("size.ply");
    // Too short: three vertices declared, two present.
    std::fs::write(&path, file("3", &props, &[0u8; 2 * 56])).unwrap();
    let msg = read_ply(&path).unwrap_err().to_string();
    assert_has(
        &msg,
        &[
            "size.ply",
            "truncated",
            "3 vertices",
            "56 bytes",
            "168",
            "112",
        ],
    );
    // Too long: one vertex declared, two present.
    std::fs::write(&path, file("1", &props, &[0u8; 2 * 56])).unwrap();
    let msg = read_ply(&path).unwrap_err().to_string();
    assert_has(&msg, &["size.ply", "trailing"]);
}

#[test]
fn truncated_body_without_a_length() {
    let bytes = file("3", &base_props(), &[0u8; 2 * 56 + 20]);
    let err = read_ply_from(Cursor::new(&bytes), Path::new("stream.ply"), None).unwrap_err();
    assert_has(&err.to_string(), &["stream.ply", "truncated", "vertex 2"]);
    // Trailing bytes are noticed without a length too.
    let bytes = file("1", &base_props(), &[0u8; 57]);
    let err = read_ply_from(Cursor::new(&bytes), Path::new("stream.ply"), None).unwrap_err();
    assert_has(&err.to_string(), &["trailing"]);
}

#[test]
fn absurd_vertex_counts_fail_without_allocating() {
    for count in [
        "18446744073709551615",
        "1000000000000",
        "18446744073709551616",
        "-1",
    ] {
        for format in ["binary_little_endian", "binary_big_endian", "ascii"] {
            let mut bytes = file(count, &base_props(), &[0u8; 3 * 56]);
            let at = bytes
                .windows(20)
                .position(|w| w == b"binary_little_endian")
                .unwrap();
            bytes.splice(at..at + 20, format.bytes());
            let (msg, big) = largest_allocation(|| fail(&bytes));
            assert!(
                big < 64 << 20,
                "{format} count {count}: allocated {big} bytes"
            );
            assert_has(&msg, &["vert"]);
        }
    }
}

/// An ASCII file of `rows` vertex lines over the base properties. The
/// header has 18 lines, so vertex v is on line 19 + v.
fn ascii_file(rows: &[&str]) -> Vec<u8> {
    let mut lines = vec![
        "ply".into(),
        "format ascii 1.0".into(),
        format!("element vertex {}", rows.len()),
    ];
    lines.extend(base_props());
    lines.push("end_header".into());
    assert_eq!(lines.len(), 18);
    lines.extend(rows.iter().map(|r| r.to_string()));
    header(&lines, "\n")
}

#[test]
fn ascii_bad_lines() {
    let good = "1 2 3 4 5 6 7 8 9 10 11 12 13 14";
    let s = read_ply_from(
        Cursor::new(ascii_file(&[good, good])),
        Path::new("a.ply"),
        None,
    )
    .unwrap();
    assert_eq!(s.rotations[1], [11.0, 12.0, 13.0, 14.0]);

    let short = "1 2 3 4 5 6 7 8 9 10 11 12 13";
    assert_has(
        &fail(&ascii_file(&[good, good, short])),
        &["line 21", "13 values", "rot_3"],
    );
    let long = "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15";
    assert_has(&fail(&ascii_file(&[long])), &["line 19", "15 values"]);
    let bad = "1 2 3 4 5 6 abc 8 9 10 11 12 13 14";
    assert_has(
        &fail(&ascii_file(&[good, bad])),
        &["line 20", "opacity", "abc"],
    );
    // A blank line (after a wide one, so that the file is long enough for
    // two vertices).
    let wide = "1.000001 2.000001 3.000001 4.000001 5.000001 6.000001 7.000001 8.000001 9.000001 10.000001 11.000001 12.000001 13.000001 14.000001";
    assert_has(&fail(&ascii_file(&[wide, ""])), &["line 20", "0 values"]);
    // Fewer lines than vertices, and text after the last one.
    let mut bytes = ascii_file(&[good, good]);
    bytes.truncate(bytes.len() - good.len() - 1);
    assert_has(&fail(&bytes), &["truncated"]);
    let mut bytes = ascii_file(&[good]);
    bytes.extend(b"\n\n 7\n");
    assert_has(&fail(&bytes), &["line 22", "trailing"]);
    // Integers are parsed as integers of the declared type.
    let mut lines = vec![
        "ply".to_string(),
        "format ascii 1.0".into(),
        "element vertex 1".into(),
    ];
    lines.extend(base_props());
    lines.push("property uchar red".into());
    lines.push("end_header".into());
    lines.push(format!("{good} 256"));
    assert_has(&fail(&header(&lines, "\n")), &["red", "256", "uchar"]);
}
