//! Target modes of `tq3d compress` (`--target-psnr`, `--ratio`, `--size`):
//! every attribute group's bits and the SH widths chosen per scene by the
//! rate–distortion model of `splat::rd`, checked by rendering (unless `--no-verify`).

use std::path::PathBuf;

use serde_json::json;
use turboquant3d::Error;
use turboquant3d::render::{Camera, Image, metrics};
use turboquant3d::splat::attributes::AttrBits;
use turboquant3d::splat::rd::{self, Choice, Model, Target};
use turboquant3d::splat::{CompressOptions, Scene};

use crate::common::{
    Resolution, human, load_views, probe_views, ratio_arg, size_arg, spinner, target_psnr,
};
use crate::eval::Renderer;

#[derive(clap::Args)]
pub struct TargetArgs {
    /// The smallest file whose predicted render PSNR against the original
    /// is at least P dB (10..=100), over the probe views. Every attribute
    /// group's bits and the SH widths are chosen for this scene
    /// (docs/THEORY.md §17); --attr-bits pins a group.
    #[arg(long, value_name = "P", value_parser = target_psnr, conflicts_with_all = ["sh_bits", "ratio", "size", "target_psnr_loss"])]
    pub target_psnr: Option<f64>,
    /// The best predicted quality in the bytes of the 3DGS PLY divided by R
    /// (R > 1).
    #[arg(long, value_name = "R", value_parser = ratio_arg, conflicts_with_all = ["sh_bits", "size", "target_psnr_loss"])]
    pub ratio: Option<f64>,
    /// The best predicted quality in at most this many bytes (a whole
    /// number; k, M, G suffixes for 10³, 10⁶, 10⁹).
    #[arg(long, value_name = "BYTES", value_parser = size_arg, conflicts_with_all = ["sh_bits", "target_psnr_loss"])]
    pub size: Option<u64>,
    /// Skip the check: by default the choice is compressed and rendered
    /// from the verification views (8 orbit views at 256x256, as `tq3d
    /// eval` by default, or --probe-cameras) and the measured PSNR
    /// reported; with --target-psnr a miss corrects the model by what was
    /// measured and chooses again, up to 4 times, so that the target is met
    /// on those views.
    #[arg(long)]
    pub no_verify: bool,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// Where the rate–distortion model looks from.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Orbit views the rate–distortion model renders its probes from
    /// (CPU reference rasteriser, so the choice is the same on every
    /// machine), 1..=1024.
    /// Two at eval's resolution predict eval's PSNR better than four at
    /// half of it, for the same work.
    #[arg(long, default_value_t = 2, value_parser = probe_views)]
    pub probe_views: usize,
    /// Their resolution, WxH.
    #[arg(long, default_value = "256x256")]
    pub probe_resolution: Resolution,
    /// 3DGS cameras.json: probe (and verify) from these views instead of
    /// orbits.
    #[arg(long = "probe-cameras")]
    pub cameras: Option<PathBuf>,
}

/// The model of `scene` from the probe views, rendered on the CPU.
pub fn build(
    scene: &Scene,
    base: &CompressOptions,
    p: &ProbeArgs,
    quiet: bool,
) -> Result<Model, Error> {
    let renderer = Renderer::Cpu;
    let render = render_fn(&renderer);
    let views = load_views(
        scene,
        p.cameras.as_deref(),
        p.probe_views,
        p.probe_resolution,
        "--probe-views",
    )?;
    let bar = spinner("rendering the probe views".into(), quiet);
    let reference = renderer.render_all(scene, &views)?;
    let model = rd::build_model(scene, base, &views, &reference, &render, &|m| {
        bar.set_message(m.to_string())
    });
    bar.finish_and_clear();
    model
}

impl TargetArgs {
    /// Whether a target mode was asked for.
    pub fn active(&self) -> bool {
        self.target_psnr.is_some() || self.ratio.is_some() || self.size.is_some()
    }

