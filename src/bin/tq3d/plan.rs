//! `tq3d plan`: before compressing anything, which quantiser each parameter
//! group should get (the dimension criterion) and which SH bit width meets a
//! PSNR-loss target (the norm-separation bound). docs/THEORY.md §10–11.

use std::path::PathBuf;

use serde_json::json;
use turboquant3d::render::predict;
use turboquant3d::splat::CompressOptions;
use turboquant3d::splat::ply::{self, PlyEncoding};
use turboquant3d::splat::rd::{Choice, Target};
use turboquant3d::splat::scene::{SH_C0, rest_per_channel};
use turboquant3d::theory::{Criterion, Verdict, range_factor};
use turboquant3d::{Codebook, Error};

use crate::common::{
    Resolution, baseline_psnr, f64_of, fmt_f64, gamma2, human, json_f64, load_views, print_json,
    psnr_loss, read_scene_to_render, report, resolution_of, sh_degree, spinner, target_psnr, views,
};
use crate::target::{self, ProbeArgs};

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The scene: a 3DGS .ply or a .splat.
    input: PathBuf,
    /// Allowed loss in PSNR against ground truth, in dB, in (0, 100].
    #[arg(long, default_value_t = 0.1, value_parser = psnr_loss, allow_negative_numbers = true)]
    target_psnr_loss: f64,
    /// The uncompressed scene's PSNR against ground truth, in dB, in
    /// (0, 200] (the loss depends on it: ΔPSNR = 10·log10(1 + MSE_q/MSE_base)).
    #[arg(long, default_value_t = 30.0, value_parser = baseline_psnr, allow_negative_numbers = true)]
    baseline_psnr: f64,
    /// Orbit views used to weigh each Gaussian by how much it shows, 1..=1024.
    #[arg(long, default_value_t = 4, value_parser = views)]
    views: usize,
    /// Resolution of those views, WxH.
    #[arg(long, default_value = "256x256")]
    resolution: Resolution,
    /// Use these cameras (3DGS cameras.json) instead of an orbit.
    #[arg(long)]
    cameras: Option<PathBuf>,
    /// Replace the scene's SH-rest with synthetic SH of this degree (for
    /// captures without SH, such as .splat files); reports say so.
    #[arg(long, value_name = "L", value_parser = sh_degree)]
    synth_sh: Option<u8>,
    /// The whole-scene split to show: every attribute group's bits and the
    /// SH setting of the smallest file predicted to render at P dB against
    /// the original (as `tq3d compress --target-psnr P` chooses), with the
    /// predicted curve of PSNR against size; 10..=100.
    #[arg(long, default_value_t = 45.0, value_parser = target_psnr)]
    target_psnr: f64,
    /// Skip the whole-scene split (it renders the scene 8 times).
    #[arg(long)]
    no_split: bool,
    #[command(flatten)]
    probe: ProbeArgs,
    /// Print one JSON object. An infinite value (the fidelity PSNR of a
    /// scene no view shows, whose predicted error is 0) is the string "inf"
    /// (or "-inf"): JSON has no infinity.
    #[arg(long)]
    json: bool,
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::TurboQuant => "rotation + Lloyd-Max",
        Verdict::FixedPoint => "fixed point",
        Verdict::Close => "close: measure",
    }
}

