//! `tq3d`: the turboquant3d command line.
//!
//! One module per workload, each on the same shared base:
//! - [`common`]: what every subcommand shares (device, profile, scale,
//!   attribute-bits and resolution arguments, numeric checks, reading a
//!   scene, views, spinners), with [`common::alloc`], the per-Gaussian SH
//!   width flags of `compress` and `eval`;
//! - [`vectors`]: raw vectors (`encode`, `decode`, `codebook`, `info` on .tqv);
//! - [`scene`]: splat scenes (`compress`, `decompress`, `info` on .tq3s, `demo`);
//! - [`eval`] and [`plan`]: rendering-based evaluation and planning of scenes;
//! - [`view`]: the interactive viewer (`view`), also the renderer's
//!   embedding example.
//!
//! Workload modules import [`common`] only, never each other; `main`
//! dispatches. Each workload (KV caches in [`kv`], hash grids in [`grid`])
//! has its own module here on the same base.

// Reports go through `common::report!`, which survives a closed pipe.
#![deny(clippy::print_stdout)]

mod common;
mod convert;
mod eval;
mod grid;
mod kv;
mod plan;
mod scene;
mod target;
mod vectors;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use turboquant3d::Error;

use crate::common::DeviceArg;

#[derive(Parser)]
#[command(
    name = "tq3d",
    version,
    about = "TurboQuant compression of 3D Gaussian Splatting scenes and other model parameters"
)]
#[command(
    long_about = "TurboQuant compression of 3D Gaussian Splatting scenes and other model parameters.\n\n\
Each d-dimensional vector (45 SH-rest coefficients per Gaussian at degree 3) keeps one scale; \
its direction is rotated by a fixed random orthogonal matrix and every coordinate is quantised \
with the Lloyd–Max codebook of the sphere's coordinate density. Nothing is trained: the codebook \
depends on (d, b) alone, and the expected error d·C(d, b) is known before compressing.\n\n\
Scenes: `compress`, `decompress`, `info`, `demo`, `eval`, `plan`. Raw vectors (.npy): `encode`, `decode`, \
`codebook`, `info`. Hash grids: `grid compress|decompress|info|eval`. KV caches: `kv compress|decompress|info|eval`."
)]
struct Cli {
    /// Worker threads, 1..=4 × the available cores (default: all cores).
    /// The output is identical for any count.
    #[arg(long, global = true, value_parser = common::threads, allow_negative_numbers = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a 3DGS scene (.ply, or antimatter15 .splat) into a .tq3s file.
    Compress(scene::CompressArgs),
    /// Decompress a .tq3s file into a standard 3DGS PLY (or a .splat).
    Decompress(scene::DecompressArgs),
    /// Convert a scene between formats (.ply, .compressed.ply, .splat, .spz, .sog, .glb, .tq3s), by extension.
    Convert(convert::ConvertArgs),
    /// Generate a procedural 1M-Gaussian scene, compress, decompress and check it.
    Demo(scene::DemoArgs),
    /// Render original and compressed scenes; report size, PSNR/SSIM, predicted and measured error.
    Eval(eval::EvalArgs),
    /// Before compressing: the quantiser each parameter group should get and the SH bits a PSNR target needs.
    Plan(plan::PlanArgs),
    /// Encode a 2-D f32/f16 .npy of shape [N, D] into a .tqv file.
    Encode(vectors::EncodeArgs),
    /// Decode a .tqv file into an f32 .npy of shape [N, D].
    Decode {
        /// The .tqv file.
        input: PathBuf,
        /// Where to write the .npy (`-` for standard output; never the input,
        /// nor a device).
        #[arg(short, long)]
        output: PathBuf,
        /// Where to run: auto (a hardware GPU if present, else the CPU), gpu (strictly), cpu.
        #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
        device: DeviceArg,
    },
    /// Print the Lloyd–Max codebook for (d, b) with its distortion and bounds.
    Codebook {
        /// Vector dimension d (2..=65536).
        #[arg(long, value_parser = common::vector_dim)]
        dim: usize,
        /// Bits per coordinate b (1..=8).
        #[arg(long, value_parser = common::whole_bits)]
        bits: u32,
        /// Print JSON (keys: dim, bits, centroids, boundaries, distortion, lower_bound, upper_bound).
        #[arg(long)]
        json: bool,
    },
    /// Instant-NGP hash-grid tables (.npy, .safetensors) and .tq3g files: compress, decompress, info, eval.
    #[command(subcommand)]
    Grid(grid::GridCommand),
    /// Transformer KV caches: compress, decompress, info, eval.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Open a window on a scene (.tq3s drawn from its compressed SH-rest): orbit, pan, zoom, fly.
    View(view::ViewArgs),
    /// Describe a file: a .tq3s scene, .tqv vectors or a .tq3g hash grid (header, streams, sizes, expected error), or any scene format tq3d reads (header, count, attribute ranges).
    Info {
        /// The file: .tq3s, .tqv, .tq3g, or a scene in any format `tq3d convert` reads.
        input: PathBuf,
        /// Print JSON (scene and .tq3g files).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    quiet_device_select();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print as clap prints them.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    if let Some(n) = cli.threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
    {
        eprintln!("error: cannot start {n} threads: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Compress(args) => scene::compress(args),
        Command::Decompress(args) => scene::decompress(args),
        Command::Convert(args) => convert::convert(args),
        Command::Demo(args) => scene::demo(args),
        Command::Eval(args) => eval::eval(args),
        Command::Plan(args) => plan::plan(args),
        Command::Encode(args) => vectors::encode(args),
        Command::Decode {
            input,
            output,
            device,
        } => vectors::decode(input, output, device),
        Command::Codebook { dim, bits, json } => vectors::codebook(dim, bits, json),
        Command::Info { input, json } => info(input, json),
        Command::View(args) => view::view(args),
        Command::Grid(cmd) => grid::run(cmd),
        Command::Kv(cmd) => kv::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A clap error on one line: its message lines joined, without the usage
/// and the pointer to --help.
fn one_line(text: &str) -> String {
    text.lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `info` on either kind of file, told apart by the magic.
fn info(input: PathBuf, json: bool) -> Result<(), Error> {
    use std::io::Read;
    let shortest = turboquant3d::splat::container::MAGIC
        .len()
        .max(turboquant3d::format::tqv::MAGIC.len());
    // The magic tells the kind; each kind's reader then reads only as far
    // as its header declares (so `info /dev/zero` stops at once).
    let io = |e| Error::Io {
        path: input.clone(),
        source: e,
    };
    let mut magic = Vec::with_capacity(shortest);
    std::fs::File::open(&input)
        .map_err(io)?
        .take(shortest as u64)
        .read_to_end(&mut magic)
        .map_err(io)?;
    if magic.starts_with(&turboquant3d::splat::container::MAGIC) {
        let bytes = turboquant3d::splat::container::read_bytes(&input)?;
        scene::info(input, bytes, json)
    } else if magic.starts_with(&turboquant3d::grid::file::MAGIC) {
        grid::info_cmd(&input, json)
    } else if magic.starts_with(&turboquant3d::format::tqv::MAGIC) {
        if json {
            return Err(Error::InvalidArgument(
                "--json is available for scene files, not .tqv".into(),
            ));
        }
        let bytes = turboquant3d::format::tqv::read_bytes(&input)?;
        vectors::info_bytes(input, bytes)
    } else {
        // Any other scene format: what its header says, and what it holds.
        scene::info_foreign(input, json)
    }
}

/// Mesa's implicit Vulkan device-select layer connects to the Wayland and X
/// servers while listing devices and prints `error: XDG_RUNTIME_DIR is
/// invalid…` where there is none, on runs that succeed. It only reorders
/// devices, and `--device` makes that choice here, so the command line turns
/// it off unless the user asked it for a device (`MESA_VK_DEVICE_SELECT`).
/// The library leaves the environment alone: a host owns its process.
fn quiet_device_select() {
    if std::env::var_os("MESA_VK_DEVICE_SELECT").is_none()
        && std::env::var_os("NODEVICE_SELECT").is_none()
    {
        // SAFETY: the first thing main does, before any other thread exists.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

#[cfg(test)]
mod tests {
    /// Clap's own consistency checks (argument ids named in conflicts,
    /// defaults that parse): a release build does not run them otherwise.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
