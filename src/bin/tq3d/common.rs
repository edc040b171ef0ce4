//! What the subcommands share: the device, profile, scale, attribute-bits
//! and resolution arguments, the parsers and checks of numeric arguments,
//! reading a scene, the views to render, progress spinners and byte counts.
//! Subcommand modules import this module (and [`alloc`]), never each other.

pub mod alloc;

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use turboquant3d::gpu::DeviceChoice;
use turboquant3d::render::camera::load_cameras_json;
use turboquant3d::render::{Camera, orbit};
use turboquant3d::splat::Scene;
use turboquant3d::splat::attributes::AttrBits;
use turboquant3d::splat::container::Profile;
use turboquant3d::splat::importance::{Weight, importance};
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
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
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

/// Compact-profile attribute bits, `name=bits,...` (any subset; the rest
/// keep the defaults of [`AttrBits::default`], which [`attr_bits_help`]
/// prints), and which groups were named (position, scale, rotation,
/// opacity, dc): a target mode keeps those fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrBitsArg(pub AttrBits, pub [bool; 5]);

impl FromStr for AttrBitsArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut b = AttrBits::default();
        let mut given = [false; 5];
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not name=bits"))?;
            let v: u8 = v
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: bits must be an integer"))?;
            match k.trim() {
                "position" | "pos" => (b.position, given[0]) = (v, true),
                "scale" => (b.scale, given[1]) = (v, true),
                "rotation" | "rot" => (b.rotation, given[2]) = (v, true),
                "opacity" => (b.opacity, given[3]) = (v, true),
                "dc" => (b.dc, given[4]) = (v, true),
                other => {
                    return Err(format!(
                        "unknown attribute {other:?} (position, scale, rotation, opacity, dc)"
                    ));
                }
            }
        }
        b.validate()?;
        Ok(AttrBitsArg(b, given))
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

/// The `--attr-bits` help, with the library's real defaults.
pub fn attr_bits_help() -> String {
    let d = AttrBits::default();
    format!(
        "Compact-profile attribute bits, e.g. `position=14,scale=7` (defaults: position {}, scale {}, rotation {}, opacity {}, dc {})",
        d.position, d.scale, d.rotation, d.opacity, d.dc
    )
}

// Clap value parsers: every numeric argument of every subcommand goes
// through one of these, so NaN, infinities and out-of-range values are
// refused before any work starts, with the valid range in the message.

/// A finite float in `lo..=hi` (`lo` excluded when `open_lo`), or why not.
fn float_in(s: &str, lo: f64, hi: f64, open_lo: bool) -> Result<f64, String> {
    let range = if open_lo {
        format!("({lo}, {hi}]")
    } else {
        format!("[{lo}, {hi}]")
    };
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number; expected one in {range}"))?;
    let above_lo = if open_lo { v > lo } else { v >= lo };
    if !v.is_finite() {
        Err(format!("{s:?} is not finite; expected a number in {range}"))
    } else if above_lo && v <= hi {
        Ok(v)
    } else {
        Err(format!("{v} is outside {range}"))
    }
}

/// An integer in `lo..=hi`, or why not.
pub fn int_in(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected an integer in {lo}..={hi}")),
    }
}

/// Clap value parser of `kv --bits`, `--k-bits`, `--v-bits`: bits per
/// element, every stored byte counted, in (0, 32].
pub fn kv_bits(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, 32.0, true).map_err(|_| {
        format!(
            "bits {s}: bits per element (every stored byte counted) must be a number in (0, 32]"
        )
    })
}

/// Clap value parser of `kv --heads`: 1..=65536.
pub fn kv_heads(s: &str) -> Result<usize, String> {
    int_in(s, 1, 65536)
        .map(|v| v as usize)
        .map_err(|_| format!("--heads {s}: must be an integer in 1..=65536"))
}

/// Clap value parser of `kv` query counts (`--eval-queries`,
/// `--weight-queries`): 1..=4096.
pub fn kv_queries(s: &str) -> Result<usize, String> {
    int_in(s, 1, 4096)
        .map(|v| v as usize)
        .map_err(|_| format!("queries {s}: must be an integer in 1..=4096"))
}

/// Clap value parser of `kv eval --topk`: 1..=1024.
pub fn kv_topk(s: &str) -> Result<usize, String> {
    int_in(s, 1, 1024)
        .map(|v| v as usize)
        .map_err(|_| format!("--topk {s}: must be an integer in 1..=1024"))
}

/// Clap value parser of `kv --outliers` and `--sinks`: 0..=65536 (the
/// codec checks outliers against the vector's width).
pub fn kv_count(s: &str) -> Result<usize, String> {
    int_in(s, 0, 65536)
        .map(|v| v as usize)
        .map_err(|_| format!("{s}: must be an integer in 0..=65536"))
}

