//! The 3DGS PLY reader and writer: bit-exact round trips in every encoding,
//! hand-built files with shuffled properties in every encoding, and writing
//! (bad input is in tests/ply_rejects.rs).
//!
//! Hand-built files are assembled here byte by byte, never with the writer,
//! and expected values are computed from the property's position in the
//! hand-written header, never by asking the library.

mod common;

use std::io::Cursor;
use std::path::Path;

use common::ply::{assert_has, header};
use turboquant3d::Error;
use turboquant3d::splat::ply::{
    PlyEncoding, ply_size, read_ply, read_ply_from, write_ply, write_ply_to,
};
use turboquant3d::splat::{ExtraProperty, Extras, ScalarType, Scene, rest_dim};

// ---------------------------------------------------------------------------
// Scenes for round trips.

const ENCODINGS: [PlyEncoding; 3] = [
    PlyEncoding::BinaryLittleEndian,
    PlyEncoding::BinaryBigEndian,
    PlyEncoding::Ascii,
];

/// A small xorshift generator: reproducible, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Any f32 bit pattern at all (NaN payloads, subnormals, ±inf, −0 …)
    /// half the time, an ordinary value otherwise; the first few draws are
    /// the awkward ones.
    fn f32(&mut self, i: usize) -> f32 {
        const SPECIAL: [u32; 10] = [
            0x8000_0000, // -0.0
            0x7fc0_1234, // NaN with a payload
            0x7f80_0000, // +inf
            0xff80_0000, // -inf
            0x0000_0001, // smallest subnormal
            0x7f7f_ffff, // f32::MAX
            0x0080_0000, // f32::MIN_POSITIVE
            0xffc0_0000, // negative quiet NaN
            0x3eaa_aaab, // 1/3
            0x0000_0000, // +0.0
        ];
        if i < SPECIAL.len() {
            return f32::from_bits(SPECIAL[i]);
        }
        let r = self.next();
        if r & 1 == 0 {
            f32::from_bits((r >> 32) as u32)
        } else {
            ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        }
    }
}

/// Extra properties of every scalar type.
fn extra_props() -> Vec<ExtraProperty> {
    [
        ("red", ScalarType::U8),
        ("level", ScalarType::I16),
        ("segment", ScalarType::I32),
        ("weight", ScalarType::F64),
        ("confidence", ScalarType::F32),
        ("tag", ScalarType::I8),
        ("age", ScalarType::U16),
        ("id", ScalarType::U32),
    ]
    .into_iter()
    .map(|(name, ty)| ExtraProperty {
        name: name.into(),
        ty,
    })
    .collect()
}

fn make_scene(n: usize, degree: u8, normals: bool, extras: bool, seed: u64) -> Scene {
    let mut rng = Rng(seed | 1);
    let mut k = 0;
    let mut f = || {
        k += 1;
        rng.f32(k - 1)
    };
    let v3 = |f: &mut dyn FnMut() -> f32| (0..n).map(|_| [f(), f(), f()]).collect::<Vec<_>>();
    let positions = v3(&mut f);
    let normals = normals.then(|| v3(&mut f));
    let dc = v3(&mut f);
    let sh_rest = (0..n * rest_dim(degree)).map(|_| f()).collect();
    let opacity = (0..n).map(|_| f()).collect();
    let scales = v3(&mut f);
    let rotations = (0..n).map(|_| [f(), f(), f(), f()]).collect();
    let mut ex = Extras::default();
    if extras {
        ex.properties = extra_props();
        let stride = ex.stride();
        let mut r = Rng(seed.wrapping_mul(31) | 1);
        ex.data = (0..n * stride).map(|_| r.next() as u8).collect();
    }
    Scene {
        sh_degree: degree,
        positions,
        normals,
        dc,
        sh_rest,
        opacity,
        scales,
        rotations,
        extras: ex,
        comments: vec![
            "made by tests/ply.rs".into(),
            "  two leading spaces, trailing  ".into(),
            String::new(),
        ],
    }
}

