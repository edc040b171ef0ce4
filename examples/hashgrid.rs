//! The hash-grid codec on a grid we train ourselves: fits an Instant-NGP 2D
//! hash encoding with its MLP readout to a 256² image (`grid::fit`, the
//! plant capture's render, or the procedural target without it), then
//! compresses the f16 table with the codec and with each anchor at several
//! budgets, and prints for each: bits per feature (every stored byte),
//! ratio against f16, the image-PSNR loss against the uncompressed f16
//! table's render, feature NMSE (measured, and the exact theory
//! Σ‖x_g‖²·d·C(d, b_g)/Σ‖x‖²), and the time.
//!
//!     cargo run --release --example hashgrid -- [--bits 2,2.7,3,4,5] [--steps S] [--procedural] [--all]
//!
//! Without `--all` it runs the default codec and the anchors; with it, every
//! variant: g ∈ {8, 16}, per-group or per-level widths, weights from the
//! energy alone, the readout's per-level gradient share or its per-value
//! sensitivity, and dense levels grouped as consecutive slots or 2-D tiles.

use std::path::Path;
use std::time::Instant;

use turboquant3d::grid::anchors::{self, Anchor};
use turboquant3d::grid::codec::{GridOptions, compress};
use turboquant3d::grid::compressed::WidthMode;
use turboquant3d::grid::file;
use turboquant3d::grid::fit::{
    FitConfig, FittedGrid, fit, procedural_target, psnr, render, round_f16, sensitivity,
};
use turboquant3d::grid::table::{Dtype, Grid, nmse};
use turboquant3d::render::{cpu, orbit};
use turboquant3d::splat::formats::read_scene;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const PLANT: &str = "../shared/data/plant.splat";
const SIZE: usize = 256;

#[derive(Clone, Copy, PartialEq)]
enum Weights {
    Energy,
    Level,
    Value,
}

impl Weights {
    fn name(self) -> &'static str {
        match self {
            Weights::Energy => "energy",
            Weights::Level => "level grad",
            Weights::Value => "value sens",
        }
    }
}

/// The permutation that lists each dense level's used entries in 2-D tiles
/// of `tw × th` cells (the rest of the level unchanged): `perm[new] = old`.
fn tile_permutation(fg: &FittedGrid, tw: u32, th: u32) -> Vec<usize> {
    let t = fg.encoding.table_size();
    let mut perm = Vec::with_capacity(fg.table.len() / 2);
    for (l, lv) in fg.encoding.levels().iter().enumerate() {
        let base = l * t;
        if !lv.dense {
            perm.extend(base..base + t);
            continue;
        }
        let side = lv.resolution + 1;
        let mut seen = vec![false; t];
        for ty in (0..side).step_by(th as usize) {
            for tx in (0..side).step_by(tw as usize) {
                for y in ty..(ty + th).min(side) {
                    for x in tx..(tx + tw).min(side) {
                        let e = fg.encoding.index(l, x, y);
                        if !seen[e] {
                            seen[e] = true;
                            perm.push(base + e);
                        }
                    }
                }
            }
        }
        perm.extend((0..t).filter(|&e| !seen[e]).map(|e| base + e));
    }
    perm
}

fn permute(v: &[f32], perm: &[usize], f: usize) -> Vec<f32> {
    perm.iter()
        .flat_map(|&o| v[o * f..(o + 1) * f].iter().copied())
        .collect()
}

fn unpermute(v: &[f32], perm: &[usize], f: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for (n, &o) in perm.iter().enumerate() {
        out[o * f..(o + 1) * f].copy_from_slice(&v[n * f..(n + 1) * f]);
    }
    out
}

struct Ctx {
    fg: FittedGrid,
    grid: Grid,
    target: Vec<f32>,
    base_psnr: f64,
    level_w: Vec<f64>,
    value_w: Vec<f32>,
}

impl Ctx {
    fn loss(&self, table: &[f32]) -> Res<f64> {
        let img = render(&self.fg.encoding, table, &self.fg.mlp, SIZE, SIZE)?;
        Ok(self.base_psnr - psnr(&img, &self.target)?)
    }