/// Clap value parser of `kv basis --split`: 1..=254 leading directions.
pub fn kv_split(s: &str) -> Result<usize, String> {
    int_in(s, 1, 254)
        .map(|v| v as usize)
        .map_err(|_| format!("--split {s}: must be an integer in 1..=254"))
}

/// The largest PSNR loss a target may allow, in dB.
pub const MAX_PSNR_LOSS: f64 = 100.0;
/// The largest baseline PSNR, in dB (an MSE of 1e-20).
pub const MAX_BASELINE_PSNR: f64 = 200.0;

/// Clap value parser: a PSNR loss in dB, in (0, 100].
pub fn psnr_loss(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, MAX_PSNR_LOSS, true)
}

/// Clap value parser of `--target-psnr`: dB against the original's render,
/// in [10, 100].
pub fn target_psnr(s: &str) -> Result<f64, String> {
    float_in(s, 10.0, 100.0, false).map_err(|e| format!("--target-psnr: {e}"))
}

/// Clap value parser of `--ratio`: a compression ratio in (1, 10000].
pub fn ratio_arg(s: &str) -> Result<f64, String> {
    float_in(s, 1.0, 10_000.0, true).map_err(|e| format!("--ratio: {e}"))
}

/// Clap value parser of `--size`: bytes, a whole number with an optional
/// k, M or G suffix (10³, 10⁶, 10⁹), in 1..=2^50.
pub fn size_arg(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'M')) => (&t[..i], 1e6),
        Some((i, 'G')) => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("--size {s:?}: expected bytes, e.g. 2500000 or 2.5M"))?;
    let b = v * mult;
    if !b.is_finite() || b < 1.0 || b > (1u64 << 50) as f64 {
        return Err(format!("--size {s:?}: expected 1 byte to 2^50 bytes"));
    }
    Ok(b.floor() as u64)
}

/// Clap value parser of `--probe-views`: 1..=1024.
pub fn probe_views(s: &str) -> Result<usize, String> {
    view_count("--probe-views", s)
}

/// Clap value parser: a baseline PSNR in dB, in (0, 200] (images in [0, 1]
/// have an MSE of at most 1, so a PSNR of at least 0).
pub fn baseline_psnr(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, MAX_BASELINE_PSNR, true)
}

/// Clap value parser: an average SH-rest width, in [0, 8] (fractions allowed).
pub fn average_bits(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, 8.0, false)
        .map_err(|_| format!("b = {s}: SH-rest bits (an average) must be a number in [0, 8]"))
}

/// Clap value parser: a whole bit width per coordinate, 1..=8.
pub fn whole_bits(s: &str) -> Result<u32, String> {
    int_in(s, 1, 8)
        .map(|v| v as u32)
        .map_err(|_| format!("b = {s}: bits per coordinate must be an integer in 1..=8"))
}

/// The most bits per feature a grid budget may ask for.
pub const MAX_GRID_BITS: f64 = 32.0;

/// Clap value parser of `grid --bits`: average bits per feature, all
/// bytes counted, in (0, 32].
pub fn grid_bits(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, MAX_GRID_BITS, true).map_err(|e| {
        format!("--bits {s}: {e}; bits per feature (every stored byte counted) must be in (0, {MAX_GRID_BITS}]")
    })
}

/// Budgets, comma-separated, each as [`grid_bits`].
#[derive(Clone, Debug)]
pub struct BitsList(pub Vec<f64>);

/// Clap value parser of `grid eval --bits`: a comma-separated list.
pub fn grid_bits_list(s: &str) -> Result<BitsList, String> {
    let v = s
        .split(',')
        .map(|p| grid_bits(p.trim()))
        .collect::<Result<Vec<f64>, String>>()?;
    if v.is_empty() || v.len() > 32 {
        return Err(format!("{s:?}: give 1 to 32 budgets"));
    }
    Ok(BitsList(v))
}

/// Entries per level, comma-separated.
#[derive(Clone, Debug)]
pub struct LevelSizes(pub Vec<usize>);

/// Clap value parser of `--levels`: 1..=64 positive integers.
pub fn level_sizes(s: &str) -> Result<LevelSizes, String> {
    let v = s
        .split(',')
        .map(|p| int_in(p, 1, 1 << 40).map(|x| x as usize))
        .collect::<Result<Vec<usize>, String>>()
        .map_err(|e| format!("--levels {s:?}: {e} (entries per level, comma-separated)"))?;
    if v.is_empty() || v.len() > turboquant3d::grid::table::MAX_LEVELS {
        return Err(format!(
            "--levels {s:?}: give 1 to {} level sizes",
            turboquant3d::grid::table::MAX_LEVELS
        ));
    }
    Ok(LevelSizes(v))
}

