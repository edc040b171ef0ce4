//! `tq3d convert` and `tq3d info` on scene formats, as a separate process:
//! each conversion checked against an independent computation of what it
//! must give (the counts a prune keeps, the bands a truncation keeps, the
//! exact attributes of lossless formats), and its bad arguments.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::cli::{assert_ok, stderr, stdout, tq3d};
use turboquant3d::splat::ply::{self, PlyEncoding};
use turboquant3d::splat::scene::sigmoid;
use turboquant3d::splat::{Scene, rest_per_channel, synth};

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(o)))
}

fn scene_file(dir: &Path, n: usize) -> (PathBuf, Scene) {
    let scene = synth::generate(&synth::SynthConfig {
        count: n,
        sh_degree: 3,
        seed: 11,
    });
    let path = dir.join("in.ply");
    ply::write_ply(&path, &scene, PlyEncoding::BinaryLittleEndian).unwrap();
    (path, scene)
}

#[test]
fn ply_to_ply_is_exact_and_its_report_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let (input, scene) = scene_file(dir.path(), 3000);
    let out = dir.path().join("out.ply");
    let o = tq3d([
        "convert".as_ref(),
        input.as_os_str(),
        out.as_os_str(),
        "--report".as_ref(),
        "--views".as_ref(),
        "2".as_ref(),
        "--resolution".as_ref(),
        "64x64".as_ref(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--json".as_ref(),
    ]);
    assert_ok(&o, "convert ply → ply");
    let back = ply::read_ply(&out).unwrap();
    assert_eq!(back.positions, scene.positions);
    assert_eq!(back.sh_rest, scene.sh_rest);
    let v = json(&o);
    assert_eq!(v["count"], 3000);
    assert_eq!(
        v["psnr_db"], "inf",
        "an exact copy renders identically: {v}"
    );
    assert_eq!(
        v["output_bytes"].as_u64(),
        Some(std::fs::metadata(&out).unwrap().len())
    );
}

#[test]
fn sh_degree_and_prune_select_what_an_independent_count_says() {
    let dir = tempfile::tempdir().unwrap();
    let (input, scene) = scene_file(dir.path(), 4000);
    let out = dir.path().join("out.ply");
    let tau = 0.3f32;
    let o = tq3d([
        "convert".as_ref(),
        input.as_os_str(),
        out.as_os_str(),
        "--sh-degree".as_ref(),
        "1".as_ref(),
        "--prune-opacity".as_ref(),
        "0.3".as_ref(),
    ]);
    assert_ok(&o, "convert with selection");
    let back = ply::read_ply(&out).unwrap();
    let kept: Vec<usize> = (0..scene.len())
        .filter(|&i| sigmoid(scene.opacity[i]) >= tau)
        .collect();
    assert!(kept.len() < scene.len() && !kept.is_empty());
    assert_eq!(back.len(), kept.len());
    assert_eq!(back.sh_degree, 1);
    let (k3, k1) = (rest_per_channel(3), rest_per_channel(1));
    for (j, &i) in kept.iter().enumerate().step_by(97) {
        assert_eq!(back.positions[j], scene.positions[i]);
        for c in 0..3 {
            assert_eq!(
                back.rest(j)[c * k1..(c + 1) * k1],
                scene.rest(i)[c * k3..c * k3 + k1],
                "Gaussian {i}, channel {c}: the degree-1 band of each channel"
            );
        }
    }
}

