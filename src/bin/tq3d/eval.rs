//! `tq3d eval`: compress at several settings, render the original and the
//! compressed scene from the same views, and report size, fidelity (PSNR,
//! SSIM), the image MSE the norm-separation bound predicts next to the
//! measured one, and encode time; with ground-truth images, the PSNR loss.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use turboquant3d::gpu::{AdapterPolicy, Engine, GpuContext};
use turboquant3d::render::gpu::GpuRenderer;
use turboquant3d::render::{Camera, Image, cpu, image, metrics, predict};
use turboquant3d::splat::Scene;
use turboquant3d::splat::attributes::AttrBits;
use turboquant3d::splat::container::Profile;
use turboquant3d::splat::ply::{self, PlyEncoding};
use turboquant3d::splat::{self, CompressOptions};
use turboquant3d::{Codebook, Error};

use crate::common::alloc::{self, AllocArgs};
use crate::common::{
    AttrBitsArg, DeviceArg, ProfileArg, Resolution, attr_bits_help, average_bits, f64_of, fmt_f64,
    gamma2, human, is_average_bits, is_whole_bits, json_f64, load_views, print_json, prune_tau,
    read_scene_to_render, report, resolution_of, sh_degree, spinner, views,
};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The scene, in any format `tq3d convert` reads.
    input: PathBuf,
    /// SH-rest bits to evaluate, comma-separated: widths 1..=8, or averages
    /// (1.5) for per-Gaussian widths.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4", value_parser = average_bits, allow_negative_numbers = true)]
    sh_bits: Vec<f64>,
    /// Uniform widths, per-Gaussian (allocated) widths, or both, at each
    /// --sh-bits value (uniform rows need whole numbers).
    #[arg(long, value_enum, default_value_t = AllocationArg::Uniform)]
    allocation: AllocationArg,
    #[command(flatten)]
    alloc: AllocArgs,
    /// Profile of the other attributes.
    #[arg(long, value_enum, default_value_t = ProfileArg::Compact)]
    profile: ProfileArg,
    /// Drop Gaussians whose sigmoid(opacity) is below τ (0 ≤ τ < 1).
    #[arg(long, value_name = "TAU", value_parser = prune_tau, allow_negative_numbers = true)]
    prune_opacity: Option<f32>,
    #[arg(long, help = attr_bits_help())]
    attr_bits: Option<AttrBitsArg>,
    /// Orbit views around the scene, 1..=1024 (ignored with --cameras).
    #[arg(long, default_value_t = 8, value_parser = views)]
    views: usize,
    /// Orbit resolution, WxH (cameras.json views keep their own).
    #[arg(long, default_value = "256x256")]
    resolution: Resolution,
    /// 3DGS cameras.json to render from.
    #[arg(long)]
    cameras: Option<PathBuf>,
    /// Ground-truth images named as the cameras' img_name (PNG), for the
    /// PSNR against ground truth and the loss ΔPSNR. Needs --cameras.
    #[arg(long, requires = "cameras")]
    images: Option<PathBuf>,
    /// Also split the error by attribute: decompress with one attribute
    /// group exact at a time (compact profile).
    #[arg(long)]
    split: bool,
    /// Write the renders (PNG) here.
    #[arg(long)]
    save_renders: Option<PathBuf>,
    /// Where to render and encode: auto (a hardware GPU, else the CPU
    /// reference rasteriser), gpu (any adapter), cpu.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Replace the scene's SH-rest with synthetic SH of this degree (for
    /// captures without SH, such as .splat files); reports say so.
    #[arg(long, value_name = "L", value_parser = sh_degree)]
    synth_sh: Option<u8>,
    /// Print one JSON object. An infinite PSNR (a render identical to the
    /// original's, or to the ground truth) is the string "inf": JSON has no
    /// infinity. Text reports print it as "inf".
    #[arg(long)]
    json: bool,
}

