//! The `tq3d` command line, driven as a separate process: the codebook it
//! prints, encode → decode → info, byte-for-byte determinism, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::cli::{assert_ok, stderr, stdout, tq3d};
use common::data::{gaussian, required};
use turboquant3d::format::{npy, tqv};
use turboquant3d::{Quantizer, QuantizerConfig, RotationKind, ScaleFormat, ScaleMode, theory};

/// Asserts failure with every `needles` entry in stderr (case-insensitive).
fn assert_fails(o: &Output, needles: &[&str], what: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "{what}: succeeded\nstdout:\n{}\nstderr:\n{err}",
        stdout(o)
    );
    let lower = err.to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "{what}: stderr does not mention {n:?}:\n{err}"
        );
    }
    assert!(
        !err.contains("panicked"),
        "{what}: the program panicked:\n{err}"
    );
}

fn write_npy(path: &Path, rows: usize, cols: usize, data: &[f32]) {
    npy::write_matrix(path, rows, cols, data).unwrap();
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// No leftover temporary files (they start with '.').
fn assert_no_temporaries(dir: &Path, what: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.'),
            "{what}: temporary {name} left behind"
        );
    }
}

// ---------------------------------------------------------------------------
// codebook

/// ∫ f over [a, b] by composite Simpson with `n` (even) intervals.
fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
    let h = (b - a) / n as f64;
    let mut s = f(a) + f(b);
    for i in 1..n {
        let x = a + i as f64 * h;
        s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(x);
    }
    s * h / 3.0
}

#[test]
fn codebook_json_is_a_lloyd_max_quantizer_of_the_sphere_coordinate() {
    let (d, b) = (45usize, 3u32);
    let o = tq3d(["codebook", "--dim", "45", "--bits", "3", "--json"]);
    assert_ok(&o, "codebook --json");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("stdout is JSON");
    assert_eq!(v["dim"].as_u64(), Some(45));
    assert_eq!(v["bits"].as_u64(), Some(3));
    let nums = |key: &str| -> Vec<f64> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is not an array"))
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let c = nums("centroids");
    let t = nums("boundaries");
    assert_eq!(c.len(), 8);
    assert_eq!(t.len(), 7);
    assert!(
        c.windows(2).all(|w| w[0] < w[1]),
        "centroids not ascending: {c:?}"
    );
    assert!(c[0] > -1.0 && c[7] < 1.0);
    for i in 0..7 {
        // Nearest-neighbour condition: each boundary is the midpoint.
        assert!(
            (t[i] - 0.5 * (c[i] + c[i + 1])).abs() < 1e-9,
            "boundary {i} = {} is not the midpoint of {} and {}",
            t[i],
            c[i],
            c[i + 1]
        );
    }
    for i in 0..8 {
        assert!(
            (c[i] + c[7 - i]).abs() < 1e-9,
            "centroids not symmetric: {c:?}"
        );
    }

    let distortion = v["distortion"].as_f64().unwrap();
    let lower = v["lower_bound"].as_f64().unwrap();
    let upper = v["upper_bound"].as_f64().unwrap();
    let want = theory::expected_error(d, b).unwrap();
    assert!(
        (distortion - want).abs() <= 1e-12 * want,
        "distortion {distortion} vs theory::expected_error {want}"
    );
    assert_eq!(lower, 0.25f64.powi(3));
    let factor = 3f64.sqrt() * std::f64::consts::PI / 2.0;
    assert!(
        (upper - factor * 0.25f64.powi(3)).abs() < 1e-12,
        "upper {upper}"
    );
    assert!(lower < distortion && distortion < upper);

    // Independently, by quadrature of the coordinate density
    // f_d(x) ∝ (1 − x²)^((d − 3)/2): the centroid condition holds and
    // d·E[(X − Q(X))²] equals the printed distortion.
    let g = |x: f64| (1.0 - x * x).powf((d as f64 - 3.0) / 2.0);
    let edges: Vec<f64> = std::iter::once(-1.0)
        .chain(t.iter().copied())
        .chain(std::iter::once(1.0))
        .collect();
    let n = 4000;
    let z: f64 = edges.windows(2).map(|w| simpson(g, w[0], w[1], n)).sum();
    let mut mse = 0.0;
    for i in 0..8 {
        let (a, bb) = (edges[i], edges[i + 1]);
        let mass = simpson(g, a, bb, n);
        let mean = simpson(|x| x * g(x), a, bb, n) / mass;
        assert!(
            (mean - c[i]).abs() < 1e-7,
            "centroid {i}: {} but the cell mean is {mean}",
            c[i]
        );
        mse += simpson(|x| (x - c[i]).powi(2) * g(x), a, bb, n);
    }
    let by_quadrature = d as f64 * mse / z;
    assert!(
        (by_quadrature - distortion).abs() < 1e-7 * distortion,
        "distortion {distortion} vs quadrature {by_quadrature}"
    );
}

