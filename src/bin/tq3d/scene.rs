//! The scene commands: `compress`, `decompress`, `info` on `.tq3s`, `demo`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::ValueEnum;
use serde_json::json;
use turboquant3d::format::check_distinct;
use turboquant3d::gpu::{DeviceChoice, Engine};
use turboquant3d::splat::attributes::AttrBits;
use turboquant3d::splat::container::{self, Coding, Normals, Profile, tag_name};
use turboquant3d::splat::ply::{self, PlyEncoding};
use turboquant3d::splat::scene::sigmoid;
use turboquant3d::splat::{self, CompressOptions, Compressed, SizePrediction};
use turboquant3d::splat::{Scene, synth};
use turboquant3d::{Error, theory};

use crate::common::alloc::{self, AllocArgs, AllocatedWidths};
use crate::common::{
    AttrBitsArg, DeviceArg, ProfileArg, ScaleArg, Stages, attr_bits_help, average_bits, demo_count,
    human, is_average_bits, output_to, print_json, prune_tau, read_scene, report, sh_degree,
    spinner, whole_bits,
};
use crate::target::{self, Lossless, TargetArgs, TargetReport};

#[derive(clap::Args)]
pub struct CompressArgs {
    /// The scene, in any format `tq3d convert` reads: 3DGS .ply, .splat,
    /// .spz, .sog, .compressed.ply, .glb.
    input: PathBuf,
    /// The .tq3s file to write (not needed with --dry-run); `-` for standard
    /// output (the report then goes to standard error). Never the input, nor
    /// a device; a symlink is followed to its target.
    #[arg(short, long, required_unless_present = "dry_run")]
    output: Option<PathBuf>,
    /// SH-rest bits per coefficient, on average over the Gaussians (0..=8;
    /// fractions allowed): each Gaussian gets its own width 0..=8 where its
    /// error shows most (see --weight), in exactly the bytes of uniform
    /// widths. With --weight uniform every Gaussian gets b bits; the expected
    /// relative error is then d·C(d, b): about 0.36, 0.117, 0.034, 0.0095
    /// for b = 1..4.
    #[arg(long, default_value_t = 1.0, value_parser = average_bits, allow_negative_numbers = true)]
    sh_bits: f64,
    #[command(flatten)]
    alloc: AllocArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// How the other attributes are stored.
    #[arg(long, value_enum, default_value_t = ProfileArg::Compact)]
    profile: ProfileArg,
    /// Drop Gaussians whose sigmoid(opacity) is below τ (0 ≤ τ < 1).
    #[arg(long, value_name = "TAU", value_parser = prune_tau, allow_negative_numbers = true)]
    prune_opacity: Option<f32>,
    #[arg(long, help = attr_bits_help())]
    attr_bits: Option<AttrBitsArg>,
    /// Keep SH bands up to degree L (0..=3); lower than the input's truncates.
    #[arg(long, value_name = "L", value_parser = sh_degree)]
    sh_degree: Option<u8>,
    /// Where to encode SH-rest: auto (a hardware GPU if present, else the
    /// CPU; never a software rasteriser), gpu (any adapter, strictly), cpu.
    /// The file is byte-identical whichever runs: the GPU leaves near-ties
    /// to the CPU reference.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Print the predicted size and exit without compressing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object instead of text (and no progress).
    #[arg(long)]
    json: bool,
    /// Seed of the SH rotation (the rotation itself is stored in the file).
    #[arg(long, default_value_t = splat::DEFAULT_SEED)]
    seed: u64,
    /// SH scale: least squares (lower error, same size) or the norm.
    #[arg(long, value_enum, default_value_t = ScaleArg::Ls)]
    scale: ScaleArg,
    /// Code every Gaussian's SH-rest, repeats included. By default each
    /// distinct vector is coded once where that stores fewer bytes (inputs
    /// whose SH is a palette, as SOG's: a .tq3s of version 3); repeats then
    /// decode identically, so their errors add up where they overlap
    /// (docs/THEORY.md §18).
    #[arg(long)]
    no_dedup: bool,
    /// Store every value bit-exact: the attributes as f32 in the input's
    /// order (--profile exact) and the SH-rest as f32 (format version 4),
    /// each column coded with a palette of its distinct values where it has
    /// few, as a scene read from an .spz or .sog has (they quantised it
    /// already). The decoded scene equals the input.
    #[arg(long, conflicts_with_all = ["sh_bits", "profile", "attr_bits", "target_psnr", "ratio", "size", "target_psnr_loss", "prune_opacity", "sh_degree", "no_dedup"])]
    lossless: bool,
}