#[test]
fn a_tq3s_converts_to_ply_as_decompress_does() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = scene_file(dir.path(), 2000);
    let packed = dir.path().join("s.tq3s");
    assert_ok(
        &tq3d(["convert".as_ref(), input.as_os_str(), packed.as_os_str()]),
        "convert → tq3s",
    );
    let (a, b) = (dir.path().join("a.ply"), dir.path().join("b.ply"));
    assert_ok(
        &tq3d(["convert".as_ref(), packed.as_os_str(), a.as_os_str()]),
        "convert tq3s → ply",
    );
    assert_ok(
        &tq3d([
            "decompress".as_ref(),
            packed.as_os_str(),
            "-o".as_ref(),
            b.as_os_str(),
        ]),
        "decompress",
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn bad_outputs_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = scene_file(dir.path(), 100);
    for (out, needle) in [
        (dir.path().join("x.foo"), "writable"),
        (input.clone(), "input"),
    ] {
        let o = tq3d(["convert".as_ref(), input.as_os_str(), out.as_os_str()]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{}: succeeded", out.display());
        assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
        assert!(e.contains(needle), "no {needle:?} in {e}");
    }
    assert_eq!(ply::read_ply(&input).unwrap().len(), 100, "input intact");
}

#[test]
fn info_on_a_ply_gives_its_count_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let (input, scene) = scene_file(dir.path(), 500);
    let o = tq3d(["info".as_ref(), input.as_os_str(), "--json".as_ref()]);
    assert_ok(&o, "info ply");
    let v = json(&o);
    assert_eq!(v["count"], 500);
    assert_eq!(v["sh_degree"], 3);
    let xmax = scene
        .positions
        .iter()
        .map(|p| p[0])
        .fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(v["ranges"]["position"][0][1].as_f64(), Some(xmax as f64));
}

/// The Gaussian count an spz header declares, read from the raw bytes
/// (gunzip for v2/v3, the plain NGSP header for v4), not by the reader
/// under test.
fn spz_header_count(path: &Path) -> u32 {
    use std::io::Read;
    let raw = std::fs::read(path).unwrap();
    let mut head = [0u8; 12];
    if raw.starts_with(b"NGSP") {
        head.copy_from_slice(&raw[..12]);
    } else {
        flate2::read::GzDecoder::new(&raw[..])
            .read_exact(&mut head)
            .unwrap();
    }
    assert_eq!(&head[..4], b"NGSP");
    u32::from_le_bytes(head[8..12].try_into().unwrap())
}

fn sigmoid64(x: f32) -> f64 {
    1.0 / (1.0 + (-f64::from(x)).exp())
}

