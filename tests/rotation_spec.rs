//! The seeded rotation of docs/FORMAT.md ("Seeded rotation"): the cipher
//! against RFC 8439, the matrix against an independent Python
//! implementation of the specification (tools/rotation_spec.py), pinned
//! digests, orthogonality.

use std::process::Command;

use chacha20::ChaCha20Rng;
use chacha20::rand_core::{Rng, SeedableRng};
use turboquant3d::Rotation;
use turboquant3d::codec::rotation::{SeedStream, matrix_digest, seeded_normals};

/// The seed `tq3d compress` uses by default (splat::DEFAULT_SEED).
const SCENE_SEED: u64 = 0x0003_D702_5041_9874;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_keystream_is_rfc_8439_chacha20() {
    // RFC 8439 A.1, test vectors 1 and 2: key and nonce zero, block
    // counters 0 and 1; seed 0 is the zero key.
    let want = hex(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7
         da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586
         9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed
         29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f",
    );
    let mut ks = SeedStream::new(0);
    let got: Vec<u8> = (0..128).map(|_| ks.next_byte()).collect();
    assert_eq!(got, want);
    // Words are little-endian: the first is bytes 0..8 of block 0.
    assert_eq!(SeedStream::new(0).next_u64(), 0x903d_f1a0_ade0_b876);

    // RFC 8439 2.4.2: key 00 01 .. 1f, nonce 00 00 00 00 00 00 00 4a 00 00
    // 00 00, counter 1. The RNG's 64-bit stream id is nonce bytes 4..12.
    let mut rng = ChaCha20Rng::from_seed(std::array::from_fn(|i| i as u8));
    rng.set_stream(0x4a00_0000);
    rng.set_block_pos(1);
    let mut got = [0u8; 64];
    rng.fill_bytes(&mut got);
    let want = hex(
        "224f51f3401bd9e12fde276fb8631ded8c131f823d2c06e27e4fcaec9ef3cf78
         8a3b0aa372600a92b57974cded2b9334794cba40c63e34cdea212c4cf07d41b7",
    );
    assert_eq!(got.to_vec(), want);

    // The key is the seed's bytes little-endian, then zeros.
    let seed = 0x0102_0304_0506_0708u64;
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
    let mut rng = ChaCha20Rng::from_seed(key);
    let mut want = [0u8; 200];
    rng.fill_bytes(&mut want);
    let mut ks = SeedStream::new(seed);
    let got: Vec<u8> = (0..200).map(|_| ks.next_byte()).collect();
    assert_eq!(got, want.to_vec());
}

#[test]
fn the_normals_are_standard() {
    // 200,000 draws: mean within 5σ/√n, variance within 5·√(2/n), and the
    // tail mass beyond 2 within 5 standard errors of 2·(1 − Φ(2)) = 0.0455.
    let n = 200_000;
    let z = seeded_normals(9, n);
    assert_eq!(z.len(), n);
    let mean = z.iter().sum::<f64>() / n as f64;
    let var = z.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
    let tail = z.iter().filter(|x| x.abs() > 2.0).count() as f64 / n as f64;
    let p = 0.045_500_263_896;
    assert!(mean.abs() < 5.0 / (n as f64).sqrt(), "mean {mean}");
    assert!(
        (var - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt(),
        "var {var}"
    );
    assert!(
        (tail - p).abs() < 5.0 * (p * (1.0 - p) / n as f64).sqrt(),
        "tail {tail}"
    );
    // An odd count drops the last sine: a prefix of the even count.
    assert_eq!(seeded_normals(9, 7)[..], seeded_normals(9, 8)[..7]);
}

fn orthogonality_error(m: &[f32], d: usize) -> f64 {
    let mut worst = 0.0f64;
    for i in 0..d {
        for j in 0..d {
            let dot: f64 = (0..d)
                .map(|k| m[i * d + k] as f64 * m[j * d + k] as f64)
                .sum();
            worst = worst.max((dot - if i == j { 1.0 } else { 0.0 }).abs());
        }
    }
    worst
}

#[test]
fn the_f32_matrix_is_orthogonal_to_a_micro() {
    for d in [2usize, 9, 24, 45, 100] {
        for seed in [0u64, 1, SCENE_SEED] {
            let r = Rotation::dense(d, seed).unwrap();
            let e = orthogonality_error(r.matrix().unwrap(), d);
            assert!(e < 1e-6, "d = {d}, seed {seed}: ‖ΠΠᵀ − I‖_max = {e}");
        }
    }
}

/// Digests computed by the independent implementation, not by this crate:
/// `python3 tools/rotation_spec.py --digest D SEED`.
#[test]
fn digests_are_pinned() {
    for (d, seed, want) in [
        (45, 1u64, 0xbc5a_decb_bced_50deu64),
        (45, 12345, 0x46fb_fb98_b69c_a684),
        (45, SCENE_SEED, 0xd9c3_3e56_6422_64a1),
        (24, SCENE_SEED, 0xb32d_e757_23b1_eb8a),
        (9, SCENE_SEED, 0x9cd4_74e6_d185_f00c),
    ] {
        let r = Rotation::dense(d, seed).unwrap();
        assert_eq!(
            matrix_digest(r.matrix().unwrap()),
            want,
            "d = {d}, seed {seed}: the generator no longer follows docs/FORMAT.md"
        );
    }
}

/// Runs the Python implementation; `None` when python3 is absent, which
/// fails under CI=true.
fn python(args: &[&str]) -> Option<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/rotation_spec.py");
    match Command::new("python3").arg(script).args(args).output() {
        Ok(o) => {
            assert!(
                o.status.success(),
                "rotation_spec.py {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(String::from_utf8(o.stdout).unwrap())
        }
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "python3 is needed for the cross-check under CI: {e}"
            );
            eprintln!("python3 not found ({e}): cross-check skipped");
            None
        }
    }
}

#[test]
fn an_independent_python_implementation_agrees_entry_by_entry() {
    let Some(ok) = python(&["--selftest"]) else {
        return;
    };
    assert_eq!(ok.trim(), "ok", "the Python ChaCha20 fails RFC 8439");
    for (d, seed) in [(45usize, 1u64), (45, SCENE_SEED), (24, 77), (9, u64::MAX)] {
        let out = python(&[&d.to_string(), &seed.to_string()]).unwrap();
        let mut lines = out.lines();
        let digest = lines.next().unwrap().strip_prefix("digest ").unwrap();
        let py: Vec<f32> = lines
            .flat_map(|l| l.split_whitespace())
            .map(|w| f32::from_bits(u32::from_str_radix(w, 16).unwrap()))
            .collect();
        assert_eq!(py.len(), d * d);
        let r = Rotation::dense(d, seed).unwrap();
        let m = r.matrix().unwrap();
        let mut same_bits = 0;
        for (k, (a, b)) in m.iter().zip(&py).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6,
                "d = {d}, seed {seed}, entry ({}, {}): Rust {a}, Python {b}",
                k / d,
                k % d
            );
            same_bits += (a.to_bits() == b.to_bits()) as usize;
        }
        // The specification fixes every operation, so the bits agree too
        // (Python's ln/cos/sin are the platform's, not musl's: a last-bit
        // difference there would show here first).
        assert_eq!(
            same_bits,
            d * d,
            "d = {d}, seed {seed}: entries that differ in bits"
        );
        assert_eq!(
            digest,
            format!("{:016x}", matrix_digest(m)),
            "d = {d}, seed {seed}"
        );
    }
}
