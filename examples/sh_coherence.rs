//! How coherent the SH-rest errors of identical input vectors are, with and
//! without the SH sign flip, and what storing each distinct vector once
//! would save.
//!
//! ```text
//! cargo run --release --example sh_coherence -- SCENE [--bits 1,2,3]
//! ```
//!
//! For every group of m ≥ 2 Gaussians whose input SH-rest vectors are
//! bit-identical, with e_i the decoded error of member i, the group's
//! coherence is ‖Σ e_i‖² / Σ ‖e_i‖²: m when the errors are equal, 1 when
//! they are uncorrelated. Printed: the mean over groups, the pooled ratio
//! (Σ_g ‖Σ e‖² / Σ_g Σ ‖e‖²), the theory with the flip (1 + (m − 1)·d·C(d,
//! b) averaged over groups: only the quantiser's shrinkage along x stays
//! common, docs/THEORY.md §16), and the SH NMSE Σ‖e‖² / Σ‖x‖². Both files
//! are the compact profile's, uniform width b.

use std::collections::HashMap;
use std::path::PathBuf;

use turboquant3d::Codebook;
use turboquant3d::splat::{self, CompressOptions, formats};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut input: Option<PathBuf> = None;
    let mut bits: Vec<u32> = vec![1, 2, 3];
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bits" => {
                bits = args
                    .next()
                    .ok_or("--bits needs a list")?
                    .split(',')
                    .map(|b| b.parse())
                    .collect::<Result<_, _>>()?;
            }
            _ => input = Some(PathBuf::from(a)),
        }
    }
    let input = input.ok_or("usage: sh_coherence SCENE [--bits 1,2,3]")?;
    let scene = formats::read_scene(&input)?;
    let d = scene.rest_dim();
    let n = scene.len();
    if d == 0 {
        return Err("the scene has no SH-rest".into());
    }
    // Groups of bit-identical input vectors (input indices).
    let mut by_vec: HashMap<Vec<u32>, Vec<u32>> = HashMap::new();
    for i in 0..n {
        let key = scene.rest(i).iter().map(|v| v.to_bits()).collect();
        by_vec.entry(key).or_default().push(i as u32);
    }
    let distinct = by_vec.len();
    let groups: Vec<Vec<u32>> = by_vec.into_values().filter(|g| g.len() >= 2).collect();
    let in_groups: usize = groups.iter().map(Vec::len).sum();
    let max_m = groups.iter().map(Vec::len).max().unwrap_or(0);
    println!(
        "{}: {n} Gaussians, d = {d}, {distinct} distinct SH-rest vectors; {} groups of m ≥ 2 hold {in_groups} Gaussians (largest m = {max_m})",
        input.display(),
        groups.len()
    );
    println!(
        "{:>2} {:>5} {:>9} {:>11} {:>11} {:>12}",
        "b", "flip", "SH NMSE", "coh. mean", "coh. pooled", "theory mean"
    );
    for &b in &bits {
        let dc = Codebook::get(d, b)?.distortion();
        let theory: f64 = groups
            .iter()
            .map(|g| 1.0 + (g.len() as f64 - 1.0) * dc)
            .sum::<f64>()
            / groups.len().max(1) as f64;
        for flip in [false, true] {
            let opts = CompressOptions {
                sh_bits: b,
                sign_flip: flip,
                // Every copy coded: what the flip does to repeats.
                dedup: false,
                ..Default::default()
            };
            let order = splat::storage_order(&scene, &opts);
            let bytes = splat::compress(&scene, &opts)?.to_bytes()?;
            let back = splat::decompress(&bytes, &input)?;
            // Error of input Gaussian i, from its storage slot.
            let mut slot = vec![0u32; n];
            for (k, &i) in order.iter().enumerate() {
                slot[i as usize] = k as u32;
            }
            let err = |i: u32| -> Vec<f64> {
                let x = scene.rest(i as usize);
                let y = back.rest(slot[i as usize] as usize);
                x.iter()
                    .zip(y)
                    .map(|(a, b)| *a as f64 - *b as f64)
                    .collect()
            };
            let (mut e2, mut x2) = (0.0, 0.0);
            for i in 0..n as u32 {
                e2 += err(i).iter().map(|v| v * v).sum::<f64>();
                x2 += scene
                    .rest(i as usize)
                    .iter()
                    .map(|v| (*v as f64).powi(2))
                    .sum::<f64>();
            }
            let (mut coh_sum, mut num, mut den) = (0.0, 0.0, 0.0);
            for g in &groups {
                let mut sum = vec![0.0; d];
                let mut each = 0.0;
                for &i in g {
                    let e = err(i);
                    each += e.iter().map(|v| v * v).sum::<f64>();
                    sum.iter_mut().zip(&e).for_each(|(s, v)| *s += v);
                }
                let total: f64 = sum.iter().map(|v| v * v).sum();
                if each > 0.0 {
                    coh_sum += total / each;
                }
                num += total;
                den += each;
            }
            println!(
                "{b:>2} {:>5} {:>9.5} {:>11.3} {:>11.3} {:>12}",
                if flip { "on" } else { "off" },
                e2 / x2,
                coh_sum / groups.len().max(1) as f64,
                num / den.max(f64::MIN_POSITIVE),
                if flip {
                    format!("{theory:.3}")
                } else {
                    "m".into()
                }
            );
        }
    }
    // Dedup: each distinct vector's codes and scale once, plus an index per
    // Gaussian of ceil(log2 U) bits, against codes and a scale per Gaussian.
    let index_bits = (distinct as f64).log2().ceil().max(1.0);
    println!("dedup estimate (uniform b, before zstd):");
    for &b in &bits {
        let per = d as f64 * b as f64 / 8.0 + 2.0;
        let now = n as f64 * per;
        let dedup = distinct as f64 * per + n as f64 * index_bits / 8.0;
        println!(
            "  b = {b}: SH {:.0} bytes now, {:.0} deduplicated ({} distinct × {per:.3} + {n} × {index_bits} bits): saves {:.0} bytes ({:.1} %)",
            now,
            dedup,
            distinct,
            now - dedup,
            100.0 * (now - dedup) / now
        );
    }
    Ok(())
}
