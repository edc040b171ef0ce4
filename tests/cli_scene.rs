//! The scene commands of `tq3d` as a separate process: compress → info →
//! decompress, the dry-run prediction against the real size, JSON output,
//! `.splat` input, the demo's own checks, and bad input.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;

use common::cli::{assert_ok, stderr, stdout, tq3d};
use turboquant3d::splat::ply::{self, PlyEncoding};
use turboquant3d::splat::{Scene, synth};

/// Fails with a one-line message on stderr mentioning every needle.
fn fails(o: &Output, needles: &[&str], what: &str) {
    let e = stderr(o);
    assert!(!o.status.success(), "{what}: succeeded\n{}", stdout(o));
    assert!(!e.contains("panicked"), "{what}: panicked\n{e}");
    assert_eq!(
        e.trim_end().lines().count(),
        1,
        "{what}: not one line:\n{e}"
    );
    for n in needles {
        assert!(
            e.to_lowercase().contains(&n.to_lowercase()),
            "{what}: no {n:?} in\n{e}"
        );
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(o)))
}

fn write_scene(dir: &Path, n: usize) -> (std::path::PathBuf, Scene) {
    let scene = synth::generate(&synth::SynthConfig {
        count: n,
        sh_degree: 3,
        seed: 5,
    });
    let p = dir.join("in.ply");
    ply::write_ply(&p, &scene, PlyEncoding::BinaryLittleEndian).unwrap();
    (p, scene)
}

#[test]
fn compress_info_decompress_exact_keeps_every_other_property() {
    let dir = tempfile::tempdir().unwrap();
    let (input, scene) = write_scene(dir.path(), 5000);
    let packed = dir.path().join("s.tq3s");
    let o = tq3d([
        OsStr::new("compress"),
        input.as_os_str(),
        OsStr::new("-o"),
        packed.as_os_str(),
        OsStr::new("--profile"),
        OsStr::new("exact"),
        OsStr::new("--sh-bits"),
        OsStr::new("4"),
        OsStr::new("--weight"),
        OsStr::new("uniform"),
    ]);
    assert_ok(&o, "compress");
    assert!(stdout(&o).contains("5000 Gaussians"), "{}", stdout(&o));

    let o = tq3d([OsStr::new("info"), packed.as_os_str()]);
    assert_ok(&o, "info");
    let text = stdout(&o);
    for needle in [
        "all checksums verified",
        "b = 4",
        "profile exact",
        "normals",
        "d·C(d,b)",
    ] {
        assert!(text.contains(needle), "info lacks {needle:?}:\n{text}");
    }

    let back_path = dir.path().join("out.ply");
    let o = tq3d([
        OsStr::new("decompress"),
        packed.as_os_str(),
        OsStr::new("-o"),
        back_path.as_os_str(),
    ]);
    assert_ok(&o, "decompress");
    let back = ply::read_ply(&back_path).unwrap();
    assert_eq!(back.len(), scene.len());
    let bits = |v: &[[f32; 3]]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back.positions), bits(&scene.positions));
    assert_eq!(bits(&back.scales), bits(&scene.scales));
    assert_eq!(bits(&back.dc), bits(&scene.dc));
    assert_eq!(
        back.opacity.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        scene
            .opacity
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    );
    assert_eq!(back.normals, scene.normals);
    // SH: relative error near d·C(45, 4) = 0.0095 (LS scale: a little less).
    let (mut e, mut n) = (0f64, 0f64);
    for (a, b) in scene.sh_rest.iter().zip(&back.sh_rest) {
        e += ((a - b) as f64).powi(2);
        n += (*a as f64).powi(2);
    }
    let rel = e / n;
    assert!(rel > 0.007 && rel < 0.0100, "relative SH error {rel}");
}

