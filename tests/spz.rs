//! Niantic `.spz` (v2–v4): the real file fourth_st.spz (v2) against the
//! peer's decode, both directions with the peer (`splat-transform`) at v3
//! and v4, our own round trip and its idempotence, the committed peer-made
//! fixtures, and refusal of damaged files with one-line errors.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::data::shared_data;
use common::decode::{check, rounding, same_decode};
use common::gpu::note;
use common::peer;
use common::ply::assert_has;
use turboquant3d::Error;
use turboquant3d::splat::scene::sigmoid;
use turboquant3d::splat::spz::{
    self, SPZ_PRECISION, describe_spz, read_spz, read_spz_bytes, to_spz_bytes, write_spz,
    write_spz_version,
};
use turboquant3d::splat::synth::{SynthConfig, generate};
use turboquant3d::splat::{Scene, ply, rest_per_channel};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/spz")
        .join(name)
}

/// `decoded` is `source` within spz's precision per attribute
/// ([`SPZ_PRECISION`], positions at `fractional_bits`), with values
/// outside a byte's range compared to the range's end.
fn within_precision(decoded: &Scene, source: &Scene, fractional_bits: u8) {
    let p = SPZ_PRECISION;
    assert_eq!(decoded.len(), source.len(), "count");
    assert_eq!(decoded.sh_degree, source.sh_degree, "sh degree");
    let pos_tol = 0.5 / (1u64 << fractional_bits) as f32;
    let dc_max = 127.5 / 38.25;
    for i in 0..source.len() {
        for k in 0..3 {
            let s = source.positions[i][k];
            check(
                decoded.positions[i][k],
                s,
                pos_tol + rounding(s),
                "position",
                i,
            );
            let s = source.scales[i][k].clamp(-10.0, 5.9375);
            check(decoded.scales[i][k], s, p.log_scale + 1e-5, "log scale", i);
            let s = source.dc[i][k].clamp(-dc_max, dc_max);
            check(decoded.dc[i][k], s, p.dc + 1e-5, "f_dc", i);
        }
        check(
            sigmoid(decoded.opacity[i]),
            sigmoid(source.opacity[i]),
            p.alpha + 1e-5,
            "sigmoid(opacity)",
            i,
        );
        let q = source.rotations[i];
        let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
        let q = q.map(|v| v / norm);
        let d = decoded.rotations[i];
        let dot: f32 = q.iter().zip(&d).map(|(a, b)| a * b).sum();
        let sign = if dot < 0.0 { -1.0 } else { 1.0 };
        for k in 0..4 {
            check(sign * d[k], q[k], p.rotation + 1e-5, "rotation", i);
        }
    }
    let k = rest_per_channel(source.sh_degree);
    for (j, (a, s)) in decoded.sh_rest.iter().zip(&source.sh_rest).enumerate() {
        let tol = if j % k < 3 { p.sh1 } else { p.sh_rest };
        check(
            *a,
            s.clamp(-1.0, 127.0 / 128.0),
            tol + 1e-6,
            "f_rest",
            j / (3 * k),
        );
    }
}

fn fact(facts: &[(String, String)], key: &str) -> String {
    facts
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key} in {facts:?}"))
}

fn fractional_bits(path: &Path) -> u8 {
    let bytes = std::fs::read(path).unwrap();
    fact(&describe_spz(&bytes, path).unwrap(), "fractional bits")
        .parse()
        .unwrap()
}

/// The skull scene (SOG → PLY by the peer), in `dir`.
fn skull_ply(peer: &Path, dir: &Path) -> Option<PathBuf> {
    let sog = shared_data("skull.sog")?;
    let out = dir.join("skull.ply");
    peer::convert(peer, &sog, &out);
    Some(out)
}

#[test]
fn fourth_st_v2_matches_the_peer_decode() {
    let Some(src) = shared_data("fourth_st.spz") else {
        return;
    };
    let bytes = std::fs::read(&src).unwrap();
    let facts = describe_spz(&bytes, &src).unwrap();
    assert_eq!(fact(&facts, "version"), "2");
    assert_eq!(fact(&facts, "count"), "131199");
    assert_eq!(fact(&facts, "sh degree"), "3");
    assert_eq!(fact(&facts, "fractional bits"), "12");
    assert_eq!(fact(&facts, "flags"), "0x01 (antialiased)");
    assert_eq!(
        fact(&facts, "payload bytes"),
        (131199u64 * (9 + 1 + 3 + 3 + 3 + 45)).to_string()
    );
    let ours = read_spz(&src).unwrap();
    assert_eq!(ours.len(), 131_199);
    assert_eq!(ours.sh_degree, 3);
    let Some(peer) = peer::peer() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fourth_st.ply");
    peer::convert(&peer, &src, &out);
    let theirs = ply::read_ply(&out).unwrap();
    let infinite = same_decode(&ours, &theirs);
    assert_eq!(
        infinite, 79,
        "opacities the peer decodes to ±∞ (README: 79)"
    );
}

