//! `tq3d`: the turboquant3d command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use half::f16;
use indicatif::{ProgressBar, ProgressStyle};
use turboquant3d::codec::quantizer::CHUNK;
use turboquant3d::format::{npy, tqv};
use turboquant3d::gpu::{DeviceChoice, Engine, Ran};
use turboquant3d::packing::packed_len;
use turboquant3d::{
    Codebook, Encoded, Error, Quantizer, QuantizerConfig, RotationKind, Rows, ScaleFormat,
    ScaleMode, Scales, theory,
};

#[derive(Parser)]
#[command(
    name = "tq3d",
    version,
    about = "TurboQuant compression of 3D reconstruction model parameters"
)]
#[command(
    long_about = "TurboQuant compression of 3D reconstruction model parameters.\n\n\
Each d-dimensional vector keeps one scale; its direction is rotated by a fixed random \
orthogonal matrix and every coordinate is quantised with the Lloyd–Max codebook of the \
sphere's coordinate density. Nothing is trained: the codebook depends on (d, b) alone, and \
the expected error d·C(d, b) is known before compressing."
)]
struct Cli {
    /// Worker threads (default: all cores). The output is identical for any count.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode a 2-D f32/f16 .npy of shape [N, D] into a .tqv file.
    Encode(EncodeArgs),
    /// Decode a .tqv file into an f32 .npy of shape [N, D].
    Decode {
        /// The .tqv file.
        input: PathBuf,
        /// Where to write the .npy.
        #[arg(short, long)]
        output: PathBuf,
        /// Where to run: auto (a hardware GPU if present, else the CPU), gpu (strictly), cpu.
        #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
        device: DeviceArg,
    },
    /// Print the Lloyd–Max codebook for (d, b) with its distortion and bounds.
    Codebook {
        /// Vector dimension d (2..=65536).
        #[arg(long)]
        dim: usize,
        /// Bits per coordinate b (1..=8).
        #[arg(long)]
        bits: u32,
        /// Print JSON (keys: dim, bits, centroids, boundaries, distortion, lower_bound, upper_bound).
        #[arg(long)]
        json: bool,
    },
    /// Describe a .tqv file: its parameters, sizes and expected error.
    Info {
        /// The .tqv file.
        input: PathBuf,
    },
}