    fn row(&self, name: &str, bytes: u64, data: &[f32], theory: Option<f64>, secs: f64) -> Res<()> {
        let values = self.grid.values();
        println!(
            "| {name} | {:.2} | {:.2}× | {:.3} dB | {:.2e} | {} | {:.2} s |",
            8.0 * bytes as f64 / values as f64,
            self.grid.f16_bytes() as f64 / bytes as f64,
            self.loss(data)?,
            nmse(&self.grid.data, data),
            theory.map_or("-".into(), |t| format!("{t:.2e}")),
            secs
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn ours(
        &self,
        bits: f64,
        g: usize,
        mode: WidthMode,
        w: Weights,
        tiles: bool,
        label: &str,
    ) -> Res<()> {
        let mut opts = GridOptions::new(bits);
        opts.group = g;
        opts.widths = mode;
        match w {
            Weights::Energy => {}
            Weights::Level => opts.level_weights = Some(self.level_w.clone()),
            Weights::Value => opts.value_weights = Some(self.value_w.clone()),
        }
        let f = self.grid.features;
        let perm = tiles.then(|| {
            let (tw, th) = if g == 8 { (4, 2) } else { (4, 4) };
            tile_permutation(&self.fg, tw, th)
        });
        let mut input = self.grid.clone();
        if let Some(p) = &perm {
            input.data = permute(&self.grid.data, p, f);
            if let Some(v) = &opts.value_weights {
                opts.value_weights = Some(permute(v, p, f));
            }
        }
        let t0 = Instant::now();
        let (c, run) = compress(&input, &opts, None)?;
        let bytes = file::to_bytes(&c)?;
        let back = file::from_bytes(&bytes, Path::new("mem.tq3g"))?.decode()?;
        let secs = t0.elapsed().as_secs_f64();
        let data = match &perm {
            Some(p) => unpermute(&back.data, p, f),
            None => back.data,
        };
        let name = format!(
            "{label}TurboQuant g = {g} (d = {}), {} widths, {} weights{}, S = {}{label}",
            g * f,
            mode.name(),
            w.name(),
            if tiles { ", tiled dense levels" } else { "" },
            c.scale_bits
        );
        self.row(
            &name,
            bytes.len() as u64,
            &data,
            Some(run.theory_nmse),
            secs,
        )
    }

    fn anchor(&self, a: turboquant3d::Result<Anchor>, secs: f64) -> Res<()> {
        let a = a?;
        self.row(&a.name, a.bytes, &a.data, None, secs)
    }
}

fn main() -> Res<()> {
    let mut cfg = FitConfig::default();
    let mut bits = vec![2.0, 2.7, 3.0, 4.0, 5.0];
    let (mut procedural, mut all) = (false, false);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--procedural" => procedural = true,
            "--all" => all = true,
            "--steps" => cfg.steps = it.next().ok_or("--steps needs a value")?.parse()?,
            "--bits" => {
                bits = it
                    .next()
                    .ok_or("--bits needs a value")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let target = if !procedural && Path::new(PLANT).exists() {
        let scene = read_scene(Path::new(PLANT))?;
        let cams = orbit(&scene.positions, 8, SIZE as u32, SIZE as u32);
        let img = cpu::render(&scene, &cams[0], [0.0; 3]);
        println!("target: {PLANT} rendered at {SIZE}², orbit view 0 of 8");
        img.data.iter().map(|v| v.clamp(0.0, 1.0)).collect()
    } else {
        println!("target: procedural_target {SIZE}²");
        procedural_target(SIZE, SIZE)
    };
    let t0 = Instant::now();
    let fg = fit(&target, SIZE, SIZE, &cfg)?;
    let table16 = round_f16(&fg.table);
    let (l, t, f) = (
        fg.encoding.levels().len(),
        fg.encoding.table_size(),
        fg.encoding.features(),
    );
    let img = render(&fg.encoding, &table16, &fg.mlp, SIZE, SIZE)?;
    let base_psnr = psnr(&img, &target)?;
    let sens = sensitivity(&fg.encoding, &table16, &fg.mlp, SIZE, SIZE)?;
    let untouched = fg.untouched_fraction();
    println!(
        "trained {l} levels × {t} × {f} in {:.1} s: {base_psnr:.2} dB with the f16 table; untouched {:.1}% of entries",
        t0.elapsed().as_secs_f64(),
        100.0 * untouched.iter().sum::<f64>() / l as f64
    );
    let grid = Grid::from_array(&[l, t, f], table16, Dtype::F16, None, None)?;
    let ctx = Ctx {
        fg,
        grid,
        target,
        base_psnr,
        level_w: sens.per_level.clone(),
        value_w: sens.per_value.iter().map(|&v| v as f32).collect(),
    };
    println!(
        "| setting | bits/feature | ratio vs f16 | PSNR loss | feature NMSE | theory NMSE | time |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &b in &bits {
        ctx.ours(b, 8, WidthMode::PerGroup, Weights::Value, false, "**")?;
        if all {
            for g in [8usize, 16] {
                for mode in [WidthMode::PerGroup, WidthMode::PerLevel] {
                    for w in [Weights::Energy, Weights::Level, Weights::Value] {
                        ctx.ours(b, g, mode, w, false, "")?;
                    }
                }
                ctx.ours(b, g, WidthMode::PerGroup, Weights::Value, true, "")?;
            }
        }
        let whole = b.round().max(1.0) as u32;
        let t0 = Instant::now();
        let u = anchors::uniform_per_level(&ctx.grid, whole);
        ctx.anchor(u, t0.elapsed().as_secs_f64())?;
        let t0 = Instant::now();
        let k = anchors::kmeans(&ctx.grid, b, 0);
        ctx.anchor(k, t0.elapsed().as_secs_f64())?;
    }
    let t0 = Instant::now();
    ctx.anchor(Ok(anchors::cast_f8(&ctx.grid)), t0.elapsed().as_secs_f64())?;
    let t0 = Instant::now();
    ctx.anchor(
        Ok(anchors::cast_int8(&ctx.grid)),
        t0.elapsed().as_secs_f64(),
    )?;
    for b in [6u32, 8] {
        let t0 = Instant::now();
        let u = anchors::uniform_per_level(&ctx.grid, b);
        ctx.anchor(u, t0.elapsed().as_secs_f64())?;
    }
    Ok(())
}
