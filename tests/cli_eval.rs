//! `tq3d eval` and `tq3d plan` end to end on a generated scene at small
//! resolutions, as a separate process.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;

use common::cli::{stderr, stdout, tq3d};
use turboquant3d::render::{Camera, cpu, image};
use turboquant3d::splat::ply::{self, PlyEncoding};
use turboquant3d::splat::synth;

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    serde_json::from_slice(&o.stdout).expect("JSON")
}

fn scene_file(dir: &Path, n: usize) -> std::path::PathBuf {
    let scene = synth::generate(&synth::SynthConfig {
        count: n,
        sh_degree: 3,
        seed: 9,
    });
    let p = dir.join("s.ply");
    ply::write_ply(&p, &scene, PlyEncoding::BinaryLittleEndian).unwrap();
    p
}

#[test]
fn eval_reports_fidelity_and_the_prediction_bounds_the_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let input = scene_file(dir.path(), 8000);
    let args = [
        OsStr::new("eval"),
        input.as_os_str(),
        OsStr::new("--profile"),
        OsStr::new("exact"),
        OsStr::new("--sh-bits"),
        OsStr::new("1,3"),
        OsStr::new("--views"),
        OsStr::new("2"),
        OsStr::new("--resolution"),
        OsStr::new("64x48"),
        OsStr::new("--device"),
        OsStr::new("cpu"),
        OsStr::new("--json"),
    ];
    let v = json(&tq3d(args));
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    // More bits, more fidelity; sizes grow by N·45·2 bits.
    assert!(f(&rows[1], "psnr_mean") > f(&rows[0], "psnr_mean") + 5.0);
    assert!(f(&rows[1], "bytes") > f(&rows[0], "bytes"));
    for r in rows {
        assert!(f(r, "psnr_worst") <= f(r, "psnr_mean"));
        assert!(f(r, "ssim_mean") <= 1.0 && f(r, "ssim_mean") > 0.9);
        // Exact profile: only SH-rest changes, so the bound applies.
        assert!(
            f(r, "mse_measured") <= f(r, "mse_predicted_sh_bound"),
            "{r}"
        );
        // PSNR is the MSE's, independently: mean of −10·log10 per view ≥
        // −10·log10 of the mean MSE (Jensen).
        assert!(f(r, "psnr_mean") >= -10.0 * f(r, "mse_measured").log10() - 1e-9);
    }
    let est = f(&rows[1], "mse_predicted_sh_estimate") / f(&rows[1], "mse_measured");
    assert!(
        (0.5..=2.0).contains(&est),
        "estimate/measured at b = 3: {est}"
    );
}

#[test]
fn eval_with_cameras_and_ground_truth_reports_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let input = scene_file(dir.path(), 5000);
    let scene = ply::read_ply(&input).unwrap();
    // Two cameras in 3DGS cameras.json form (centre, camera-to-world rows).
    let views = turboquant3d::render::orbit(&scene.positions, 2, 48, 40);
    let cams: Vec<serde_json::Value> = views
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let c2w = c.rotation.transpose();
            let rows: Vec<Vec<f32>> = (0..3).map(|r| c2w.row(r).to_array().to_vec()).collect();
            serde_json::json!({"id": k, "img_name": format!("view{k}"), "width": c.width, "height": c.height,
                "position": c.position().to_array(), "rotation": rows, "fx": c.fx, "fy": c.fy})
        })
        .collect();
    let cam_path = dir.path().join("cameras.json");
    std::fs::write(&cam_path, serde_json::to_string(&cams).unwrap()).unwrap();
    // "Ground truth": the original's render plus a fixed pattern, so the
    // baseline error is known and non-zero.
    let gt_dir = dir.path().join("gt");
    std::fs::create_dir(&gt_dir).unwrap();
    let loaded: Vec<Camera> = turboquant3d::render::camera::load_cameras_json(&cam_path).unwrap();
    for (k, c) in loaded.iter().enumerate() {
        let mut img = cpu::render(&scene, c, [0.0; 3]);
        for (j, v) in img.data.iter_mut().enumerate() {
            *v = (*v + if j % 2 == 0 { 0.05 } else { 0.1 }).clamp(0.0, 1.0);
        }
        image::write_png(&gt_dir.join(format!("view{k}.png")), &img).unwrap();
    }
    let v = json(&tq3d([
        OsStr::new("eval"),
        input.as_os_str(),
        OsStr::new("--sh-bits"),
        OsStr::new("2"),
        OsStr::new("--cameras"),
        cam_path.as_os_str(),
        OsStr::new("--images"),
        gt_dir.as_os_str(),
        OsStr::new("--device"),
        OsStr::new("cpu"),
        OsStr::new("--json"),
    ]));
    assert_eq!(v["views"], 2);
    assert_eq!(v["resolution"], "48x40");
    let r = &v["rows"][0];
    let gt_orig = r["gt_psnr_original"].as_f64().unwrap();
    // Baseline about 10·log10(1/((0.05² + 0.1²)/2)) ≈ 22 dB (less clipping).
    assert!((20.0..26.0).contains(&gt_orig), "{gt_orig}");
    let measured = r["delta_psnr_measured"].as_f64().unwrap();
    let predicted = r["delta_psnr_from_fidelity"].as_f64().unwrap();
    assert!(measured.abs() < 1.0 && predicted > 0.0, "{r}");
    assert!(
        (measured - predicted).abs() < 0.05 + 0.5 * predicted,
        "measured {measured}, predicted {predicted}"
    );
}

