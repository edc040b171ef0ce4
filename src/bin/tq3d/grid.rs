//! The hash-grid commands: `grid compress`, `grid decompress`, `grid info`
//! and `grid eval` on Instant-NGP tables ([L, T, F], [N, F] or flat, f16 or
//! f32, `.npy` or safetensors) and `.tq3g` files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use turboquant3d::Error;
use turboquant3d::format::check_distinct;
use turboquant3d::gpu::Engine;
use turboquant3d::grid::anchors::{self, Anchor};
use turboquant3d::grid::codec::{DEFAULT_GROUP, GridOptions, compress};
use turboquant3d::grid::compressed::{CompressedGrid, WidthMode};
use turboquant3d::grid::file;
use turboquant3d::grid::io::{Layout, read_array, read_grid, write_grid};
use turboquant3d::grid::table::{Grid, nmse};

use crate::common::{
    BitsList, DeviceArg, LevelSizes, grid_bits, grid_bits_list, grid_features, grid_group, human,
    json_f64, level_sizes, output_to, print_json, report, scale_bits, spinner,
};

#[derive(Subcommand)]
pub enum GridCommand {
    /// Compress a hash-grid table (.npy or .safetensors) into a .tq3g file.
    Compress(CompressArgs),
    /// Decompress a .tq3g file into a table of the original shape and dtype (.npy or .safetensors, by extension).
    Decompress {
        /// The .tq3g file.
        input: PathBuf,
        /// Output table, .npy or .safetensors (`-` for standard output as .npy).
        #[arg(short, long)]
        output: PathBuf,
        /// Tensor name in a safetensors output.
        #[arg(long, default_value = turboquant3d::grid::io::DEFAULT_TENSOR)]
        tensor: String,
    },
    /// Describe a .tq3g file: levels, grouping, widths, sizes, expected error.
    Info {
        /// The .tq3g file.
        input: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compress a table at several budgets; report feature NMSE against theory and the anchors at the same bits.
    Eval(EvalArgs),
}

/// How to read the table.
#[derive(clap::Args)]
pub struct TableArgs {
    /// Entries per level, comma-separated (e.g. 4913,16384,...), for an
    /// [N, F] or flat table; an [L, T, F] table has T per level.
    #[arg(long, value_parser = level_sizes)]
    levels: Option<LevelSizes>,
    /// Features per entry F of a flat table (default 2).
    #[arg(long, value_parser = grid_features)]
    features: Option<usize>,
    /// The tensor to read from a safetensors file with several.
    #[arg(long)]
    tensor: Option<String>,
    /// Weights of how much the output depends on the table (.npy or
    /// .safetensors): one per level ([L]), the level's share of the
    /// readout's input gradient, or one per value (the table's own shape),
    /// a readout's first-order sensitivity. Without it every group weighs
    /// its energy ‖x_g‖².
    #[arg(long)]
    weights: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum WidthsArg {
    /// A width per group, 0..=8 (the allocator's exact optimum).
    Group,
    /// One width per level; negligible groups still cost nothing.
    Level,
}

impl From<WidthsArg> for WidthMode {
    fn from(w: WidthsArg) -> WidthMode {
        match w {
            WidthsArg::Group => WidthMode::PerGroup,
            WidthsArg::Level => WidthMode::PerLevel,
        }
    }
}

/// The codec's settings shared by `compress` and `eval`.
#[derive(clap::Args)]
pub struct CodecArgs {
    /// Entries per group g: each group of g consecutive entries of a level
    /// is one vector of d = g·F (default 8: d = 16 at F = 2).
    #[arg(long, value_parser = grid_group, default_value_t = DEFAULT_GROUP)]
    group: usize,
    /// Widths per group or per level.
    #[arg(long, value_enum, default_value_t = WidthsArg::Group)]
    widths: WidthsArg,
    /// Bits per log-domain scale code, 1..=16 (default: the best of 4..=12).
    #[arg(long, value_parser = scale_bits)]
    scale_bits: Option<u8>,
    /// Seed of the rotation (the rotation itself is stored in the file).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to encode: auto (a hardware GPU if present, else the CPU), gpu (strictly), cpu. The file is the same bytes.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
}

#[derive(clap::Args)]
pub struct CompressArgs {
    /// Input table: .npy or .safetensors, [L, T, F], [N, F] or flat, f16 or f32.
    input: PathBuf,
    /// Output .tq3g (`-` for standard output; never the input, nor a device).
    #[arg(short, long)]
    output: PathBuf,
    /// Average bits per feature, counting every byte of the file (headers,
    /// rotation, codebooks, widths, scales, codes); e.g. 2.7 is 5.9× smaller
    /// than f16.
    #[arg(long, value_parser = grid_bits)]
    bits: f64,
    #[command(flatten)]
    table: TableArgs,
    #[command(flatten)]
    codec: CodecArgs,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Input table: .npy or .safetensors.
    input: PathBuf,
    /// Budgets in bits per feature, comma-separated.
    #[arg(long, value_parser = grid_bits_list, default_value = "2,2.7,3,4,5")]
    bits: BitsList,
    #[command(flatten)]
    table: TableArgs,
    #[command(flatten)]
    codec: CodecArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: GridCommand) -> Result<(), Error> {
    match cmd {
        GridCommand::Compress(a) => compress_cmd(a),
        GridCommand::Decompress {
            input,
            output,
            tensor,
        } => decompress_cmd(&input, &output, &tensor),
        GridCommand::Info { input, json } => info_cmd(&input, json),
        GridCommand::Eval(a) => eval_cmd(a),
    }
}

fn read_table(input: &Path, t: &TableArgs) -> Result<Grid, Error> {
    let layout = Layout {
        level_sizes: t.levels.as_ref().map(|l| l.0.clone()),
        features: t.features,
        tensor: t.tensor.clone(),
    };
    read_grid(input, &layout)
}

/// Level or value weights from `--weights`.
fn weights(t: &TableArgs, grid: &Grid, opts: &mut GridOptions) -> Result<(), Error> {
    let Some(path) = &t.weights else {
        return Ok(());
    };
    let (_, w, _) = read_array(path, None)?;
    if let Some(i) = w.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
        return Err(Error::InvalidArgument(format!(
            "{}: weight {i} is {}; weights must be finite and ≥ 0",
            path.display(),
            w[i]
        )));
    }
    if w.len() == grid.level_count() {
        opts.level_weights = Some(w.iter().map(|&x| x as f64).collect());
    } else if w.len() == grid.values() {
        opts.value_weights = Some(w);
    } else {
        return Err(Error::InvalidArgument(format!(
            "{}: {} weights; expected one per level ({}) or one per value ({})",
            path.display(),
            w.len(),
            grid.level_count(),
            grid.values()
        )));
    }
    Ok(())
}

fn options(bits: f64, c: &CodecArgs) -> GridOptions {
    let mut o = GridOptions::new(bits);
    o.group = c.group;
    o.widths = c.widths.into();
    o.scale_bits = c.scale_bits;
    o.seed = c.seed;
    o
}

fn compress_cmd(a: CompressArgs) -> Result<(), Error> {
    let t0 = Instant::now();
    output_to(&a.output);
    check_distinct(&a.output, &[&a.input])?;
    let grid = read_table(&a.input, &a.table)?;
    let mut opts = options(a.bits, &a.codec);
    weights(&a.table, &grid, &mut opts)?;
    let engine = Engine::new(a.codec.device.into())?;
    let bar = spinner(
        format!(
            "compressing {} values on {}",
            grid.values(),
            engine.describe()
        ),
        false,
    );
    let result = compress(&grid, &opts, Some(&engine));
    bar.finish_and_clear();
    let (c, run) = result.map_err(|e| e.in_file(&a.input))?;
    let bytes = file::write(&a.output, &c)?;
    let back = c.decode()?;
    report!(
        "{} -> {}: {} levels × F = {}, {} values ({}) -> {} ({:.3} bits per feature, {:.2}x smaller than f16)",
        a.input.display(),
        a.output.display(),
        grid.level_count(),
        grid.features,
        grid.values(),
        grid.dtype.name(),
        human(bytes),
        8.0 * bytes as f64 / grid.values() as f64,
        grid.f16_bytes() as f64 / bytes as f64
    );
    report!(
        "  g = {} (d = {}), {} widths, S = {} scale bits; {} of {} groups coded, the rest negligible",
        c.group,
        c.dim(),
        c.width_mode.name(),
        c.scale_bits,
        c.coded(),
        c.widths.len()
    );
    report!(
        "  feature NMSE {:.3e} (theory {:.3e}); encoded on {}{}; {:.2} s",
        nmse(&grid.data, &back.data),
        run.theory_nmse,
        run.ran,
        if run.ties > 0 {
            format!(" ({} near-ties re-encoded on the CPU)", run.ties)
        } else {
            String::new()
        },
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn decompress_cmd(input: &Path, output: &Path, tensor: &str) -> Result<(), Error> {
    output_to(output);
    check_distinct(output, &[input])?;
    let c = file::read(input)?;
    let grid = c.decode()?;
    let bytes = write_grid(output, &grid, Some(tensor))?;
    report!(
        "{} -> {}: shape {:?} {}, {}",
        input.display(),
        output.display(),
        grid.shape,
        grid.dtype.name(),
        human(bytes)
    );
    Ok(())
}

fn info_json(c: &CompressedGrid, bytes: u64) -> Result<serde_json::Value, Error> {
    let groups = c.groups()?;
    let mut levels = Vec::new();
    let mut at = 0;
    for (l, &n) in groups.per_level.iter().enumerate() {
        let w = &c.widths[at..at + n];
        at += n;
        let coded = w.iter().filter(|&&b| b > 0).count();
        let mean = w.iter().map(|&b| b as f64).sum::<f64>() / n as f64;
        levels.push(json!({
            "entries": c.levels[l],
            "groups": n,
            "coded": coded,
            "mean_width": json_f64(mean, "mean width")?,
            "log2_scale_range": [c.scale_ranges[l].lo, c.scale_ranges[l].hi],
        }));
    }
    Ok(json!({
        "version": file::VERSION,
        "shape": c.shape,
        "dtype": c.dtype.name(),
        "levels": levels,
        "features": c.features,
        "group": c.group,
        "dim": c.dim(),
        "width_mode": c.width_mode.name(),
        "scale_bits": c.scale_bits,
        "scale_mode": c.scale_mode.name(),
        "rotation": c.rotation.kind().name(),
        "seed": c.seed,
        "widths_used": c.widths_used(),
        "coded_groups": c.coded(),
        "groups": c.widths.len(),
        "bytes": bytes,
        "bits_per_feature": json_f64(8.0 * bytes as f64 / c.values() as f64, "bits")?,
        "ratio_vs_f16": json_f64(2.0 * c.values() as f64 / bytes as f64, "ratio")?,
        "code_bytes": c.codes.len(),
    }))
}

/// `tq3d grid info`, and `tq3d info` on a `.tq3g`.
pub fn info_cmd(input: &Path, json: bool) -> Result<(), Error> {
    let bytes = file::read_bytes(input)?;
    let c = file::from_bytes(&bytes, input)?;
    let v = info_json(&c, bytes.len() as u64)?;
    if json {
        print_json(&v);
        return Ok(());
    }
    report!(
        "{}: .tq3g version {}, all checksums verified",
        input.display(),
        file::VERSION
    );
    report!(
        "  table {:?} {}, {} levels × F = {}",
        c.shape,
        c.dtype.name(),
        c.levels.len(),
        c.features
    );
    report!(
        "  groups of g = {} entries (d = {}), dense rotation (seed {}), {} widths {:?}, {}-bit log scales ({})",
        c.group,
        c.dim(),
        c.seed,
        c.width_mode.name(),
        c.widths_used(),
        c.scale_bits,
        c.scale_mode.name()
    );
    report!(
        "  size {} ({:.3} bits per feature, {:.2}x smaller than f16); codes {}; {} of {} groups coded",
        human(bytes.len() as u64),
        8.0 * bytes.len() as f64 / c.values() as f64,
        2.0 * c.values() as f64 / bytes.len() as f64,
        human(c.codes.len() as u64),
        c.coded(),
        c.widths.len()
    );
    report!("  level  entries  coded groups  mean width");
    if let Some(levels) = v["levels"].as_array() {
        for (l, lv) in levels.iter().enumerate() {
            report!(
                "  {l:>5}  {:>7}  {:>5} / {:<5}  {:.2}",
                lv["entries"],
                lv["coded"],
                lv["groups"],
                lv["mean_width"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

/// One row of `eval`.
fn row(
    name: &str,
    bytes: u64,
    grid: &Grid,
    data: &[f32],
    theory: Option<f64>,
    secs: f64,
    opts: &GridOptions,
) -> Result<serde_json::Value, Error> {
    let weighted = weighted_nmse(grid, data, opts);
    Ok(json!({
        "setting": name,
        "bytes": bytes,
        "bits_per_feature": json_f64(8.0 * bytes as f64 / grid.values() as f64, "bits")?,
        "ratio_vs_f16": json_f64(grid.f16_bytes() as f64 / bytes as f64, "ratio")?,
        "nmse": json_f64(nmse(&grid.data, data), "NMSE")?,
        "theory_nmse": theory.map(|t| json_f64(t, "theory")).transpose()?,
        "weighted_nmse": weighted.map(|t| json_f64(t, "weighted NMSE")).transpose()?,
        "seconds": secs,
    }))
}

/// Σ w·(x − x̂)² / Σ w·x² with the level or value weights, if any.
fn weighted_nmse(grid: &Grid, data: &[f32], opts: &GridOptions) -> Option<f64> {
    let per_value: Vec<f64> = if let Some(w) = &opts.value_weights {
        w.iter().map(|&x| x as f64).collect()
    } else if let Some(w) = &opts.level_weights {
        grid.levels
            .iter()
            .zip(w)
            .flat_map(|(&t, &x)| std::iter::repeat_n(x, t * grid.features))
            .collect()
    } else {
        return None;
    };
    let (mut e, mut s) = (0.0, 0.0);
    for ((&a, &b), &w) in grid.data.iter().zip(data).zip(&per_value) {
        e += w * ((a - b) as f64).powi(2);
        s += w * (a as f64).powi(2);
    }
    Some(if s > 0.0 { e / s } else { 0.0 })
}

fn eval_cmd(a: EvalArgs) -> Result<(), Error> {
    let grid = read_table(&a.input, &a.table)?;
    let engine = Engine::new(a.codec.device.into())?;
    let mut rows = Vec::new();
    let bar = spinner(format!("evaluating {}", a.input.display()), a.json);
    let anchor_row = |r: turboquant3d::Result<Anchor>,
                      secs: f64,
                      o: &GridOptions|
     -> Result<Option<serde_json::Value>, Error> {
        match r {
            Ok(x) => row(&x.name, x.bytes, &grid, &x.data, None, secs, o).map(Some),
            // An anchor that cannot fit a budget is left out of the table.
            Err(Error::InvalidArgument(_)) => Ok(None),
            Err(e) => Err(e),
        }
    };
    for &b in &a.bits.0 {
        let mut opts = options(b, &a.codec);
        weights(&a.table, &grid, &mut opts)?;
        let t0 = Instant::now();
        let (c, run) = compress(&grid, &opts, Some(&engine)).map_err(|e| e.in_file(&a.input))?;
        let bytes = file::to_bytes(&c)?.len() as u64;
        let back = c.decode()?;
        let name = format!(
            "TurboQuant g = {} ({} widths, S = {}) at {b} bits",
            c.group,
            c.width_mode.name(),
            c.scale_bits
        );
        rows.push(row(
            &name,
            bytes,
            &grid,
            &back.data,
            Some(run.theory_nmse),
            t0.elapsed().as_secs_f64(),
            &opts,
        )?);
        let t0 = Instant::now();
        let u = anchors::uniform_per_level(&grid, b.round().max(1.0) as u32);
        rows.extend(anchor_row(u, t0.elapsed().as_secs_f64(), &opts)?);
        let t0 = Instant::now();
        let k = anchors::kmeans(&grid, b, 0);
        rows.extend(anchor_row(k, t0.elapsed().as_secs_f64(), &opts)?);
    }
    let opts = {
        let mut o = options(8.0, &a.codec);
        weights(&a.table, &grid, &mut o)?;
        o
    };
    let t0 = Instant::now();
    rows.extend(anchor_row(
        Ok(anchors::cast_f8(&grid)),
        t0.elapsed().as_secs_f64(),
        &opts,
    )?);
    let t0 = Instant::now();
    rows.extend(anchor_row(
        Ok(anchors::cast_int8(&grid)),
        t0.elapsed().as_secs_f64(),
        &opts,
    )?);
    bar.finish_and_clear();
    if a.json {
        print_json(&json!({
            "input": a.input.display().to_string(),
            "shape": grid.shape,
            "dtype": grid.dtype.name(),
            "levels": grid.levels,
            "features": grid.features,
            "values": grid.values(),
            "device": engine.describe(),
            "rows": rows,
        }));
        return Ok(());
    }
    report!(
        "{}: shape {:?} {}, {} levels, {} values; f16 size {}",
        a.input.display(),
        grid.shape,
        grid.dtype.name(),
        grid.level_count(),
        grid.values(),
        human(grid.f16_bytes())
    );
    report!(
        "  setting                                            bits/feat  ratio   NMSE       theory     weighted   time"
    );
    for r in &rows {
        let f = |k: &str| {
            r[k].as_f64()
                .map_or("-".to_string(), |v| format!("{v:.3e}"))
        };
        report!(
            "  {:<50} {:>8.3}  {:>5.2}x  {:<10} {:<10} {:<10} {:.2} s",
            r["setting"].as_str().unwrap_or(""),
            r["bits_per_feature"].as_f64().unwrap_or(0.0),
            r["ratio_vs_f16"].as_f64().unwrap_or(0.0),
            f("nmse"),
            f("theory_nmse"),
            f("weighted_nmse"),
            r["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}