#[derive(clap::Args)]
pub struct DecompressArgs {
    /// The .tq3s file.
    input: PathBuf,
    /// Where to write, by extension: a .ply (3DGS layout), .splat, .spz or
    /// .glb; `-` for a PLY on standard output. Never the input, nor a device.
    #[arg(short, long)]
    output: PathBuf,
    /// PLY body encoding.
    #[arg(long, value_enum, default_value_t = EncodingArg::BinaryLittleEndian)]
    encoding: EncodingArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EncodingArg {
    BinaryLittleEndian,
    BinaryBigEndian,
    Ascii,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Gaussians in the procedural scene, 10000..=10000000 (the check of
    /// the SH error against theory is statistical and needs at least 10000).
    #[arg(long, default_value_t = 1_000_000, value_parser = demo_count)]
    count: usize,
    /// SH degree of the procedural scene, 0..=3.
    #[arg(long, default_value_t = 3, value_parser = sh_degree)]
    sh_degree: u8,
    /// SH-rest bits per coefficient, 1..=8.
    #[arg(long, default_value_t = 3, value_parser = whole_bits)]
    sh_bits: u32,
    /// Profile of the other attributes.
    #[arg(long, value_enum, default_value_t = ProfileArg::Compact)]
    profile: ProfileArg,
    /// Seed of the procedural scene.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep the generated .ply, .tq3s and decompressed .ply in this folder
    /// (default: a temporary folder, removed afterwards).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The bytes of the scene as a binary PLY: the input's own length when it
/// is one (the target modes' ratios are against it).
fn ply_size_of(input: &Path, scene: &Scene, input_bytes: u64) -> Result<u64, Error> {
    Ok(match splat::formats::detect(input)? {
        splat::formats::SceneFormat::Ply => input_bytes,
        _ => ply::ply_size(scene, PlyEncoding::BinaryLittleEndian).unwrap_or(input_bytes),
    })
}

fn file_len(path: &Path) -> Result<u64, Error> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::Io {
            path: path.into(),
            source: e,
        })
}

fn options(a: &CompressArgs) -> CompressOptions {
    let mut o = CompressOptions {
        profile: a.profile.into(),
        sh_bits: a.sh_bits.round().clamp(1.0, 8.0) as u32,
        sh_degree: a.sh_degree,
        prune_opacity: a.prune_opacity,
        seed: a.seed,
        attr_bits: a.attr_bits.map_or(AttrBits::default(), |x| x.0),
        scale_mode: a.scale.into(),
        dedup: !a.no_dedup,
        ..Default::default()
    };
    if a.lossless {
        o.profile = Profile::Exact;
        o.sh_exact = true;
    }
    o
}

fn prediction_json(p: &SizePrediction) -> serde_json::Value {
    json!({
        "count": p.count,
        "input_count": p.input_count,
        "dim": p.dim,
        "fixed_bytes": p.fixed(),
        "entropy_bound_bytes": p.entropy_bound(),
        "total_bound_bytes": p.total_bound(),
        "streams": p.streams.iter().map(|s| json!({"tag": s.tag, "bytes": s.bytes, "exact": s.exact})).collect::<Vec<_>>(),
    })
}

fn print_prediction(p: &SizePrediction, input_bytes: u64) {
    report!(
        "  predicted: {} Gaussians kept of {}; fixed-rate part {} (exact), entropy-coded part ≤ {}, file ≤ {} (≥ {:.2}x)",
        p.count,
        p.input_count,
        human(p.fixed()),
        human(p.entropy_bound()),
        human(p.total_bound()),
        input_bytes as f64 / p.total_bound() as f64
    );
    let list = |exact: bool| {
        p.streams
            .iter()
            .filter(|s| s.exact == exact)
            .map(|s| s.tag.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    report!(
        "  exact (stored raw): header, table, {}; bounded by their decoded length (entropy-coded): {}",
        list(true),
        list(false)
    );
}

/// Expected relative SH-rest error for (d, b), if there is SH-rest.
fn expected_sh_error(d: usize, b: u32) -> Option<f64> {
    (d > 0).then(|| theory::expected_error(d, b).ok()).flatten()
}

pub fn compress(a: CompressArgs) -> Result<(), Error> {
    let mut stages = Stages::new();
    let mut opts = options(&a);
    if a.alloc.target_psnr_loss.is_none() && !a.target.active() && !is_average_bits(a.sh_bits) {
        return Err(Error::InvalidArgument(format!(
            "--sh-bits {}: b = {} must be an average in 0..=8",
            a.sh_bits, a.sh_bits
        )));
    }
    if let Some(out) = &a.output {
        output_to(out);
        check_distinct(out, &[&a.input])?;
    }
    let input_bytes = file_len(&a.input)?;
    // The device is probed on its own thread while the input is read (tens
    // of milliseconds of driver loading under --device auto); "device" in
    // the profile is the wait for it after the read.
    let device = a.device;
    let probe = (!a.dry_run).then(|| std::thread::spawn(move || Engine::new(device.into())));
    let scene = stages.time("read", || read_scene(&a.input, a.json))?;
    stages
        .time("check", || splat::check_finite(&scene))
        .map_err(|e| e.in_file(&a.input))?;
    let degree = opts
        .sh_degree
        .map_or(scene.sh_degree, |l| l.min(scene.sh_degree));
    let mut chosen: Option<TargetReport> = None;
    // An input quantised before (.spz, .sog) may store smaller bit-exact
    // than at the target: the target modes compare the two, by the lossy
    // choice's predicted bytes (the model codes every stream, so a dry run
    // decides alike). Not with pruning, SH truncation or pinned attribute
    // bits: the file would not hold the input.
    let mut exact: Option<Compressed> = None;
    let allocation = if a.target.active() {
        if a.profile == ProfileArg::Exact {
            return Err(Error::InvalidArgument(
                "--target-psnr, --ratio and --size choose the compact profile's attribute bits; drop --profile exact".into(),
            ));
        }
        let ply_bytes = ply_size_of(&a.input, &scene, input_bytes)?;
        let candidate = if a.prune_opacity.is_none()
            && a.sh_degree.is_none()
            && a.attr_bits.is_none()
            && splat::few_levels(&scene)
        {
            let lossless = CompressOptions {
                profile: Profile::Exact,
                sh_exact: true,
                ..options(&a)
            };
            let x = stages.time("lossless", || splat::compress(&scene, &lossless))?;
            Some((x, lossless))
        } else {
            None
        };
        let fits = |x: &Compressed| a.target.budget(ply_bytes).is_some_and(|n| x.size() <= n);
        match candidate {
            Some((x, lossless)) if fits(&x) => {
                chosen = Some(TargetReport::lossless(
                    &a.target,
                    ply_bytes,
                    x.size(),
                    Lossless::Fits,
                ));
                opts = lossless;
                exact = Some(x);
            }
            candidate => {
                let pinned: [Option<u8>; 5] = match a.attr_bits {
                    Some(x) => {
                        let arr = x.0.to_array();
                        std::array::from_fn(|k| x.1[k].then_some(arr[k]))
                    }
                    None => [None; 5],
                };
                let rival = candidate.as_ref().map(|(x, _)| x.size());
                let lossy = stages.time("choose", || {
                    target::choose(&scene, &opts, pinned, &a.target, ply_bytes, rival, a.json)
                });
                let why = match (&lossy, &candidate) {
                    (Ok((_, r)), Some((x, _))) if x.size() <= r.predicted_bytes => {
                        Some(Lossless::Smaller(r.predicted_bytes))
                    }
                    // An unreachable --target-psnr: the exact file reaches it.
                    (Err(_), Some(_)) if a.target.target_psnr.is_some() => {
                        Some(Lossless::Unreachable)
                    }
                    _ => None,
                };
                match (why, candidate) {
                    (Some(why), Some((x, lossless))) => {
                        chosen = Some(TargetReport::lossless(&a.target, ply_bytes, x.size(), why));
                        opts = lossless;
                        exact = Some(x);
                    }
                    _ => {
                        let (o, r) = lossy?;
                        opts = o;
                        chosen = Some(r);
                    }
                }
            }
        }
        None
    } else if a.lossless {
        None
    } else {
        stages.time("allocate", || {
            alloc::widths(&scene, degree, opts.prune_opacity, a.sh_bits, &a.alloc)
        })?
    };
    if let Some(w) = &allocation {
        opts.sh_widths = Some(w.widths.clone());
    }
    let sh_err = if allocation.is_some() || opts.sh_exact {
        None
    } else {
        expected_sh_error(splat::rest_dim(degree), opts.sh_bits)
    };
    if a.dry_run {
        // compress predicts the same itself; only a dry run needs it here.
        let p = stages.time("predict", || splat::predict_size(&scene, &opts))?;
        if a.json {
            let v = json!({"input": a.input, "input_bytes": input_bytes, "dry_run": true,
                "sh_allocation": allocation.as_ref().map(|w| json!({"description": w.describe, "average_bits": w.average_bits})),
                "prediction": prediction_json(&p), "sh_expected_relative_error": sh_err,
                "target": chosen.as_ref().map(TargetReport::json)});
            print_json(&v);
        } else {
            report!(
                "{}: {} Gaussians, SH degree {}, {}",
                a.input.display(),
                scene.len(),
                scene.sh_degree,
                human(input_bytes)
            );
            print_prediction(&p, input_bytes);
            for s in &p.streams {
                report!(
                    "    {:<5} {} {}",
                    s.tag,
                    if s.exact { " =" } else { " ≤" },
                    human(s.bytes)
                );
            }
            if let Some(e) = sh_err {
                report!(
                    "  expected SH-rest error ‖x − x̂‖²/‖x‖² = d·C(d,b) = {e:.5} (norm scale; least squares is lower)"
                );
            }
            if let Some(w) = &allocation {
                report!("  SH widths per Gaussian: {}", w.describe);
            }
            for line in chosen.as_ref().map(TargetReport::lines).unwrap_or_default() {
                report!("{line}");
            }
        }
        return Ok(());
    }
    let output = a.output.clone().ok_or_else(|| {
        Error::InvalidArgument("-o/--output is required without --dry-run".into())
    })?;
    let engine = stages.time("device", || match probe {
        Some(p) => p
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidArgument("the device probe panicked".into()))),
        None => Engine::new(device.into()),
    })?;
    let bar = spinner(format!("compressing {} Gaussians", scene.len()), a.json);
    let c = match exact {
        Some(x) => x,
        None => stages.time("compress", || splat::compress_on(&scene, &opts, &engine))?,
    };
    bar.set_message(format!("writing {}", output.display()));
    stages.time("write", || c.write(&output))?;
    bar.finish_and_clear();
    report_compress(
        &a,
        &c,
        input_bytes,
        sh_err,
        allocation.as_ref(),
        chosen.as_ref(),
        &stages,
    );
    Ok(())
}

fn report_compress(
    a: &CompressArgs,
    c: &Compressed,
    input_bytes: u64,
    sh_err: Option<f64>,
    allocation: Option<&AllocatedWidths>,
    chosen: Option<&TargetReport>,
    stages: &Stages,
) {
    let size = c.size();
    let p = &c.prediction;
    let sh_err = if allocation.is_some() || c.header.sh_flags & container::SH_EXACT != 0 {
        None
    } else {
        sh_err
    };
    if a.json {
        let v = json!({
            "sh_allocation": allocation.map(|w| json!({"description": w.describe, "average_bits": w.average_bits})),
            "input": a.input, "output": a.output, "input_bytes": input_bytes, "output_bytes": size,
            "ratio": input_bytes as f64 / size as f64,
            "count": c.header.count, "input_count": c.header.input_count,
            "sh_degree": c.header.sh_degree, "dim": c.header.dim, "sh_bits": c.header.sh_bits,
            "profile": c.header.profile.name(), "device": c.sh_run.ran.to_string(),
            "sh_near_ties_on_cpu": c.sh_run.ties, "sh_distinct_vectors": c.sh_distinct,
            "sh_exact": c.header.sh_flags & container::SH_EXACT != 0,
            "prediction": prediction_json(p),
            "streams": c.streams.iter().map(|s| json!({"tag": tag_name(&s.info.tag),
                "coding": s.info.coding.name(),
                "raw_bytes": s.info.raw_len, "stored_bytes": s.info.stored_len})).collect::<Vec<_>>(),
            "sh_expected_relative_error": sh_err,
            "target": chosen.map(TargetReport::json),
        });
        let mut v = v;
        for (k, x) in stages.json() {
            v[k] = x;
        }
        let ct = &c.timings;
        v["seconds"]["compress_stages"] = json!({"prune_and_order": ct.prune_and_order.as_secs_f64(),
            "dedup": ct.dedup.as_secs_f64(), "sh": ct.sh.as_secs_f64(), "attributes": ct.attributes.as_secs_f64(), "entropy": ct.entropy.as_secs_f64()});
        print_json(&v);
        return;
    }
    report!(
        "{} -> {}: {} Gaussians{}, SH degree {} (d = {}, SH-rest {}{}), profile {}",
        a.input.display(),
        a.output.as_deref().unwrap_or(Path::new("-")).display(),
        c.header.count,
        if c.header.count < c.header.input_count {
            format!(
                " (pruned from {} at τ = {})",
                c.header.input_count, c.header.prune_opacity
            )
        } else {
            String::new()
        },
        c.header.sh_degree,
        c.header.dim,
        if c.header.sh_flags & container::SH_EXACT != 0 {
            "bit-exact"
        } else if c.header.sh_width_mode == 1 {
            "per Gaussian ≤"
        } else {
            "="
        },
        if c.header.sh_flags & container::SH_EXACT != 0 {
            String::new()
        } else {
            c.header.sh_bits.to_string()
        },
        c.header.profile.name()
    );
    report!(
        "  {} -> {}: ratio {:.2}x, {:.1} bits per Gaussian",
        human(input_bytes),
        human(size),
        input_bytes as f64 / size as f64,
        size as f64 * 8.0 / c.header.count as f64
    );
    report!(
        "  predicted {} fixed + ≤ {} entropy-coded = ≤ {}; actual {} fixed + {} entropy-coded = {}",
        human(p.fixed()),
        human(p.entropy_bound()),
        human(p.total_bound()),
        human(p.fixed()),
        human(size - p.fixed()),
        human(size)
    );
    if let Some(e) = sh_err {
        report!(
            "  expected SH-rest error ‖x − x̂‖²/‖x‖² = d·C(d,b) = {e:.5} (norm scale; least squares is lower)"
        );
    }
    if let Some(w) = allocation {
        report!("  SH widths per Gaussian: {}", w.describe);
    }
    let palettes: Vec<String> = c
        .streams
        .iter()
        .filter(|s| s.info.coding == Coding::Palette)
        .map(|s| tag_name(&s.info.tag))
        .collect();
    if !palettes.is_empty() {
        report!(
            "  column palettes (values on few levels, stored exactly): {}",
            palettes.join(" ")
        );
    }
    if let Some(u) = c.sh_distinct {
        report!(
            "  SH-rest deduplicated: {u} distinct vectors among {} Gaussians, each coded once",
            c.header.count
        );
    }
    for line in chosen.map(TargetReport::lines).unwrap_or_default() {
        report!("{line}");
    }
    if c.header.normals == Normals::Dropped {
        report!(
            "  normals: dropped by the compact profile (they were not all zero); use --profile exact to keep them"
        );
    }
    report!(
        "  read {:.2?}, allocate {:.2?}, compress {:.2?} (order {:.2?}, repeats {:.2?}, SH {:.2?} on {}{}, attributes {:.2?}, zstd {:.2?}), write {:.2?}",
        stages.get("read"),
        stages.get("allocate"),
        stages.get("compress"),
        c.timings.prune_and_order,
        c.timings.dedup,
        c.timings.sh,
        c.sh_run.ran,
        if c.sh_run.ties > 0 {
            format!(" with {} near-ties on the CPU", c.sh_run.ties)
        } else {
            String::new()
        },
        c.timings.attributes,
        c.timings.entropy,
        stages.get("write")
    );
    let exact = stages.get("lossless");
    if !exact.is_zero() {
        report!("  the bit-exact candidate took {exact:.2?} (compressed in full, to compare)");
    }
}

pub fn ply_encoding(e: EncodingArg) -> PlyEncoding {
    match e {
        EncodingArg::BinaryLittleEndian => PlyEncoding::BinaryLittleEndian,
        EncodingArg::BinaryBigEndian => PlyEncoding::BinaryBigEndian,
        EncodingArg::Ascii => PlyEncoding::Ascii,
    }
}

/// Writes a scene in the format its extension names (see `tq3d convert`).
fn write_scene(path: &Path, scene: &Scene, encoding: PlyEncoding) -> Result<u64, Error> {
    splat::formats::write_scene(
        path,
        scene,
        &splat::formats::WriteOptions {
            ply_encoding: encoding,
        },
    )
}

pub fn decompress(a: DecompressArgs) -> Result<(), Error> {
    let mut stages = Stages::new();
    output_to(&a.output);
    check_distinct(&a.output, &[&a.input])?;
    let bar = spinner(format!("decompressing {}", a.input.display()), a.json);
    let bytes = stages.time("read", || container::read_bytes(&a.input))?;
    let scene = stages.time("decode", || splat::decompress(&bytes, &a.input))?;
    drop(bytes);
    bar.set_message(format!("writing {}", a.output.display()));
    let out_bytes = stages.time("write", || {
        write_scene(&a.output, &scene, ply_encoding(a.encoding))
    })?;
    bar.finish_and_clear();
    if a.json {
        let mut v = json!({"input": a.input, "output": a.output, "count": scene.len(), "sh_degree": scene.sh_degree,
            "output_bytes": out_bytes});
        for (k, x) in stages.json() {
            v[k] = x;
        }
        print_json(&v);
    } else {
        report!(
            "{} -> {}: {} Gaussians, SH degree {}, {}; read {:.2?}, decode {:.2?}, write {:.2?}",
            a.input.display(),
            a.output.display(),
            scene.len(),
            scene.sh_degree,
            human(out_bytes),
            stages.get("read"),
            stages.get("decode"),
            stages.get("write")
        );
    }
    Ok(())
}

pub fn info(input: PathBuf, bytes: Vec<u8>, as_json: bool) -> Result<(), Error> {
    // Decoding the whole file checks every checksum and length.
    splat::decompress(&bytes, &input)?;
    let (h, infos) = container::read_table(&bytes, &input)?;
    let n = h.count;
    // Per-Gaussian widths: the histogram, the average, and the mean of
    // d·C(d, b_i) over the Gaussians (relative error per vector).
    let widths = if h.sh_width_mode == 1 {
        let (_, sh) = splat::decompress_split(&bytes, &input)?;
        sh.map(|s| s.widths)
    } else {
        None
    };
    let histogram: Option<[u64; 9]> = widths.as_ref().map(|w| {
        let mut hist = [0u64; 9];
        for &b in w {
            // The decoder checks every width against 0..=8.
            if let Some(h) = hist.get_mut(b as usize) {
                *h += 1;
            }
        }
        hist
    });
    let sh_err = match &histogram {
        None => expected_sh_error(h.dim as usize, h.sh_bits as u32),
        Some(hist) => {
            let dist = turboquant3d::codec::allocate::distortions(h.dim as usize)?;
            Some(
                hist.iter()
                    .zip(dist)
                    .map(|(&c, d)| c as f64 * d)
                    .sum::<f64>()
                    / n as f64,
            )
        }
    };
    let average_bits = histogram.map(|hist| {
        hist.iter()
            .enumerate()
            .map(|(b, &c)| b as f64 * c as f64)
            .sum::<f64>()
            / n as f64
    });
    let normals = match h.normals {
        Normals::Absent => "absent in the input",
        Normals::Zero => "all zero in the input; restored exactly at no cost",
        Normals::Stored => "stored bit-exact",
        Normals::Dropped => "dropped (the input's were not all zero; the output PLY has none)",
    };
    let ab = AttrBits::from_array(h.attr_bits);
    if as_json {
        let v = json!({
            "file": input, "bytes": bytes.len(), "version": h.version,
            "count": n, "input_count": h.input_count, "sh_degree": h.sh_degree, "dim": h.dim,
            "sh_bits": h.sh_bits, "profile": h.profile.name(),
            "rotation": match h.rotation_kind {0 => "dense", 1 => "hadamard", _ => "dense, seeded"},
            "scale": if h.scale_mode == 0 {"norm"} else {"least squares"},
            "order": if h.order == 1 {"morton"} else {"input"},
            "normals": normals, "prune_opacity": h.prune_opacity, "seed": h.seed,
            "chunk_size": h.chunk_size,
            "attribute_bits": if h.profile == Profile::Compact { json!({"position": ab.position, "scale": ab.scale,
                "rotation": ab.rotation, "opacity": ab.opacity, "dc": ab.dc}) } else { json!(null) },
            "extra_properties": h.extra_count,
            "streams": infos.iter().map(|s| json!({"tag": tag_name(&s.tag),
                "coding": s.coding.name(),
                "raw_bytes": s.raw_len, "stored_bytes": s.stored_len,
                "bits_per_gaussian": s.stored_len as f64 * 8.0 / n as f64})).collect::<Vec<_>>(),
            "sh_expected_relative_error": sh_err,
            "sh_width_histogram": histogram, "sh_average_bits": average_bits,
            "sh_sign_flip": h.sh_flags & container::SH_SIGN_FLIP != 0,
            "sh_deduplicated": h.sh_flags & container::SH_DEDUP != 0,
            "sh_exact": h.sh_flags & container::SH_EXACT != 0,
        });
        print_json(&v);
        return Ok(());
    }
    report!(
        "{}: .tq3s version {}, {}, all checksums verified",
        input.display(),
        h.version,
        human(bytes.len() as u64)
    );
    report!(
        "  {} Gaussians{}, {:.1} bits each",
        n,
        if n < h.input_count {
            format!(
                " (pruned from {} at sigmoid(opacity) < {})",
                h.input_count, h.prune_opacity
            )
        } else {
            String::new()
        },
        bytes.len() as f64 * 8.0 / n as f64
    );
    if h.dim > 0 && h.sh_flags & container::SH_EXACT != 0 {
        report!(
            "  SH degree {}: SH-rest d = {}, bit-exact f32 (stream SHX)",
            h.sh_degree,
            h.dim
        );
    } else if h.dim > 0 {
        report!(
            "  SH degree {}: SH-rest d = {}, b {} {}, {} rotation (seed {:#x}, stored), {} scale as f16",
            h.sh_degree,
            h.dim,
            if h.sh_width_mode == 1 {
                "per Gaussian, at most"
            } else {
                "="
            },
            h.sh_bits,
            match h.rotation_kind {
                0 => "dense Haar",
                1 => "randomized Hadamard",
                _ => "dense Haar from the seed",
            },
            h.seed,
            if h.scale_mode == 0 {
                "norm"
            } else {
                "least-squares"
            }
        );
        if h.sh_flags & container::SH_SIGN_FLIP != 0 {
            report!("  SH sign flip: on (signs from each Gaussian's index, undone after decoding)");
        }
        if h.sh_flags & container::SH_DEDUP != 0 {
            report!(
                "  SH-rest deduplicated: each distinct vector coded once, SHIX names each Gaussian's"
            );
        }
    } else {
        report!("  SH degree 0: no SH-rest");
    }
    match h.profile {
        Profile::Exact => {
            report!("  profile exact: the other attributes are bit-exact f32, in the input order")
        }
        Profile::Compact => report!(
            "  profile compact: Morton order, chunks of {}; bits: position {}, log-scale {}, quaternion {}×3 (+2), opacity {}, DC {}",
            h.chunk_size,
            ab.position,
            ab.scale,
            ab.rotation,
            ab.opacity,
            ab.dc
        ),
    }
    report!("  normals: {normals}");
    if h.extra_count > 0 {
        report!(
            "  {} extra per-vertex properties, kept losslessly",
            h.extra_count
        );
    }
    report!("  streams:");
    for s in &infos {
        report!(
            "    {:<5} {:<4} {:>10} -> {:>10}  {:6.2} bits/Gaussian",
            tag_name(&s.tag),
            s.coding.name(),
            human(s.raw_len),
            human(s.stored_len),
            s.stored_len as f64 * 8.0 / n as f64
        );
    }
    match (&histogram, sh_err) {
        (Some(hist), Some(e)) => {
            report!(
                "  SH widths per Gaussian: average b̄ = {:.3}; Gaussians per width 0..8: {:?}",
                average_bits.unwrap_or(0.0),
                hist
            );
            report!(
                "  expected SH-rest error per Gaussian, mean of d·C(d, b_i) = {e:.5} (b_i = 0 drops it: 1.0)"
            );
        }
        (None, Some(e)) => report!(
            "  expected SH-rest error ‖x − x̂‖²/‖x‖² = d·C(d,b) = {e:.5} (bounds {:.5} .. {:.5}; least squares is lower)",
            theory::lower_bound(h.sh_bits as u32),
            theory::upper_bound(h.sh_bits as u32)
        ),
        _ => {}
    }
    Ok(())
}

/// Measured ‖x − x̂‖²/‖x‖² of the SH-rest, matched through the storage order.
fn sh_relative_error(orig: &Scene, back: &Scene, order: &[u32]) -> f64 {
    let d = back.rest_dim();
    let (k_in, k_out) = (
        turboquant3d::splat::rest_per_channel(orig.sh_degree),
        turboquant3d::splat::rest_per_channel(back.sh_degree),
    );
    let (mut err, mut energy) = (0f64, 0f64);
    for (k, &i) in order.iter().enumerate() {
        let x = orig.rest(i as usize);
        let y = &back.sh_rest[k * d..(k + 1) * d];
        for c in 0..3 {
            for j in 0..k_out {
                let (a, b) = (x[c * k_in + j] as f64, y[c * k_out + j] as f64);
                err += (a - b) * (a - b);
                energy += a * a;
            }
        }
    }
    if energy > 0.0 { err / energy } else { 0.0 }
}

pub fn demo(a: DemoArgs) -> Result<(), Error> {
    let quiet = a.json;
    let tmp;
    let dir = match &a.keep {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| Error::Io {
                path: d.clone(),
                source: e,
            })?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().map_err(|e| Error::Io {
                path: std::env::temp_dir(),
                source: e,
            })?;
            tmp.path().to_path_buf()
        }
    };
    let (ply_in, packed, ply_out) = (
        dir.join("demo.ply"),
        dir.join("demo.tq3s"),
        dir.join("demo.out.ply"),
    );

    let bar = spinner(
        format!("generating {} procedural Gaussians", a.count),
        quiet,
    );
    let t = Instant::now();
    let scene = synth::generate(&synth::SynthConfig {
        count: a.count,
        sh_degree: a.sh_degree,
        seed: a.seed,
    });
    let t_gen = t.elapsed();
    bar.set_message(format!("writing {}", ply_in.display()));
    ply::write_ply(&ply_in, &scene, PlyEncoding::BinaryLittleEndian)?;
    bar.finish_and_clear();
    drop(scene);
    let ply_bytes = file_len(&ply_in)?;

    // The timed pipeline: PLY file in, .tq3s out, and back.
    let opts = CompressOptions {
        profile: a.profile.into(),
        sh_bits: a.sh_bits,
        ..Default::default()
    };
    let engine = Engine::new(DeviceChoice::Auto)?;
    let bar = spinner("compressing".into(), quiet);
    let t = Instant::now();
    let scene = ply::read_ply(&ply_in)?;
    let c = splat::compress_on(&scene, &opts, &engine)?;
    c.write(&packed)?;
    let t_compress = t.elapsed();
    bar.set_message("decompressing".to_string());
    let t = Instant::now();
    let back = splat::read(&packed)?;
    ply::write_ply(&ply_out, &back, PlyEncoding::BinaryLittleEndian)?;
    let t_decompress = t.elapsed();
    bar.set_message("checking".to_string());
    let packed_bytes = file_len(&packed)?;

    // Check: the PLY written reads back as the decoded scene; the SH error
    // is the theory's; every Gaussian is there.
    let reread = ply::read_ply(&ply_out)?;
    let mut failures = Vec::new();
    if reread != back {
        failures.push("the decompressed PLY does not read back as the decoded scene".to_string());
    }
    if back.len() != scene.len() {
        failures.push(format!("{} Gaussians in, {} out", scene.len(), back.len()));
    }
    let order = splat::storage_order(&scene, &opts);
    let expected = expected_sh_error(back.rest_dim(), a.sh_bits);
    let measured = (back.rest_dim() > 0).then(|| sh_relative_error(&scene, &back, &order));
    // The least-squares scale lowers the error below d·C(d, b), the more the
    // smaller d: by about 20 % at degree 1 (d = 9), 10 % at d = 45.
    if let (Some(e), Some(m)) = (expected, measured)
        && !(m <= e * 1.03 && m >= e * 0.70)
    {
        failures.push(format!(
            "SH error {m:.5} is not within [0.70, 1.03] × theory {e:.5}"
        ));
    }
    let alpha_err = order
        .iter()
        .enumerate()
        .map(|(k, &i)| (sigmoid(back.opacity[k]) - sigmoid(scene.opacity[i as usize])).abs())
        .fold(0f32, f32::max);
    let m = ((1u32 << opts.attr_bits.opacity) - 1) as f32;
    if opts.profile == Profile::Compact && alpha_err > 0.5 / m + 1e-6 {
        failures.push(format!(
            "opacity error {alpha_err} exceeds the {}-bit bound {}",
            opts.attr_bits.opacity,
            0.5 / m
        ));
    }
    bar.finish_and_clear();

    let ratio = ply_bytes as f64 / packed_bytes as f64;
    if a.json {
        let v = json!({
            "count": a.count, "sh_degree": a.sh_degree, "sh_bits": a.sh_bits, "profile": opts.profile.name(),
            "ply_bytes": ply_bytes, "compressed_bytes": packed_bytes, "ratio": ratio,
            "predicted_total_bound": c.prediction.total_bound(), "predicted_fixed": c.prediction.fixed(),
            "sh_expected_relative_error": expected, "sh_measured_relative_error": measured,
            "max_alpha_error": alpha_err, "device": c.sh_run.ran.to_string(),
            "seconds": {"generate": t_gen.as_secs_f64(), "compress": t_compress.as_secs_f64(), "decompress": t_decompress.as_secs_f64()},
            "checks_passed": failures.is_empty(), "failures": failures,
        });
        print_json(&v);
    } else {
        report!(
            "demo: {} procedural Gaussians, SH degree {} (d = {}), b = {}, profile {}",
            a.count,
            a.sh_degree,
            back.rest_dim(),
            a.sh_bits,
            opts.profile.name()
        );
        report!(
            "  PLY {} -> .tq3s {}: {ratio:.2}x smaller ({:.1} bits per Gaussian)",
            human(ply_bytes),
            human(packed_bytes),
            packed_bytes as f64 * 8.0 / a.count as f64
        );
        report!(
            "  predicted ≤ {} ({} of it exact); actual {}",
            human(c.prediction.total_bound()),
            human(c.prediction.fixed()),
            human(packed_bytes)
        );
        if let (Some(e), Some(m)) = (expected, measured) {
            report!(
                "  SH-rest error ‖x − x̂‖²/‖x‖²: measured {m:.5}, theory d·C(d,b) = {e:.5} ({:+.1} %, least-squares scale)",
                100.0 * (m / e - 1.0)
            );
        }
        report!("  largest opacity (alpha) error {alpha_err:.5}");
        report!(
            "  compress (read PLY + encode + write) {:.2?}, SH-rest on {}; decompress (read + decode + write PLY) {:.2?} on the CPU; {} threads",
            t_compress,
            c.sh_run.ran,
            t_decompress,
            rayon::current_num_threads()
        );
        if a.keep.is_some() {
            report!("  files kept in {}", dir.display());
        }
        if failures.is_empty() {
            report!(
                "  checks passed: count, PLY round trip, SH error against theory, opacity bound"
            );
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "demo checks failed: {}",
            failures.join("; ")
        )))
    }
}

