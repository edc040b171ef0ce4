//! Deduplicated SH-rest (`.tq3s` version 3, header byte 61 bit 1): each
//! distinct vector is coded once where that stores fewer bytes, every
//! Gaussian decodes to its vector's code at the widest width among those
//! sharing it, the file stays within the closed-form bound, scenes without
//! repeats are written as before, and a damaged index is a one-line error.

mod common;

use std::collections::HashMap;
use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::splat::container::{self, Profile};
use turboquant3d::splat::{self, CompressOptions, Scene, rest_dim};
use turboquant3d::{Quantizer, QuantizerConfig, ScaleFormat, ScaleMode};

/// `n` Gaussians at SH degree 3 drawing their SH-rest from `palette`
/// distinct random vectors (`palette` = n: all distinct); other attributes
/// vary so that the compact profile's Morton order mixes the copies.
fn scene(n: usize, palette: usize, seed: u64) -> (Scene, Vec<usize>) {
    let d = rest_dim(3);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows: Vec<Vec<f32>> = (0..palette)
        .map(|_| {
            let s: f32 = rng.random_range(0.05..1.5);
            (0..d)
                .map(|_| {
                    s * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut rng)
                })
                .collect()
        })
        .collect();
    let mut s = Scene {
        sh_degree: 3,
        ..Scene::default()
    };
    let mut pick = Vec::with_capacity(n);
    for i in 0..n {
        let p = if palette == n {
            i
        } else {
            rng.random_range(0..palette)
        };
        pick.push(p);
        s.positions
            .push(std::array::from_fn(|_| rng.random_range(-1.0..1.0)));
        s.scales.push([-3.0; 3]);
        s.rotations.push([1.0, 0.0, 0.0, 0.0]);
        s.opacity.push(rng.random_range(-2.0..4.0));
        s.dc.push([0.1, 0.2, 0.3]);
        s.sh_rest.extend_from_slice(&rows[p]);
    }
    (s, pick)
}

fn compress(s: &Scene, o: &CompressOptions) -> (Vec<u8>, Scene) {
    let c = splat::compress(s, o).unwrap();
    let bytes = c.to_bytes().unwrap();
    assert_eq!(bytes.len() as u64, c.size());
    let p = splat::predict_size(s, o).unwrap();
    // The same streams, the raw ones exactly as predicted.
    common::tq3s::assert_prediction_holds(&p, &c);
    assert!(
        c.size() <= p.total_bound(),
        "{} bytes above the bound {}",
        c.size(),
        p.total_bound()
    );
    let back = splat::decompress(&bytes, Path::new("t.tq3s")).unwrap();
    (bytes, back)
}

/// The stored Gaussians' input indices: the decoded scene is in storage
/// order, so each decoded position is matched to the input's (positions
/// are distinct and, in the exact profile, bit-exact).
fn storage_to_input(s: &Scene, back: &Scene) -> Vec<usize> {
    let at: HashMap<[u32; 3], usize> = s
        .positions
        .iter()
        .enumerate()
        .map(|(i, p)| (p.map(f32::to_bits), i))
        .collect();
    back.positions
        .iter()
        .map(|p| at[&p.map(f32::to_bits)])
        .collect()
}

/// What the codec itself gives a vector at width b, no flip: encode and
/// decode one row with the quantizer the file's seed makes.
fn codec_decode(x: &[f32], b: u32) -> Vec<f32> {
    let mut cfg = QuantizerConfig::new(x.len(), b);
    cfg.seed = splat::DEFAULT_SEED;
    cfg.scale_mode = ScaleMode::LeastSquares;
    cfg.scale_format = ScaleFormat::F16;
    let q = Quantizer::new(&cfg).unwrap();
    let e = q.encode(x).unwrap();
    q.decode(&e).unwrap()
}

fn exact(bits: u32) -> CompressOptions {
    CompressOptions {
        profile: Profile::Exact,
        sh_bits: bits,
        ..Default::default()
    }
}