#[test]
fn peer_written_v3_and_v4_read_back_within_precision() {
    let Some(peer) = peer::peer() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(src) = skull_ply(&peer, dir.path()) else {
        return;
    };
    let source = ply::read_ply(&src).unwrap();
    for v in ["3", "4"] {
        let spz_path = dir.path().join(format!("peer.v{v}.spz"));
        peer::run(
            &peer,
            &[
                "--spz-version".as_ref(),
                v.as_ref(),
                src.as_os_str(),
                spz_path.as_os_str(),
            ],
        );
        let bytes = std::fs::read(&spz_path).unwrap();
        assert_eq!(
            fact(&describe_spz(&bytes, &spz_path).unwrap(), "version"),
            v
        );
        let ours = read_spz(&spz_path).unwrap();
        within_precision(&ours, &source, fractional_bits(&spz_path));
        // And bit for bit what the peer decodes from its own file.
        let back = dir.path().join(format!("peer.v{v}.ply"));
        peer::convert(&peer, &spz_path, &back);
        same_decode(&ours, &ply::read_ply(&back).unwrap());
        // Our encoder quantises as the peer's does: compare the bytes.
        let mine = read_spz_bytes(
            &to_spz_bytes(&source, v.parse().unwrap(), &spz_path).unwrap(),
            &spz_path,
        )
        .unwrap();
        let (mut same, mut all) = (0usize, 0usize);
        let pairs = [
            (flat(&mine.positions), flat(&ours.positions)),
            (flat(&mine.scales), flat(&ours.scales)),
            (flat(&mine.dc), flat(&ours.dc)),
            (mine.opacity.clone(), ours.opacity.clone()),
            (flat(&mine.rotations), flat(&ours.rotations)),
            (mine.sh_rest.clone(), ours.sh_rest.clone()),
        ];
        for (a, b) in &pairs {
            all += a.len();
            same += a.iter().zip(b).filter(|(x, y)| x == y).count();
        }
        note(&format!(
            "spz v{v}: our encoder and the peer's agree on {same} of {all} decoded values ({:.4} %)",
            100.0 * same as f64 / all as f64
        ));
        assert!(same as f64 >= 0.999 * all as f64, "{same} of {all}");
    }
}

fn flat<const N: usize>(v: &[[f32; N]]) -> Vec<f32> {
    v.iter().flatten().copied().collect()
}

#[test]
fn our_v3_and_v4_read_by_the_peer_within_precision() {
    let Some(peer) = peer::peer() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(src) = skull_ply(&peer, dir.path()) else {
        return;
    };
    let source = ply::read_ply(&src).unwrap();
    for v in [3u32, 4] {
        let out = dir.path().join(format!("ours.v{v}.spz"));
        let n = write_spz_version(&out, &source, v).unwrap();
        assert_eq!(n, std::fs::metadata(&out).unwrap().len());
        note(&format!(
            "skull ({} Gaussians) as spz v{v}: {n} bytes",
            source.len()
        ));
        let back = dir.path().join(format!("ours.v{v}.ply"));
        peer::convert(&peer, &out, &back);
        let theirs = ply::read_ply(&back).unwrap();
        within_precision(&theirs, &source, fractional_bits(&out));
        same_decode(&read_spz(&out).unwrap(), &theirs);
    }
    // write_spz writes version 4, as the peer does by default.
    let out = dir.path().join("default.spz");
    write_spz(&out, &source).unwrap();
    assert!(std::fs::read(&out).unwrap().starts_with(b"NGSP\x04\0\0\0"));
}

/// A synthetic scene pushed past every range the format has.
fn wild_scene() -> Scene {
    let mut s = generate(&SynthConfig {
        count: 700,
        sh_degree: 3,
        seed: 7,
    });
    for (i, p) in s.positions.iter_mut().enumerate() {
        p[0] += (i as f32 - 350.0) * 3.0; // up to ±1050
    }
    s.scales[0] = [-30.0, 12.0, f32::INFINITY];
    s.dc[1] = [9.0, -9.0, 0.0];
    s.opacity[2] = f32::INFINITY;
    s.opacity[3] = f32::NEG_INFINITY;
    s.opacity[4] = 40.0;
    s.rotations[5] = [0.0; 4];
    s.rotations[6] = [
        std::f32::consts::FRAC_1_SQRT_2,
        std::f32::consts::FRAC_1_SQRT_2,
        0.0,
        0.0,
    ];
    for v in &mut s.sh_rest[..45] {
        *v *= 10.0;
    }
    s
}