#[test]
fn plan_names_quantisers_and_more_bits_for_tighter_targets() {
    let dir = tempfile::tempdir().unwrap();
    let input = scene_file(dir.path(), 6000);
    let run = |loss: &str| {
        json(&tq3d([
            OsStr::new("plan"),
            input.as_os_str(),
            OsStr::new("--views"),
            OsStr::new("2"),
            OsStr::new("--resolution"),
            OsStr::new("64x64"),
            OsStr::new("--target-psnr-loss"),
            OsStr::new(loss),
            OsStr::new("--json"),
        ]))
    };
    let loose = run("1.0");
    let tight = run("0.01");
    let sh = &loose["sh_rest"][0];
    assert_eq!(sh["dim"], 45);
    assert_eq!(sh["criterion_at_b3"]["verdict"], "rotation + Lloyd-Max");
    let pos = loose["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "position")
        .unwrap();
    assert_eq!(pos["verdict"], "fixed point");
    let b = |v: &serde_json::Value| v["sh_rest"][0]["bits_by_estimate"].as_u64().unwrap();
    assert!(
        b(&tight) > b(&loose),
        "tight {} vs loose {}",
        b(&tight),
        b(&loose)
    );
    // The per-b predictions fall with b by the codebook distortion ratio.
    let per = sh["per_bits"].as_array().unwrap();
    for w in per.windows(2) {
        let r = w[1]["mse_estimate"].as_f64().unwrap() / w[0]["mse_estimate"].as_f64().unwrap();
        let dr = w[1]["distortion"].as_f64().unwrap() / w[0]["distortion"].as_f64().unwrap();
        assert!((r - dr).abs() < 1e-9 * dr.max(1e-12) + 1e-12);
    }
    // Degrees 3, 2 and 1 are all planned.
    assert_eq!(loose["sh_rest"].as_array().unwrap().len(), 3);
}

#[test]
fn eval_and_plan_refuse_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let input = scene_file(dir.path(), 100);
    for args in [
        vec!["eval", input.to_str().unwrap(), "--resolution", "0x10"],
        vec![
            "eval",
            input.to_str().unwrap(),
            "--sh-bits",
            "9",
            "--device",
            "cpu",
        ],
        vec!["plan", input.to_str().unwrap(), "--views", "0"],
        vec![
            "eval",
            input.to_str().unwrap(),
            "--cameras",
            "/no/such/cameras.json",
            "--device",
            "cpu",
        ],
    ] {
        let o = tq3d(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{args:?}: {e}");
    }
    // A count of 0 views is refused by the flag that set it.
    let input = input.to_str().unwrap();
    let views = ["--views", "1", "--resolution", "16x16", "--device", "cpu"];
    for (args, flag) in [
        (vec!["plan", input, "--views", "0"], "--views"),
        (
            [
                &["eval", input, "--allocation", "allocated", "--weight"][..],
                &["coverage", "--weight-views", "0", "--sh-bits", "2"],
                &views,
            ]
            .concat(),
            "--weight-views",
        ),
    ] {
        let o = tq3d(&args);
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            e.contains(&format!("{flag} must be at least 1")),
            "{args:?}: {e}"
        );
    }
}