#[test]
fn repeated_vectors_are_coded_once_and_decode_to_their_codes() {
    let (s, pick) = scene(3000, 400, 1);
    let d = rest_dim(3);
    let (bytes, back) = compress(&s, &exact(3));
    // Version 3 (4 where the constant attributes took column palettes),
    // the deduplication bit alone (no flip).
    let version = if common::tq3s::palettes(&bytes) { 4 } else { 3 };
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), version);
    assert_eq!(bytes[61], container::SH_DEDUP);
    let c = splat::compress(&s, &exact(3)).unwrap();
    assert_eq!(c.sh_distinct, Some(400));
    // Every Gaussian decodes to its palette vector's own code at b = 3.
    for (k, &i) in storage_to_input(&s, &back).iter().enumerate() {
        let want = codec_decode(&s.sh_rest[i * d..(i + 1) * d], 3);
        assert_eq!(back.rest(k), &want[..], "Gaussian {k} (input {i})");
    }
    // Smaller than coding every copy, and than the flip's layout.
    let plain = CompressOptions {
        dedup: false,
        ..exact(3)
    };
    let (other, _) = compress(&s, &plain);
    assert_eq!(other[61], container::SH_SIGN_FLIP);
    // The 2,600 repeats' codes and scales, d·3/8 + 2 bytes each, less the
    // index (about a byte per Gaussian here) and the rANS coder's few %.
    let repeats = (3000 - 400) as f64 * (d as f64 * 3.0 / 8.0 + 2.0);
    let saved = other.len() as f64 - bytes.len() as f64;
    assert!(
        saved > 0.85 * repeats - 3000.0 && saved < repeats,
        "saved {saved} of {repeats}"
    );
    assert_eq!(pick.len(), 3000);
}

#[test]
fn each_vector_gets_the_widest_width_of_those_that_share_it() {
    let (s, pick) = scene(2000, 300, 2);
    let d = rest_dim(3);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let widths: Vec<u8> = (0..s.len()).map(|_| rng.random_range(0..=5)).collect();
    let mut widest = vec![0u8; 300];
    for (i, &p) in pick.iter().enumerate() {
        widest[p] = widest[p].max(widths[i]);
    }
    let o = CompressOptions {
        sh_widths: Some(widths),
        ..exact(3)
    };
    let (bytes, back) = compress(&s, &o);
    assert_eq!(bytes[61], container::SH_DEDUP);
    for (k, &i) in storage_to_input(&s, &back).iter().enumerate() {
        let b = widest[pick[i]];
        let want = if b == 0 {
            vec![0.0; d]
        } else {
            codec_decode(&s.sh_rest[i * d..(i + 1) * d], b as u32)
        };
        assert_eq!(back.rest(k), &want[..], "Gaussian {k}, width {b}");
    }
}

#[test]
fn compact_profile_and_pruning_keep_every_gaussian_on_its_vector() {
    let (s, pick) = scene(5000, 700, 3);
    let o = CompressOptions {
        prune_opacity: Some(0.2),
        sh_bits: 2,
        ..Default::default()
    };
    let c = splat::compress(&s, &o).unwrap();
    let bytes = c.to_bytes().unwrap();
    assert_eq!(bytes[61], container::SH_DEDUP);
    let back = splat::decompress(&bytes, Path::new("t")).unwrap();
    let kept = s
        .opacity
        .iter()
        .filter(|&&a| 1.0 / (1.0 + (-a).exp()) >= 0.2)
        .count();
    assert_eq!(back.len(), kept);
    // Gaussians on the same vector decode identically, and to within the
    // codec's error of it; different vectors are told apart. The decoded
    // positions are quantised, so each is matched to its vector by its
    // decoded SH: the nearest palette vector.
    let d = rest_dim(3);
    let mut rows: Vec<&[f32]> = vec![&[]; 700];
    for (i, &p) in pick.iter().enumerate() {
        rows[p] = &s.sh_rest[i * d..(i + 1) * d];
    }
    let mut seen: HashMap<usize, Vec<u32>> = HashMap::new();
    let mut worst = 0f64;
    for k in 0..back.len() {
        let y = back.rest(k);
        let dist =
            |r: &[f32]| -> f64 { r.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum() };
        let p = (0..700)
            .filter(|&p| !rows[p].is_empty())
            .min_by(|&a, &b| dist(rows[a]).total_cmp(&dist(rows[b])))
            .unwrap();
        let norm: f64 = rows[p].iter().map(|a| (*a as f64).powi(2)).sum();
        worst = worst.max(dist(rows[p]) / norm);
        let bits: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
        let first = seen.entry(p).or_insert_with(|| bits.clone());
        assert_eq!(first, &bits, "Gaussian {k} on vector {p}");
    }
    // b = 2: d·C(d, 2) ≈ 0.117 on average; no single vector near 0.3.
    assert!(worst < 0.3, "worst relative error {worst}");
}