#[test]
fn dry_run_predicts_and_writes_nothing_and_json_matches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_scene(dir.path(), 3000);
    let packed = dir.path().join("s.tq3s");
    let o = tq3d([
        OsStr::new("compress"),
        input.as_os_str(),
        OsStr::new("-o"),
        packed.as_os_str(),
        OsStr::new("--dry-run"),
        OsStr::new("--json"),
        OsStr::new("--prune-opacity"),
        OsStr::new("0.1"),
    ]);
    assert_ok(&o, "dry run");
    assert!(!packed.exists(), "--dry-run wrote a file");
    let p = json(&o);
    let fixed = p["prediction"]["fixed_bytes"].as_u64().unwrap();
    let bound = p["prediction"]["total_bound_bytes"].as_u64().unwrap();

    let o = tq3d([
        OsStr::new("compress"),
        input.as_os_str(),
        OsStr::new("-o"),
        packed.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("--prune-opacity"),
        OsStr::new("0.1"),
    ]);
    assert_ok(&o, "compress --json");
    let r = json(&o);
    let size = std::fs::metadata(&packed).unwrap().len();
    assert_eq!(r["output_bytes"].as_u64().unwrap(), size);
    assert!(fixed <= size && size <= bound, "{fixed} ≤ {size} ≤ {bound}");
    assert_eq!(r["count"], p["prediction"]["count"]);
    assert!(
        r["count"].as_u64().unwrap() < 3000,
        "τ = 0.1 should prune some"
    );
    // The fixed-rate streams are exactly as predicted.
    for s in r["streams"].as_array().unwrap() {
        let tag = s["tag"].as_str().unwrap();
        let pred = p["prediction"]["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["tag"] == tag)
            .unwrap();
        if pred["exact"].as_bool().unwrap() {
            assert_eq!(pred["bytes"], s["stored_bytes"], "stream {tag}");
        }
    }
    let o = tq3d([OsStr::new("info"), packed.as_os_str(), OsStr::new("--json")]);
    assert_ok(&o, "info --json");
    assert_eq!(json(&o)["count"], r["count"]);
}

#[test]
fn same_bytes_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_scene(dir.path(), 20_000);
    let mut files = Vec::new();
    for t in ["1", "2", "3"] {
        let p = dir.path().join(format!("t{t}.tq3s"));
        assert_ok(
            &tq3d([
                OsStr::new("--threads"),
                OsStr::new(t),
                OsStr::new("compress"),
                input.as_os_str(),
                OsStr::new("-o"),
                p.as_os_str(),
            ]),
            "compress",
        );
        files.push(std::fs::read(&p).unwrap());
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn demo_runs_its_own_checks() {
    let o = tq3d(["demo", "--count", "30000", "--json"]);
    assert_ok(&o, "demo");
    let v = json(&o);
    assert_eq!(v["checks_passed"], true, "{v}");
    let m = v["sh_measured_relative_error"].as_f64().unwrap();
    let e = v["sh_expected_relative_error"].as_f64().unwrap();
    // Independent: d·C(45, 3) from the reference table is 0.0329.
    assert!((e - 0.0329).abs() < 5e-4, "{e}");
    assert!(m < e && m > 0.8 * e, "{m} vs {e}");
    assert!(v["ratio"].as_f64().unwrap() > 5.0);
}

#[test]
fn splat_input_compresses_and_decompresses_to_splat() {
    let plant = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/plant.splat");
    if !plant.exists() {
        eprintln!("skipping: {} not present", plant.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let packed = dir.path().join("plant.tq3s");
    assert_ok(
        &tq3d([
            OsStr::new("compress"),
            plant.as_os_str(),
            OsStr::new("-o"),
            packed.as_os_str(),
        ]),
        "compress .splat",
    );
    let o = tq3d([OsStr::new("info"), packed.as_os_str()]);
    assert_ok(&o, "info");
    assert!(stdout(&o).contains("113648 Gaussians"), "{}", stdout(&o));
    assert!(stdout(&o).contains("SH degree 0"), "{}", stdout(&o));
    let back = dir.path().join("plant.out.splat");
    assert_ok(
        &tq3d([
            OsStr::new("decompress"),
            packed.as_os_str(),
            OsStr::new("-o"),
            back.as_os_str(),
        ]),
        "decompress",
    );
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 113_648 * 32);
}

#[test]
fn bad_input_fails_with_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_scene(dir.path(), 200);
    let missing = dir.path().join("missing.ply");
    let o = tq3d([
        OsStr::new("compress"),
        missing.as_os_str(),
        OsStr::new("-o"),
        OsStr::new("x.tq3s"),
    ]);
    fails(&o, &["missing.ply"], "missing input");

    // A truncated PLY.
    let bytes = std::fs::read(&input).unwrap();
    let cut = dir.path().join("cut.ply");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let o = tq3d([
        OsStr::new("compress"),
        cut.as_os_str(),
        OsStr::new("-o"),
        dir.path().join("c.tq3s").as_os_str(),
    ]);
    fails(&o, &["cut.ply"], "truncated PLY");
    assert!(!dir.path().join("c.tq3s").exists());

    let o = tq3d([
        OsStr::new("compress"),
        input.as_os_str(),
        OsStr::new("-o"),
        OsStr::new("x.tq3s"),
        OsStr::new("--sh-bits"),
        OsStr::new("9"),
    ]);
    fails(&o, &["b = 9"], "bits");

    // A corrupted container.
    let packed = dir.path().join("s.tq3s");
    assert_ok(
        &tq3d([
            OsStr::new("compress"),
            input.as_os_str(),
            OsStr::new("-o"),
            packed.as_os_str(),
        ]),
        "compress",
    );
    let mut b = std::fs::read(&packed).unwrap();
    let k = b.len() - 10;
    b[k] ^= 1;
    std::fs::write(&packed, &b).unwrap();
    let outp = dir.path().join("o.ply");
    let o = tq3d([
        OsStr::new("decompress"),
        packed.as_os_str(),
        OsStr::new("-o"),
        outp.as_os_str(),
    ]);
    fails(&o, &["s.tq3s", "checksum"], "corrupted container");
    assert!(!outp.exists());
    let o = tq3d([OsStr::new("info"), packed.as_os_str()]);
    fails(&o, &["checksum"], "info on a corrupted container");
}

#[test]
fn zero_weight_views_are_refused_by_their_own_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = write_scene(dir.path(), 200);
    let output = dir.path().join("w.tq3s");
    let o = tq3d([
        OsStr::new("compress"),
        input.as_os_str(),
        OsStr::new("-o"),
        output.as_os_str(),
        OsStr::new("--sh-bits"),
        OsStr::new("2.5"),
        OsStr::new("--weight"),
        OsStr::new("coverage"),
        OsStr::new("--weight-views"),
        OsStr::new("0"),
    ]);
    fails(&o, &["--weight-views", "at least 1"], "--weight-views 0");
    assert!(
        !stderr(&o).contains("--views"),
        "names --views for --weight-views:\n{}",
        stderr(&o)
    );
    assert!(!output.exists());
}