/// Which widths eval compares (`--allocation`).
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum AllocationArg {
    Uniform,
    Allocated,
    Both,
}

/// Renders with the wgpu renderer or the CPU reference.
pub enum Renderer {
    Cpu,
    Gpu(Box<GpuRenderer>),
}

impl Renderer {
    pub fn new(device: DeviceArg) -> Result<Renderer, Error> {
        let ctx = match device {
            DeviceArg::Cpu => return Ok(Renderer::Cpu),
            DeviceArg::Gpu => GpuContext::request(AdapterPolicy::AllowSoftware)?,
            DeviceArg::Auto => match GpuContext::request(AdapterPolicy::HardwareOnly) {
                Ok(c) => c,
                Err(e) => {
                    log::info!("{e}; rendering with the CPU reference");
                    return Ok(Renderer::Cpu);
                }
            },
        };
        Ok(Renderer::Gpu(Box::new(GpuRenderer::new(&ctx)?)))
    }

    pub fn name(&self) -> String {
        match self {
            Renderer::Cpu => "CPU reference rasteriser".into(),
            Renderer::Gpu(r) => format!("wgpu renderer on {}", r.context().describe()),
        }
    }

    pub fn render_all(&self, scene: &Scene, views: &[Camera]) -> Result<Vec<Image>, Error> {
        let bg = [0.0; 3];
        match self {
            Renderer::Cpu => Ok(views.iter().map(|c| cpu::render(scene, c, bg)).collect()),
            Renderer::Gpu(r) => {
                let up = r.upload(scene)?;
                views.iter().map(|c| r.render(&up, c, bg)).collect()
            }
        }
    }
}

/// Mean and worst (min) over views (0 for no views; there is always one).
fn mean_min(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    (
        v.iter().sum::<f64>() / v.len() as f64,
        v.iter().copied().fold(f64::INFINITY, f64::min),
    )
}

/// The mean of `v` (0 for none).
fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// PSNR(base) − PSNR(q) for MSEs against ground truth: 0 when they are
/// equal (both lossless included, where the PSNRs are both +∞), ±∞ when
/// only one is 0.
fn psnr_drop(base: f64, q: f64) -> f64 {
    if base == q {
        0.0
    } else {
        metrics::psnr_from_mse(base) - metrics::psnr_from_mse(q)
    }
}

fn mse_all(a: &[Image], b: &[Image]) -> Result<Vec<f64>, Error> {
    a.iter().zip(b).map(|(x, y)| metrics::mse(x, y)).collect()
}

