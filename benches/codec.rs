//! Encode and decode throughput on the CPU: vectors/s and input GB/s.
//!
//!     cargo bench --bench codec
//!
//! Groups: the quantizer (`d45_dense`, `d1024_hadamard`), the codebook
//! solve, the rANS of SH codes (`rans_shc_200k`) and whole scenes in memory
//! (`scene_200k`, `scene_1000k`, and `scene_10000k` with `TQ3D_BENCH_10M=1`:
//! what `tq3d compress`/`decompress` do between reading and writing the
//! file).
//!
//! The workloads of the issue: d = 45 (3DGS SH) with 1,000,000 vectors and
//! d = 1024 (transformer tokens) with 65,536 vectors, b ∈ {2, 3, 4}; plus the
//! codebook solve. Each quantizer is `QuantizerConfig::new`, which is what
//! `tq3d encode` runs by default (auto rotation, least-squares scale stored
//! as f32), and `Quantizer::encode` goes through `encode_into`, the call the
//! CLI makes per slab.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::{Codebook, Quantizer, QuantizerConfig, RotationKind};

fn gaussian(n: usize, d: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect()
}

fn codec(c: &mut Criterion) {
    for (d, n, kind) in [
        (45usize, 1_000_000usize, RotationKind::Dense),
        (1024, 65_536, RotationKind::Hadamard),
    ] {
        let x = gaussian(n, d);
        let mut group = c.benchmark_group(format!("d{d}_{}", kind.name()));
        group.sample_size(10);
        group.throughput(Throughput::ElementsAndBytes {
            elements: n as u64,
            bytes: (n * d * 4) as u64,
        });
        // b = 6 and 8: the wide tail of the per-Gaussian SH widths.
        let widths: &[u32] = if d == 45 {
            &[2, 3, 4, 6, 8]
        } else {
            &[2, 3, 4]
        };
        for &bits in widths {
            let mut cfg = QuantizerConfig::new(d, bits);
            cfg.rotation = kind;
            let q = Quantizer::new(&cfg).unwrap();
            group.bench_with_input(
                BenchmarkId::new("encode", format!("b{bits}")),
                &x,
                |bench, x| bench.iter(|| q.encode(x).unwrap()),
            );
            let enc = q.encode(&x).unwrap();
            group.bench_with_input(
                BenchmarkId::new("decode", format!("b{bits}")),
                &enc,
                |bench, enc| bench.iter(|| q.decode(enc).unwrap()),
            );
        }
        group.finish();
    }
}

fn codebook(c: &mut Criterion) {
    let mut group = c.benchmark_group("codebook_solve");
    for (d, b) in [(45usize, 3u32), (1024, 4), (4096, 4)] {
        group.bench_function(format!("d{d}_b{b}"), |bench| {
            bench.iter(|| Codebook::compute(d, b).unwrap())
        });
    }
    group.finish();
}