#[test]
fn scenes_without_repeats_are_written_as_before() {
    let (s, _) = scene(3000, 3000, 4);
    for o in [exact(3), CompressOptions::default()] {
        let on = splat::compress(&s, &o).unwrap().to_bytes().unwrap();
        let off = splat::compress(
            &s,
            &CompressOptions {
                dedup: false,
                ..o.clone()
            },
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        assert_eq!(on, off);
        let version = if common::tq3s::palettes(&on) { 4 } else { 2 };
        assert_eq!(u16::from_le_bytes([on[8], on[9]]), version);
        assert_eq!(on[61], container::SH_SIGN_FLIP);
    }
}

#[test]
fn a_few_repeats_that_cannot_pay_for_the_index_are_left_alone() {
    // 1 % of the Gaussians repeat: below the 1/64 that can pay.
    let (mut s, _) = scene(3000, 3000, 5);
    let d = rest_dim(3);
    for i in 0..30 {
        let row = s.sh_rest[0..d].to_vec();
        s.sh_rest[(100 + i) * d..(101 + i) * d].copy_from_slice(&row);
    }
    let (bytes, _) = compress(&s, &exact(1));
    assert_eq!(bytes[61], container::SH_SIGN_FLIP);
}

/// The file with `SHIX` stored raw as `index` (same decoded length), the
/// checksums recomputed: only the index's own checks can catch it.
fn with_index(b: &[u8], index: &[u8]) -> Vec<u8> {
    common::tq3s::restream(b, |s| {
        (&s.tag == b"SHIX").then(|| {
            assert_eq!(s.raw_len as usize, index.len());
            (0, index.to_vec())
        })
    })
}

#[test]
fn a_damaged_index_is_a_one_line_error_naming_the_gaussian() {
    // 200 Gaussians: one byte per record.
    let (s, _) = scene(200, 20, 6);
    let (bytes, _) = compress(&s, &exact(3));
    assert_eq!(bytes[61], container::SH_DEDUP);
    let path = Path::new("d.tq3s");
    let err = |index: &[u8]| {
        let e = splat::decompress(&with_index(&bytes, index), path).unwrap_err();
        let m = e.to_string();
        assert!(!m.contains('\n') && m.contains("d.tq3s"), "{m}");
        m
    };
    // Gaussian 0 must begin a record.
    let mut bad = vec![0u8; 200];
    bad[0] = 1;
    let m = err(&bad);
    assert!(m.contains("SHIX") && m.contains("Gaussian 0"), "{m}");
    // A distance beyond the records begun.
    let mut bad = vec![0u8; 200];
    bad[5] = 6;
    let m = err(&bad);
    assert!(
        m.contains("SHIX") && m.contains("Gaussian 5 refers 6"),
        "{m}"
    );
    // All new: 200 records where the SH streams hold 20.
    let m = err(&[0u8; 200]);
    assert!(m.contains("SHS") || m.contains("SHC"), "{m}");
    // The flag with the flip bit too, or in a version-2 file; and SHIX
    // without the flag.
    for (v61, version) in [(3u8, 3u16), (2, 2), (0, 3)] {
        let mut b = bytes.clone();
        b[61] = v61;
        b[8..10].copy_from_slice(&version.to_le_bytes());
        let crc = crc32fast::hash(&b[..124]);
        b[124..128].copy_from_slice(&crc.to_le_bytes());
        let m = splat::decompress(&b, path).unwrap_err().to_string();
        let field = if v61 == 0 { "SHIX" } else { "SH flags" };
        assert!(m.contains(field) && !m.contains('\n'), "{m}");
    }
}

#[test]
fn deduplicated_files_are_deterministic_across_thread_counts() {
    let (s, _) = scene(20_000, 3000, 7);
    let o = CompressOptions::default();
    let one = common::on_threads(1, || splat::compress(&s, &o).unwrap().to_bytes().unwrap());
    let three = common::on_threads(3, || splat::compress(&s, &o).unwrap().to_bytes().unwrap());
    assert_eq!(one[61], container::SH_DEDUP);
    assert_eq!(one, three);
}
