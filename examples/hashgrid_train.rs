//! Trains an Instant-NGP 2D hash grid with an MLP readout on an image, on
//! the CPU, and reports what the hash-grid codec needs to know about it:
//!
//!     cargo run --release --example hashgrid_train -- [--out hashgrid_out] [--levels L] [--log2-t K]
//!         [--steps S] [--batch B] [--hidden W] [--layers 1|2] [--lr LR] [--base N] [--growth G]
//!         [--seed S] [--size PX] [--view K] [--procedural]
//!
//! The target is `../shared/data/plant.splat` (a real capture) rendered by
//! the CPU reference renderer at PX × PX (default 256) from orbit view K of
//! 8 (default 0) on a black background; when that file is missing, or with
//! `--procedural`, it is `grid::fit::procedural_target`. Defaults are
//! `FitConfig::default()`.
//!
//! It prints the training time, the PSNR of the render against the target
//! with the f32 table and with the table rounded to f16, each level's
//! resolution, storage, untouched share and readout sensitivity. With
//! `--out DIR` it writes `grid.npy` (f16, `[L, T, F]`), `mlp.npy` (f32, the
//! MLP's parameters in `Mlp::params` order), `meta.json` (the config, the
//! levels, the MLP widths, the figures), `target.png` and `render.png`
//! (`hashgrid_out/` is git-ignored).

use std::path::{Path, PathBuf};
use std::time::Instant;

use npyz::WriterBuilder;

use turboquant3d::grid::fit::{
    FitConfig, fit, procedural_target, psnr, render, round_f16, sensitivity,
};
use turboquant3d::render::{Image, cpu, image::write_png, orbit};
use turboquant3d::splat::formats::read_scene;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const PLANT: &str = "../shared/data/plant.splat";

fn main() -> Res<()> {
    let mut cfg = FitConfig::default();
    let (mut out, mut size, mut view, mut procedural) = (None::<PathBuf>, 256usize, 0usize, false);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--procedural" {
            procedural = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(v)),
            "--levels" => cfg.levels = v.parse()?,
            "--log2-t" => cfg.log2_table_size = v.parse()?,
            "--steps" => cfg.steps = v.parse()?,
            "--batch" => cfg.batch_size = v.parse()?,
            "--hidden" => cfg.hidden_width = v.parse()?,
            "--layers" => cfg.hidden_layers = v.parse()?,
            "--lr" => cfg.learning_rate = v.parse()?,
            "--base" => cfg.base_resolution = v.parse()?,
            "--growth" => cfg.growth = v.parse()?,
            "--seed" => cfg.seed = v.parse()?,
            "--size" => size = v.parse()?,
            "--view" => view = v.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    cfg.validate()?;

    let (target, source) = if !procedural && Path::new(PLANT).exists() {
        let scene = read_scene(Path::new(PLANT))?;
        let cams = orbit(&scene.positions, 8, size as u32, size as u32);
        let cam = cams.get(view).ok_or("--view must be below 8")?;
        let img = cpu::render(&scene, cam, [0.0; 3]);
        let data = img.data.iter().map(|v| v.clamp(0.0, 1.0)).collect();
        (
            data,
            format!("{PLANT}, orbit view {view} of 8, CPU reference renderer"),
        )
    } else {
        (
            procedural_target(size, size),
            "procedural_target".to_string(),
        )
    };
    println!("target: {size}×{size}, {source}");
    println!("config: {cfg:?}");

    let t0 = Instant::now();
    let grid = fit(&target, size, size, &cfg)?;
    let train_s = t0.elapsed().as_secs_f64();
    let img = grid.render(size, size)?;
    let table16 = round_f16(&grid.table);
    let img16 = render(&grid.encoding, &table16, &grid.mlp, size, size)?;
    let (p32, p16) = (psnr(&img, &target)?, psnr(&img16, &target)?);
    let sens = sensitivity(&grid.encoding, &grid.table, &grid.mlp, size, size)?;
    let untouched = grid.untouched_fraction();
    println!(
        "threads {}, training {train_s:.2} s ({} steps × {} pixels), final batch MSE {:.3e}",
        rayon::current_num_threads(),
        cfg.steps,
        cfg.batch_size,
        grid.losses.last().copied().unwrap_or(f64::NAN)
    );
    println!("PSNR f32 table {p32:.3} dB, f16 table {p16:.3} dB");
    let total_untouched = untouched.iter().sum::<f64>() / untouched.len() as f64;
    println!("untouched entries: {:.1}% of L·T", 100.0 * total_untouched);
    println!("level  N_l   storage  used    untouched  sensitivity");
    for (l, lv) in grid.encoding.levels().iter().enumerate() {
        println!(
            "{l:>5}  {:>4}  {:<7}  {:>6}  {:>8.1}%  {:.4e}",
            lv.resolution,
            if lv.dense { "dense" } else { "hashed" },
            lv.used,
            100.0 * untouched[l],
            sens.per_level[l]
        );
    }

    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        let t = grid.encoding.table_size() as u64;
        let l = grid.encoding.levels().len() as u64;
        let f = grid.encoding.features() as u64;
        write_npy(&dir.join("grid.npy"), &[l, t, f], &grid.table_f16())?;
        write_npy(
            &dir.join("mlp.npy"),
            &[grid.mlp.params().len() as u64],
            grid.mlp.params(),
        )?;
        let meta = serde_json::json!({
            "target": source,
            "size": size,
            "config": format!("{cfg:?}"),
            "levels": grid.encoding.levels().iter().map(|lv| serde_json::json!({
                "resolution": lv.resolution, "dense": lv.dense, "used": lv.used,
            })).collect::<Vec<_>>(),
            "mlp_sizes": grid.mlp.sizes(),
            "train_seconds": train_s,
            "psnr_f32": p32,
            "psnr_f16": p16,
            "untouched_fraction": untouched,
            "sensitivity_per_level": sens.per_level,
        });
        std::fs::write(dir.join("meta.json"), serde_json::to_string_pretty(&meta)?)?;
        let png = |name: &str, data: &[f32]| {
            write_png(
                &dir.join(name),
                &Image {
                    width: size as u32,
                    height: size as u32,
                    data: data.to_vec(),
                },
            )
        };
        png("target.png", &target)?;
        png("render.png", &img)?;
        println!(
            "wrote grid.npy, mlp.npy, meta.json, target.png, render.png to {}",
            dir.display()
        );
    }
    Ok(())
}

/// A C-order `.npy` of `data` with this shape.
fn write_npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[u64],
    data: &[T],
) -> Res<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .writer(file)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(())
}
