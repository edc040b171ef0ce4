//! The whole-scene rate–distortion model on a scene: probes, κ, the
//! predicted front, and predicted against measured PSNR at targets.
//!
//! `cargo run --release --example scene_rd -- SCENE [--views N] [--res WxH] [--targets 40,45,50,55]`

use std::path::PathBuf;
use std::time::Instant;

use turboquant3d::render::{Camera, Image, cpu, orbit};
use turboquant3d::splat::formats::read_scene;
use turboquant3d::splat::rd::{self, Target};
use turboquant3d::splat::{CompressOptions, Scene};

#[path = "common/args.rs"]
mod args;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let path = PathBuf::from(argv.first().ok_or("usage: scene_rd SCENE")?);
    let views: usize = args::arg("--views", 8);
    let res: String = args::arg("--res", "256x256".to_string());
    let targets: String = args::arg("--targets", "40,45,50,55".to_string());
    let (w, h) = res.split_once('x').ok_or("--res WxH")?;
    let (w, h): (u32, u32) = (w.parse()?, h.parse()?);
    let scene = read_scene(&path)?;
    let cams = orbit(&scene.positions, views, w, h);
    let render = |s: &Scene, v: &[Camera]| -> turboquant3d::Result<Vec<Image>> {
        Ok(v.iter().map(|c| cpu::render(s, c, [0.0; 3])).collect())
    };
    let t = Instant::now();
    let reference = render(&scene, &cams)?;
    println!(
        "{}: {} Gaussians; reference {:.2?}",
        path.display(),
        scene.len(),
        t.elapsed()
    );
    let t = Instant::now();
    let model = rd::build_model(
        &scene,
        &CompressOptions::default(),
        &cams,
        &reference,
        &render,
        &|m| eprintln!("  {m} ({:.1?})", t.elapsed()),
    )?;
    println!(
        "model in {:.2?}, {} renders; floor {:.3e}; κ uniform {:.2}, allocated {:.2}",
        t.elapsed(),
        model.renders,
        model.floor,
        model.kappa[0],
        model.kappa[1]
    );
    for (k, g) in rd::Group::ALL.iter().enumerate() {
        let [(pl, ml), (p, m)] = model.attr_probe[k];
        let (lo, hi) = g.range();
        let bytes: Vec<String> = (lo..=hi)
            .map(|b| format!("{b}:{}", model.attr_bytes[k][b as usize]))
            .collect();
        println!(
            "  {:<9} probes {pl} bits mse {ml:.3e}, {p} bits mse {m:.3e}; bytes {}",
            g.name(),
            bytes.join(" ")
        );
    }
    for (s, o) in model.sh.iter().enumerate() {
        println!(
            "  SH {:<22} base {} B, estimate {:.3e}, corrected {:.3e}",
            o.setting.to_string(),
            o.base_bytes,
            o.estimate,
            model.sh_mse(s)
        );
    }
    let ply = turboquant3d::splat::ply::ply_size(
        &scene,
        turboquant3d::splat::ply::PlyEncoding::BinaryLittleEndian,
    )
    .unwrap_or(0) as f64;
    // tq3d eval's default views: 8 orbit views at 256x256.
    let eval_views = orbit(&scene.positions, 8, 256, 256);
    let eval_ref = render(&scene, &eval_views)?;
    for p in targets.split(',') {
        let p: f64 = p.parse()?;
        match model.choose(Target::Psnr(p)) {
            None => println!("target {p} dB: unreachable"),
            Some(c) => {
                let (bytes, mse) = rd::verify(&scene, &model, &c, &cams, &reference, &render)?;
                let (_, mse8) = rd::verify(&scene, &model, &c, &eval_views, &eval_ref, &render)?;
                let db = turboquant3d::render::metrics::psnr_from_mse;
                println!(
                    "target {p} dB: {} attr {:?}; predicted {} B {:.2} dB; measured {} B ({:.2}x) {:.2} dB on the probe views, {:.2} dB on eval's",
                    model.sh[c.sh].setting,
                    c.attr_bits.to_array(),
                    c.bytes,
                    c.psnr(),
                    bytes,
                    ply / bytes as f64,
                    db(mse),
                    db(mse8)
                );
            }
        }
    }
    Ok(())
}