/// Equal bit patterns; with `nan_any`, any two NaNs count as equal.
fn same_f32(a: f32, b: f32, nan_any: bool) -> bool {
    a.to_bits() == b.to_bits() || (nan_any && a.is_nan() && b.is_nan())
}

fn same_f64(a: f64, b: f64, nan_any: bool) -> bool {
    a.to_bits() == b.to_bits() || (nan_any && a.is_nan() && b.is_nan())
}

/// Asserts `got` equals `want` value by value (bit-exact, or NaN-insensitive
/// with `nan_any`), naming the first difference.
fn assert_same_scene(got: &Scene, want: &Scene, nan_any: bool, what: &str) {
    assert_eq!(got.sh_degree, want.sh_degree, "{what}: sh_degree");
    assert_eq!(got.len(), want.len(), "{what}: len");
    assert_eq!(got.comments, want.comments, "{what}: comments");
    assert_eq!(
        got.normals.is_some(),
        want.normals.is_some(),
        "{what}: normals"
    );
    let flat = |v: &[[f32; 3]]| v.iter().flatten().copied().collect::<Vec<_>>();
    let mut arrays: Vec<(&str, Vec<f32>, Vec<f32>)> = vec![
        ("positions", flat(&got.positions), flat(&want.positions)),
        ("dc", flat(&got.dc), flat(&want.dc)),
        ("sh_rest", got.sh_rest.clone(), want.sh_rest.clone()),
        ("opacity", got.opacity.clone(), want.opacity.clone()),
        ("scales", flat(&got.scales), flat(&want.scales)),
        (
            "rotations",
            got.rotations.iter().flatten().copied().collect(),
            want.rotations.iter().flatten().copied().collect(),
        ),
    ];
    if let (Some(g), Some(w)) = (&got.normals, &want.normals) {
        arrays.push(("normals", flat(g), flat(w)));
    }
    for (name, g, w) in arrays {
        assert_eq!(g.len(), w.len(), "{what}: {name} length");
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!(
                same_f32(*a, *b, nan_any),
                "{what}: {name}[{i}] = {a:?} ({:#010x}), wrote {b:?} ({:#010x})",
                a.to_bits(),
                b.to_bits()
            );
        }
    }
    assert_eq!(
        got.extras.properties, want.extras.properties,
        "{what}: extras"
    );
    assert_eq!(
        got.extras.data.len(),
        want.extras.data.len(),
        "{what}: extras bytes"
    );
    if !nan_any {
        assert!(
            got.extras.data == want.extras.data,
            "{what}: extras bytes differ"
        );
        return;
    }
    // ASCII: decode each value so that NaN payloads may differ.
    let stride = want.extras.stride();
    for row in 0..want.len() {
        let mut off = row * stride;
        for p in &want.extras.properties {
            let (a, b) = (
                &got.extras.data[off..off + p.ty.size()],
                &want.extras.data[off..off + p.ty.size()],
            );
            let ok = match p.ty {
                ScalarType::F32 => same_f32(
                    f32::from_le_bytes(a.try_into().unwrap()),
                    f32::from_le_bytes(b.try_into().unwrap()),
                    true,
                ),
                ScalarType::F64 => same_f64(
                    f64::from_le_bytes(a.try_into().unwrap()),
                    f64::from_le_bytes(b.try_into().unwrap()),
                    true,
                ),
                _ => a == b,
            };
            assert!(ok, "{what}: row {row} extra {}: {a:?} vs {b:?}", p.name);
            off += p.ty.size();
        }
    }
}

