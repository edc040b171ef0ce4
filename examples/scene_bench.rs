//! Whole-scene throughput and peak memory: generates a procedural scene of N
//! Gaussians (SH degree 3), writes it as a 3DGS PLY, then compresses the PLY
//! file to .tq3s and decompresses it back to a PLY, each stage in its own
//! process so that its peak resident memory (VmHWM) is its own.
//!
//! ```text
//! cargo run --release --example scene_bench -- [N=1000000] [--runs 3] [--dir DIR] [--profile compact|exact] [--sh-bits 3]
//! ```
//!
//! Reports the median wall time of each stage over the runs, the peak
//! memory, and both as ratios to the PLY size. The stages run on the CPU
//! path. Linux only (peak memory comes from /proc/self/status).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use turboquant3d::splat::container::Profile;
use turboquant3d::splat::ply::{self, PlyEncoding};
use turboquant3d::splat::synth;
use turboquant3d::splat::{self, CompressOptions};

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One stage in this process; prints "seconds peak_bytes".
fn stage(args: &[String]) -> Result<(), turboquant3d::Error> {
    let t = Instant::now();
    match args[0].as_str() {
        "generate" => {
            let n: usize = args[1].parse().expect("count");
            let scene = synth::generate(&synth::SynthConfig {
                count: n,
                sh_degree: 3,
                seed: 7,
            });
            ply::write_ply(Path::new(&args[2]), &scene, PlyEncoding::BinaryLittleEndian)?;
        }
        "compress" => {
            let opts = CompressOptions {
                profile: Profile::from_name(&args[3]).expect("profile"),
                sh_bits: args[4].parse().expect("bits"),
                ..Default::default()
            };
            let scene = ply::read_ply(Path::new(&args[1]))?;
            splat::compress(&scene, &opts)?.write(Path::new(&args[2]))?;
        }
        "decompress" => {
            let scene = splat::read(Path::new(&args[1]))?;
            ply::write_ply(Path::new(&args[2]), &scene, PlyEncoding::BinaryLittleEndian)?;
        }
        s => panic!("unknown stage {s}"),
    }
    println!("{} {}", t.elapsed().as_secs_f64(), peak_rss_bytes());
    Ok(())
}

fn run_stage(args: &[&str]) -> (f64, u64) {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .arg("--stage")
        .args(args)
        .output()
        .expect("spawn stage");
    if !out.status.success() {
        panic!(
            "stage {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let secs = it.next().and_then(|s| s.parse().ok()).expect("seconds");
    let peak = it.next().and_then(|s| s.parse().ok()).expect("peak");
    (secs, peak)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--stage") {
        if let Err(e) = stage(&args[1..]) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut n = 1_000_000usize;
    let mut runs = 3;
    let mut dir: Option<PathBuf> = None;
    let mut profile = "compact".to_string();
    let mut bits = "3".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().expect("--runs N").parse().expect("runs"),
            "--dir" => dir = Some(PathBuf::from(it.next().expect("--dir DIR"))),
            "--profile" => profile = it.next().expect("--profile P").clone(),
            "--sh-bits" => bits = it.next().expect("--sh-bits B").clone(),
            s => n = s.parse().expect("N, the number of Gaussians"),
        }
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let (ply_in, packed, ply_out) = (
        dir.join("bench.ply"),
        dir.join("bench.tq3s"),
        dir.join("bench.out.ply"),
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let (gen_s, _) = run_stage(&["generate", &n.to_string(), &s(&ply_in)]);
    let ply_bytes = std::fs::metadata(&ply_in).unwrap().len();
    println!(
        "scene: {n} Gaussians, SH degree 3, PLY {:.1} MB (generated in {gen_s:.2} s); profile {profile}, b = {bits}; {} threads",
        ply_bytes as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    let (mut tc, mut td, mut pc, mut pd) = (vec![], vec![], 0u64, 0u64);
    for _ in 0..runs {
        let (t, p) = run_stage(&["compress", &s(&ply_in), &s(&packed), &profile, &bits]);
        tc.push(t);
        pc = pc.max(p);
        let (t, p) = run_stage(&["decompress", &s(&packed), &s(&ply_out)]);
        td.push(t);
        pd = pd.max(p);
    }
    let packed_bytes = std::fs::metadata(&packed).unwrap().len();
    println!(
        "compress   PLY -> .tq3s: median {:.3} s over {runs} runs ({:.1} MB/s of PLY), peak memory {:.1} MB = {:.2}x the PLY",
        median(tc.clone()),
        ply_bytes as f64 / 1e6 / median(tc),
        pc as f64 / 1e6,
        pc as f64 / ply_bytes as f64
    );
    println!(
        "decompress .tq3s -> PLY: median {:.3} s over {runs} runs, peak memory {:.1} MB = {:.2}x the PLY",
        median(td),
        pd as f64 / 1e6,
        pd as f64 / ply_bytes as f64
    );
    println!(
        "size: {:.1} MB -> {:.1} MB, ratio {:.2}x",
        ply_bytes as f64 / 1e6,
        packed_bytes as f64 / 1e6,
        ply_bytes as f64 / packed_bytes as f64
    );
}
