//! The whole-scene rate–distortion model (`splat::rd`) and the target modes
//! of `tq3d compress`: the search is optimal against brute force, sizes are
//! exact, the predicted MSE tracks a render, and `--target-psnr --verify`,
//! `--size` and `--ratio` keep their promises.

mod common;

use std::path::Path;

use common::cli::{assert_ok, stderr, stdout};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use turboquant3d::render::{Camera, Image, cpu, metrics, orbit};
use turboquant3d::splat::ply::{self, PlyEncoding};
use turboquant3d::splat::rd::{self, Group, Model, ShOption, ShSetting, Target};
use turboquant3d::splat::{CompressOptions, Scene, synth};

fn render(s: &Scene, v: &[Camera]) -> turboquant3d::Result<Vec<Image>> {
    Ok(v.iter().map(|c| cpu::render(s, c, [0.0; 3])).collect())
}

/// A model with random monotone sizes and errors (no scene needed).
fn random_model(seed: u64) -> Model {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut attr_bytes = [[0u64; 17]; 5];
    let mut attr_probe = [[(0u8, 0f64); 2]; 5];
    for k in 0..5 {
        let mut b = r.random_range(1000..5000u64);
        for slot in &mut attr_bytes[k][1..=16] {
            // Sizes grow with the width, not always evenly.
            b += r.random_range(200..3000u64);
            *slot = b;
        }
        let wide = r.random_range(1e-6..1e-4);
        let [lo, hi] = Group::ALL[k].probes();
        attr_probe[k] = [(lo, wide * r.random_range(4.0..40.0)), (hi, wide)];
    }
    let sh = (0..4)
        .map(|s| ShOption {
            setting: ShSetting::Allocated(s as f64 + 0.5),
            widths: None,
            base_bytes: 20_000 + 15_000 * s as u64 + r.random_range(0..5000u64),
            estimate: 1e-3 * 0.3f64.powi(s) * r.random_range(0.5..1.5),
        })
        .collect();
    Model {
        base: CompressOptions::default(),
        attr_bytes,
        attr_probe,
        floor: 1e-7,
        sh,
        kappa: [1.0, r.random_range(1.0..4.0), r.random_range(1.0..3.0)],
        renders: 0,
        pinned: [None; 5],
    }
}

/// Every combination, by brute force: (bytes, mse) for each.
fn brute(m: &Model) -> Vec<(u64, f64)> {
    let ranges: Vec<Vec<u8>> = Group::ALL
        .iter()
        .enumerate()
        .map(|(k, g)| match m.pinned[k] {
            Some(b) => vec![b],
            None => {
                let (lo, hi) = g.range();
                (lo..=hi).collect()
            }
        })
        .collect();
    let mut out = Vec::new();
    for s in 0..m.sh.len() {
        for &a in &ranges[0] {
            for &b in &ranges[1] {
                for &c in &ranges[2] {
                    for &d in &ranges[3] {
                        for &e in &ranges[4] {
                            let w = [a, b, c, d, e];
                            let bytes = m.sh[s].base_bytes
                                + (0..5).map(|k| m.attr_bytes[k][w[k] as usize]).sum::<u64>();
                            let mse = m.floor
                                + m.sh_mse(s)
                                + (0..5).map(|k| m.attr_mse(k, w[k])).sum::<f64>();
                            out.push((bytes, mse));
                        }
                    }
                }
            }
        }
    }
    out
}

fn mse_of(m: &Model, c: &rd::Choice) -> f64 {
    let w = c.attr_bits.to_array();
    m.floor + m.sh_mse(c.sh) + (0..5).map(|k| m.attr_mse(k, w[k])).sum::<f64>()
}

fn bytes_of(m: &Model, c: &rd::Choice) -> u64 {
    let w = c.attr_bits.to_array();
    m.sh[c.sh].base_bytes + (0..5).map(|k| m.attr_bytes[k][w[k] as usize]).sum::<u64>()
}

#[test]
fn the_joint_choice_is_optimal_against_brute_force() {
    for seed in 0..4 {
        let mut m = random_model(seed);
        if seed == 3 {
            // --attr-bits pins a group.
            m.pinned = [None, Some(8), None, None, Some(4)];
        }
        let all = brute(&m);
        let front = m.front();
        let (lo, hi) = (front.first().unwrap().psnr(), front.last().unwrap().psnr());
        for t in 0..12 {
            let p = (lo + (hi - lo) * t as f64 / 11.0).min(hi - 1e-6);
            let c = m
                .choose(Target::Psnr(p))
                .expect("reachable by construction");
            // The choice's own numbers, recomputed independently.
            let (b, e) = (bytes_of(&m, &c), mse_of(&m, &c));
            assert_eq!(b, c.bytes, "seed {seed}: bytes of the choice");
            assert!(
                (e - c.mse).abs() <= 1e-12 * e,
                "seed {seed}: mse of the choice"
            );
            let target = 10f64.powf(-p / 10.0);
            assert!(e <= target * (1.0 + 1e-12), "seed {seed}: misses {p} dB");
            let best = all
                .iter()
                .filter(|x| x.1 <= target * (1.0 - 1e-12))
                .map(|x| x.0)
                .min()
                .unwrap_or(u64::MAX);
            assert!(
                b <= best,
                "seed {seed} at {p:.2} dB: {b} bytes, brute force {best}"
            );
            if let Some(pin) = m.pinned[1] {
                assert_eq!(c.attr_bits.scale, pin);
            }
            // The same front point as a size target: no better MSE fits.
            let c2 = m.choose(Target::Bytes(b)).unwrap();
            let best_mse = all
                .iter()
                .filter(|x| x.0 <= b)
                .map(|x| x.1)
                .fold(f64::INFINITY, f64::min);
            assert!(c2.bytes <= b);
            assert!(
                mse_of(&m, &c2) <= best_mse * (1.0 + 1e-9),
                "seed {seed}: size {b}: {} against brute force {best_mse}",
                mse_of(&m, &c2)
            );
        }
        assert!(m.choose(Target::Psnr(hi + 1.0)).is_none());
        assert!(m.choose(Target::Bytes(front[0].bytes - 1)).is_none());
    }
}