#[test]
fn round_trips_every_encoding_degree_normals_and_extras() {
    let dir = tempfile::tempdir().unwrap();
    for enc in ENCODINGS {
        for degree in 0..=3u8 {
            for normals in [false, true] {
                for extras in [false, true] {
                    let seed = 1 + degree as u64 * 8 + normals as u64 * 4 + extras as u64 * 2;
                    let scene = make_scene(300, degree, normals, extras, seed);
                    let what = format!("{enc:?} degree {degree} normals {normals} extras {extras}");
                    let path = dir.path().join("rt.ply");
                    write_ply(&path, &scene, enc).unwrap();
                    let back = read_ply(&path).unwrap();
                    assert_same_scene(&back, &scene, enc == PlyEncoding::Ascii, &what);

                    // The same bytes through a writer, read without a length.
                    let mut bytes = Vec::new();
                    write_ply_to(&mut bytes, &scene, enc).unwrap();
                    assert!(
                        bytes == std::fs::read(&path).unwrap(),
                        "{what}: writers differ"
                    );
                    let back = read_ply_from(Cursor::new(&bytes), &path, None).unwrap();
                    assert_same_scene(&back, &scene, enc == PlyEncoding::Ascii, &what);
                }
            }
        }
    }
}

#[test]
fn binary_round_trip_spans_many_chunks() {
    // More vertices than one chunk of records holds (at most 65,536).
    let scene = make_scene(150_000, 3, true, true, 99);
    for enc in [
        PlyEncoding::BinaryLittleEndian,
        PlyEncoding::BinaryBigEndian,
    ] {
        let mut bytes = Vec::new();
        write_ply_to(&mut bytes, &scene, enc).unwrap();
        let back = read_ply_from(Cursor::new(&bytes), Path::new("big.ply"), None).unwrap();
        assert_same_scene(&back, &scene, false, &format!("{enc:?}"));
        let len = Some(bytes.len() as u64);
        let back = read_ply_from(Cursor::new(&bytes), Path::new("big.ply"), len).unwrap();
        assert_same_scene(&back, &scene, false, &format!("{enc:?} with length"));
        // From a file: mapped, the body converted in place.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.ply");
        std::fs::write(&path, &bytes).unwrap();
        let back = read_ply(&path).unwrap();
        assert_same_scene(&back, &scene, false, &format!("{enc:?} mapped"));
    }
}

#[test]
fn a_mapped_file_is_refused_as_the_streamed_bytes_are() {
    // Truncated bodies, trailing bytes and broken headers: the mapped reader
    // (read_ply on a file) gives the streaming reader's error, word for word.
    let dir = tempfile::tempdir().unwrap();
    let scene = make_scene(40, 1, false, false, 5);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for enc in ENCODINGS {
        let mut bytes = Vec::new();
        write_ply_to(&mut bytes, &scene, enc).unwrap();
        let body_at = bytes
            .windows(11)
            .position(|w| w == b"end_header\n")
            .unwrap()
            + 11;
        let half = body_at + (bytes.len() - body_at) / 2 + 1;
        cases.push((format!("{enc:?} cut mid-body"), bytes[..half].to_vec()));
        cases.push((
            format!("{enc:?} cut at the header"),
            bytes[..body_at].to_vec(),
        ));
        let mut long = bytes.clone();
        long.extend_from_slice(b"xyz");
        cases.push((format!("{enc:?} trailing bytes"), long));
        let mut bad = bytes.clone();
        bad[body_at - 12] = b'#'; // end_header's newline-ending line broken
        cases.push((format!("{enc:?} broken header"), bad));
    }
    for (what, bytes) in cases {
        let path = dir.path().join("case.ply");
        std::fs::write(&path, &bytes).unwrap();
        let mapped = read_ply(&path).map(|s| s.len()).map_err(|e| e.to_string());
        let streamed = read_ply_from(Cursor::new(&bytes), &path, Some(bytes.len() as u64))
            .map(|s| s.len())
            .map_err(|e| e.to_string());
        assert!(mapped.is_err(), "{what}: accepted");
        assert_eq!(mapped, streamed, "{what}");
    }
}