#[derive(clap::Args)]
struct EncodeArgs {
    /// Input .npy, 2-D [N, D], float32 or float16.
    #[arg(short, long)]
    input: PathBuf,
    /// Output .tqv.
    #[arg(short, long)]
    output: PathBuf,
    /// Vector dimension; must equal the array's D (defaults to it).
    #[arg(long)]
    dim: Option<usize>,
    /// Bits per coordinate, 1..=8.
    #[arg(long)]
    bits: u32,
    /// Rotation: auto picks Hadamard for powers of two ≥ 64, dense otherwise.
    #[arg(long, value_enum, default_value_t = RotationArg::Auto)]
    rotation: RotationArg,
    /// Seed of the rotation. The rotation itself is stored in the file.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scale: least squares (ls, lower error, same bytes) or the plain norm.
    #[arg(long, value_enum, default_value_t = ScaleArg::Ls)]
    scale: ScaleArg,
    /// Storage of the scale.
    #[arg(long, value_enum, default_value_t = ScaleFormatArg::F32)]
    scale_format: ScaleFormatArg,
    /// Decode after encoding and report the measured error next to theory.
    #[arg(long)]
    verify: bool,
    /// Where to run: auto uses a hardware GPU if present and the CPU
    /// otherwise (never a software rasteriser), falling back to the CPU on
    /// GPU failure; gpu insists on a GPU (any adapter); cpu uses the CPU.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
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

#[derive(Clone, Copy, ValueEnum)]
enum RotationArg {
    Auto,
    Dense,
    Hadamard,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScaleArg {
    Ls,
    Norm,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScaleFormatArg {
    F32,
    F16,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Some(n) = cli.threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
    {
        eprintln!("error: cannot start {n} threads: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Encode(args) => encode(args),
        Command::Decode {
            input,
            output,
            device,
        } => decode(input, output, device),
        Command::Codebook { dim, bits, json } => codebook(dim, bits, json),
        Command::Info { input } => info(input),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

fn encode(args: EncodeArgs) -> Result<(), Error> {
    let t0 = Instant::now();
    let m = npy::read_matrix(&args.input)?;
    if let Some(d) = args.dim
        && d != m.cols
    {
        return Err(Error::InvalidArgument(format!(
            "--dim {d} disagrees with {}, whose rows have D = {}",
            args.input.display(),
            m.cols
        )));
    }
    if m.rows == 0 {
        return Err(Error::EmptyInput {
            what: format!("{} has no rows", args.input.display()),
        });
    }
    let d = m.cols;
    let config = QuantizerConfig {
        dim: d,
        bits: args.bits,
        rotation: match args.rotation {
            RotationArg::Auto => RotationKind::default_for(d),
            RotationArg::Dense => RotationKind::Dense,
            RotationArg::Hadamard => RotationKind::Hadamard,
        },
        seed: args.seed,
        scale_mode: match args.scale {
            ScaleArg::Ls => ScaleMode::LeastSquares,
            ScaleArg::Norm => ScaleMode::Norm,
        },
        scale_format: match args.scale_format {
            ScaleFormatArg::F32 => ScaleFormat::F32,
            ScaleFormatArg::F16 => ScaleFormat::F16,
        },
    };
    let q = Quantizer::new(&config)?;
    let t_read = t0.elapsed();

    let engine = Engine::new(args.device.into())?;
    let t1 = Instant::now();
    let n = m.rows;
    let (enc, ran) = if engine.has_gpu() {
        engine.encode(&q, &m.data)?
    } else {
        (
            encode_cpu_with_progress(&q, &m.data, n, d, args.bits, config.scale_format)?,
            Ran::Cpu,
        )
    };
    let t_encode = t1.elapsed();
    tqv::write(&args.output, &q, &enc, Some(args.seed))?;

    let in_bytes = (n * d * 4) as u64;
    let out_bytes = std::fs::metadata(&args.output)
        .map_err(|e| Error::Io {
            path: args.output.clone(),
            source: e,
        })?
        .len();
    println!(
        "encoded {n} vectors of d = {d} at b = {} ({} rotation, {} scale as {})",
        args.bits,
        config.rotation.name(),
        config.scale_mode.name(),
        config.scale_format.name()
    );
    println!(
        "  {} (f32) -> {} : {:.2}x, {:.3} bits per coordinate",
        human(in_bytes),
        human(out_bytes),
        in_bytes as f64 / out_bytes as f64,
        out_bytes as f64 * 8.0 / (n * d) as f64
    );
    println!(
        "  read {:.2?}, encode {:.2?} on {ran} ({:.2} M vectors/s)",
        t_read,
        t_encode,
        n as f64 / t_encode.as_secs_f64() / 1e6
    );
    let expected = theory::expected_error(d, args.bits)?;
    println!(
        "  expected ||u - u^||^2 for unit u: d*C(d,b) = {expected:.6}  (bounds {:.6} .. {:.6})",
        theory::lower_bound(args.bits),
        theory::upper_bound(args.bits)
    );
    if args.verify {
        let (y, _) = engine.decode(&q, &enc)?;
        let (mut err, mut energy) = (0f64, 0f64);
        for (a, b) in m.data.iter().zip(&y) {
            err += (*a as f64 - *b as f64).powi(2);
            energy += (*a as f64).powi(2);
        }
        println!(
            "  measured sum||x - x~||^2 / sum||x||^2 = {:.6} ({:+.2} % against d*C(d,b){})",
            err / energy,
            100.0 * (err / energy / expected - 1.0),
            if config.scale_mode == ScaleMode::LeastSquares {
                "; the LS scale lowers it"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn decode(input: PathBuf, output: PathBuf, device: DeviceArg) -> Result<(), Error> {
    let t = Instant::now();
    let f = tqv::read(&input)?;
    let engine = Engine::new(device.into())?;
    let (y, ran) = engine.decode(&f.quantizer, &f.encoded)?;
    npy::write_matrix(&output, f.encoded.len(), f.quantizer.dim(), &y)?;
    println!(
        "decoded {} vectors of d = {} into {} in {:.2?} on {ran}",
        f.encoded.len(),
        f.quantizer.dim(),
        output.display(),
        t.elapsed()
    );
    Ok(())
}

/// The CPU encode in slabs of whole chunks (so each slab's codes start on a
/// byte boundary), with a progress bar for large inputs.
fn encode_cpu_with_progress(
    q: &Quantizer,
    data: &[f32],
    n: usize,
    d: usize,
    bits: u32,
    format: ScaleFormat,
) -> Result<Encoded, Error> {
    let slab = 64 * CHUNK;
    let mut codes = vec![0u8; packed_len(n * d, bits)];
    let mut scales = vec![0f32; n];
    let bar = if n > 4 * slab {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "encoding {bar:40} {pos}/{len} vectors ({per_sec}, eta {eta})",
        )
        .unwrap(),
    );
    for start in (0..n).step_by(slab) {
        let len = slab.min(n - start);
        let byte0 = start * d * bits as usize / 8;
        let byte1 = byte0 + packed_len(len * d, bits);
        let sub = Rows::new(&data[start * d..(start + len) * d], d)?;
        q.encode_into(
            sub,
            &mut codes[byte0..byte1],
            &mut scales[start..start + len],
        )
        .map_err(|e| match e {
            Error::NonFinite { row, col, value } => Error::NonFinite {
                row: row + start,
                col,
                value,
            },
            Error::ScaleUnrepresentable {
                row,
                scale,
                format,
                why,
            } => Error::ScaleUnrepresentable {
                row: row + start,
                scale,
                format,
                why,
            },
            e => e,
        })?;
        bar.inc(len as u64);
    }
    bar.finish_and_clear();
    let scales = match format {
        ScaleFormat::F32 => Scales::F32(scales),
        ScaleFormat::F16 => Scales::F16(scales.into_iter().map(f16::from_f32).collect()),
    };
    Encoded::from_parts(d, bits, n, codes, scales)
}

fn codebook(dim: usize, bits: u32, json: bool) -> Result<(), Error> {
    let cb = Codebook::get(dim, bits)?;
    if json {
        let v = serde_json::json!({
            "dim": dim,
            "bits": bits,
            "centroids": cb.centroids(),
            "boundaries": cb.boundaries(),
            "distortion": cb.distortion(),
            "lower_bound": theory::lower_bound(bits),
            "upper_bound": theory::upper_bound(bits),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("JSON of numbers")
        );
        return Ok(());
    }
    println!("Lloyd-Max codebook of f_d(x) ~ (1 - x^2)^((d-3)/2), d = {dim}, b = {bits}");
    println!("centroids ({}):", cb.centroids().len());
    for c in cb.centroids() {
        println!("  {c:+.12}");
    }
    println!("boundaries ({}):", cb.boundaries().len());
    for t in cb.boundaries() {
        println!("  {t:+.12}");
    }
    println!("distortion d*C(d,b) = {:.10}", cb.distortion());
    println!("lower bound 4^-b     = {:.10}", theory::lower_bound(bits));
    println!(
        "upper bound 2.72*4^-b = {:.10}  (ratio to d*C: {:.3})",
        theory::upper_bound(bits),
        theory::upper_bound(bits) / cb.distortion()
    );
    Ok(())
}

fn info(input: PathBuf) -> Result<(), Error> {
    let bytes = std::fs::read(&input).map_err(|e| Error::Io {
        path: input.clone(),
        source: e,
    })?;
    let f = tqv::from_bytes(&bytes, &input)?;
    let q = &f.quantizer;
    let (n, d, b) = (f.encoded.len(), q.dim(), q.bits());
    println!(
        "{}: .tqv version {}, all checksums verified",
        input.display(),
        tqv::VERSION
    );
    println!("  vectors N = {n}, dimension d = {d}, bits b = {b}");
    let rot = match &**q.rotation() {
        turboquant3d::Rotation::Dense(_) => "dense Haar matrix".to_string(),
        turboquant3d::Rotation::Hadamard(h) => {
            format!("randomized Hadamard, {} rounds + permutation", h.rounds())
        }
    };
    println!(
        "  rotation: {rot}{}",
        f.seed.map(|s| format!(" (seed {s})")).unwrap_or_default()
    );
    println!(
        "  scale: {} stored as {}",
        q.scale_mode().name(),
        q.scale_format().name()
    );
    println!(
        "  size: {} total; codes {}, scales {}, parameters {}",
        human(bytes.len() as u64),
        human(f.encoded.codes().len() as u64),
        human((n * q.scale_format().bytes()) as u64),
        human((bytes.len() - f.encoded.payload_bytes()) as u64)
    );
    println!(
        "  {:.3} bits per coordinate; {:.2}x smaller than f32",
        bytes.len() as f64 * 8.0 / (n * d) as f64,
        (n * d * 4) as f64 / bytes.len() as f64
    );
    println!(
        "  expected ||u - u^||^2 for unit u: d*C(d,b) = {:.6}",
        theory::expected_error(d, b)?
    );
    Ok(())
}
