//! PlayCanvas / SuperSplat `.compressed.ply`: the committed peer fixture
//! (a crop of the real skull scene) and fresh peer-written files of a
//! synthetic SH-3 scene, each decoded by us against the peer's own decode
//! and against its source within the format's precision; damaged headers
//! and bodies refused with one-line errors; `tq3d info` and `tq3d convert`
//! on one.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{stderr, stdout, tq3d};
use common::decode::{check, rounding, same_decode};
use common::peer;
use common::ply::assert_has;
use turboquant3d::Error;
use turboquant3d::splat::Scene;
use turboquant3d::splat::compressed_ply::{
    CHUNK, COMPRESSED_PLY_PRECISION, describe_compressed_ply, read_compressed_ply,
    read_compressed_ply_bytes,
};
use turboquant3d::splat::ply::{self, PlyEncoding};
use turboquant3d::splat::scene::sigmoid;
use turboquant3d::splat::synth::{SynthConfig, generate};

const SH_C0: f32 = 0.282_094_8;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/compressed_ply")
        .join(name)
}

/// For each Gaussian of `decoded`, the index of its source in `source`:
/// the peer's writer sorts into Morton order before chunking, so the file's
/// order is not the source's. Nearest in position, log scale and colour
/// together (position alone is ambiguous where a wide chunk's step exceeds
/// the spacing); checked to be a bijection.
fn source_order(decoded: &Scene, source: &Scene) -> Vec<usize> {
    let key = |s: &Scene, i: usize| -> [f32; 9] {
        let (p, l, c) = (s.positions[i], s.scales[i], s.dc[i]);
        [p[0], p[1], p[2], l[0], l[1], l[2], c[0], c[1], c[2]]
    };
    let keys: Vec<[f32; 9]> = (0..source.len()).map(|j| key(source, j)).collect();
    let d2 =
        |a: &[f32; 9], b: &[f32; 9]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>();
    let order: Vec<usize> = (0..decoded.len())
        .map(|i| {
            let k = key(decoded, i);
            (0..source.len())
                .min_by(|&a, &b| d2(&k, &keys[a]).total_cmp(&d2(&k, &keys[b])))
                .unwrap()
        })
        .collect();
    let mut seen = vec![false; source.len()];
    for &j in &order {
        assert!(!seen[j], "source Gaussian {j} matched twice");
        seen[j] = true;
    }
    order
}

/// `decoded` is `source` within the format's precision: half a step of
/// each field over the range, in the Gaussian's chunk, of the matching
/// source values (an independent computation: the decoder reads the ranges
/// from the file), rotations within the error of the three stored
/// components carried into the fourth, SH within 1/32 after clamping to ±4.
fn within_precision(decoded: &Scene, source: &Scene) {
    let p = COMPRESSED_PLY_PRECISION;
    assert_eq!(decoded.len(), source.len(), "count");
    assert_eq!(decoded.sh_degree, source.sh_degree, "sh degree");
    let order = source_order(decoded, source);
    // The range of `f` over the sources of decoded chunk `c`.
    let range = |c: usize, f: &dyn Fn(usize) -> f32| {
        let (lo, hi) = order[c * CHUNK..((c + 1) * CHUNK).min(order.len())]
            .iter()
            .map(|&j| f(j))
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        hi - lo
    };
    // Half a step of `levels` over `r`; the writer stores 0 for a range
    // under 1e-5, an error of at most the range.
    let half = |r: f32, levels: u32| if r < 1e-5 { r } else { r / (2.0 * levels as f32) } + 1e-6 * r;
    for (i, &j) in order.iter().enumerate() {
        let c = i / CHUNK;
        for k in 0..3 {
            let r = range(c, &|j| source.positions[j][k]);
            let s = source.positions[j][k];
            check(
                decoded.positions[i][k],
                s,
                half(r, p.position_levels[k]) + rounding(s),
                "position",
                j,
            );
            let r = range(c, &|j| source.scales[j][k]);
            let s = source.scales[j][k];
            check(
                decoded.scales[i][k],
                s,
                half(r, p.scale_levels[k]) + rounding(s),
                "log scale",
                j,
            );
            let r = range(c, &|j| source.dc[j][k] * SH_C0);
            let s = source.dc[j][k];
            check(
                decoded.dc[i][k],
                s,
                half(r, p.colour_levels) / SH_C0 + 1e-5,
                "f_dc",
                j,
            );
        }
        let a = sigmoid(source.opacity[j]).clamp(1e-4, 1.0 - 1e-4);
        check(
            sigmoid(decoded.opacity[i]),
            a,
            p.alpha as f32 + 1e-4,
            "sigmoid(opacity)",
            j,
        );
        let q = source.rotations[j];
        let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
        let q = q.map(|v| v / norm);
        let d = decoded.rotations[i];
        let dot: f32 = q.iter().zip(&d).map(|(a, b)| a * b).sum();
        let sign = if dot < 0.0 { -1.0 } else { 1.0 };
        // The largest of four unit components is ≥ 1/2, so its error is
        // at most Σ|a_k|·δ/(1/2) ≤ 3·(1/√2)·δ·2 ≈ 4.3·δ.
        for k in 0..4 {
            check(
                sign * d[k],
                q[k],
                4.3 * p.rotation as f32 + 1e-5,
                "rotation",
                j,
            );
        }
        let w = decoded.rest_dim();
        for t in 0..w {
            let s = source.sh_rest[j * w + t];
            check(
                decoded.sh_rest[i * w + t],
                s.clamp(-4.0, 4.0),
                p.sh as f32 + 1e-6,
                "f_rest",
                j,
            );
        }
    }
    assert_eq!(decoded.sh_rest.len(), source.sh_rest.len(), "f_rest count");
}