#[test]
fn ascii_round_trips_awkward_floats_as_text() {
    let mut scene = make_scene(1, 0, false, false, 5);
    scene.positions[0] = [-0.0, f32::INFINITY, f32::NEG_INFINITY];
    scene.opacity[0] = f32::NAN;
    scene.dc[0] = [f32::from_bits(1), f32::MAX, -f32::MIN_POSITIVE];
    let mut bytes = Vec::new();
    write_ply_to(&mut bytes, &scene, PlyEncoding::Ascii).unwrap();
    let back = read_ply_from(Cursor::new(&bytes), Path::new("a.ply"), None).unwrap();
    assert_eq!(back.positions[0][0].to_bits(), (-0.0f32).to_bits());
    assert_eq!(back.positions[0][1], f32::INFINITY);
    assert_eq!(back.positions[0][2], f32::NEG_INFINITY);
    assert!(back.opacity[0].is_nan());
    assert_eq!(back.dc[0].map(f32::to_bits), scene.dc[0].map(f32::to_bits));
}

#[test]
fn empty_scenes_round_trip() {
    for enc in ENCODINGS {
        let scene = make_scene(0, 2, true, true, 3);
        let mut bytes = Vec::new();
        write_ply_to(&mut bytes, &scene, enc).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("element vertex 0\n"), "{enc:?}: {text}");
        let back = read_ply_from(
            Cursor::new(&bytes),
            Path::new("e.ply"),
            Some(bytes.len() as u64),
        )
        .unwrap();
        assert!(back.is_empty());
        assert_eq!(back.sh_degree, 2);
        assert!(back.normals.is_some());
        assert_eq!(back.extras.properties, extra_props());
    }
}

#[test]
fn ply_size_is_the_written_length() {
    for degree in 0..=3u8 {
        for (n, normals, extras) in [
            (0, false, false),
            (1, true, false),
            (777, false, true),
            (40, true, true),
        ] {
            let scene = make_scene(n, degree, normals, extras, 17);
            for enc in [
                PlyEncoding::BinaryLittleEndian,
                PlyEncoding::BinaryBigEndian,
            ] {
                let mut bytes = Vec::new();
                write_ply_to(&mut bytes, &scene, enc).unwrap();
                assert_eq!(
                    ply_size(&scene, enc),
                    Some(bytes.len() as u64),
                    "{enc:?} degree {degree} n {n}"
                );
            }
            assert_eq!(ply_size(&scene, PlyEncoding::Ascii), None);
        }
    }
}

#[test]
fn writer_uses_canonical_order_and_channel_major_f_rest() {
    // Degree 3, no normals: the record is x y z, f_dc_0..2, f_rest_0..44,
    // opacity, scale_0..2, rot_0..3, then the extra double, little-endian.
    let n = 5;
    let mut scene = make_scene(n, 3, false, false, 7);
    scene.sh_rest = (0..n * 45)
        .map(|j| ((j / 45) * 1000 + j % 45) as f32)
        .collect();
    scene.extras = Extras {
        properties: vec![ExtraProperty {
            name: "weight".into(),
            ty: ScalarType::F64,
        }],
        data: (0..n)
            .flat_map(|i| (i as f64 * -1.5).to_le_bytes())
            .collect(),
    };
    let mut bytes = Vec::new();
    write_ply_to(&mut bytes, &scene, PlyEncoding::BinaryLittleEndian).unwrap();
    let end = b"end_header\n";
    let body_at = bytes.windows(end.len()).position(|w| w == end).unwrap() + end.len();
    let header = std::str::from_utf8(&bytes[..body_at]).unwrap();
    let mut want = String::from("ply\nformat binary_little_endian 1.0\n");
    for c in &scene.comments {
        want += &format!("comment {c}\n");
    }
    want += "element vertex 5\n";
    let mut names: Vec<String> = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"]
        .map(String::from)
        .into();
    names.extend((0..45).map(|i| format!("f_rest_{i}")));
    names.extend(
        [
            "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
        ]
        .map(String::from),
    );
    for name in &names {
        want += &format!("property float {name}\n");
    }
    want += "property double weight\nend_header\n";
    assert_eq!(header, want);

    let stride = 59 * 4 + 8;
    let body = &bytes[body_at..];
    assert_eq!(body.len(), n * stride);
    let float = |row: usize, k: usize| {
        f32::from_le_bytes(body[row * stride + 4 * k..][..4].try_into().unwrap())
    };
    for row in 0..n {
        for i in 0..45 {
            assert_eq!(
                float(row, 6 + i),
                (row * 1000 + i) as f32,
                "row {row} f_rest_{i}"
            );
        }
        assert_eq!(float(row, 51).to_bits(), scene.opacity[row].to_bits());
        assert_eq!(float(row, 58).to_bits(), scene.rotations[row][3].to_bits());
        let w = f64::from_le_bytes(body[row * stride + 59 * 4..][..8].try_into().unwrap());
        assert_eq!(w, row as f64 * -1.5);
    }
}

