//! Per-Gaussian SH widths from the command line: `--sh-bits` with a
//! fractional average, `--weight`, and `--target-psnr-loss`.

use std::path::PathBuf;

use clap::ValueEnum;
use turboquant3d::Error;
use turboquant3d::codec::allocate;
use turboquant3d::render::predict;
use turboquant3d::splat::Scene;
use turboquant3d::splat::importance::{Weight, importance};
use turboquant3d::splat::scene::{rest_dim, survives_prune};

use crate::common::{
    Resolution, baseline_psnr, is_whole_bits, load_views, psnr_loss, spinner, weight_views,
};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum WeightArg {
    /// Every Gaussian at the same width (--sh-bits must be whole).
    Uniform,
    /// γ² alone.
    Energy,
    /// γ²·opacity.
    Opacity,
    /// γ²·opacity·(product of the two largest axes).
    Footprint,
    /// γ²·(screen coverage over the views): the norm-separation bound itself.
    Coverage,
}

impl From<WeightArg> for Weight {
    fn from(w: WeightArg) -> Weight {
        match w {
            WeightArg::Uniform | WeightArg::Energy => Weight::Energy,
            WeightArg::Opacity => Weight::Opacity,
            WeightArg::Footprint => Weight::OpacityFootprint,
            WeightArg::Coverage => Weight::Coverage,
        }
    }
}

/// The default weight for per-Gaussian widths (measured: README, "Bit
/// allocation").
pub const DEFAULT_WEIGHT: WeightArg = WeightArg::Footprint;

#[derive(clap::Args, Clone, Debug)]
pub struct AllocArgs {
    /// How per-Gaussian SH widths are chosen: by γ² times a weight of how
    /// much the Gaussian shows (default footprint; coverage renders views
    /// and measures best on those views, but starves Gaussians they do not
    /// see), or uniform widths.
    #[arg(long, value_enum)]
    pub weight: Option<WeightArg>,
    /// Choose the SH budget so that the predicted loss against ground truth
    /// is at most this many dB, in (0, 100] (coverage weights; overrides
    /// --sh-bits).
    #[arg(long, value_name = "DB", value_parser = psnr_loss, allow_negative_numbers = true)]
    pub target_psnr_loss: Option<f64>,
    /// Baseline PSNR against ground truth for --target-psnr-loss, in dB, in
    /// (0, 200].
    #[arg(long, default_value_t = 30.0, value_parser = baseline_psnr, allow_negative_numbers = true)]
    pub baseline_psnr: f64,
    /// Orbit views for the coverage weight, 1..=1024.
    #[arg(long, default_value_t = 8, value_parser = weight_views)]
    pub weight_views: usize,
    /// Their resolution, WxH.
    #[arg(long, default_value = "256x256")]
    pub weight_resolution: Resolution,
    /// Cameras (3DGS cameras.json) for the coverage weight instead of an orbit.
    #[arg(long)]
    pub weight_cameras: Option<PathBuf>,
}

/// Σ over the `--weight-*` views of each Gaussian's blending weight, and
/// their pixel count.
pub fn coverage(scene: &Scene, a: &AllocArgs) -> Result<(Vec<f64>, u64), Error> {
    let views = load_views(
        scene,
        a.weight_cameras.as_deref(),
        a.weight_views,
        a.weight_resolution,
        "--weight-views",
    )?;
    let bar = spinner(
        format!("measuring coverage over {} views", views.len()),
        false,
    );
    let out = predict::coverage_over_views(scene, &views);
    bar.finish_and_clear();
    Ok(out)
}

/// Per-Gaussian SH widths and how they were chosen.
pub struct AllocatedWidths {
    pub widths: Vec<u8>,
    pub describe: String,
    pub average_bits: f64,
}

/// Per-Gaussian widths, or `None` for uniform `avg_bits`.
pub fn widths(
    scene: &Scene,
    degree: u8,
    prune: Option<f32>,
    avg_bits: f64,
    a: &AllocArgs,
) -> Result<Option<AllocatedWidths>, Error> {
    let d = rest_dim(degree.min(scene.sh_degree));
    if d == 0 {
        return Ok(None);
    }
    let kept: Vec<bool> = scene
        .opacity
        .iter()
        .map(|&o| survives_prune(o, prune))
        .collect();
    let n_kept = kept.iter().filter(|&&k| k).count().max(1) as f64;
    let average = |w: &[u8]| {
        w.iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(&b, _)| b as f64)
            .sum::<f64>()
            / n_kept
    };
    if let Some(loss) = a.target_psnr_loss {
        let (cov, pixels) = coverage(scene, a)?;
        let values = importance(scene, degree, Weight::Coverage, Some(&cov))?;
        let values: Vec<f64> = values
            .iter()
            .zip(&kept)
            .map(|(&v, &k)| if k { v } else { 0.0 })
            .collect();
        // The bound is Σ c_i·γ_i²·D(b_i) / (4π·3P).
        let target = predict::allowed_mse(a.baseline_psnr, loss)
            * 4.0
            * std::f64::consts::PI
            * 3.0
            * pixels as f64;
        let al = allocate::for_objective(&values, d, target)?;
        let avg = average(&al.widths);
        return Ok(Some(AllocatedWidths {
            describe: format!(
                "allocated for ΔPSNR ≤ {loss} dB at a {} dB baseline (coverage weight, predicted bound): b̄ = {avg:.3}",
                a.baseline_psnr
            ),
            average_bits: avg,
            widths: al.widths,
        }));
    }
    let weight = a.weight.unwrap_or(DEFAULT_WEIGHT);
    if weight == WeightArg::Uniform {
        if !is_whole_bits(avg_bits) {
            return Err(Error::InvalidArgument(format!(
                "--weight uniform needs a whole --sh-bits in 1..=8, not {avg_bits}"
            )));
        }
        return Ok(None);
    }
    let cov = if weight == WeightArg::Coverage {
        Some(coverage(scene, a)?.0)
    } else {
        None
    };
    let values = importance(scene, degree, weight.into(), cov.as_deref())?;
    let al = allocate::for_average_bits(&values, &kept, d, avg_bits)?;
    let avg = average(&al.widths);
    Ok(Some(AllocatedWidths {
        describe: format!(
            "allocated, weight {}: b̄ = {avg:.3} ({} bits for {avg_bits} asked, scales included)",
            Weight::from(weight).name(),
            al.bits
        ),
        average_bits: avg,
        widths: al.widths,
    }))
}
