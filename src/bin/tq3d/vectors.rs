//! The vector commands: `encode`, `decode`, `codebook` and `info` on `.tqv`.

use std::path::PathBuf;
use std::time::Instant;

use clap::ValueEnum;
use half::f16;
use indicatif::{ProgressBar, ProgressStyle};
use turboquant3d::codec::quantizer::CHUNK;
use turboquant3d::format::{check_distinct, npy, tqv};
use turboquant3d::gpu::{Engine, Ran};
use turboquant3d::packing::packed_len;
use turboquant3d::{
    Codebook, Encoded, Error, Quantizer, QuantizerConfig, RotationKind, Rows, ScaleFormat,
    ScaleMode, Scales, theory,
};

use rayon::prelude::*;

use crate::common::{
    DeviceArg, ScaleArg, Stages, human, output_to, print_json, report, vector_dim, whole_bits,
};

#[derive(clap::Args)]
pub struct EncodeArgs {
    /// Input .npy, 2-D [N, D], float32 or float16.
    #[arg(short, long)]
    input: PathBuf,
    /// Output .tqv (`-` for standard output; never the input, nor a device).
    #[arg(short, long)]
    output: PathBuf,
    /// Vector dimension; must equal the array's D (defaults to it).
    #[arg(long, value_parser = vector_dim)]
    dim: Option<usize>,
    /// Bits per coordinate, 1..=8.
    #[arg(long, value_parser = whole_bits)]
    bits: u32,
    /// Rotation: auto picks Hadamard for powers of two ≥ 64, dense otherwise.
    /// Dense is limited to d ≤ 1024 (its set-up is O(d³)); a wider D must be
    /// a power of two.
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
    /// Print one JSON object: sizes, each stage's seconds (read, check,
    /// setup, device, encode, write with its fsync) and the peak memory.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum RotationArg {
    Auto,
    Dense,
    Hadamard,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScaleFormatArg {
    F32,
    F16,
}

pub fn encode(args: EncodeArgs) -> Result<(), Error> {
    let mut stages = Stages::new();
    output_to(&args.output);
    check_distinct(&args.output, &[&args.input])?;
    let m = stages.time("read", || npy::open_matrix(&args.input))?;
    let data = m.values();
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
        scale_mode: args.scale.into(),
        scale_format: match args.scale_format {
            ScaleFormatArg::F32 => ScaleFormat::F32,
            ScaleFormatArg::F16 => ScaleFormat::F16,
        },
    };
    let q = stages.time("setup", || Quantizer::new(&config))?;
    let engine = stages.time("device", || Engine::new(args.device.into()))?;
    let t1 = Instant::now();
    let n = m.rows;
    let encoded = if engine.has_gpu() {
        let t = Instant::now();
        check_finite(data, d, &args.input)?;
        stages.add("check", t.elapsed());
        engine.encode(&q, data)
    } else {
        encode_cpu_with_progress(&q, data, n, d, args.bits, config.scale_format, args.json)
            .map(|e| (e, Ran::Cpu))
    };
    let (enc, ran) = encoded.map_err(|e| match e {
        Error::ScaleUnrepresentable { .. } => Error::InvalidArgument(format!(
            "{}: {e}; --scale-format f32 stores any finite scale",
            args.input.display()
        )),
        e @ Error::NonFinite { .. } => e.in_file(&args.input),
        e => e,
    })?;
    let t_encode = t1.elapsed();
    stages.add("encode", t_encode);
    let out_bytes = stages.time("write", || {
        tqv::write(&args.output, &q, &enc, Some(args.seed))
    })?;

    let in_bytes = (n * d * 4) as u64;
    let expected = theory::expected_error(d, args.bits)?;
    let measured = if args.verify {
        let (y, _) = stages.time("verify", || engine.decode(&q, &enc))?;
        let (mut err, mut energy) = (0f64, 0f64);
        for (a, b) in data.iter().zip(&y) {
            err += (*a as f64 - *b as f64).powi(2);
            energy += (*a as f64).powi(2);
        }
        Some(err / energy)
    } else {
        None
    };
    if args.json {
        let mut v = serde_json::json!({
            "input": args.input, "output": args.output, "count": n, "dim": d, "bits": args.bits,
            "rotation": config.rotation.name(), "scale": config.scale_mode.name(),
            "scale_format": config.scale_format.name(), "device": ran.to_string(),
            "input_bytes": in_bytes, "output_bytes": out_bytes,
            "input_in_place": m.in_place(),
            "expected_relative_error": expected, "measured_relative_error": measured,
        });
        for (k, x) in stages.json() {
            v[k] = x;
        }
        print_json(&v);
        return Ok(());
    }
    report!(
        "encoded {n} vectors of d = {d} at b = {} ({} rotation, {} scale as {})",
        args.bits,
        config.rotation.name(),
        config.scale_mode.name(),
        config.scale_format.name()
    );
    report!(
        "  {} (f32) -> {} : {:.2}x, {:.3} bits per coordinate",
        human(in_bytes),
        human(out_bytes),
        in_bytes as f64 / out_bytes as f64,
        out_bytes as f64 * 8.0 / (n * d) as f64
    );
    report!(
        "  read {:.2?}, encode {:.2?} on {ran} ({:.2} M vectors/s), write {:.2?}",
        stages.get("read"),
        t_encode,
        n as f64 / t_encode.as_secs_f64() / 1e6,
        stages.get("write")
    );
    report!(
        "  expected ||u - u^||^2 for unit u: d*C(d,b) = {expected:.6}  (bounds {:.6} .. {:.6})",
        theory::lower_bound(args.bits),
        theory::upper_bound(args.bits)
    );
    if let Some(m) = measured {
        report!(
            "  measured sum||x - x~||^2 / sum||x||^2 = {:.6} ({:+.2} % against d*C(d,b){})",
            m,
            100.0 * (m / expected - 1.0),
            if config.scale_mode == ScaleMode::LeastSquares {
                "; the LS scale lowers it"
            } else {
                ""
            }
        );
    }
    Ok(())
}