// ---------------------------------------------------------------------------
// Hand-built files.

/// The SH-degree-1 3DGS properties with normals and five extras, shuffled:
/// rotation first, f_rest interleaved with the rest, extras in the middle.
const SHUFFLED: [(&str, &str); 31] = [
    ("float", "rot_2"),
    ("float", "f_rest_4"),
    ("float32", "x"),
    ("uchar", "red"),
    ("float", "f_rest_0"),
    ("float", "scale_1"),
    ("float", "opacity"),
    ("float", "f_rest_8"),
    ("float", "nz"),
    ("double", "weight"),
    ("float", "f_dc_1"),
    ("float", "rot_0"),
    ("float", "f_rest_1"),
    ("float", "y"),
    ("float", "f_rest_2"),
    ("float", "ny"),
    ("float", "scale_0"),
    ("float", "f_rest_3"),
    ("int", "segment"),
    ("float", "f_rest_5"),
    ("float", "rot_3"),
    ("float", "f_dc_0"),
    ("float", "f_rest_6"),
    ("float", "z"),
    ("short", "level"),
    ("float", "scale_2"),
    ("float", "f_rest_7"),
    ("float", "nx"),
    ("float", "rot_1"),
    ("float", "f_dc_2"),
    ("char", "tag"),
];

fn is_float(ty: &str) -> bool {
    matches!(ty, "float" | "float32" | "double" | "float64")
}

/// The value hand-built files store for property `k` of vertex `v`: unique
/// per property and exact in every type.
fn value(ty: &str, k: usize, v: usize) -> f64 {
    if is_float(ty) {
        (v * 100 + k) as f64 + 0.25
    } else {
        let x = ((v * 31 + k * 7) % 100) as f64;
        if ty != "uchar" && (v + k) % 2 == 1 {
            -x
        } else {
            x
        }
    }
}