#[test]
fn codebook_text_and_bad_codebook_arguments() {
    let o = tq3d(["codebook", "--dim", "45", "--bits", "3"]);
    assert_ok(&o, "codebook");
    assert!(stdout(&o).contains("distortion"), "{}", stdout(&o));
    let o = tq3d(["codebook", "--dim", "45", "--bits", "9", "--json"]);
    assert_fails(&o, &["9", "bit"], "codebook --bits 9");
    let o = tq3d(["codebook", "--dim", "1", "--bits", "3"]);
    assert_fails(&o, &["d = 1"], "codebook --dim 1");
}

// ---------------------------------------------------------------------------
// encode → decode → info

fn relative_error(x: &[f32], y: &[f32]) -> f64 {
    let (mut err, mut energy) = (0f64, 0f64);
    for (a, b) in x.iter().zip(y) {
        err += (*a as f64 - *b as f64).powi(2);
        energy += (*a as f64).powi(2);
    }
    err / energy
}

#[test]
fn encode_verify_decode_and_info() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d, b) = (300usize, 45usize, 3u32);
    let x = gaussian(n, d, 11);
    let input = dir.path().join("in.npy");
    let tqv_path = dir.path().join("out.tqv");
    let output = dir.path().join("dec.npy");
    write_npy(&input, n, d, &x);

    let o = tq3d([
        "encode",
        "-i",
        p(&input),
        "-o",
        p(&tqv_path),
        "--bits",
        "3",
        "--verify",
    ]);
    assert_ok(&o, "encode");
    assert!(
        stdout(&o).contains("measured"),
        "--verify printed no measurement:\n{}",
        stdout(&o)
    );

    // The file is exactly what the library writes for the CLI's defaults
    // (dense rotation for d = 45, seed 0, least-squares scale as f32).
    let q = Quantizer::new(&QuantizerConfig {
        dim: d,
        bits: b,
        rotation: RotationKind::Dense,
        seed: 0,
        scale_mode: ScaleMode::LeastSquares,
        scale_format: ScaleFormat::F32,
    })
    .unwrap();
    let enc = q.encode(&x).unwrap();
    assert_eq!(
        std::fs::read(&tqv_path).unwrap(),
        tqv::to_bytes(&q, &enc, Some(0)).unwrap(),
        "the CLI's .tqv differs from the library's"
    );

    let o = tq3d(["decode", p(&tqv_path), "-o", p(&output)]);
    assert_ok(&o, "decode");
    let m = npy::read_matrix(&output).unwrap();
    assert_eq!((m.rows, m.cols), (n, d));
    let rel = relative_error(&x, &m.data);
    let expected = theory::expected_error(d, b).unwrap();
    assert!(
        rel < theory::upper_bound(b),
        "relative error {rel} above the upper bound {}",
        theory::upper_bound(b)
    );
    // Least squares never does worse than the norm scale, whose expected
    // error is d·C(d, b); 300 vectors put the estimate well within 15 %.
    assert!(
        rel < 1.15 * expected,
        "relative error {rel} vs d·C = {expected}"
    );
    assert!(
        rel > theory::lower_bound(b) * 0.5,
        "relative error {rel} implausibly low"
    );
    let want = q.decode(&enc).unwrap();
    assert_eq!(
        m.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "CLI decode differs from the library's"
    );

    let o = tq3d(["info", p(&tqv_path)]);
    assert_ok(&o, "info");
    let out = stdout(&o);
    assert!(out.contains("N = 300"), "{out}");
    assert!(out.contains("d = 45"), "{out}");
    assert!(out.contains("b = 3"), "{out}");
    assert_no_temporaries(dir.path(), "encode/decode");
}

