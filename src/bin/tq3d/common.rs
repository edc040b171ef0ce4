//! What the subcommands share: the device, profile, scale, attribute-bits
//! and resolution arguments, the parsers and checks of numeric arguments,
//! reading a scene, the views to render, progress spinners and byte counts.
//! Subcommand modules import this module (and [`alloc`]), never each other.

pub mod alloc;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use turboquant3d::gpu::DeviceChoice;
use turboquant3d::render::camera::load_cameras_json;
use turboquant3d::render::{Camera, orbit};
use turboquant3d::splat::attributes::AttrBits;
use turboquant3d::splat::container::Profile;
use turboquant3d::splat::importance::{Weight, importance};
use turboquant3d::splat::{Scene, antimatter, ply};
use turboquant3d::{Error, ScaleMode};

/// The `--device` choice.
#[derive(Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Gpu,
    Cpu,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> DeviceChoice {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Gpu => DeviceChoice::Gpu,
            DeviceArg::Cpu => DeviceChoice::Cpu,
        }
    }
}

/// The `--profile` of the attributes other than SH-rest.
#[derive(Clone, Copy, ValueEnum)]
pub enum ProfileArg {
    /// Quantised positions (12 bits in Morton-ordered chunks of 256),
    /// log-scales, opacity and DC colour (6 bits), smallest-three quaternions
    /// (8 bits), then zstd (see --attr-bits). Gaussians are stored in Morton
    /// order.
    Compact,
    /// Every attribute but SH-rest stays bit-exact f32, in the input order.
    Exact,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Profile {
        match p {
            ProfileArg::Compact => Profile::Compact,
            ProfileArg::Exact => Profile::Exact,
        }
    }
}

/// The `--scale` of a TurboQuant vector (`encode`, `compress`).
#[derive(Clone, Copy, ValueEnum)]
pub enum ScaleArg {
    Ls,
    Norm,
}

impl From<ScaleArg> for ScaleMode {
    fn from(s: ScaleArg) -> ScaleMode {
        match s {
            ScaleArg::Ls => ScaleMode::LeastSquares,
            ScaleArg::Norm => ScaleMode::Norm,
        }
    }
}

/// Compact-profile attribute bits: `position=16,scale=8,rotation=10,opacity=8,dc=8`
/// (any subset; the rest keep their defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrBitsArg(pub AttrBits);

impl FromStr for AttrBitsArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut b = AttrBits::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not name=bits"))?;
            let v: u8 = v
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: bits must be an integer"))?;
            match k.trim() {
                "position" | "pos" => b.position = v,
                "scale" => b.scale = v,
                "rotation" | "rot" => b.rotation = v,
                "opacity" => b.opacity = v,
                "dc" => b.dc = v,
                other => {
                    return Err(format!(
                        "unknown attribute {other:?} (position, scale, rotation, opacity, dc)"
                    ));
                }
            }
        }
        b.validate()?;
        Ok(AttrBitsArg(b))
    }
}

/// An image size, `WxH`, each side in 1..=16384.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution(pub u32, pub u32);

impl FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (w, h) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("{s:?} is not WxH (e.g. 256x256)"))?;
        let p = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|&v| (1..=16384).contains(&v))
        };
        match (p(w), p(h)) {
            (Some(w), Some(h)) => Ok(Resolution(w, h)),
            _ => Err(format!(
                "{s:?}: width and height must be integers in 1..=16384"
            )),
        }
    }
}

/// Clap value parser: a finite, positive float.
pub fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} must be positive"))
    }
}

/// Clap value parser: an SH degree, 0..=3.
pub fn sh_degree(s: &str) -> Result<u8, String> {
    match s.trim().parse::<u8>() {
        Ok(l) if l <= 3 => Ok(l),
        _ => Err(format!("{s}: the SH degree must be in 0..=3")),
    }
}

/// Whether `b` is an average SH-rest width, 0..=8 (fractions allowed).
pub fn is_average_bits(b: f64) -> bool {
    (0.0..=8.0).contains(&b)
}

/// Whether `b` is a whole SH-rest width, 1..=8.
pub fn is_whole_bits(b: f64) -> bool {
    b.fract() == 0.0 && (1.0..=8.0).contains(&b)
}

/// A spinner with `msg` on standard error, or a hidden bar when `quiet`.
pub fn spinner(msg: String, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap());
    bar.set_message(msg);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Bytes for people.
pub fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// Reads a .ply or a .splat, by extension.
pub fn read_scene(path: &Path, quiet: bool) -> Result<Scene, Error> {
    let bar = spinner(format!("reading {}", path.display()), quiet);
    let scene = if antimatter::is_splat_path(path) {
        antimatter::read_splat(path)
    } else {
        ply::read_ply(path)
    };
    bar.finish_and_clear();
    scene
}

/// [`read_scene`], with its SH-rest replaced by synthetic SH of degree
/// `synth_sh` when given; refuses a scene without Gaussians or with a
/// non-finite value.
pub fn read_scene_to_render(
    path: &Path,
    synth_sh: Option<u8>,
    quiet: bool,
) -> Result<Scene, Error> {
    let mut scene = read_scene(path, quiet)?;
    if let Some(l) = synth_sh {
        turboquant3d::splat::synth::synthesize_sh(&mut scene, l, 7);
    }
    if scene.is_empty() {
        return Err(Error::EmptyInput {
            what: format!("{} has no Gaussians", path.display()),
        });
    }
    turboquant3d::splat::check_finite(&scene)?;
    Ok(scene)
}

/// γ_i² of each Gaussian's SH-rest truncated to degree `l` (the library's
/// energy importance), as the f32 values [`predict::weight_sums`] weighs.
///
/// [`predict::weight_sums`]: turboquant3d::render::predict::weight_sums
pub fn gamma2(scene: &Scene, l: u8) -> Result<Vec<f32>, Error> {
    Ok(importance(scene, l, Weight::Energy, None)?
        .into_iter()
        .map(|g| g as f32)
        .collect())
}

/// The views: the cameras of a 3DGS cameras.json (each at its own
/// resolution), or else `n` orbit views around the scene at `res`. `flag`
/// names the option that set `n`, for the error when it is 0.
pub fn load_views(
    scene: &Scene,
    cameras: Option<&Path>,
    n: usize,
    res: Resolution,
    flag: &str,
) -> Result<Vec<Camera>, Error> {
    match cameras {
        Some(p) => load_cameras_json(p),
        None => {
            if n == 0 {
                return Err(Error::InvalidArgument(format!("{flag} must be at least 1")));
            }
            Ok(orbit(&scene.positions, n, res.0, res.1))
        }
    }
}