    /// The byte budget of `--ratio` or `--size` (`None` for `--target-psnr`).
    pub fn budget(&self, ply_bytes: u64) -> Option<u64> {
        match (self.target_psnr, self.ratio, self.size) {
            (Some(_), _, _) => None,
            (_, Some(r), _) => Some((ply_bytes as f64 / r).floor() as u64),
            (_, _, n) => n,
        }
    }

    fn label(&self, ply_bytes: u64) -> String {
        match (self.target_psnr, self.ratio, self.size) {
            (Some(p), _, _) => format!("{p} dB"),
            (_, Some(r), _) => format!("{r}x ({})", human((ply_bytes as f64 / r) as u64)),
            (_, _, n) => human(n.unwrap_or(0)),
        }
    }
}

/// What the target mode chose and saw.
pub struct TargetReport {
    pub setting: String,
    pub attr_bits: AttrBits,
    pub predicted_bytes: u64,
    pub predicted_psnr: f64,
    pub measured_psnr: Option<f64>,
    pub rounds: usize,
    pub renders: usize,
    pub target: String,
    /// The bit-exact file was chosen: its size and why.
    pub lossless: Option<(u64, Lossless)>,
}

/// Why a target mode chose the bit-exact file.
#[derive(Clone, Copy)]
pub enum Lossless {
    /// It fits `--size` or `--ratio`.
    Fits,
    /// It is no larger than the lossy choice's predicted bytes.
    Smaller(u64),
    /// No lossy setting is predicted to reach `--target-psnr`.
    Unreachable,
}

impl TargetReport {
    pub fn json(&self) -> serde_json::Value {
        if let Some((bytes, why)) = self.lossless {
            let lossy = match why {
                Lossless::Smaller(b) => Some(b),
                _ => None,
            };
            return json!({"target": self.target, "lossless": true, "bytes": bytes,
                "lossy_predicted_bytes": lossy, "measured_psnr": null});
        }
        json!({"target": self.target, "lossless": false, "sh": self.setting, "attr_bits": self.attr_bits.to_array(),
            "predicted_bytes": self.predicted_bytes, "predicted_psnr": self.predicted_psnr,
            "measured_psnr": self.measured_psnr, "verify_rounds": self.rounds, "model_renders": self.renders})
    }

    /// The report of a bit-exact file chosen for `t`: `lossy`, the size of
    /// the lossy file it undercut (for `--target-psnr`).
    pub fn lossless(t: &TargetArgs, ply_bytes: u64, bytes: u64, why: Lossless) -> Self {
        TargetReport {
            setting: "bit-exact".into(),
            attr_bits: AttrBits::default(),
            predicted_bytes: bytes,
            predicted_psnr: f64::INFINITY,
            measured_psnr: None,
            rounds: 0,
            renders: 0,
            target: t.label(ply_bytes),
            lossless: Some((bytes, why)),
        }
    }

    pub fn lines(&self) -> Vec<String> {
        if let Some((bytes, why)) = self.lossless {
            return vec![format!(
                "  target {}: lossless. The input's values lie on few levels (it was quantised before, as .spz and .sog are), and the bit-exact file, {}, {}; it decodes to the input exactly",
                self.target,
                human(bytes),
                match why {
                    Lossless::Smaller(l) => format!(
                        "is no larger than the {} the lossy choice needs (predicted)",
                        human(l)
                    ),
                    Lossless::Fits => "fits the budget".into(),
                    Lossless::Unreachable => "reaches what no lossy setting is predicted to".into(),
                }
            )];
        }
        let b = self.attr_bits;
        let mut v = vec![format!(
            "  target {}: SH {}, attributes position {} scale {} rotation {} opacity {} dc {} bits",
            self.target, self.setting, b.position, b.scale, b.rotation, b.opacity, b.dc
        )];
        v.push(format!(
            "  predicted {:.2} dB at {}{} ({} model renders)",
            self.predicted_psnr,
            human(self.predicted_bytes),
            match self.measured_psnr {
                Some(m) => format!(
                    "; measured {m:.2} dB on the verification views ({} rounds)",
                    self.rounds
                ),
                None => String::new(),
            },
            self.renders
        ));
        v
    }
}