/// A scene whose SH-rest comes from a palette of 150 vectors (as a SOG
/// file's does): compressed by default each distinct vector is coded once,
/// the report and `info` say so, `--dry-run` predicts it, and
/// `--no-dedup` codes every copy, in a larger file.
#[test]
fn palette_sh_is_deduplicated_unless_asked_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut scene = synth::generate(&synth::SynthConfig {
        count: 3000,
        sh_degree: 3,
        seed: 8,
    });
    let d = scene.rest_dim();
    for i in 150..3000 {
        let from = (i * 7919) % 150;
        let row = scene.sh_rest[from * d..(from + 1) * d].to_vec();
        scene.sh_rest[i * d..(i + 1) * d].copy_from_slice(&row);
    }
    // Distinct rows, counted here bit for bit (the generator's own rows
    // may repeat too).
    let distinct_rows = |v: &[f32]| {
        let mut rows: Vec<Vec<u32>> = v
            .chunks(d)
            .map(|r| r.iter().map(|x| x.to_bits()).collect())
            .collect();
        rows.sort();
        rows.dedup();
        rows.len()
    };
    let want = distinct_rows(&scene.sh_rest);
    assert!(want <= 150 && want > 100, "{want}");
    let input = dir.path().join("palette.ply");
    ply::write_ply(&input, &scene, PlyEncoding::BinaryLittleEndian).unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let o = common::cli::compress_json(&input, out, extra);
        assert_ok(&o, "compress");
        json(&o)
    };
    let on = dir.path().join("on.tq3s");
    let off = dir.path().join("off.tq3s");
    let r = run(&on, &[]);
    assert_eq!(r["sh_distinct_vectors"], want);
    let p = run(&on, &["--dry-run"]);
    let shix = p["prediction"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["tag"] == "SHIX");
    assert!(shix, "--dry-run predicts SHIX: {p}");
    let q = run(&off, &["--no-dedup"]);
    assert!(q["sh_distinct_vectors"].is_null());
    let (a, b) = (
        std::fs::metadata(&on).unwrap().len(),
        std::fs::metadata(&off).unwrap().len(),
    );
    assert!(a < b, "deduplicated {a} B, not smaller than {b} B");
    let info = |f: &Path| {
        let o = tq3d([OsStr::new("info"), f.as_os_str(), OsStr::new("--json")]);
        assert_ok(&o, "info");
        json(&o)
    };
    assert_eq!(info(&on)["version"], 3);
    assert_eq!(info(&on)["sh_deduplicated"], true);
    assert_eq!(info(&off)["version"], 2);
    assert_eq!(info(&off)["sh_deduplicated"], false);
    let o = tq3d([OsStr::new("info"), on.as_os_str()]);
    assert!(stdout(&o).contains("deduplicated"), "{}", stdout(&o));
    // In input order (the exact profile), Gaussians with the same input
    // vector decode to the same vector.
    let exact = dir.path().join("exact.tq3s");
    run(&exact, &["--profile", "exact"]);
    let back = dir.path().join("back.ply");
    let o = tq3d([
        OsStr::new("decompress"),
        exact.as_os_str(),
        OsStr::new("-o"),
        back.as_os_str(),
    ]);
    assert_ok(&o, "decompress");
    let s = ply::read_ply(&back).unwrap();
    assert_eq!(s.len(), 3000);
    for i in 150..3000 {
        let from = (i * 7919) % 150;
        assert_eq!(s.rest(i), s.rest(from), "Gaussian {i}, a copy of {from}");
    }
}