/// Clap value parser of `--features`: 1..=64.
pub fn grid_features(s: &str) -> Result<usize, String> {
    int_in(s, 1, turboquant3d::grid::table::MAX_FEATURES as u64)
        .map(|v| v as usize)
        .map_err(|e| format!("--features: {e}"))
}

/// Clap value parser of `--group`: entries per group, 1..=512.
pub fn grid_group(s: &str) -> Result<usize, String> {
    int_in(s, 1, turboquant3d::grid::group::MAX_GROUP as u64)
        .map(|v| v as usize)
        .map_err(|e| format!("--group: {e} (entries per vector; d = g·F)"))
}

/// Clap value parser of `--scale-bits`: 1..=16.
pub fn scale_bits(s: &str) -> Result<u8, String> {
    int_in(s, 1, 16)
        .map(|v| v as u8)
        .map_err(|e| format!("--scale-bits: {e}"))
}

/// Clap value parser: an opacity pruning threshold τ in [0, 1).
pub fn prune_tau(s: &str) -> Result<f32, String> {
    float_in(s, 0.0, 1.0, false)
        .ok()
        .filter(|&v| v < 1.0)
        .map(|v| v as f32)
        .ok_or_else(|| format!("{s:?}: expected a number in [0, 1)"))
}

/// The most views a command renders.
pub const MAX_VIEWS: u64 = 1024;

/// A number of views for `flag`, 1..=1024.
fn view_count(flag: &str, s: &str) -> Result<usize, String> {
    int_in(s, 1, MAX_VIEWS)
        .map(|v| v as usize)
        .map_err(|_| format!("{flag} must be at least 1 and at most {MAX_VIEWS}, not {s:?}"))
}

/// Clap value parser of `--views`: 1..=1024.
pub fn views(s: &str) -> Result<usize, String> {
    view_count("--views", s)
}

/// Clap value parser of `--weight-views`: 1..=1024.
pub fn weight_views(s: &str) -> Result<usize, String> {
    view_count("--weight-views", s)
}

/// Clap value parser: a vector dimension d, 2..=65536 (the codebook's range).
pub fn vector_dim(s: &str) -> Result<usize, String> {
    let max = turboquant3d::codec::codebook::MAX_DIM;
    int_in(s, 2, max as u64)
        .map(|v| v as usize)
        .map_err(|_| format!("d = {s}: the dimension must be an integer in 2..={max}"))
}

/// Threads per available core that `--threads` may ask for.
pub const THREADS_PER_CORE: usize = 4;

/// The most worker threads `--threads` accepts: 4 × the available cores.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    THREADS_PER_CORE * cores
}

/// Clap value parser: a worker thread count, 1..=4 × the available cores.
pub fn threads(s: &str) -> Result<usize, String> {
    let max = max_threads();
    int_in(s, 1, max as u64)
        .map(|v| v as usize)
        .map_err(|_| {
            format!(
                "{s:?}: expected an integer in 1..={max} (at most {THREADS_PER_CORE} × the {} available cores)",
                max / THREADS_PER_CORE
            )
        })
}

/// The fewest Gaussians `demo` generates: its check of the SH error
/// against theory is statistical, and below this count the measured error
/// strays outside the check's band by chance.
pub const DEMO_MIN_COUNT: u64 = 10_000;
/// The most Gaussians `demo` generates (about 2.4 GB per copy of the scene).
pub const DEMO_MAX_COUNT: u64 = 10_000_000;

/// Clap value parser of `demo --count`: 10000..=10000000.
pub fn demo_count(s: &str) -> Result<usize, String> {
    int_in(s, DEMO_MIN_COUNT, DEMO_MAX_COUNT)
        .map(|v| v as usize)
        .map_err(|_| {
            format!(
                "{s:?}: expected an integer in {DEMO_MIN_COUNT}..={DEMO_MAX_COUNT} (the demo's statistical check of the SH error needs at least {DEMO_MIN_COUNT} Gaussians)"
            )
        })
}