/// The end-to-end path on the real spz file: `tq3d compress
/// scene.spz -o scene.tq3s`, then `tq3d convert scene.tq3s scene.glb`. The
/// `.glb` must hold what `tq3d decompress` gives for the same `.tq3s`:
/// exact where the draft stores the same quantity (positions, colour, SH),
/// within the stated conversion bound where it does not (normalised
/// rotation, scale through exp/ln, opacity through the sigmoid). `tq3d
/// eval` takes the same spz as input.
#[test]
fn a_real_spz_compresses_and_its_tq3s_converts_to_glb() {
    let Some(spz) = common::data::shared_data("fourth_st.spz") else {
        return;
    };
    let n = spz_header_count(&spz) as usize;
    let dir = tempfile::tempdir().unwrap();
    let (packed, glb, ply_out) = (
        dir.path().join("s.tq3s"),
        dir.path().join("s.glb"),
        dir.path().join("s.ply"),
    );
    let o = tq3d([
        "compress".as_ref(),
        spz.as_os_str(),
        "-o".as_ref(),
        packed.as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
    ]);
    assert_ok(&o, "compress scene.spz");
    assert!(
        stdout(&o).contains(&format!("{n} Gaussians")),
        "{}",
        stdout(&o)
    );
    assert_ok(
        &tq3d(["convert".as_ref(), packed.as_os_str(), glb.as_os_str()]),
        "convert scene.tq3s scene.glb",
    );
    assert_ok(
        &tq3d([
            "decompress".as_ref(),
            packed.as_os_str(),
            "-o".as_ref(),
            ply_out.as_os_str(),
        ]),
        "decompress",
    );
    let want = ply::read_ply(&ply_out).unwrap();
    let got = turboquant3d::splat::gltf::read_glb(&glb).unwrap();
    assert_eq!(want.len(), n, "the spz header's count");
    assert_eq!(got.len(), n);
    assert_eq!(got.sh_degree, 3);
    assert_eq!(got.positions, want.positions);
    assert_eq!(got.dc, want.dc);
    assert_eq!(got.sh_rest, want.sh_rest);
    for i in 0..n {
        let q = want.rotations[i];
        let norm = q.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        for (k, &qk) in q.iter().enumerate() {
            let d = (f64::from(got.rotations[i][k]) - f64::from(qk) / norm).abs();
            assert!(d <= 2.5e-7, "rotation {i}/{k} differs by {d}");
        }
        for k in 0..3 {
            let s = want.scales[i][k];
            let bound = 2f32.powi(-24) + 2.0 * (s.abs() * f32::EPSILON);
            let e = (got.scales[i][k] - s).abs();
            assert!(e <= bound, "log scale {i}/{k}: {s} → {} ", got.scales[i][k]);
        }
        let d = (sigmoid64(got.opacity[i]) - sigmoid64(want.opacity[i])).abs();
        assert!(d <= 2f64.powi(-24), "opacity {i}: sigmoid differs by {d}");
    }

    // eval reads the spz too: one small view, a finite PSNR.
    let o = tq3d([
        "eval".as_ref(),
        spz.as_os_str(),
        "--sh-bits".as_ref(),
        "3".as_ref(),
        "--views".as_ref(),
        "1".as_ref(),
        "--resolution".as_ref(),
        "48x48".as_ref(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--json".as_ref(),
    ]);
    assert_ok(&o, "eval scene.spz");
    let v = json(&o);
    assert_eq!(v["count"].as_u64(), Some(n as u64), "{v}");
    let psnr = v["rows"][0]["psnr_mean"].as_f64();
    assert!(psnr.is_some_and(|p| p.is_finite() && p > 20.0), "{v}");
}

/// `--against`: the output is rendered against that scene, not the input.
/// An exact copy scores ∞ against its input and a finite PSNR against a
/// scene that differs from it (the same scene with its opacities halved,
/// written independently); `--against` without `--report` is refused.
#[test]
fn report_against_renders_the_output_against_another_scene() {
    let dir = tempfile::tempdir().unwrap();
    let (input, mut other) = scene_file(dir.path(), 1500);
    for o in &mut other.opacity {
        *o -= 1.0;
    }
    let reference = dir.path().join("other.ply");
    ply::write_ply(&reference, &other, PlyEncoding::BinaryLittleEndian).unwrap();
    let out = dir.path().join("out.ply");
    let run = |extra: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "convert".as_ref(),
            input.as_os_str(),
            out.as_os_str(),
            "--views".as_ref(),
            "1".as_ref(),
            "--resolution".as_ref(),
            "48x48".as_ref(),
            "--device".as_ref(),
            "cpu".as_ref(),
            "--json".as_ref(),
        ];
        args.extend_from_slice(extra);
        tq3d(args)
    };
    let o = run(&["--report".as_ref()]);
    assert_ok(&o, "report against the input");
    assert_eq!(json(&o)["psnr_db"], "inf");
    let o = run(&[
        "--report".as_ref(),
        "--against".as_ref(),
        reference.as_os_str(),
    ]);
    assert_ok(&o, "report against another scene");
    let v = json(&o);
    let p = v["psnr_db"].as_f64().unwrap_or(f64::NAN);
    assert!(p.is_finite() && p > 5.0, "{v}");
    assert_eq!(v["against"].as_str(), reference.to_str());
    let o = run(&["--against".as_ref(), reference.as_os_str()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--report"), "{}", stderr(&o));
    // The scene scored against is an input: it is never the output.
    let o = tq3d([
        "convert".as_ref(),
        input.as_os_str(),
        reference.as_os_str(),
        "--report".as_ref(),
        "--against".as_ref(),
        reference.as_os_str(),
    ]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert_eq!(
        ply::read_ply(&reference).unwrap().opacity,
        other.opacity,
        "the reference is untouched"
    );
}