#[test]
fn committed_fixture_decodes_as_the_peer_does_and_within_precision() {
    let path = fixture("skull_crop.compressed.ply");
    let ours = read_compressed_ply(&path).unwrap();
    assert_eq!((ours.len(), ours.sh_degree), (609, 1));
    same_decode(
        &ours,
        &ply::read_ply(&fixture("skull_crop.peer.ply")).unwrap(),
    );
    within_precision(&ours, &ply::read_ply(&fixture("skull_crop.ply")).unwrap());
    // The whole-file and in-memory readers agree.
    let bytes = std::fs::read(&path).unwrap();
    let again = read_compressed_ply_bytes(&bytes, &path).unwrap();
    assert_eq!(again.positions, ours.positions);
    assert_eq!(again.sh_rest, ours.sh_rest);
    let facts = describe_compressed_ply(&bytes, &path).unwrap();
    let fact = |k: &str| {
        facts
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(fact("count"), "609");
    assert_eq!(fact("chunks"), "3");
    assert_eq!(fact("sh degree"), "1");
}

#[test]
fn peer_written_files_at_every_sh_degree_decode_as_the_peer_does() {
    let Some(peer) = peer::peer() else { return };
    let dir = tempfile::tempdir().unwrap();
    for degree in 0..=3u8 {
        // Not a multiple of 256: the last chunk is partial.
        let source = generate(&SynthConfig {
            count: 700,
            sh_degree: degree,
            seed: 40 + u64::from(degree),
        });
        let src = dir.path().join(format!("d{degree}.ply"));
        ply::write_ply(&src, &source, PlyEncoding::BinaryLittleEndian).unwrap();
        let cp = dir.path().join(format!("d{degree}.compressed.ply"));
        peer::convert(&peer, &src, &cp);
        let back = dir.path().join(format!("d{degree}.peer.ply"));
        peer::convert(&peer, &cp, &back);
        let ours = read_compressed_ply(&cp).unwrap_or_else(|e| panic!("degree {degree}: {e}"));
        same_decode(&ours, &ply::read_ply(&back).unwrap());
        within_precision(&ours, &ply::read_ply(&src).unwrap());
    }
}

// ---- damaged files -------------------------------------------------------

fn refused(bytes: &[u8], parts: &[&str]) {
    let name = "bad.compressed.ply";
    let e = read_compressed_ply_bytes(bytes, Path::new(name)).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    let mut all = vec![name];
    all.extend_from_slice(parts);
    assert_has(&msg, &all);
}

/// The fixture with the first `from` in its header replaced by `to` (the
/// body kept).
fn edit_header(from: &str, to: &str) -> Vec<u8> {
    let bytes = std::fs::read(fixture("skull_crop.compressed.ply")).unwrap();
    let end = bytes
        .windows(11)
        .position(|w| w == b"end_header\n")
        .unwrap()
        + 11;
    let head = std::str::from_utf8(&bytes[..end]).unwrap();
    assert!(head.contains(from), "{from}");
    let mut out = head.replacen(from, to, 1).into_bytes();
    out.extend_from_slice(&bytes[end..]);
    out
}

#[test]
fn damaged_files_are_refused_naming_the_field() {
    let good = std::fs::read(fixture("skull_crop.compressed.ply")).unwrap();
    // Truncated body, trailing bytes.
    refused(&good[..good.len() - 1], &["body", "truncated"]);
    let mut long = good.clone();
    long.push(0);
    refused(&long, &["body", "1 trailing bytes"]);
    // Chunk count other than ⌈n/256⌉.
    refused(
        &edit_header("element chunk 3", "element chunk 4"),
        &["chunk"],
    );
    // A missing vertex property and a property of the wrong type.
    refused(
        &edit_header("property uint packed_scale\n", ""),
        &["packed_scale"],
    );
    refused(
        &edit_header("property uint packed_color", "property float packed_color"),
        &["packed_color"],
    );
    // An SH element of a size no degree has.
    refused(&edit_header("property uchar f_rest_8\n", ""), &["sh"]);
    // A non-finite chunk bound.
    let end = good.windows(11).position(|w| w == b"end_header\n").unwrap() + 11;
    let mut nan = good.clone();
    nan[end + 4..end + 8].copy_from_slice(&f32::NAN.to_le_bytes());
    refused(&nan, &["chunk 0", "min_y", "not finite"]);
    // Not a PLY at all; an ASCII one.
    refused(b"splat\n", &["invalid"]);
    refused(&edit_header("binary_little_endian", "ascii"), &["invalid"]);
    // A count that the file cannot hold is refused before allocating.
    refused(
        &edit_header("element vertex 609\n", "element vertex 4000000000\n"),
        &["invalid"],
    );
}

#[test]
fn info_and_convert_read_it_through_the_dispatcher() {
    let path = fixture("skull_crop.compressed.ply");
    let o = tq3d(["info".as_ref(), path.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_has(&out, &["compressed", "609", "chunks"]);

    let dir = tempfile::tempdir().unwrap();
    let ply_out = dir.path().join("out.ply");
    let o = tq3d(["convert".as_ref(), path.as_os_str(), ply_out.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let converted = ply::read_ply(&ply_out).unwrap();
    let direct = read_compressed_ply(&path).unwrap();
    assert_eq!(converted.positions, direct.positions);
    assert_eq!(converted.opacity, direct.opacity);
    assert_eq!(converted.sh_rest, direct.sh_rest);

    // Read only: it is not an output format.
    let cp_out = dir.path().join("out.compressed.ply");
    let o = tq3d(["convert".as_ref(), ply_out.as_os_str(), cp_out.as_os_str()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: ") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(!cp_out.exists());
}