/// The binary encoding of `x` as PLY type `ty`.
fn encode(ty: &str, x: f64, big_endian: bool) -> Vec<u8> {
    macro_rules! e {
        ($t:ty) => {{
            let v = x as $t;
            if big_endian {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        }};
    }
    match ty {
        "char" => e!(i8),
        "uchar" => e!(u8),
        "short" => e!(i16),
        "ushort" => e!(u16),
        "int" => e!(i32),
        "uint" => e!(u32),
        "float" | "float32" => e!(f32),
        "double" | "float64" => e!(f64),
        _ => panic!("type {ty}"),
    }
}

fn shuffled_file(format: &str, n: usize, eol: &str) -> Vec<u8> {
    let mut lines = vec![
        "ply".to_string(),
        format!("format {format} 1.0"),
        "comment hand built".into(),
        "obj_info ignored".into(),
        "element camera 0".into(),
        "property float fx".into(),
        format!("element vertex {n}"),
    ];
    lines.extend(
        SHUFFLED
            .iter()
            .map(|(ty, name)| format!("property {ty} {name}")),
    );
    lines.push("element face 0".into());
    lines.push("property list uchar int vertex_indices".into());
    lines.push("end_header".into());
    let mut bytes = header(&lines, eol);
    for v in 0..n {
        if format == "ascii" {
            let toks: Vec<String> = SHUFFLED
                .iter()
                .enumerate()
                .map(|(k, (ty, _))| format!("{}", value(ty, k, v)))
                .collect();
            bytes.extend(format!("{}{eol}", toks.join(" ")).into_bytes());
        } else {
            for (k, (ty, _)) in SHUFFLED.iter().enumerate() {
                bytes.extend(encode(ty, value(ty, k, v), format == "binary_big_endian"));
            }
        }
    }
    bytes
}

/// The scene's value of 3DGS property `name` for vertex `v`, looked up by
/// the layout documented on [`Scene`].
fn known(s: &Scene, name: &str, v: usize) -> f32 {
    let nrm = s.normals.as_ref();
    match name {
        "x" => s.positions[v][0],
        "y" => s.positions[v][1],
        "z" => s.positions[v][2],
        "nx" => nrm.unwrap()[v][0],
        "ny" => nrm.unwrap()[v][1],
        "nz" => nrm.unwrap()[v][2],
        "opacity" => s.opacity[v],
        _ => {
            let (prefix, i) = name.rsplit_once('_').unwrap();
            let i: usize = i.parse().unwrap();
            match prefix {
                "f_dc" => s.dc[v][i],
                "f_rest" => s.sh_rest[v * s.rest_dim() + i],
                "scale" => s.scales[v][i],
                "rot" => s.rotations[v][i],
                _ => panic!("{name}"),
            }
        }
    }
}

/// Checks every value of a scene read from [`shuffled_file`].
fn check_shuffled(s: &Scene, n: usize, what: &str) {
    assert_eq!(s.len(), n, "{what}");
    assert_eq!(s.sh_degree, 1, "{what}");
    assert_eq!(s.comments, vec!["hand built".to_string()], "{what}");
    let extras: Vec<(&str, &str)> = SHUFFLED
        .iter()
        .copied()
        .filter(|(ty, _)| *ty != "float" && *ty != "float32")
        .collect();
    let want_props: Vec<ExtraProperty> = extras
        .iter()
        .map(|(ty, name)| ExtraProperty {
            name: (*name).into(),
            ty: ScalarType::from_ply_name(ty).unwrap(),
        })
        .collect();
    assert_eq!(s.extras.properties, want_props, "{what}");
    let stride: usize = extras
        .iter()
        .map(|(ty, _)| encode(ty, 0.0, false).len())
        .sum();
    assert_eq!(stride, 1 + 8 + 4 + 2 + 1);
    for v in 0..n {
        let mut off = v * stride;
        for (k, (ty, name)) in SHUFFLED.iter().enumerate() {
            let want = value(ty, k, v);
            if *ty == "float" || *ty == "float32" {
                assert_eq!(known(s, name, v), want as f32, "{what}: vertex {v} {name}");
            } else {
                let bytes = encode(ty, want, false);
                assert_eq!(
                    s.extras.data[off..off + bytes.len()],
                    bytes[..],
                    "{what}: vertex {v} {name}"
                );
                off += bytes.len();
            }
        }
    }
    // A few spot checks written out by hand: vertex 1, x is property 2,
    // rot_2 property 0, f_rest_8 property 7, red (uchar) property 3.
    assert_eq!(s.positions[1][0], 102.25);
    assert_eq!(s.rotations[1][2], 100.25);
    assert_eq!(s.sh_rest[9 + 8], 107.25);
    assert_eq!(s.extras.data[stride], (31 + 21) as u8);
}

#[test]
fn shuffled_little_endian_file_lands_in_the_right_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shuffled.ply");
    std::fs::write(&path, shuffled_file("binary_little_endian", 7, "\n")).unwrap();
    check_shuffled(&read_ply(&path).unwrap(), 7, "little-endian");
}