pub fn eval(a: EvalArgs) -> Result<(), Error> {
    let quiet = a.json;
    let input_bytes = std::fs::metadata(&a.input)
        .map_err(|e| Error::Io {
            path: a.input.clone(),
            source: e,
        })?
        .len();
    let scene = read_scene_to_render(&a.input, a.synth_sh, quiet)?;
    let is_ply = turboquant3d::splat::formats::detect(&a.input)?
        == turboquant3d::splat::formats::SceneFormat::Ply;
    let ply_bytes = if is_ply {
        input_bytes
    } else {
        ply::ply_size(&scene, PlyEncoding::BinaryLittleEndian).unwrap_or(input_bytes)
    };
    for &b in &a.sh_bits {
        if !is_average_bits(b) || (a.allocation == AllocationArg::Uniform && !is_whole_bits(b)) {
            return Err(Error::InvalidArgument(format!(
                "--sh-bits {b}: uniform rows need a width in 1..=8; averages (0..=8) need --allocation allocated or both"
            )));
        }
    }
    let views = load_views(
        &scene,
        a.cameras.as_deref(),
        a.views,
        a.resolution,
        "--views",
    )?;
    let gt: Option<Vec<Image>> = match &a.images {
        None => None,
        Some(dir) => Some(
            views
                .iter()
                .map(|c| {
                    let mut p = dir.join(&c.name);
                    if p.extension().is_none() {
                        p.set_extension("png");
                    }
                    let img = image::read_png(&p)?;
                    if (img.width, img.height) != (c.width, c.height) {
                        return Err(Error::InvalidArgument(format!(
                            "{}: {}×{} but camera {} is {}×{}",
                            p.display(),
                            img.width,
                            img.height,
                            c.name,
                            c.width,
                            c.height
                        )));
                    }
                    Ok(img)
                })
                .collect::<Result<_, Error>>()?,
        ),
    };
    let renderer = Renderer::new(a.device)?;
    let engine = Engine::new(a.device.into())?;

    let bar = spinner(
        format!("rendering {} views of the original", views.len()),
        quiet,
    );
    let originals = renderer.render_all(&scene, &views)?;
    // Visibility weights of γ², for the predicted MSE of each b.
    let g2 = gamma2(&scene, scene.sh_degree)?;
    let (sums, pixels) = predict::weight_sums_over_views(&scene, &views, &[&g2]);
    bar.finish_and_clear();
    let base_mse: Option<Vec<f64>> = gt.as_ref().map(|g| mse_all(&originals, g)).transpose()?;
    if let Some(dir) = &a.save_renders {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        for (c, img) in views.iter().zip(&originals) {
            image::write_png(&dir.join(format!("{}_original.png", c.name)), img)?;
        }
    }

    // The settings: (label, average bits, options).
    let mut settings = Vec::new();
    for &b in &a.sh_bits {
        let base = CompressOptions {
            profile: a.profile.into(),
            sh_bits: (b.round() as u32).clamp(1, 8),
            prune_opacity: a.prune_opacity,
            attr_bits: a.attr_bits.map_or(AttrBits::default(), |x| x.0),
            ..Default::default()
        };
        if a.allocation != AllocationArg::Allocated && is_whole_bits(b) {
            settings.push((format!("uniform b = {b}"), b, base.clone()));
        }
        if a.allocation != AllocationArg::Uniform && scene.sh_degree > 0 {
            let mut args = a.alloc.clone();
            let weight = *args.weight.get_or_insert(alloc::DEFAULT_WEIGHT);
            let w = alloc::widths(&scene, scene.sh_degree, a.prune_opacity, b, &args)?.ok_or_else(
                || Error::InvalidArgument("allocated rows need a weight other than uniform".into()),
            )?;
            settings.push((
                format!("allocated b̄ = {b} ({weight:?})").to_lowercase(),
                b,
                CompressOptions {
                    sh_widths: Some(w.widths),
                    ..base
                },
            ));
        }
    }
    let mut rows = Vec::new();
    for (label, b, opts) in settings {
        let bar = spinner(format!("{label}: compressing"), quiet);
        let t = Instant::now();
        let c = splat::compress_on(&scene, &opts, &engine)?;
        let bytes = c.to_bytes()?;
        let encode_s = t.elapsed().as_secs_f64();
        let back = splat::decompress(&bytes, Path::new("<memory>"))?;
        bar.set_message(format!("{label}: rendering"));
        let renders = renderer.render_all(&back, &views)?;
        let mse = mse_all(&originals, &renders)?;
        let psnr: Vec<f64> = mse.iter().map(|&m| metrics::psnr_from_mse(m)).collect();
        let ssim: Vec<f64> = originals
            .iter()
            .zip(&renders)
            .map(|(x, y)| metrics::ssim(x, y))
            .collect::<Result<_, _>>()?;
        let d = back.rest_dim();
        let predicted = match &opts.sh_widths {
            _ if d == 0 => None,
            None => Some(predict::predict_mse(
                sums[0],
                pixels,
                Codebook::get(d, opts.sh_bits)?.distortion(),
            )),
            // Per-Gaussian widths: the weight sums of γ_i²·d·C(d, b_i).
            Some(w) => {
                let dist = turboquant3d::codec::allocate::distortions(d)?;
                let v: Vec<f32> = g2
                    .iter()
                    .zip(w)
                    .map(|(&g, &b)| {
                        (g as f64 * dist.get(b as usize).copied().unwrap_or(1.0)) as f32
                    })
                    .collect();
                let (s, px) = predict::weight_sums_over_views(&scene, &views, &[&v]);
                Some(predict::predict_mse(s[0], px, 1.0))
            }
        };
        let measured_mse = mean(&mse);
        let (psnr_mean, psnr_worst) = mean_min(&psnr);
        let (ssim_mean, ssim_worst) = mean_min(&ssim);
        let mut row = json!({
            "setting": label, "sh_bits": b, "bytes": bytes.len(), "ratio": ply_bytes as f64 / bytes.len() as f64,
            "count": c.header.count, "psnr_mean": json_f64(psnr_mean, "psnr_mean")?, "psnr_worst": json_f64(psnr_worst, "psnr_worst")?,
            "ssim_mean": json_f64(ssim_mean, "ssim_mean")?, "ssim_worst": json_f64(ssim_worst, "ssim_worst")?,
            "mse_measured": json_f64(measured_mse, "mse_measured")?,
            "mse_predicted_sh_estimate": predicted.map(|p| json_f64(p.estimate, "mse_predicted_sh_estimate")).transpose()?,
            "mse_predicted_sh_bound": predicted.map(|p| json_f64(p.bound, "mse_predicted_sh_bound")).transpose()?,
            "encode_seconds": encode_s, "sh_device": c.sh_run.ran.to_string(),
        });
        if let (Some(g), Some(base)) = (&gt, &base_mse) {
            let q = mse_all(&renders, g)?;
            let (bm, qm) = (mean(base), mean(&q));
            row["gt_psnr_original"] = json_f64(metrics::psnr_from_mse(bm), "gt_psnr_original")?;
            row["gt_psnr_compressed"] = json_f64(metrics::psnr_from_mse(qm), "gt_psnr_compressed")?;
            row["delta_psnr_measured"] = json_f64(psnr_drop(bm, qm), "delta_psnr_measured")?;
            // No added error is no loss, even on a lossless baseline.
            let from_fidelity = if measured_mse == 0.0 {
                0.0
            } else {
                predict::psnr_loss(measured_mse, bm)
            };
            row["delta_psnr_from_fidelity"] = json_f64(from_fidelity, "delta_psnr_from_fidelity")?;
        }
        if a.split && c.header.profile == Profile::Compact {
            bar.set_message(format!("{label}: splitting the error by attribute"));
            let order = splat::storage_order(&scene, &opts);
            let orig = turboquant3d::splat::rd::in_storage_order(&scene, &order, back.sh_degree);
            let mut split = serde_json::Map::new();
            type Restore = fn(&mut Scene, &Scene);
            let groups: [(&str, Restore); 6] = [
                ("sh_rest", |s, o| s.sh_rest = o.sh_rest.clone()),
                ("dc", |s, o| s.dc = o.dc.clone()),
                ("opacity", |s, o| s.opacity = o.opacity.clone()),
                ("scales", |s, o| s.scales = o.scales.clone()),
                ("rotations", |s, o| s.rotations = o.rotations.clone()),
                ("positions", |s, o| s.positions = o.positions.clone()),
            ];
            // Against the original rendered in storage order (pruning
            // removes Gaussians; the split isolates the attributes).
            let reference = renderer.render_all(&orig, &views)?;
            let total = mean(&mse_all(&reference, &renders)?);
            split.insert("all_quantised".into(), json!(total));
            for (name, restore) in groups {
                let mut hybrid = back.clone();
                hybrid.normals = None;
                restore(&mut hybrid, &orig);
                let r = renderer.render_all(&hybrid, &views)?;
                let m = mean(&mse_all(&reference, &r)?);
                split.insert(format!("{name}_exact"), json!(m));
            }
            row["split_mse"] = serde_json::Value::Object(split);
        }
        if let Some(dir) = &a.save_renders {
            for (cam, img) in views.iter().zip(&renders) {
                let tag: String = label
                    .chars()
                    .map(|ch| {
                        if ch.is_ascii_alphanumeric() || ch == '.' {
                            ch
                        } else {
                            '_'
                        }
                    })
                    .collect();
                image::write_png(&dir.join(format!("{}_{tag}.png", cam.name)), img)?;
            }
        }
        bar.finish_and_clear();
        rows.push(row);
    }

    let report = json!({
        "input": a.input, "count": scene.len(), "sh_degree": scene.sh_degree, "sh_synthesised": a.synth_sh.is_some(),
        "ply_bytes": ply_bytes, "ply_bytes_is_equivalent": !is_ply,
        "profile": Profile::from(a.profile).name(), "prune_opacity": a.prune_opacity,
        "views": views.len(), "resolution": resolution_of(&views),
        "renderer": renderer.name(), "rows": rows,
    });
    if a.json {
        print_json(&report);
        return Ok(());
    }
    report!(
        "{}: {} Gaussians, SH degree {}{}; {} {}; {} views at {}; {}",
        a.input.display(),
        scene.len(),
        scene.sh_degree,
        if a.synth_sh.is_some() {
            " (SH synthesised)"
        } else {
            ""
        },
        if is_ply { "PLY" } else { "PLY-equivalent" },
        human(ply_bytes),
        views.len(),
        report["resolution"].as_str().unwrap_or("-"),
        renderer.name()
    );
    report!(
        "profile {}{}; fidelity = compressed render against the original's render",
        Profile::from(a.profile).name(),
        a.prune_opacity
            .map(|t| format!(", pruned at τ = {t}"))
            .unwrap_or_default()
    );
    report!(
        " setting                          size   ratio  PSNR mean/worst   SSIM mean/worst   MSE measured  SH predicted (est. / bound)  encode"
    );
    for r in &rows {
        let x = |k: &str| f64_of(&r[k]).unwrap_or(0.0);
        report!(
            " {:<28} {:>9}  {:5.2}x  {:6.2} / {:6.2}   {:.4} / {:.4}    {:.3e}     {} / {}   {:.2} s",
            r["setting"].as_str().unwrap_or("-"),
            human(r["bytes"].as_u64().unwrap_or(0)),
            x("ratio"),
            x("psnr_mean"),
            x("psnr_worst"),
            x("ssim_mean"),
            x("ssim_worst"),
            x("mse_measured"),
            fmt_f64(&r["mse_predicted_sh_estimate"], |v| format!("{v:.3e}")),
            fmt_f64(&r["mse_predicted_sh_bound"], |v| format!("{v:.3e}")),
            x("encode_seconds")
        );
        if r.get("gt_psnr_original").is_some() {
            report!(
                "      against ground truth: original {:.2} dB, compressed {:.2} dB, ΔPSNR {:.3} dB (from the fidelity MSE: {:.3} dB)",
                x("gt_psnr_original"),
                x("gt_psnr_compressed"),
                x("delta_psnr_measured"),
                x("delta_psnr_from_fidelity")
            );
        }
        if let Some(s) = r.get("split_mse") {
            let total = f64_of(&s["all_quantised"]).unwrap_or(0.0);
            if total > 0.0 {
                let parts: Vec<String> = [
                    "sh_rest",
                    "dc",
                    "opacity",
                    "scales",
                    "rotations",
                    "positions",
                ]
                .iter()
                .map(|g| {
                    let m = f64_of(&s[format!("{g}_exact")]).unwrap_or(total);
                    format!("{g} {:.0} %", 100.0 * (total - m).max(0.0) / total)
                })
                .collect();
                report!(
                    "      share of the MSE {total:.3e} removed by keeping one group exact: {}",
                    parts.join(", ")
                );
            } else {
                report!("      no error to split: the compressed render equals the original's");
            }
        }
    }
    Ok(())
}