/// A scene as a reader of an already-quantised format leaves it: SH-rest on
/// 17 levels, scales on a 1/16 grid.
fn quantised_scene(n: usize) -> Scene {
    let mut scene = synth::generate(&synth::SynthConfig {
        count: n,
        sh_degree: 3,
        seed: 21,
    });
    for v in &mut scene.sh_rest {
        *v = (v.clamp(-0.5, 0.5) * 16.0).round() / 16.0;
    }
    for c in &mut scene.scales {
        *c = c.map(|v| (v * 16.0).round() / 16.0);
    }
    scene
}

#[test]
fn lossless_gives_the_input_back_byte_for_byte_and_targets_choose_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("q.ply");
    ply::write_ply(
        &input,
        &quantised_scene(4000),
        PlyEncoding::BinaryLittleEndian,
    )
    .unwrap();
    let out = dir.path().join("q.tq3s");
    let o = common::cli::compress_json(&input, &out, &["--lossless"]);
    assert_ok(&o, "compress --lossless");
    let r = json(&o);
    assert_eq!(r["sh_exact"], true);
    assert_eq!(r["profile"], "exact");
    let coding = |r: &serde_json::Value, tag: &str| {
        r["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["tag"] == tag)
            .map(|s| s["coding"].clone())
    };
    assert_eq!(coding(&r, "SHX"), Some("palette".into()));
    assert_eq!(coding(&r, "SHC"), None);
    let back = dir.path().join("back.ply");
    let o = tq3d([
        OsStr::new("decompress"),
        out.as_os_str(),
        OsStr::new("-o"),
        back.as_os_str(),
    ]);
    assert_ok(&o, "decompress");
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(&input).unwrap(),
        "the decoded PLY differs from the input"
    );
    let o = tq3d([OsStr::new("info"), out.as_os_str()]);
    assert_ok(&o, "info");
    assert!(stdout(&o).contains("bit-exact"), "{}", stdout(&o));
    // A width contradicts it.
    let o = tq3d([
        OsStr::new("compress"),
        input.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("--lossless"),
        OsStr::new("--sh-bits"),
        OsStr::new("2"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--lossless"), "{}", stderr(&o));
    // A budget the bit-exact file fits: chosen without a render.
    let exact_bytes = std::fs::metadata(&out).unwrap().len();
    let t = dir.path().join("t.tq3s");
    let budget = (exact_bytes + 10).to_string();
    let o = common::cli::compress_json(&input, &t, &["--size", &budget]);
    assert_ok(&o, "compress --size");
    let r = json(&o);
    assert_eq!(r["target"]["lossless"], true, "{r}");
    assert!(r["target"]["lossy_predicted_bytes"].is_null(), "{r}");
    assert!(r["seconds"]["choose"].is_null(), "no model: {r}");
    assert!(r["seconds"]["lossless"].is_number(), "{r}");
    assert_eq!(std::fs::metadata(&t).unwrap().len(), exact_bytes);
    // One it does not: the lossy choice.
    let budget = (exact_bytes * 2 / 3).to_string();
    let o = common::cli::compress_json(&input, &t, &["--size", &budget, "--no-verify"]);
    assert_ok(&o, "compress --size (lossy)");
    let r = json(&o);
    assert_eq!(r["target"]["lossless"], false, "{r}");
    assert_eq!(r["sh_exact"], false);
    assert!(std::fs::metadata(&t).unwrap().len() <= exact_bytes * 2 / 3);
}