fn small_scene() -> Scene {
    synth::generate(&synth::SynthConfig {
        count: 3000,
        sh_degree: 3,
        seed: 9,
    })
}

#[test]
fn sizes_are_exact_and_the_prediction_tracks_the_render() {
    let scene = small_scene();
    let views = orbit(&scene.positions, 3, 96, 96);
    let reference = render(&scene, &views).unwrap();
    let m = rd::build_model(
        &scene,
        &CompressOptions::default(),
        &views,
        &reference,
        &render,
        &|_| {},
    )
    .unwrap();
    // One render for the floor, two per group, three for the SH.
    assert_eq!(m.renders, 1 + 2 * 5 + 3);
    assert!(
        m.floor < 1e-9,
        "nothing pruned, nothing quantised: {}",
        m.floor
    );
    // More bits never cost fewer bytes (zstd aside, by at most a little).
    for k in 0..5 {
        let (lo, hi) = Group::ALL[k].range();
        assert!(m.attr_bytes[k][hi as usize] > m.attr_bytes[k][lo as usize]);
    }
    let front = m.front();
    assert!(front.len() > 10);
    for c in [
        &front[front.len() / 4],
        &front[front.len() / 2],
        &front[3 * front.len() / 4],
    ] {
        let (bytes, mse) = rd::verify(&scene, &m, c, &views, &reference, &render).unwrap();
        assert_eq!(bytes, c.bytes, "the model's size is the file's");
        let (p, q) = (c.psnr(), metrics::psnr_from_mse(mse));
        assert!(
            (p - q).abs() < 2.0,
            "{} {:?}: predicted {p:.2} dB, measured {q:.2} dB",
            m.sh[c.sh].setting,
            c.attr_bits
        );
    }
}

fn write_scene(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("in.ply");
    ply::write_ply(&p, &small_scene(), PlyEncoding::BinaryLittleEndian).unwrap();
    p
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(o)))
}

#[test]
fn target_modes_keep_their_promises() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_scene(dir.path());
    let out = dir.path().join("o.tq3s");
    let base = |extra: &[&str]| {
        let probes = ["--probe-views", "2", "--probe-resolution", "64x64"];
        common::cli::compress_json(&input, &out, &[&probes[..], extra].concat())
    };
    // --target-psnr, verified (the default): measured on eval's views, at
    // least P.
    let o = base(&["--target-psnr", "38"]);
    assert_ok(&o, "--target-psnr 38");
    let v = json(&o);
    let t = &v["target"];
    assert!(t["measured_psnr"].as_f64().unwrap() >= 38.0, "{t}");
    assert_eq!(
        v["output_bytes"].as_u64(),
        t["predicted_bytes"].as_u64(),
        "the size is exact"
    );
    // --size: never above it.
    let o = base(&["--size", "60k", "--no-verify"]);
    assert_ok(&o, "--size 60k");
    assert!(json(&o)["output_bytes"].as_u64().unwrap() <= 60_000);
    assert!(std::fs::metadata(&out).unwrap().len() <= 60_000);
    // --ratio: at least R against the PLY.
    let ply_len = std::fs::metadata(&input).unwrap().len();
    let o = base(&["--ratio", "9"]);
    assert_ok(&o, "--ratio 9");
    assert!(json(&o)["output_bytes"].as_u64().unwrap() as f64 <= ply_len as f64 / 9.0);
    // --attr-bits pins a group.
    let o = base(&["--ratio", "8", "--attr-bits", "position=13"]);
    assert_ok(&o, "--attr-bits with --ratio");
    assert_eq!(json(&o)["target"]["attr_bits"][0], 13);
    // Unreachable targets and conflicts: one line, nothing written.
    std::fs::remove_file(&out).unwrap();
    for (args, needle) in [
        (&["--target-psnr", "99"][..], "target-psnr"),
        (&["--size", "100"][..], "below the smallest setting"),
        (
            &["--target-psnr", "40", "--sh-bits", "2"][..],
            "cannot be used with",
        ),
        (
            &["--target-psnr", "40", "--ratio", "10"][..],
            "cannot be used with",
        ),
        (&["--target-psnr", "5"][..], "target-psnr"),
        (&["--ratio", "1"][..], "ratio"),
        (&["--size", "2.5Q"][..], "size"),
        (
            &["--target-psnr", "40", "--profile", "exact"][..],
            "profile",
        ),
    ] {
        let o = base(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: no {needle:?} in {e}");
        assert!(!out.exists(), "{args:?} wrote a file");
    }
}