#[test]
fn encode_options_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (50usize, 64usize);
    let x = gaussian(n, d, 12);
    let input = dir.path().join("in.npy");
    write_npy(&input, n, d, &x);
    let out = dir.path().join("o.tqv");
    let o = tq3d([
        "encode",
        "-i",
        p(&input),
        "-o",
        p(&out),
        "--bits",
        "2",
        "--dim",
        "64",
        "--rotation",
        "hadamard",
        "--seed",
        "99",
        "--scale",
        "norm",
        "--scale-format",
        "f16",
    ]);
    assert_ok(&o, "encode with options");
    let f = tqv::read(&out).unwrap();
    let q = &f.quantizer;
    assert_eq!((q.dim(), q.bits()), (64, 2));
    assert_eq!(q.rotation().kind(), RotationKind::Hadamard);
    assert_eq!(q.scale_mode(), ScaleMode::Norm);
    assert_eq!(q.scale_format(), ScaleFormat::F16);
    assert_eq!(f.seed, Some(99));
    assert_eq!(f.encoded.len(), n);
    let lib = Quantizer::new(&QuantizerConfig {
        dim: d,
        bits: 2,
        rotation: RotationKind::Hadamard,
        seed: 99,
        scale_mode: ScaleMode::Norm,
        scale_format: ScaleFormat::F16,
    })
    .unwrap();
    assert_eq!(f.encoded, lib.encode(&x).unwrap());
    // Norm scales as f16: each is ‖x‖ rounded to f16.
    for i in 0..n {
        let norm = x[i * d..(i + 1) * d]
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let s = f.encoded.scales().get(i) as f64;
        assert!(
            (s / norm - 1.0).abs() < 1e-3,
            "row {i}: scale {s} vs norm {norm}"
        );
    }
}