/// The rANS of SH codes (`SHC `) as `tq3d compress` writes it: 200,000
/// Gaussians of 45 codes each, per-Gaussian widths 0..=4 drawn as the
/// footprint allocation spreads them, the codes of a d = 45 quantizer.
fn rans(c: &mut Criterion) {
    use rand::RngExt;
    use turboquant3d::codec::entropy::{self, Run};
    let (n, d) = (200_000usize, 45usize);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let widths: Vec<u8> = (0..n)
        .map(|_| [0u8, 1, 1, 1, 2, 2, 3, 4][rng.random_range(0..8)])
        .collect();
    let x = gaussian(n, d);
    let mut packed = Vec::new();
    let mut at = 0u64;
    for b in 1..=4u32 {
        let q = Quantizer::new(&QuantizerConfig::new(d, b)).unwrap();
        let rows: Vec<f32> = (0..n)
            .filter(|&i| widths[i] as u32 == b)
            .flat_map(|i| x[i * d..(i + 1) * d].iter().copied())
            .collect();
        let enc = q.encode(&rows).unwrap();
        // Each width's codes, appended bit-exactly after the previous ones.
        let bits = (rows.len() as u64) * b as u64;
        packed.resize((at + bits).div_ceil(8) as usize, 0);
        for k in 0..bits {
            if enc.codes()[(k / 8) as usize] >> (k % 8) & 1 == 1 {
                let o = at + k;
                packed[(o / 8) as usize] |= 1 << (o % 8);
            }
        }
        at += bits;
    }
    // The layout that matches: widths sorted, as appended above.
    let mut sorted = widths.clone();
    sorted.sort_unstable();
    let runs: Vec<Run> = sorted
        .iter()
        .map(|&b| Run {
            bits: b,
            count: d as u64,
        })
        .collect();
    let coded = entropy::encode(&packed, &runs).unwrap();
    let mut group = c.benchmark_group("rans_shc_200k");
    group.sample_size(20);
    group.throughput(Throughput::Elements((n * d) as u64));
    group.bench_function("encode", |bench| {
        bench.iter(|| entropy::encode(&packed, &runs).unwrap())
    });
    group.bench_function("decode", |bench| {
        bench.iter(|| entropy::decode(&coded, &runs).unwrap())
    });
    // As `tq3d compress` lays SHC out: Gaussians in storage order, each
    // width its own run (merged where neighbours share one), so blocks
    // are made of many short segments. The same bytes read under these
    // runs (same total bits): the speed of the layout, not of real codes.
    let mut interleaved: Vec<Run> = Vec::new();
    for &b in widths.iter().filter(|&&b| b > 0) {
        match interleaved.last_mut() {
            Some(r) if r.bits == b => r.count += d as u64,
            _ => interleaved.push(Run {
                bits: b,
                count: d as u64,
            }),
        }
    }
    group.bench_function("encode_storage_order", |bench| {
        bench.iter(|| entropy::encode(&packed, &interleaved).unwrap())
    });
    group.finish();
}

/// `tq3d compress` and `decompress` of `tq3d demo`'s scenes in memory (no
/// PLY read or write): the CLI's default per-Gaussian SH widths (footprint
/// weight, b̄ = 1) and compact profile, on the CPU.
fn scene(c: &mut Criterion) {
    use std::path::Path;
    use turboquant3d::codec::allocate;
    use turboquant3d::splat::importance::{Weight, importance};
    use turboquant3d::splat::synth::{SynthConfig, generate};
    use turboquant3d::splat::{self, CompressOptions};
    // 10M (about 3 GB and minutes of sampling) only when asked:
    // TQ3D_BENCH_10M=1 cargo bench --bench codec -- scene_10000k
    let mut counts = vec![200_000usize, 1_000_000];
    if std::env::var_os("TQ3D_BENCH_10M").is_some() {
        counts.push(10_000_000);
    }
    for count in counts {
        let scene = generate(&SynthConfig {
            count,
            sh_degree: 3,
            seed: 1,
        });
        let mut group = c.benchmark_group(format!("scene_{}k", count / 1000));
        group.sample_size(10);
        group.throughput(Throughput::Elements(count as u64));
        let opts_for = |scene: &turboquant3d::splat::Scene| {
            let v = importance(scene, 3, Weight::OpacityFootprint, None).unwrap();
            let w = allocate::for_average_bits(&v, &vec![true; v.len()], 45, 1.0).unwrap();
            CompressOptions {
                sh_bits: 1,
                sh_widths: Some(w.widths),
                ..Default::default()
            }
        };
        group.bench_function("compress", |bench| {
            bench.iter(|| {
                let opts = opts_for(&scene);
                splat::compress(&scene, &opts).unwrap().to_bytes().unwrap()
            })
        });
        let bytes = splat::compress(&scene, &opts_for(&scene))
            .unwrap()
            .to_bytes()
            .unwrap();
        group.bench_function("decompress", |bench| {
            bench.iter(|| splat::decompress(&bytes, Path::new("bench.tq3s")).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, codec, codebook, rans, scene);
criterion_main!(benches);
