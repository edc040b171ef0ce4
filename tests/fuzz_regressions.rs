//! Regression tests for the crashes the fuzz targets (fuzz/) found, and the
//! generator of their seed corpora:
//! `TQ3D_WRITE_FUZZ_CORPUS=fuzz/corpus cargo test --release --test
//! fuzz_regressions -- --ignored write_corpus`.

mod common;
#[path = "common/tracking.rs"]
mod tracking;

use std::path::{Path, PathBuf};

use turboquant3d::format::tqv;
use turboquant3d::splat::synth::{SynthConfig, generate};
use turboquant3d::splat::{self, CompressOptions, Scene, container::Profile};
use turboquant3d::{RotationKind, ScaleFormat, ScaleMode};

fn scene(count: usize, sh_degree: u8, seed: u64) -> Scene {
    generate(&SynthConfig {
        count,
        sh_degree,
        seed,
    })
}

fn compress(s: &Scene, profile: Profile, widths: bool) -> Vec<u8> {
    let opts = CompressOptions {
        profile,
        sh_bits: 2,
        chunk_size: 16,
        sh_widths: widths.then(|| (0..s.len()).map(|i| (i % 4) as u8).collect()),
        ..CompressOptions::default()
    };
    splat::compress(s, &opts).unwrap().to_bytes().unwrap()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The same `.tq3s` file with every stream stored raw (coding 0) and every
/// checksum recomputed: the seeds of the structure-aware target, whose
/// mutations then land on the attribute bytes themselves.
fn all_raw(b: &[u8]) -> Vec<u8> {
    common::tq3s::restream(b, |s| {
        let raw = match s.coding {
            1 => zstd::bulk::decompress(s.stored, s.raw_len as usize).unwrap(),
            // rANS (SHC only): the packed codes, as the reader decodes them.
            2 => {
                splat::decompress_split(b, Path::new("seed.tq3s"))
                    .unwrap()
                    .1
                    .unwrap()
                    .codes
            }
            3 => turboquant3d::codec::palette::decode(s.stored, s.raw_len).unwrap(),
            _ => s.stored.to_vec(),
        };
        // (With deduplicated SH the reader's codes are per Gaussian, not
        // the stored records': such a seed must not code SHC with rANS.)
        assert_eq!(raw.len() as u64, s.raw_len, "stream {:?}", s.tag);
        Some((0, raw))
    })
}

/// Recomputes the stream table's CRC and the header's (streams unchanged).
fn fix_table_crc(b: &mut [u8]) {
    let table_end = 128 + 32 * u32_at(b, 16) as usize;
    let crc = crc32fast::hash(&b[128..table_end]);
    b[table_end..table_end + 4].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32fast::hash(&b[..124]);
    b[124..128].copy_from_slice(&crc.to_le_bytes());
}

fn assert_one_line(e: &turboquant3d::Error, name: &str) -> String {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
    assert!(msg.contains(name), "error does not name {name}: {msg}");
    msg
}

/// fuzz target tq3s: a stream tag holding a newline made a two-line
/// message ("invalid stream \n…: unknown to this version").
#[test]
fn tq3s_stream_tag_with_a_newline_is_escaped() {
    let mut b = compress(&scene(20, 1, 1), Profile::Compact, false);
    assert_eq!(&b[128..132], b"ROT ");
    b[129] = b'\n';
    fix_table_crc(&mut b);
    let e = splat::decompress(&b, Path::new("nl.tq3s")).unwrap_err();
    let msg = assert_one_line(&e, "nl.tq3s");
    assert!(msg.contains("R\\x0aT"), "{msg}");
}

/// A scene whose every attribute is one constant: every stream is zstd (or
/// column palettes of zstd frames) and tiny, whatever the count.
fn constant_scene(n: usize) -> Scene {
    Scene {
        sh_degree: 0,
        positions: vec![[0.5; 3]; n],
        dc: vec![[0.1; 3]; n],
        opacity: vec![1.0; n],
        scales: vec![[-3.0; 3]; n],
        rotations: vec![[1.0, 0.0, 0.0, 0.0]; n],
        ..Scene::default()
    }
}

/// A table may declare far more decoded bytes than its zstd frames hold:
/// a 300-byte file whose header says 2^26 Gaussians made the reader
/// reserve every stream's declared length (1 GiB for QUAT) before
/// decoding a byte. Memory must follow what the frames really hold.
#[test]
fn tq3s_lying_zstd_lengths_allocate_nothing_large() {
    let n = 1000u64;
    let mut b = compress(&constant_scene(n as usize), Profile::Exact, false);
    let big = 1u64 << 26;
    b[24..32].copy_from_slice(&big.to_le_bytes());
    b[32..40].copy_from_slice(&big.to_le_bytes());
    for k in 0..u32_at(&b, 16) as usize {
        let e = 128 + 32 * k;
        // zstd, or column palettes of zstd frames (the constant columns).
        assert!(matches!(b[e + 4], 1 | 3), "stream {k} is not zstd");
        let raw = u64_at(&b, e + 8) / n * big;
        b[e + 8..e + 16].copy_from_slice(&raw.to_le_bytes());
    }
    fix_table_crc(&mut b);
    assert!(b.len() < 1000, "{} bytes", b.len());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (r, largest) = pool
        .install(|| tracking::largest_allocation(|| splat::decompress(&b, Path::new("lie.tq3s"))));
    let e = r.unwrap_err();
    let msg = assert_one_line(&e, "lie.tq3s");
    assert!(msg.contains("decodes to"), "{msg}");
    assert!(
        largest < 16 << 20,
        "largest allocation {largest} bytes for a {}-byte file",
        b.len()
    );
}

fn tqv_file(d: usize, b: u32, kind: RotationKind, format: ScaleFormat, n: usize) -> Vec<u8> {
    let cfg = common::tqv::config(d, b, kind, ScaleMode::LeastSquares, format, 3);
    let (q, enc, _) = common::tqv::encode(&cfg, n, 4);
    tqv::to_bytes(&q, &enc, Some(3)).unwrap()
}

fn npy_f16(rows: usize, cols: usize) -> Vec<u8> {
    let header = format!("{{'descr': '<f2', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let pad = 64 - (10 + header.len() + 1) % 64;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    let hlen = (header.len() + pad + 1) as u16;
    out.extend_from_slice(&hlen.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    for i in 0..rows * cols {
        out.extend_from_slice(&half::f16::from_f32(i as f32 * 0.25 - 3.0).to_le_bytes());
    }
    out
}

const CAMERAS: &str = r#"[{"id": 0, "img_name": "a", "width": 64, "height": 48,
 "position": [1, 2, 3], "rotation": [[1,0,0],[0,1,0],[0,0,1]], "fx": 80, "fy": 70},
 {"id": 1, "img_name": "b", "width": 32, "height": 32,
 "position": [0.5, -1e-3, 4e2], "rotation": [[0,1,0],[-1,0,0],[0,0,1]], "fx": 30.5, "fy": 30.5}]"#;

/// Writes the seed corpora under `$TQ3D_WRITE_FUZZ_CORPUS/<target>/`.
#[test]
#[ignore = "writes the fuzz seed corpora; run by hand"]
fn write_corpus() {
    let root =
        PathBuf::from(std::env::var("TQ3D_WRITE_FUZZ_CORPUS").expect("set TQ3D_WRITE_FUZZ_CORPUS"));
    let tmp = tempfile::tempdir().unwrap();
    let put = |target: &str, name: &str, bytes: &[u8]| {
        assert!(
            bytes.len() <= 64 << 10,
            "{target}/{name} is {} bytes",
            bytes.len()
        );
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let via_file = |name: &str, write: &dyn Fn(&Path)| {
        let p = tmp.path().join(name);
        write(&p);
        std::fs::read(&p).unwrap()
    };

    // PLY, binary and ASCII, SH degrees 0 and 1 (with normals from synth).
    use turboquant3d::splat::ply::{PlyEncoding, write_ply};
    for (name, s, enc) in [
        (
            "bin_l1.ply",
            scene(24, 1, 1),
            PlyEncoding::BinaryLittleEndian,
        ),
        (
            "bin_l0.ply",
            scene(40, 0, 2),
            PlyEncoding::BinaryLittleEndian,
        ),
        ("ascii_l1.ply", scene(6, 1, 3), PlyEncoding::Ascii),
        ("ascii_l0.ply", scene(8, 0, 4), PlyEncoding::Ascii),
        ("be_l0.ply", scene(10, 0, 10), PlyEncoding::BinaryBigEndian),
    ] {
        put(
            "ply",
            name,
            &via_file(name, &|p| {
                write_ply(p, &s, enc).unwrap();
            }),
        );
    }

    // .splat
    for (name, n) in [("a.splat", 8), ("b.splat", 40)] {
        let s = scene(n, 0, n as u64);
        put(
            "splat",
            name,
            &via_file(name, &|p| {
                splat::antimatter::write_splat(p, &s).unwrap();
            }),
        );
    }

    // .tq3s: both profiles, uniform and per-Gaussian widths.
    for (name, s, profile, widths) in [
        ("compact_l1.tq3s", scene(48, 1, 5), Profile::Compact, false),
        ("exact_l1.tq3s", scene(24, 1, 6), Profile::Exact, false),
        ("compact_w_l2.tq3s", scene(32, 2, 7), Profile::Compact, true),
        ("exact_w_l1.tq3s", scene(20, 1, 8), Profile::Exact, true),
        ("compact_l0.tq3s", scene(30, 0, 9), Profile::Compact, false),
    ] {
        let b = compress(&s, profile, widths);
        put("tq3s", name, &b);
        put("tq3s_crc", name, &all_raw(&b));
    }
    // .tq3s version 3: SH-rest from a palette of 6 vectors, deduplicated
    // (SHIX), per-Gaussian widths.
    let mut s = scene(40, 1, 11);
    let d = s.rest_dim();
    for i in 6..40 {
        let row = s.sh_rest[(i % 6) * d..(i % 6 + 1) * d].to_vec();
        s.sh_rest[i * d..(i + 1) * d].copy_from_slice(&row);
    }
    let b = compress(&s, Profile::Compact, true);
    assert_eq!((b[8], b[61]), (3, 2), "a deduplicated version-3 seed");
    put("tq3s", "dedup_w_l1.tq3s", &b);
    put("tq3s_crc", "dedup_w_l1.tq3s", &all_raw(&b));
    // .tq3s version 4: bit-exact SH-rest and attributes, column palettes
    // (values on a few levels) and the completed quaternion real part.
    let mut s = scene(48, 1, 12);
    for v in &mut s.sh_rest {
        *v = (*v * 8.0).round() / 8.0;
    }
    for c in &mut s.scales {
        *c = c.map(|v| (v * 4.0).round() / 4.0);
    }
    for q in &mut s.rotations {
        let xyz = [q[1], q[2], q[3]].map(|v| (v.clamp(-0.5, 0.5) * 64.0).round() / 64.0);
        *q = [
            turboquant3d::codec::palette::completion(xyz.into_iter()),
            xyz[0],
            xyz[1],
            xyz[2],
        ];
    }
    let opts = CompressOptions {
        profile: Profile::Exact,
        sh_exact: true,
        ..CompressOptions::default()
    };
    let b = splat::compress(&s, &opts).unwrap().to_bytes().unwrap();
    assert_eq!((b[8], b[61]), (4, 4), "a bit-exact version-4 seed");
    put("tq3s", "lossless_l1.tq3s", &b);
    put("tq3s_crc", "lossless_l1.tq3s", &all_raw(&b));

    // .tqv: dense and Hadamard, f32 and f16 scales.
    for (name, b) in [
        (
            "dense_d9_b3.tqv",
            tqv_file(9, 3, RotationKind::Dense, ScaleFormat::F32, 12),
        ),
        (
            "dense_d24_b1.tqv",
            tqv_file(24, 1, RotationKind::Dense, ScaleFormat::F16, 7),
        ),
        (
            "hadamard_d64_b2.tqv",
            tqv_file(64, 2, RotationKind::Hadamard, ScaleFormat::F16, 10),
        ),
        (
            "hadamard_d16_b8.tqv",
            tqv_file(16, 8, RotationKind::Hadamard, ScaleFormat::F32, 3),
        ),
    ] {
        put("tqv", name, &b);
        put("tqv_crc", name, &b);
    }

    // .npy, f32 and f16.
    let x = common::data::gaussian(5, 9, 1);
    put(
        "npy",
        "f32.npy",
        &via_file("f32.npy", &|p| {
            turboquant3d::format::npy::write_matrix(p, 5, 9, &x).unwrap()
        }),
    );
    put("npy", "f16.npy", &npy_f16(3, 7));

    put("cameras_json", "cameras.json", CAMERAS.as_bytes());

    // .tq3g: per-group widths (f32, d = 16, a quarter of the entries
    // untouched), per-level widths (f16, d = 8), and three levels.
    use turboquant3d::grid::codec::{GridOptions, compress as compress_grid};
    use turboquant3d::grid::compressed::WidthMode;
    use turboquant3d::grid::file::to_bytes;
    use turboquant3d::grid::table::{Dtype, Grid};
    for (name, shape, dtype, group, widths, bits) in [
        (
            "groups_f32.tq3g",
            [2, 512, 2],
            Dtype::F32,
            8,
            WidthMode::PerGroup,
            8.0,
        ),
        (
            "levels_f16.tq3g",
            [2, 256, 2],
            Dtype::F16,
            4,
            WidthMode::PerLevel,
            6.0,
        ),
        (
            "three_levels.tq3g",
            [3, 256, 2],
            Dtype::F32,
            4,
            WidthMode::PerGroup,
            5.0,
        ),
    ] {
        let n: usize = shape.iter().product();
        let x = common::data::gaussian(1, n, 21);
        let data: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 8 < 2 { v * 1e-4 } else { v * 0.1 })
            .map(|v| half::f16::from_f32(v).to_f32())
            .collect();
        let grid = Grid::from_array(&shape, data, dtype, None, None).unwrap();
        let mut opts = GridOptions::new(bits);
        opts.group = group;
        opts.widths = widths;
        let (c, _) = compress_grid(&grid, &opts, None).unwrap();
        let b = to_bytes(&c).unwrap();
        put("tq3g", name, &b);
        put("tq3g_crc", name, &b);
    }
}

/// The byte range of stream `tag` in a `.tq3s` file, and its table entry.
fn stream_range(b: &[u8], tag: &[u8; 4]) -> (std::ops::Range<usize>, usize) {
    let n = u32_at(b, 16) as usize;
    let mut at = 128 + 32 * n + 4;
    for k in 0..n {
        let e = 128 + 32 * k;
        let len = u64_at(b, e + 16) as usize;
        if &b[e..e + 4] == tag {
            return (at..at + len, e);
        }
        at += len;
    }
    panic!("no stream {tag:?}");
}

/// Edits stream `tag` of an all-raw file with `edit`, then fixes the CRCs.
fn edit_stream(b: &mut [u8], tag: &[u8; 4], edit: impl FnOnce(&mut [u8])) {
    let (r, e) = stream_range(b, tag);
    edit(&mut b[r.clone()]);
    let crc = crc32fast::hash(&b[r]);
    b[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
    fix_table_crc(b);
}

/// fuzz target tq3s_crc: an `exact` file whose POS stream holds a NaN
/// decoded to a scene with a NaN position, silently.
#[test]
fn tq3s_exact_nan_position_is_rejected() {
    let s = scene(20, 1, 2);
    let mut b = all_raw(&compress(&s, Profile::Exact, false));
    // Byte planes of 12-byte elements: byte k of Gaussian i is at k·n + i.
    let n = s.len();
    edit_stream(&mut b, b"POS ", |p| {
        for (k, v) in f32::NAN.to_le_bytes().into_iter().enumerate() {
            p[k * n + 3] = v;
        }
    });
    let e = splat::decompress(&b, Path::new("nan.tq3s")).unwrap_err();
    let msg = assert_one_line(&e, "nan.tq3s");
    assert!(
        msg.contains("stream POS") && msg.contains("Gaussian 3"),
        "{msg}"
    );
}

/// A finite but huge SH centroid decoded to ±Inf SH-rest.
#[test]
fn tq3s_codebook_outside_the_unit_interval_is_rejected() {
    let mut b = all_raw(&compress(&scene(20, 1, 3), Profile::Compact, false));
    // CBK: table count, width b, then the centroids (f32), lowest first.
    edit_stream(&mut b, b"CBK ", |p| {
        p[2..6].copy_from_slice(&(-3.0e38f32).to_le_bytes())
    });
    let e = splat::decompress(&b, Path::new("cbk.tq3s")).unwrap_err();
    let msg = assert_one_line(&e, "cbk.tq3s");
    assert!(
        msg.contains("stream CBK") && msg.contains("[-1, 1]"),
        "{msg}"
    );
}

/// A dense rotation entry far outside [−1, 1] is not a rotation.
#[test]
fn tqv_rotation_entry_outside_the_unit_interval_is_rejected() {
    let mut b = tqv_file(9, 3, RotationKind::Dense, ScaleFormat::F32, 12);
    let rot = common::tqv::walk(&b)
        .into_iter()
        .find(|s| s.name == "ROT")
        .unwrap();
    let at = rot.payload.start + 4 * 10;
    b[at..at + 4].copy_from_slice(&1.0e30f32.to_le_bytes());
    common::tqv::fix_section_crc(&mut b, &rot);
    let e = tqv::from_bytes(&b, Path::new("rot.tqv")).unwrap_err();
    let msg = assert_one_line(&e, "rot.tqv");
    assert!(msg.contains("ROT") && msg.contains("(1, 1)"), "{msg}");
}

/// cameras.json: a finite f64 focal length beyond f32 became fx = inf.
#[test]
fn cameras_json_values_beyond_f32_are_rejected() {
    use turboquant3d::render::camera::parse_cameras_json;
    let cam = |fx: &str, rot: &str, pos: &str| {
        format!(
            r#"[{{"width": 8, "height": 8, "fx": {fx}, "fy": 8, "position": {pos}, "rotation": {rot}}}]"#
        )
    };
    let eye = "[[1,0,0],[0,1,0],[0,0,1]]";
    for (text, field) in [
        (cam("1e300", eye, "[0,0,0]"), "fx/fy"),
        (
            cam("8", "[[1e30,0,0],[0,1,0],[0,0,1]]", "[0,0,0]"),
            "rotation row 0",
        ),
        (
            cam("8", "[[1,1,1],[0,1,0],[0,0,1]]", "[3e38,3e38,3e38]"),
            "position",
        ),
    ] {
        let e = parse_cameras_json(&text, Path::new("c.json")).unwrap_err();
        let msg = assert_one_line(&e, "c.json");
        assert!(msg.contains(field), "{field}: {msg}");
    }
}