#[test]
fn shuffled_big_endian_file_with_crlf_header_lands_in_the_right_fields() {
    let bytes = shuffled_file("binary_big_endian", 7, "\r\n");
    let len = Some(bytes.len() as u64);
    let s = read_ply_from(Cursor::new(&bytes), Path::new("be.ply"), len).unwrap();
    check_shuffled(&s, 7, "big-endian");
    let s = read_ply_from(Cursor::new(&bytes), Path::new("be.ply"), None).unwrap();
    check_shuffled(&s, 7, "big-endian, no length");
}

#[test]
fn shuffled_ascii_file_with_crlf_lands_in_the_right_fields() {
    let bytes = shuffled_file("ascii", 7, "\r\n");
    assert!(bytes.windows(2).any(|w| w == b"\r\n"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shuffled_ascii.ply");
    std::fs::write(&path, &bytes).unwrap();
    check_shuffled(&read_ply(&path).unwrap(), 7, "ascii");
}

#[test]
fn f_rest_lands_channel_major() {
    // Degree 3: f_rest_i of vertex `row` is stored at sh_rest[row * 45 + i],
    // even with the f_rest properties declared in reverse.
    let n = 3;
    let mut lines = vec![
        "ply".to_string(),
        "format binary_little_endian 1.0".into(),
        format!("element vertex {n}"),
    ];
    let mut names: Vec<String> = (0..45).rev().map(|i| format!("f_rest_{i}")).collect();
    names.extend(
        [
            "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
            "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
        ]
        .map(String::from),
    );
    lines.extend(names.iter().map(|n| format!("property float {n}")));
    lines.push("end_header".into());
    let mut bytes = header(&lines, "\n");
    for row in 0..n {
        for name in &names {
            let x = match name.strip_prefix("f_rest_") {
                Some(i) => (row * 100 + i.parse::<usize>().unwrap()) as f32,
                None => -1.0,
            };
            bytes.extend(x.to_le_bytes());
        }
    }
    let s = read_ply_from(
        Cursor::new(&bytes),
        Path::new("rest.ply"),
        Some(bytes.len() as u64),
    )
    .unwrap();
    assert_eq!(s.sh_degree, 3);
    for row in 0..n {
        for i in 0..45 {
            assert_eq!(
                s.sh_rest[row * 45 + i],
                (row * 100 + i) as f32,
                "row {row} f_rest_{i}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Writing.

#[test]
fn write_into_a_missing_folder_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no").join("such").join("out.ply");
    let err = write_ply(
        &path,
        &make_scene(2, 0, false, false, 1),
        PlyEncoding::BinaryLittleEndian,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(!path.exists());
}

#[test]
fn failed_writes_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.ply");
    let mut scene = make_scene(4, 1, true, true, 2);
    scene.opacity.pop();
    for enc in ENCODINGS {
        let err = write_ply(&path, &scene, enc).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert_has(&err.to_string(), &["opacity"]);
        assert!(ply_size(&scene, enc).is_none());
    }
    let mut scene = make_scene(4, 1, true, true, 2);
    scene.extras.properties[0].name = "opacity".into();
    assert!(matches!(
        write_ply(&path, &scene, PlyEncoding::Ascii),
        Err(Error::InvalidArgument(_))
    ));
    scene.extras.properties[0].name = "has space".into();
    assert!(matches!(
        write_ply(&path, &scene, PlyEncoding::Ascii),
        Err(Error::InvalidArgument(_))
    ));
    let mut scene = make_scene(4, 1, true, true, 2);
    scene.comments.push("two\nlines".into());
    assert!(matches!(
        write_ply(&path, &scene, PlyEncoding::Ascii),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "something was left behind"
    );
}

#[test]
fn a_failed_write_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.ply");
    let good = make_scene(3, 0, false, false, 4);
    write_ply(&path, &good, PlyEncoding::BinaryLittleEndian).unwrap();
    let before = std::fs::read(&path).unwrap();
    let mut bad = make_scene(3, 0, false, false, 5);
    bad.sh_degree = 2;
    assert!(write_ply(&path, &bad, PlyEncoding::BinaryLittleEndian).is_err());
    assert!(std::fs::read(&path).unwrap() == before);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