#[test]
fn f16_input_is_accepted() {
    use npyz::WriterBuilder;
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (20usize, 45usize);
    let x: Vec<half::f16> = gaussian(n, d, 13)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    let input = dir.path().join("half.npy");
    {
        let file = std::fs::File::create(&input).unwrap();
        let mut w = npyz::WriteOptions::<half::f16>::new()
            .default_dtype()
            .shape(&[n as u64, d as u64])
            .writer(file)
            .begin_nd()
            .unwrap();
        w.extend(x.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    let out = dir.path().join("half.tqv");
    let o = tq3d(["encode", "-i", p(&input), "-o", p(&out), "--bits", "4"]);
    assert_ok(&o, "encode f16 input");
    let widened: Vec<f32> = x.iter().map(|h| h.to_f32()).collect();
    let q = Quantizer::new(&QuantizerConfig::new(d, 4)).unwrap();
    assert_eq!(
        tqv::read(&out).unwrap().encoded,
        q.encode(&widened).unwrap()
    );
}

// ---------------------------------------------------------------------------
// Determinism

#[test]
fn same_input_and_seed_give_identical_files_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    // More than two CHUNKs of 1024 vectors, with a ragged end.
    let (n, d) = (3000usize, 45usize);
    let input = dir.path().join("in.npy");
    write_npy(&input, n, d, &gaussian(n, d, 21));
    let run = |name: &str, pre: &[&str], seed: &str| -> Vec<u8> {
        let out = dir.path().join(name);
        let mut args: Vec<String> = pre.iter().map(|s| s.to_string()).collect();
        args.extend(
            [
                "encode",
                "-i",
                p(&input),
                "-o",
                p(&out),
                "--bits",
                "3",
                "--seed",
                seed,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let o = tq3d(&args);
        assert_ok(&o, name);
        std::fs::read(&out).unwrap()
    };
    let a = run("a.tqv", &[], "5");
    let b = run("b.tqv", &[], "5");
    let t1 = run("t1.tqv", &["--threads", "1"], "5");
    let t2 = run("t2.tqv", &["--threads", "2"], "5");
    let t3 = run("t3.tqv", &["--threads", "3"], "5");
    let other = run("other.tqv", &[], "6");
    assert!(a == b, "two runs with the same seed differ");
    assert!(a == t1, "--threads 1 differs from the default");
    assert!(t1 == t2, "--threads 1 and --threads 2 differ");
    assert!(t1 == t3, "--threads 1 and --threads 3 differ");
    assert!(a != other, "seeds 5 and 6 gave the same file");
    assert_eq!(tqv::from_bytes(&a, Path::new("a")).unwrap().seed, Some(5));
}

// ---------------------------------------------------------------------------
// Bad input

struct Case {
    dir: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
}

impl Case {
    fn new(rows: usize, cols: usize, data: &[f32]) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.npy");
        let out = dir.path().join("out.tqv");
        write_npy(&input, rows, cols, data);
        Case { dir, input, out }
    }

    fn encode(&self, extra: &[&str]) -> Output {
        let mut args = vec!["encode", "-i", p(&self.input), "-o", p(&self.out)];
        args.extend_from_slice(extra);
        tq3d(args)
    }

    fn check_no_output(&self, what: &str) {
        assert!(
            !self.out.exists(),
            "{what}: {} was created",
            self.out.display()
        );
        assert_no_temporaries(self.dir.path(), what);
    }
}

#[test]
fn nan_and_infinity_are_reported_with_their_row() {
    let (n, d) = (2000usize, 45usize);
    let mut x = gaussian(n, d, 31);
    x[1234 * d + 17] = f32::NAN;
    x[1500 * d] = f32::INFINITY; // a later row: the first bad one is reported
    let c = Case::new(n, d, &x);
    let o = c.encode(&["--bits", "3"]);
    assert_fails(&o, &["row 1234", "17"], "NaN");
    assert!(!stderr(&o).contains("1500"), "{}", stderr(&o));
    c.check_no_output("NaN");

    // A row beyond the CLI's first 65 536-vector slab keeps its global index.
    let (n, d) = (70_000usize, 4usize);
    let mut x = gaussian(n, d, 32);
    x[65_541 * d + 2] = f32::NEG_INFINITY;
    let c = Case::new(n, d, &x);
    let o = c.encode(&["--bits", "2"]);
    assert_fails(&o, &["row 65541"], "-Inf in the second slab");
    c.check_no_output("-Inf in the second slab");
}

#[test]
fn a_large_input_spanning_several_slabs_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (70_001usize, 5usize);
    let x = gaussian(n, d, 33);
    let input = dir.path().join("big.npy");
    write_npy(&input, n, d, &x);
    let out = dir.path().join("big.tqv");
    let o = tq3d([
        "encode",
        "-i",
        p(&input),
        "-o",
        p(&out),
        "--bits",
        "3",
        "--seed",
        "4",
    ]);
    assert_ok(&o, "large encode");
    let mut cfg = QuantizerConfig::new(d, 3);
    cfg.seed = 4;
    let q = Quantizer::new(&cfg).unwrap();
    assert_eq!(tqv::read(&out).unwrap().encoded, q.encode(&x).unwrap());
}

#[test]
fn unstorable_f16_scale_is_reported_with_its_row() {
    let (n, d) = (10usize, 45usize);
    let mut x = gaussian(n, d, 34);
    for v in &mut x[3 * d..4 * d] {
        *v *= 1e5; // ‖x‖ ≈ 6.7e5 > 65504
    }
    let c = Case::new(n, d, &x);
    let o = c.encode(&["--bits", "3", "--scale-format", "f16"]);
    assert_fails(&o, &["row 3", "f16"], "f16 overflow");
    c.check_no_output("f16 overflow");
}

#[test]
fn bad_parameters_fail_and_write_nothing() {
    let (n, d) = (20usize, 45usize);
    let c = Case::new(n, d, &gaussian(n, d, 41));
    for (extra, needles, what) in [
        (vec!["--bits", "9"], vec!["9", "bit"], "--bits 9"),
        (vec!["--bits", "0"], vec!["0", "bit"], "--bits 0"),
        (
            vec!["--bits", "3", "--dim", "44"],
            vec!["44", "45"],
            "--dim 44",
        ),
        (
            vec!["--bits", "3", "--rotation", "hadamard"],
            vec!["hadamard", "45"],
            "hadamard with d = 45",
        ),
    ] {
        let o = c.encode(&extra);
        assert_fails(&o, &needles, what);
        c.check_no_output(what);
    }
}

#[test]
fn a_failed_encode_leaves_an_existing_output_alone() {
    let (n, d) = (20usize, 45usize);
    let mut x = gaussian(n, d, 42);
    x[7 * d] = f32::NAN;
    let c = Case::new(n, d, &x);
    std::fs::write(&c.out, b"previous contents").unwrap();
    let o = c.encode(&["--bits", "3"]);
    assert_fails(&o, &["row 7"], "NaN over an existing output");
    assert_eq!(std::fs::read(&c.out).unwrap(), b"previous contents");
    assert_no_temporaries(c.dir.path(), "NaN over an existing output");
}

#[test]
fn missing_and_malformed_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.npy");
    let out = dir.path().join("out.tqv");
    let o = tq3d(["encode", "-i", p(&missing), "-o", p(&out), "--bits", "3"]);
    assert_fails(&o, &[p(&missing)], "missing input");
    assert!(!out.exists());

    // A 1-D array.
    let one_d = dir.path().join("one-d.npy");
    npyz::to_file_1d(&one_d, vec![1.0f32, 2.0, 3.0]).unwrap();
    let o = tq3d(["encode", "-i", p(&one_d), "-o", p(&out), "--bits", "3"]);
    assert_fails(&o, &[p(&one_d), "shape"], "1-D input");
    assert!(!out.exists());

    // No rows at all.
    let empty = dir.path().join("empty.npy");
    write_npy(&empty, 0, 45, &[]);
    let o = tq3d(["encode", "-i", p(&empty), "-o", p(&out), "--bits", "3"]);
    assert_fails(&o, &["empty"], "no rows");
    assert!(!out.exists());

    // An output folder that does not exist.
    let good = dir.path().join("good.npy");
    write_npy(&good, 3, 45, &gaussian(3, 45, 43));
    let nowhere = dir.path().join("no-such-folder").join("out.tqv");
    let o = tq3d(["encode", "-i", p(&good), "-o", p(&nowhere), "--bits", "3"]);
    assert_fails(&o, &[p(&nowhere)], "missing output folder");
    assert!(!nowhere.exists());

    // decode and info of a missing .tqv.
    let missing_tqv = dir.path().join("missing.tqv");
    let dec = dir.path().join("dec.npy");
    let o = tq3d(["decode", p(&missing_tqv), "-o", p(&dec)]);
    assert_fails(&o, &[p(&missing_tqv)], "decode of a missing file");
    assert!(!dec.exists());
    let o = tq3d(["info", p(&missing_tqv)]);
    assert_fails(&o, &[p(&missing_tqv)], "info of a missing file");
    assert_no_temporaries(dir.path(), "missing and malformed inputs");
}