#[test]
fn own_round_trip_is_within_precision_and_idempotent() {
    let crop = ply::read_ply(&fixture("skull_crop.ply")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, scene) in [("skull crop", crop), ("synthetic", wild_scene())] {
        for v in [3u32, 4] {
            let path = dir.path().join(format!("rt.v{v}.spz"));
            let first = to_spz_bytes(&scene, v, &path).unwrap();
            assert_eq!(
                first,
                to_spz_bytes(&scene, v, &path).unwrap(),
                "deterministic"
            );
            std::fs::write(&path, &first).unwrap();
            let back = read_spz(&path).unwrap();
            let mut expect = scene.clone();
            expect
                .opacity
                .iter_mut()
                .for_each(|o| *o = o.clamp(-7.0, 7.0));
            if name == "synthetic" {
                // wild_scene's zero quaternion comes back as the identity.
                expect.rotations[5] = [1.0, 0.0, 0.0, 0.0];
            }
            within_precision(&back, &expect, fractional_bits(&path));
            let second = to_spz_bytes(&back, v, &path).unwrap();
            assert!(
                first == second,
                "{name} v{v}: a write of what was read differs"
            );
        }
    }
}

#[test]
fn committed_peer_fixtures_decode_as_the_peer_does() {
    let source = ply::read_ply(&fixture("skull_crop.ply")).unwrap();
    let theirs = ply::read_ply(&fixture("skull_crop.peer.ply")).unwrap();
    for v in ["v3", "v4"] {
        let path = fixture(&format!("skull_crop.{v}.spz"));
        let ours = read_spz(&path).unwrap();
        assert_eq!(ours.len(), 175);
        same_decode(&ours, &theirs);
        within_precision(&ours, &source, 12);
    }
}

// ---- damaged and unsupported files -------------------------------------

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn header16(version: u32, count: u32, degree: u8, fb: u8, flags: u8) -> Vec<u8> {
    let mut h = b"NGSP".to_vec();
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&count.to_le_bytes());
    h.extend_from_slice(&[degree, fb, flags, 0]);
    h
}

/// A valid v3 payload (inflated) of `n` Gaussians at degree 1.
fn payload_v3(n: usize) -> Vec<u8> {
    let mut p = header16(3, n as u32, 1, 12, 0);
    p.resize(16 + n * (9 + 1 + 3 + 3 + 4 + 9), 128);
    p
}

fn refused(bytes: &[u8], parts: &[&str]) {
    let name = "bad.spz";
    let e = read_spz_bytes(bytes, Path::new(name)).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    let mut all = vec![name];
    all.extend_from_slice(parts);
    assert_has(&msg, &all);
}

#[test]
fn gzip_damage_is_refused_naming_the_field() {
    let good = gzip(&payload_v3(10));
    assert_eq!(
        read_spz_bytes(&good, Path::new("ok.spz")).unwrap().len(),
        10
    );
    // Truncated gzip.
    refused(&good[..good.len() / 2], &["invalid"]);
    refused(&good[..good.len() - 4], &["invalid gzip"]);
    // Corrupt deflate data / checksum.
    let mut bad = good.clone();
    let l = bad.len();
    bad[l - 6] ^= 0xff;
    refused(&bad, &["invalid gzip", "corrupt"]);
    let mut junk = good[..10].to_vec();
    junk.extend_from_slice(&[0xff; 40]);
    refused(&junk, &["invalid gzip"]);
    // The header says more Gaussians than the payload holds, or fewer.
    let mut lying = payload_v3(10);
    lying[8] = 11;
    refused(
        &gzip(&lying),
        &["invalid payload", "truncated", "11 Gaussians"],
    );
    lying[8] = 9;
    refused(
        &gzip(&lying),
        &["invalid payload", "longer than declared", "9 Gaussians"],
    );
    // A count the stream cannot hold is refused before any allocation.
    lying[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    refused(&gzip(&lying), &["invalid count", "4294967295"]);
    // Trailing bytes after the gzip member.
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"xx");
    refused(&trailing, &["invalid gzip", "2 trailing bytes"]);
    // Header fields.
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = payload_v3(10);
        f(&mut p);
        gzip(&p)
    };
    refused(&with(&|p| p[0] = b'X'), &["invalid magic", "NGSP"]);
    refused(&with(&|p| p[4] = 5), &["invalid version", "5"]);
    refused(&with(&|p| p[4] = 1), &["invalid version", "version 1"]);
    refused(
        &with(&|p| p[12] = 4),
        &["invalid sh degree", "4 is above 3"],
    );
    refused(&with(&|p| p[14] = 2), &["invalid flags", "extensions"]);
    refused(&with(&|p| p[14] = 0x80), &["invalid flags", "unknown"]);
    refused(
        &with(&|p| p[8..12].copy_from_slice(&[0; 4])),
        &["invalid count", "no Gaussians"],
    );
    refused(&with(&|p| p.truncate(12)), &["invalid header", "truncated"]);
    // Neither gzip nor NGSP.
    refused(b"PK\x03\x04 not an spz", &["invalid magic", "50 4b 03 04"]);
    refused(b"", &["invalid magic"]);
}