pub fn plan(a: PlanArgs) -> Result<(), Error> {
    let scene = read_scene_to_render(&a.input, a.synth_sh, a.json)?;
    let views = load_views(
        &scene,
        a.cameras.as_deref(),
        a.views,
        a.resolution,
        "--views",
    )?;
    let allowed = predict::allowed_mse(a.baseline_psnr, a.target_psnr_loss);

    // Visibility weights of γ² per SH degree, and of 1 (for DC).
    let degrees: Vec<u8> = (1..=scene.sh_degree).rev().collect();
    let g2: Vec<Vec<f32>> = degrees
        .iter()
        .map(|&l| gamma2(&scene, l))
        .collect::<Result<_, _>>()?;
    let ones = vec![1f32; scene.len()];
    let mut values: Vec<&[f32]> = g2.iter().map(|v| v.as_slice()).collect();
    values.push(&ones);
    let bar = spinner(
        format!(
            "weighing {} Gaussians over {} views",
            scene.len(),
            views.len()
        ),
        a.json,
    );
    let (sums, pixels) = predict::weight_sums_over_views(&scene, &views, &values);
    bar.finish_and_clear();

    // SH-rest, per degree (falling, so one copy truncates further each
    // time): criterion, predicted loss per b, the b that fits.
    let mut sh_rows = Vec::new();
    let mut truncated = scene.clone();
    for (k, &l) in degrees.iter().enumerate() {
        let d = 3 * rest_per_channel(l);
        truncated.truncate_sh(l);
        let kappa2 = range_factor(&truncated.sh_rest, d);
        let mut per_b = Vec::new();
        let (mut b_bound, mut b_estimate) = (None, None);
        for b in 1..=8u32 {
            let dist = Codebook::get(d, b)?.distortion();
            let p = predict::predict_mse(sums[k], pixels, dist);
            let base = 10f64.powf(-a.baseline_psnr / 10.0);
            if b_bound.is_none() && p.bound <= allowed {
                b_bound = Some(b);
            }
            if b_estimate.is_none() && p.estimate <= allowed {
                b_estimate = Some(b);
            }
            // A zero predicted error (no view shows the SH-rest) has an
            // infinite fidelity PSNR and no loss.
            per_b.push(json!({
                "bits": b, "bits_per_gaussian": d as u32 * b + 16, "distortion": dist,
                "mse_bound": json_f64(p.bound, "mse_bound")?, "mse_estimate": json_f64(p.estimate, "mse_estimate")?,
                "fidelity_psnr_bound": json_f64(-10.0 * p.bound.log10(), "fidelity_psnr_bound")?,
                "fidelity_psnr_estimate": json_f64(-10.0 * p.estimate.log10(), "fidelity_psnr_estimate")?,
                "psnr_loss_bound": json_f64(predict::psnr_loss(p.bound, base), "psnr_loss_bound")?,
                "psnr_loss_estimate": json_f64(predict::psnr_loss(p.estimate, base), "psnr_loss_estimate")?,
            }));
        }
        let crit = kappa2.map(|k2| Criterion::new(d, 3, 16, k2)).transpose()?;
        sh_rows.push(json!({
            "degree": l, "dim": d, "kappa2": kappa2,
            "criterion_at_b3": crit.as_ref().map(|c| json!({"turboquant": c.turboquant, "fixed_point": c.fixed_point,
                "threshold": c.threshold(), "verdict": verdict_name(c.verdict())})),
            "per_bits": per_b, "bits_by_bound": b_bound, "bits_by_estimate": b_estimate,
        }));
    }

    // The other groups: the criterion at b = 3 and, for DC colour, the
    // fixed-point bits that meet the target (colour error maps to the image
    // through the same weights).
    let dc: Vec<f32> = scene.dc.iter().flatten().copied().collect();
    let scales: Vec<f32> = scene.scales.iter().flatten().copied().collect();
    let positions: Vec<f32> = scene.positions.iter().flatten().copied().collect();
    let rotations: Vec<f32> = scene
        .rotations
        .iter()
        .flat_map(|q| {
            let n = q
                .iter()
                .map(|c| c * c)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            let s = if q[0] < 0.0 { -1.0 } else { 1.0 };
            q.map(|c| s * c / n)
        })
        .collect();
    let groups: [(&str, usize, u32, &[f32]); 4] = [
        ("DC colour", 3, 16, &dc),
        ("log-scales", 3, 16, &scales),
        (
            "rotation (unit quaternion, no scale needed)",
            4,
            0,
            &rotations,
        ),
        ("position", 3, 16, &positions),
    ];
    let mut group_rows = Vec::new();
    for (name, d, s, data) in groups {
        let kappa2 = range_factor(data, d);
        let crit = kappa2.map(|k2| Criterion::new(d, 3, s, k2)).transpose()?;
        group_rows.push(json!({"group": name, "dim": d, "scale_bits": s, "kappa2": kappa2,
            "turboquant": crit.as_ref().map(|c| c.turboquant), "fixed_point": crit.as_ref().map(|c| c.fixed_point),
            "verdict": crit.as_ref().map(|c| verdict_name(c.verdict())).unwrap_or("constant group")}));
    }
    group_rows.push(json!({"group": "opacity", "dim": 1, "verdict": "fixed point (d = 1: the scale would be the value itself)"}));
    // DC at B bits over each channel's range: error per Gaussian
    // SH_C0²·Σ_c Δ_c²/12, Δ_c = range_c/2^B.
    let mut dc_range2 = 0.0f64;
    for c in 0..3 {
        let (lo, hi) = scene
            .dc
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(v[c]), h.max(v[c])));
        dc_range2 += ((hi - lo) as f64).powi(2);
    }
    let w = sums[sums.len() - 1];
    let dc_bits = (4..=16u32).find(|&b| {
        let e = (SH_C0 as f64).powi(2) * dc_range2 / 12.0 / 4f64.powi(b as i32);
        w.0 * e / (3.0 * pixels as f64) <= allowed
    });

    // The whole-scene split (docs/THEORY.md §17).
    let split = if a.no_split {
        None
    } else {
        let model = target::build(&scene, &CompressOptions::default(), &a.probe, a.json)?;
        let ply = ply::ply_size(&scene, PlyEncoding::BinaryLittleEndian).unwrap_or(1) as f64;
        let row = |c: &Choice| -> Result<serde_json::Value, Error> {
            Ok(
                json!({"predicted_psnr": json_f64(c.psnr(), "predicted_psnr")?, "bytes": c.bytes,
                "ratio": ply / c.bytes as f64, "sh": model.sh[c.sh].setting.to_string(),
                "attr_bits": c.attr_bits.to_array()}),
            )
        };
        let front = model.front();
        let (lo, hi) = (
            front.first().map_or(0.0, |c| c.psnr()),
            front.last().map_or(0.0, |c| c.psnr()),
        );
        // Every 2.5 dB from the smallest file up to the best (at most 100 dB:
        // a lossless render has an infinite PSNR).
        let mut curve = Vec::new();
        let mut p = (lo.min(100.0) / 2.5).ceil() * 2.5;
        while p <= hi.min(100.0) {
            if let Some(c) = model.choose(Target::Psnr(p)) {
                curve.push(row(&c)?);
            }
            p += 2.5;
        }
        let chosen = model
            .choose(Target::Psnr(a.target_psnr))
            .map(|c| row(&c))
            .transpose()?;
        Some(json!({"target_psnr": a.target_psnr, "chosen": chosen,
            "best_predicted_psnr": json_f64(hi, "best_predicted_psnr")?, "curve": curve,
            "kappa_uniform": model.kappa[0], "kappa_allocated": model.kappa[1],
            "probe_renders": model.renders, "ply_bytes": ply}))
    };

    let report = json!({
        "input": a.input, "count": scene.len(), "sh_degree": scene.sh_degree, "sh_synthesised": a.synth_sh.is_some(),
        "views": views.len(), "resolution": resolution_of(&views),
        "target_psnr_loss": a.target_psnr_loss, "baseline_psnr": a.baseline_psnr, "allowed_mse": allowed,
        "sh_rest": sh_rows, "groups": group_rows, "dc_bits_global_range": dc_bits,
        "split": split,
    });
    if a.json {
        print_json(&report);
        return Ok(());
    }
    report!(
        "{}: {} Gaussians, SH degree {}{}; weights from {} views at {}",
        a.input.display(),
        scene.len(),
        scene.sh_degree,
        if a.synth_sh.is_some() {
            " (SH synthesised)"
        } else {
            ""
        },
        views.len(),
        report["resolution"].as_str().unwrap_or("-")
    );
    report!(
        "target: ΔPSNR ≤ {} dB at a {} dB baseline → added image MSE ≤ {:.3e} (fidelity PSNR ≥ {:.1} dB)",
        a.target_psnr_loss,
        a.baseline_psnr,
        allowed,
        -10.0 * allowed.log10()
    );
    for row in &sh_rows {
        report!(
            "\nSH-rest at degree {} (d = {}): κ² = {}; at b = 3 {}",
            row["degree"],
            row["dim"],
            row["kappa2"]
                .as_f64()
                .map_or("n/a".into(), |k| format!("{k:.1}")),
            row["criterion_at_b3"]
                .get("verdict")
                .map_or("n/a".to_string(), |v| format!(
                    "{} (TQ {} vs fixed point {} of the energy)",
                    v.as_str().unwrap_or("-"),
                    fmt_f64(&row["criterion_at_b3"]["turboquant"], |x| format!("{x:.4}")),
                    fmt_f64(&row["criterion_at_b3"]["fixed_point"], |x| format!(
                        "{x:.4}"
                    ))
                ))
        );
        report!("   b  bits/G  d·C(d,b)   MSE bound  MSE estimate  PSNR est.  ΔPSNR est. (bound)");
        for p in row["per_bits"].as_array().into_iter().flatten() {
            let x = |k: &str| f64_of(&p[k]).unwrap_or(f64::NAN);
            report!(
                "   {}  {:>6}  {:.6}  {:.3e}  {:.3e}     {:6.2} dB  {:.3} dB ({:.3})",
                p["bits"],
                p["bits_per_gaussian"].as_u64().unwrap_or(0),
                x("distortion"),
                x("mse_bound"),
                x("mse_estimate"),
                x("fidelity_psnr_estimate"),
                x("psnr_loss_estimate"),
                x("psnr_loss_bound")
            );
        }
        let b = |k: &str| {
            row[k]
                .as_u64()
                .map_or("none of 1..=8".to_string(), |b| format!("b = {b}"))
        };
        report!(
            "   → {} meets the target by the estimate, {} by the bound",
            b("bits_by_estimate"),
            b("bits_by_bound")
        );
    }
    report!("\nother groups (dimension criterion at b = 3):");
    for g in &group_rows {
        report!(
            "   {:<46} d = {}  κ² = {:<10} → {}",
            g["group"].as_str().unwrap_or("-"),
            g["dim"],
            fmt_f64(&g["kappa2"], |k| format!("{k:.2}")),
            g["verdict"].as_str().unwrap_or("-")
        );
    }
    match dc_bits {
        Some(b) => report!(
            "   DC colour: {b} bits per channel over the scene's range meet the target (per-chunk ranges need fewer)"
        ),
        None => report!("   DC colour: even 16 bits over the scene's range miss the target"),
    }
    report!(
        "   geometry (positions, scales, rotations, opacity) moves and reshapes splats: its image error is not linear, so eval measures it"
    );
    if let Some(s) = &split {
        let line = |r: &serde_json::Value| {
            let b = &r["attr_bits"];
            format!(
                "{:6.2} dB  {:>11}  {:6.2}x  SH {:<19} position {:>2} scale {:>2} rotation {:>2} opacity {:>2} dc {:>2}",
                f64_of(&r["predicted_psnr"]).unwrap_or(f64::NAN),
                human(r["bytes"].as_u64().unwrap_or(0)),
                r["ratio"].as_f64().unwrap_or(f64::NAN),
                r["sh"].as_str().unwrap_or("-"),
                b[0],
                b[1],
                b[2],
                b[3],
                b[4]
            )
        };
        report!(
            "\nwhole-scene split (compress --target-psnr; {} probe renders, κ uniform {:.2}, allocated {:.2}):",
            s["probe_renders"],
            s["kappa_uniform"].as_f64().unwrap_or(f64::NAN),
            s["kappa_allocated"].as_f64().unwrap_or(f64::NAN)
        );
        match s["chosen"].is_null() {
            false => report!("   at {} dB: {}", a.target_psnr, line(&s["chosen"])),
            true => report!(
                "   {} dB is not reachable; the best predicted is {:.2} dB",
                a.target_psnr,
                f64_of(&s["best_predicted_psnr"]).unwrap_or(f64::NAN)
            ),
        }
        report!("   predicted curve, the smallest file at each PSNR:");
        for r in s["curve"].as_array().into_iter().flatten() {
            report!("   {}", line(r));
        }
    }
    Ok(())
}