#[test]
fn corrupted_tqv_is_refused_by_decode_and_info() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (40usize, 45usize);
    let input = dir.path().join("in.npy");
    write_npy(&input, n, d, &gaussian(n, d, 51));
    let good = dir.path().join("good.tqv");
    assert_ok(
        &tq3d(["encode", "-i", p(&input), "-o", p(&good), "--bits", "3"]),
        "encode",
    );
    let bytes = std::fs::read(&good).unwrap();
    // One byte in the code payload (the file's last byte), one in the scales,
    // one in the rotation matrix.
    let scl = bytes.len() - (n * d * 3).div_ceil(8) - 16 - 4 * n;
    for (k, at) in [bytes.len() - 1, scl + 5, 64 + 16 + 100]
        .into_iter()
        .enumerate()
    {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        let bad = dir.path().join(format!("bad{k}.tqv"));
        std::fs::write(&bad, &b).unwrap();
        let dec = dir.path().join(format!("dec{k}.npy"));
        let o = tq3d(["decode", p(&bad), "-o", p(&dec)]);
        assert_fails(
            &o,
            &["checksum", p(&bad)],
            &format!("decode, byte {at} flipped"),
        );
        assert!(
            !dec.exists(),
            "decode of a corrupted file wrote {}",
            dec.display()
        );
        let o = tq3d(["info", p(&bad)]);
        assert_fails(&o, &["checksum"], &format!("info, byte {at} flipped"));
    }
    // Truncated.
    let cut = dir.path().join("cut.tqv");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let dec = dir.path().join("cut.npy");
    let o = tq3d(["decode", p(&cut), "-o", p(&dec)]);
    assert_fails(&o, &["truncated", p(&cut)], "decode of a truncated file");
    assert!(!dec.exists());
    assert_no_temporaries(dir.path(), "corrupted");
}