/// Min and max of each column of `rows` (NaN-free input: the readers
/// refuse or map non-finite values; a NaN is skipped here).
fn column_ranges<const N: usize>(rows: impl Iterator<Item = [f32; N]>) -> Vec<(f32, f32)> {
    let mut r = vec![(f32::INFINITY, f32::NEG_INFINITY); N];
    for row in rows {
        for (c, v) in r.iter_mut().zip(row) {
            if !v.is_nan() {
                *c = (c.0.min(v), c.1.max(v));
            }
        }
    }
    r
}

/// `info` on a scene in a format other than `.tq3s`: what its header says
/// (format by format), then what it holds: the count, the SH degree and
/// the range of every attribute, in the units of the 3DGS PLY.
pub fn info_foreign(input: PathBuf, as_json: bool) -> Result<(), Error> {
    let format = splat::formats::detect(&input)?;
    let facts = splat::formats::describe(&input, format)?;
    let scene = splat::formats::read_scene(&input)?;
    let bytes = file_len(&input)?;
    let n = scene.len();
    let pos = column_ranges(scene.positions.iter().copied());
    let scales = column_ranges(scene.scales.iter().copied());
    let alpha = column_ranges(scene.opacity.iter().map(|&o| [sigmoid(o)]));
    let colour = column_ranges(
        scene
            .dc
            .iter()
            .map(|d| d.map(|v| 0.5 + turboquant3d::splat::scene::SH_C0 * v)),
    );
    let d = scene.rest_dim();
    let norms: Vec<f64> = (0..n)
        .map(|i| {
            scene
                .rest(i)
                .iter()
                .map(|&v| v as f64 * v as f64)
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let rest_max = norms.iter().copied().fold(0.0f64, f64::max);
    let rest_mean = norms.iter().sum::<f64>() / n.max(1) as f64;
    let pair = |r: &[(f32, f32)]| -> Vec<[f64; 2]> {
        r.iter().map(|&(a, b)| [a as f64, b as f64]).collect()
    };
    if as_json {
        let facts_json: serde_json::Map<String, serde_json::Value> = facts
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let v = json!({
            "file": input, "format": format.name(), "bytes": bytes, "header": facts_json,
            "count": n, "sh_degree": scene.sh_degree, "rest_dim": d,
            "normals": scene.normals.is_some(),
            "extra_properties": scene.extras.properties.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            "ranges": {
                "position": pair(&pos), "log_scale": pair(&scales), "opacity": pair(&alpha)[0],
                "colour": pair(&colour),
                "sh_rest_norm": {"mean": rest_mean, "max": rest_max},
            },
        });
        print_json(&v);
        return Ok(());
    }
    report!("{}: {}, {}", input.display(), format.name(), human(bytes));
    for (k, v) in &facts {
        report!("  {k}: {v}");
    }
    report!(
        "  {n} Gaussians, SH degree {} (d = {d}){}",
        scene.sh_degree,
        if scene.normals.is_some() {
            ", normals"
        } else {
            ""
        }
    );
    let fmt = |r: &[(f32, f32)]| {
        r.iter()
            .map(|(a, b)| format!("[{a:.4}, {b:.4}]"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    report!("  position x y z: {}", fmt(&pos));
    report!("  log-scale:      {}", fmt(&scales));
    report!("  opacity:        {}", fmt(&alpha));
    report!("  colour r g b:   {}", fmt(&colour));
    if d > 0 {
        report!("  SH-rest norm:   mean {rest_mean:.4}, max {rest_max:.4}");
    }
    if !scene.extras.properties.is_empty() {
        let names: Vec<&str> = scene
            .extras
            .properties
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        report!("  extra properties: {}", names.join(", "));
    }
    Ok(())
}