fn render_fn(
    r: &Renderer,
) -> impl Fn(&Scene, &[Camera]) -> turboquant3d::Result<Vec<Image>> + Sync + '_ {
    move |s: &Scene, v: &[Camera]| r.render_all(s, v)
}

/// Builds the model, chooses, and (unless --no-verify) checks by rendering.
/// With `rival`, the bytes of a file the caller has already (the bit-exact
/// one), a first choice at least that large is returned unverified: the
/// check only ever moves a choice to more bytes, so the rival wins anyway.
pub fn choose(
    scene: &Scene,
    base: &CompressOptions,
    pinned: [Option<u8>; 5],
    t: &TargetArgs,
    ply_bytes: u64,
    rival: Option<u64>,
    quiet: bool,
) -> Result<(CompressOptions, TargetReport), Error> {
    let renderer = Renderer::Cpu;
    let render = render_fn(&renderer);
    let mut model = build(scene, base, &t.probe, quiet)?;
    model.pinned = pinned;
    let target = match (t.target_psnr, t.budget(ply_bytes)) {
        (Some(p), _) => Target::Psnr(p),
        (_, Some(n)) => Target::Bytes(n),
        _ => return Err(Error::InvalidArgument("no target given".into())),
    };
    let label = t.label(ply_bytes);
    let pick = |m: &Model| -> Result<Choice, Error> {
        m.choose(target).ok_or_else(|| unreachable(m, target))
    };
    let mut choice = pick(&model)?;
    let verify = !t.no_verify && rival.is_none_or(|r| choice.bytes < r);
    let bar = spinner("verifying".into(), quiet || !verify);
    let mut measured = None;
    let mut rounds = 0;
    if verify {
        let vviews = load_views(
            scene,
            t.probe.cameras.as_deref(),
            8,
            Resolution(256, 256),
            "--views",
        )?;
        bar.set_message("rendering the verification views".to_string());
        let vref = renderer.render_all(scene, &vviews)?;
        loop {
            rounds += 1;
            bar.set_message(format!("verifying (round {rounds})"));
            let (_, mse) = rd::verify(scene, &model, &choice, &vviews, &vref, &render)?;
            measured = Some(metrics::psnr_from_mse(mse));
            let Target::Psnr(p) = target else { break };
            if metrics::psnr_from_mse(mse) >= p || rounds >= 4 || choice.mse <= 0.0 {
                break;
            }
            // Trust the render: scale the model by what it missed, and
            // never settle for the same choice twice.
            let before = choice.bytes;
            model.scale_errors(mse / choice.mse);
            choice = pick(&model)?;
            if choice.bytes <= before {
                match model.front().into_iter().find(|c| c.bytes > before) {
                    Some(c) => choice = c,
                    None => break,
                }
            }
        }
    }
    bar.finish_and_clear();
    let report = TargetReport {
        setting: model.sh[choice.sh].setting.to_string(),
        attr_bits: choice.attr_bits,
        predicted_bytes: choice.bytes,
        predicted_psnr: choice.psnr(),
        measured_psnr: measured,
        rounds,
        renders: model.renders,
        target: label,
        lossless: None,
    };
    Ok((model.options(&choice), report))
}

fn unreachable(m: &Model, target: Target) -> Error {
    let front = m.front();
    match target {
        Target::Psnr(p) => {
            let best = front.last().map_or(0.0, |c| c.psnr());
            Error::InvalidArgument(format!(
                "--target-psnr {p}: no setting is predicted to reach it; the best predicted is {best:.2} dB (at {})",
                front.last().map_or_else(String::new, |c| human(c.bytes))
            ))
        }
        Target::Bytes(n) => Error::InvalidArgument(format!(
            "a budget of {} is below the smallest setting, {} (every group at its narrowest, the least SH)",
            human(n),
            front.first().map_or_else(String::new, |c| human(c.bytes))
        )),
    }
}