pub fn decode(input: PathBuf, output: PathBuf, device: DeviceArg) -> Result<(), Error> {
    let t = Instant::now();
    output_to(&output);
    check_distinct(&output, &[&input])?;
    let f = tqv::read(&input)?;
    let engine = Engine::new(device.into())?;
    let (y, ran) = engine.decode(&f.quantizer, &f.encoded)?;
    npy::write_matrix(&output, f.encoded.len(), f.quantizer.dim(), &y)?;
    report!(
        "decoded {} vectors of d = {} into {} in {:.2?} on {ran}",
        f.encoded.len(),
        f.quantizer.dim(),
        output.display(),
        t.elapsed()
    );
    Ok(())
}

/// The first non-finite value of `data`, as the error that names it. The
/// CPU encoder finds it itself; a device does not look, so its input is
/// scanned first.
fn check_finite(data: &[f32], cols: usize, input: &std::path::Path) -> Result<(), Error> {
    // In blocks: a per-value parallel search costs more than the scan.
    const BLOCK: usize = 1 << 16;
    let bad = data
        .par_chunks(BLOCK)
        .position_first(|c| !c.iter().all(|v| v.is_finite()));
    if let Some(i) = bad.and_then(|b| {
        let at = b * BLOCK;
        data[at..]
            .iter()
            .position(|v| !v.is_finite())
            .map(|j| at + j)
    }) {
        return Err(Error::NonFinite {
            row: i / cols.max(1),
            col: i % cols.max(1),
            value: data[i],
        }
        .in_file(input));
    }
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
    quiet: bool,
) -> Result<Encoded, Error> {
    let slab = 64 * CHUNK;
    let mut codes = vec![0u8; packed_len(n * d, bits)];
    let mut scales = vec![0f32; n];
    let bar = if n > 4 * slab && !quiet {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    // A constant template: it parses, so the plain bar never shows.
    if let Ok(style) =
        ProgressStyle::with_template("encoding {bar:40} {pos}/{len} vectors ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
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

pub fn codebook(dim: usize, bits: u32, json: bool) -> Result<(), Error> {
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
        print_json(&v);
        return Ok(());
    }
    report!("Lloyd-Max codebook of f_d(x) ~ (1 - x^2)^((d-3)/2), d = {dim}, b = {bits}");
    report!("centroids ({}):", cb.centroids().len());
    for c in cb.centroids() {
        report!("  {c:+.12}");
    }
    report!("boundaries ({}):", cb.boundaries().len());
    for t in cb.boundaries() {
        report!("  {t:+.12}");
    }
    report!("distortion d*C(d,b) = {:.10}", cb.distortion());
    report!("lower bound 4^-b     = {:.10}", theory::lower_bound(bits));
    report!(
        "upper bound 2.72*4^-b = {:.10}  (ratio to d*C: {:.3})",
        theory::upper_bound(bits),
        theory::upper_bound(bits) / cb.distortion()
    );
    Ok(())
}

pub fn info_bytes(input: PathBuf, bytes: Vec<u8>) -> Result<(), Error> {
    let f = tqv::from_bytes(&bytes, &input)?;
    let q = &f.quantizer;
    let (n, d, b) = (f.encoded.len(), q.dim(), q.bits());
    report!(
        "{}: .tqv version {}, all checksums verified",
        input.display(),
        tqv::VERSION
    );
    report!("  vectors N = {n}, dimension d = {d}, bits b = {b}");
    let rot = match &**q.rotation() {
        turboquant3d::Rotation::Dense(_) => "dense Haar matrix".to_string(),
        turboquant3d::Rotation::Hadamard(h) => {
            format!("randomized Hadamard, {} rounds + permutation", h.rounds())
        }
    };
    report!(
        "  rotation: {rot}{}",
        f.seed.map(|s| format!(" (seed {s})")).unwrap_or_default()
    );
    report!(
        "  scale: {} stored as {}",
        q.scale_mode().name(),
        q.scale_format().name()
    );
    report!(
        "  size: {} total; codes {}, scales {}, parameters {}",
        human(bytes.len() as u64),
        human(f.encoded.codes().len() as u64),
        human((n * q.scale_format().bytes()) as u64),
        human((bytes.len() - f.encoded.payload_bytes()) as u64)
    );
    report!(
        "  {:.3} bits per coordinate; {:.2}x smaller than f32",
        bytes.len() as f64 * 8.0 / (n * d) as f64,
        (n * d * 4) as f64 / bytes.len() as f64
    );
    report!(
        "  expected ||u - u^||^2 for unit u: d*C(d,b) = {:.6}",
        theory::expected_error(d, b)?
    );
    Ok(())
}