/// A valid v4 file of `n` Gaussians at degree 0 (five streams).
fn file_v4(n: usize) -> Vec<u8> {
    let sizes = [9 * n, n, 3 * n, 3 * n, 4 * n];
    let mut f = header16(4, n as u32, 0, 12, 0);
    f[15] = 5;
    f.extend_from_slice(&32u32.to_le_bytes());
    f.resize(32, 0);
    let streams: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&s| zstd::bulk::compress(&vec![7u8; s], 3).unwrap())
        .collect();
    for (z, &s) in streams.iter().zip(&sizes) {
        f.extend_from_slice(&(z.len() as u64).to_le_bytes());
        f.extend_from_slice(&(s as u64).to_le_bytes());
    }
    for z in &streams {
        f.extend_from_slice(z);
    }
    f
}

#[test]
fn v4_damage_is_refused_naming_the_field() {
    let good = file_v4(20);
    assert_eq!(
        read_spz_bytes(&good, Path::new("ok.spz")).unwrap().len(),
        20
    );
    refused(&good[..20], &["invalid header", "truncated", "32-byte"]);
    refused(&good[..40], &["invalid toc", "truncated"]);
    refused(
        &good[..good.len() - 1],
        &["invalid stream rotations", "truncated"],
    );
    let mut trailing = good.clone();
    trailing.push(0);
    refused(&trailing, &["invalid size", "1 trailing bytes"]);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    refused(&with(&|b| b[4] = 3), &["invalid version", "3"]);
    refused(
        &with(&|b| b[15] = 6),
        &["invalid stream count", "6 streams"],
    );
    refused(
        &with(&|b| b[16] = 8),
        &["invalid toc offset", "inside the 32-byte header"],
    );
    // The table declares a size the count does not give.
    refused(
        &with(&|b| b[32 + 8] = 1),
        &["invalid stream positions", "uncompressed"],
    );
    // The header says more Gaussians than the file could hold (2^31 in
    // a few hundred bytes): refused before anything is allocated.
    refused(
        &with(&|b| b[8..12].copy_from_slice(&(1u32 << 31).to_le_bytes())),
        &["invalid count", "2147483648"],
    );
    // A stream that is not zstd.
    let at = 32 + 5 * 16;
    refused(
        &with(&|b| b[at] ^= 0xff),
        &["invalid stream positions", "zstd"],
    );
}

#[test]
fn the_writer_refuses_what_it_cannot_write() {
    let mut s = generate(&SynthConfig {
        count: 3,
        sh_degree: 1,
        seed: 1,
    });
    let p = Path::new("out.spz");
    for v in [2u32, 5] {
        let e = to_spz_bytes(&s, v, p).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("version"),
            "{e}"
        );
    }
    s.sh_rest[4] = f32::NAN;
    let e = to_spz_bytes(&s, 4, p).unwrap_err().to_string();
    assert_has(&e, &["out.spz", "Gaussian 0", "f_rest"]);
    s.sh_rest[4] = 0.0;
    s.positions[2][1] = f32::INFINITY;
    let e = to_spz_bytes(&s, 3, p).unwrap_err().to_string();
    assert_has(&e, &["out.spz", "Gaussian 2", "position"]);
    let empty = Scene::default();
    assert!(to_spz_bytes(&empty, 4, p).is_err());
    assert!(spz::is_spz_path(Path::new("x.Spz")));
}