/// Clap value parser: an SH degree, 0..=3.
pub fn sh_degree(s: &str) -> Result<u8, String> {
    int_in(s, 0, 3)
        .map(|v| v as u8)
        .map_err(|_| format!("{s:?}: the SH degree must be in 0..=3"))
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
    // A constant template: it parses, so the fallback never runs.
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(msg);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Whether the report goes to standard error (the data goes to standard
/// output, `-o -`).
static REPORT_ON_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends the report to standard error when `output` is standard output, so
/// that the data stays clean. Each subcommand calls it with its output.
pub fn output_to(output: &Path) {
    if turboquant3d::format::output::is_stdout(output) {
        REPORT_ON_STDERR.store(true, Ordering::Relaxed);
    }
}

/// Where [`report!`] prints.
pub fn report_on_stderr() -> bool {
    REPORT_ON_STDERR.load(Ordering::Relaxed)
}

/// `println!` for the human or JSON report: on standard output, or on
/// standard error when the data itself goes there (see [`output_to`]).
/// A closed pipe (`tq3d info x | head`) ends the report quietly instead of
/// panicking as `println!` does.
macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = if $crate::common::report_on_stderr() {
            writeln!(std::io::stderr(), $($t)*)
        } else {
            writeln!(std::io::stdout(), $($t)*)
        };
    }};
}
pub(crate) use report;

/// Prints a JSON report, pretty (serialising a `Value` cannot fail).
pub fn print_json(v: &serde_json::Value) {
    report!("{v:#}");
}

/// A float for a JSON report. JSON has no infinity, so ±∞ (a lossless
/// render's PSNR, say) is written as the string `"inf"` or `"-inf"`; a NaN
/// is a defect of the report and an error naming `what`.
pub fn json_f64(v: f64, what: &str) -> Result<serde_json::Value, Error> {
    if v.is_nan() {
        Err(Error::InvalidArgument(format!(
            "{what} is undefined (NaN) for this input"
        )))
    } else if v == f64::INFINITY {
        Ok("inf".into())
    } else if v == f64::NEG_INFINITY {
        Ok("-inf".into())
    } else {
        Ok(v.into())
    }
}

/// A float of a JSON report back, with `"inf"` and `"-inf"` as ±∞; `None`
/// for anything else (null, a missing key).
pub fn f64_of(v: &serde_json::Value) -> Option<f64> {
    match v.as_str() {
        Some("inf") => Some(f64::INFINITY),
        Some("-inf") => Some(f64::NEG_INFINITY),
        _ => v.as_f64(),
    }
}

/// [`f64_of`] formatted by `f`, or "-" when absent.
pub fn fmt_f64(v: &serde_json::Value, f: impl Fn(f64) -> String) -> String {
    f64_of(v).map_or_else(|| "-".to_string(), f)
}

/// Bytes for people.
pub fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// Reads a .ply or a .splat, by extension.
pub fn read_scene(path: &Path, quiet: bool) -> Result<Scene, Error> {
    let bar = spinner(format!("reading {}", path.display()), quiet);
    let scene = turboquant3d::splat::formats::read_scene(path);
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
    turboquant3d::splat::check_finite(&scene).map_err(|e| e.in_file(path))?;
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

/// "WxH" of the first view (views from [`load_views`] are never empty).
pub fn resolution_of(views: &[Camera]) -> String {
    views
        .first()
        .map_or_else(|| "-".to_string(), |c| format!("{}x{}", c.width, c.height))
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

/// The peak resident memory of this process so far, in bytes (Linux:
/// `VmHWM` of /proc/self/status); `None` where the system does not say.
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A `--json` profile: each stage's seconds in the order they ran, the
/// fsync share of the writes, and the peak memory.
pub struct Stages(Vec<(&'static str, Duration)>);

impl Stages {
    pub fn new() -> Stages {
        Stages(Vec::new())
    }

    /// Records a stage.
    pub fn add(&mut self, name: &'static str, d: Duration) {
        self.0.push((name, d));
    }

    /// Runs `f` as the stage `name`.
    pub fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let t = std::time::Instant::now();
        let out = f();
        self.add(name, t.elapsed());
        out
    }

    /// One stage's time (zero when it did not run).
    pub fn get(&self, name: &str) -> Duration {
        self.0
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, d)| *d)
            .sum()
    }

    /// `{"seconds": {stage: s, …, "write_fsync": s}, "peak_memory_bytes": n | "unavailable"}`
    /// entries for a JSON report; "write_fsync" is the part of the writes
    /// spent in fsync.
    pub fn json(&self) -> [(&'static str, serde_json::Value); 2] {
        let mut s = serde_json::Map::new();
        for (n, d) in &self.0 {
            s.insert((*n).into(), d.as_secs_f64().into());
        }
        s.insert(
            "write_fsync".into(),
            turboquant3d::format::output::sync_time()
                .as_secs_f64()
                .into(),
        );
        let peak = peak_memory().map_or_else(|| "unavailable".into(), serde_json::Value::from);
        [
            ("seconds", serde_json::Value::Object(s)),
            ("peak_memory_bytes", peak),
        ]
    }
}