// ---------------------------------------------------------------------------
// Help

#[test]
fn help_exits_zero() {
    let o = tq3d(["--help"]);
    assert_ok(&o, "--help");
    let out = stdout(&o);
    for sub in ["encode", "decode", "codebook", "info"] {
        assert!(out.contains(sub), "--help does not list {sub}:\n{out}");
    }
    let o = tq3d(["encode", "--help"]);
    assert_ok(&o, "encode --help");
    let out = stdout(&o);
    for flag in [
        "--bits",
        "--input",
        "--output",
        "--verify",
        "--seed",
        "--threads",
    ] {
        assert!(
            out.contains(flag),
            "encode --help does not list {flag}:\n{out}"
        );
    }
    // And nonsense is refused.
    let o = tq3d(["frobnicate"]);
    assert!(!o.status.success());
    let o = tq3d(["encode", "--bits", "three"]);
    assert!(!o.status.success());
}

/// `--device gpu` runs the GPU kernels (lavapipe in CI) and must agree with
/// the CPU; `--device auto` never picks a software adapter.
#[test]
fn device_gpu_matches_device_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (500, 45);
    let x = gaussian(n, d, 21);
    let input = dir.path().join("x.npy");
    write_npy(&input, n, d, &x);
    let gpu_tqv = dir.path().join("gpu.tqv");
    let cpu_tqv = dir.path().join("cpu.tqv");
    let o = tq3d([
        "encode",
        "-i",
        p(&input),
        "-o",
        p(&gpu_tqv),
        "--bits",
        "3",
        "--device",
        "gpu",
    ]);
    if !o.status.success() && !required() && stderr(&o).contains("adapter") {
        common::gpu::note(&format!("SKIPPED: no GPU adapter: {}", stderr(&o)));
        return;
    }
    assert_ok(&o, "encode --device gpu");
    assert!(stdout(&o).contains("on GPU"), "{}", stdout(&o));
    assert_ok(
        &tq3d([
            "encode",
            "-i",
            p(&input),
            "-o",
            p(&cpu_tqv),
            "--bits",
            "3",
            "--device",
            "cpu",
        ]),
        "encode --device cpu",
    );
    let a = turboquant3d::format::tqv::read(&gpu_tqv).unwrap();
    let b = turboquant3d::format::tqv::read(&cpu_tqv).unwrap();
    let ya = b.quantizer.decode(&a.encoded).unwrap();
    let yb = b.quantizer.decode(&b.encoded).unwrap();
    // Codes may differ only at ties; the reconstructions agree closely.
    let err = relative_error(&ya, &yb);
    assert!(err < 1e-3, "GPU and CPU encodings differ by {err}");
    let out = dir.path().join("y.npy");
    let o = tq3d(["decode", p(&gpu_tqv), "-o", p(&out), "--device", "gpu"]);
    assert_ok(&o, "decode --device gpu");
    let y = turboquant3d::format::npy::read_matrix(&out).unwrap();
    assert!(
        relative_error(&y.data, &ya) < 1e-9,
        "GPU decode differs from CPU decode of the same codes"
    );
    let o = tq3d(["decode", p(&gpu_tqv), "-o", p(&out), "--device", "auto"]);
    assert_ok(&o, "decode --device auto");
    assert!(
        !stdout(&o).contains("llvmpipe"),
        "auto chose a software adapter: {}",
        stdout(&o)
    );
}
