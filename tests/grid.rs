//! The hash-grid codec on synthetic grids: error against the exact theory
//! for d = g·F, negligible groups for free, the budget, round trips through
//! the file and the array formats, per-level widths, determinism, the
//! anchors against their own closed forms, rejects, and GPU/CPU parity.

mod common;

use std::path::Path;
use std::sync::Arc;

use half::f16;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::grid::anchors;
use turboquant3d::grid::codec::{GridOptions, compress};
use turboquant3d::grid::compressed::WidthMode;
use turboquant3d::grid::file;
use turboquant3d::grid::io::{Layout, read_grid, write_grid};
use turboquant3d::grid::table::{Dtype, Grid, nmse};
use turboquant3d::{Error, ScaleMode, theory};

/// A trained-like grid: `levels` × `t` × 2; the first `dense` levels hold
/// real values only in their first `used` entries and ±1e-4 init noise
/// elsewhere; level l's values have RMS 2^(−l/2) with heavy tails.
fn synthetic(levels: usize, t: usize, dense: usize, used: usize, seed: u64) -> Grid {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(levels * t * 2);
    for l in 0..levels {
        let rms = (-(l as f64) / 2.0).exp2();
        for e in 0..t {
            for _ in 0..2 {
                let v = if l < dense && e >= used {
                    rng.random_range(-1e-4..1e-4)
                } else {
                    let g: f64 = StandardNormal.sample(&mut rng);
                    // A heavy tail: one value in 20 ten times larger.
                    let tail = if rng.random_range(0..20) == 0 {
                        10.0
                    } else {
                        1.0
                    };
                    rms * g * tail
                };
                data.push(v as f32);
            }
        }
    }
    Grid::from_array(&[levels, t, 2], data, Dtype::F32, None, None).unwrap()
}

/// Gaussian values: every group vector is isotropic.
fn gaussian(levels: usize, t: usize, seed: u64) -> Grid {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..levels * t * 2)
        .map(|_| {
            let g: f64 = StandardNormal.sample(&mut rng);
            g as f32
        })
        .collect();
    Grid::from_array(&[levels, t, 2], data, Dtype::F32, None, None).unwrap()
}

#[test]
fn feature_nmse_matches_the_exact_theory_for_d_equal_g_times_f() {
    let grid = gaussian(2, 8192, 1);
    for g in [8usize, 16] {
        let d = g * 2;
        for bits in [2.5f64, 4.5] {
            let mut opts = GridOptions::new(bits);
            opts.group = g;
            opts.scale_mode = ScaleMode::Norm;
            opts.scale_bits = Some(16);
            let (c, run) = compress(&grid, &opts, None).unwrap();
            let back = c.decode().unwrap();
            let measured = nmse(&grid.data, &back.data);
            // Theory from the widths, independently of the codec's own sum:
            // Σ_g ‖x_g‖²·d·C(d, b_g) / Σ ‖x‖².
            let mut err = 0.0;
            for (i, v) in grid.data.chunks_exact(d).enumerate() {
                let e: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum();
                let b = c.widths[i] as u32;
                err += e * if b == 0 {
                    1.0
                } else {
                    theory::expected_error(d, b).unwrap()
                };
            }
            let energy: f64 = grid.data.iter().map(|&x| (x as f64).powi(2)).sum();
            let predicted = err / energy;
            assert!(
                (measured / predicted - 1.0).abs() < 0.04,
                "g = {g}, {bits} bits: measured {measured:.5}, theory {predicted:.5}"
            );
            assert!((run.theory_nmse / predicted - 1.0).abs() < 1e-9);
            // The least-squares scale is never worse than the norm.
            opts.scale_mode = ScaleMode::LeastSquares;
            let (c2, _) = compress(&grid, &opts, None).unwrap();
            let ls = nmse(&grid.data, &c2.decode().unwrap().data);
            assert!(ls <= measured * 1.001, "LS {ls} above norm {measured}");
        }
    }
}

#[test]
fn negligible_groups_cost_a_flag_and_no_codes() {
    // 4 levels of 2048 entries; levels 0 and 1 use only their first 128.
    let grid = synthetic(4, 2048, 2, 128, 2);
    let (c, _) = compress(&grid, &GridOptions::new(3.0), None).unwrap();
    let g = c.group;
    let per_level = 2048 / g;
    for l in 0..2 {
        let w = &c.widths[l * per_level..(l + 1) * per_level];
        assert!(w[128 / g..].iter().all(|&b| b == 0), "level {l}: {w:?}");
        assert!(w[..128 / g].iter().all(|&b| b > 0), "level {l}: {w:?}");
    }
    // No codes and no scale for them: the streams are exactly the coded groups'.
    let d = c.dim() as u64;
    let code_bits: u64 = c.widths.iter().map(|&b| d * b as u64).sum();
    assert_eq!(c.codes.len() as u64, code_bits.div_ceil(8));
    assert_eq!(
        c.scale_codes.len(),
        c.widths.iter().filter(|&&b| b > 0).count()
    );
    // And they decode as zeros.
    let back = c.decode().unwrap();
    for l in 0..2 {
        assert!(back.level(l)[128 * 2..].iter().all(|&v| v == 0.0));
    }
    // Their bits went to the rest: at the same budget, the used entries get
    // a lower error than when the untouched ones are real data.
    let dense = synthetic(4, 2048, 0, 2048, 2);
    let (cd, _) = compress(&dense, &GridOptions::new(3.0), None).unwrap();
    let used_err = nmse(&grid.data[4096 * 2..], &back.data[4096 * 2..]);
    let dense_err = nmse(
        &dense.data[4096 * 2..],
        &cd.decode().unwrap().data[4096 * 2..],
    );
    assert!(used_err < 0.5 * dense_err, "{used_err} vs {dense_err}");
}

#[test]
fn the_file_fits_the_budget_counting_every_byte() {
    let grid = synthetic(6, 4096, 3, 300, 3);
    for bits in [1.0f64, 2.0, 2.7, 4.0, 6.0] {
        for mode in [WidthMode::PerGroup, WidthMode::PerLevel] {
            let mut opts = GridOptions::new(bits);
            opts.widths = mode;
            let (c, _) = compress(&grid, &opts, None).unwrap();
            let bytes = file::to_bytes(&c).unwrap().len() as f64;
            let budget = bits * grid.values() as f64 / 8.0;
            assert!(bytes <= budget, "{bits} bits, {mode:?}: {bytes} > {budget}");
            assert!(
                bytes >= 0.93 * budget,
                "{bits} bits, {mode:?}: {bytes} wastes the budget {budget}"
            );
        }
    }
}

#[test]
fn per_level_widths_are_one_width_per_level() {
    let grid = synthetic(6, 2048, 2, 200, 4);
    let mut opts = GridOptions::new(3.0);
    opts.widths = WidthMode::PerLevel;
    let (c, _) = compress(&grid, &opts, None).unwrap();
    let per_level = 2048 / c.group;
    for l in 0..6 {
        let mut w: Vec<u8> = c.widths[l * per_level..(l + 1) * per_level]
            .iter()
            .copied()
            .filter(|&b| b > 0)
            .collect();
        w.dedup();
        assert!(w.len() <= 1, "level {l}: widths {w:?}");
    }
    // Per-group widths at the same budget predict no more error.
    let (cg, rg) = compress(&grid, &GridOptions::new(3.0), None).unwrap();
    let (_, rl) = compress(&grid, &opts, None).unwrap();
    assert!(
        rg.theory_nmse <= rl.theory_nmse * 1.02,
        "{} vs {}",
        rg.theory_nmse,
        rl.theory_nmse
    );
    assert_eq!(cg.width_mode, WidthMode::PerGroup);
}

#[test]
fn level_weights_move_bits_to_the_levels_that_matter() {
    let grid = gaussian(2, 4096, 5);
    let mut opts = GridOptions::new(3.0);
    opts.level_weights = Some(vec![100.0, 1.0]);
    let (c, _) = compress(&grid, &opts, None).unwrap();
    let back = c.decode().unwrap();
    let e0 = nmse(grid.level(0), back.level(0));
    let e1 = nmse(grid.level(1), back.level(1));
    assert!(e0 < 0.2 * e1, "weighted level {e0} vs {e1}");
}

#[test]
fn the_file_round_trips_and_keeps_shape_dtype_and_levels() {
    let dir = tempfile::tempdir().unwrap();
    // [L, T, F] f16; [N, F] f32 with uneven levels; a flat f16 array.
    let base = synthetic(3, 1000, 1, 100, 6);
    let f16_data: Vec<f32> = base
        .data
        .iter()
        .map(|&v| f16::from_f32(v).to_f32())
        .collect();
    let cases = [
        Grid::from_array(&[3, 1000, 2], f16_data.clone(), Dtype::F16, None, None).unwrap(),
        Grid::from_array(
            &[3000, 2],
            base.data.clone(),
            Dtype::F32,
            Some(&[500, 1000, 1500]),
            None,
        )
        .unwrap(),
        Grid::from_array(
            &[6000],
            f16_data,
            Dtype::F16,
            Some(&[1001, 999, 1000]),
            Some(2),
        )
        .unwrap(),
    ];
    for (k, grid) in cases.iter().enumerate() {
        let (c, _) = compress(grid, &GridOptions::new(4.0), None).unwrap();
        let path = dir.path().join(format!("g{k}.tq3g"));
        file::write(&path, &c).unwrap();
        let back = file::read(&path).unwrap().decode().unwrap();
        assert_eq!(back.shape, grid.shape);
        assert_eq!(back.dtype, grid.dtype);
        assert_eq!(back.levels, grid.levels);
        assert_eq!(back.data, c.decode().unwrap().data);
        assert!(nmse(&grid.data, &back.data) < 0.05);
        // And through the array formats, in the same dtype.
        for ext in ["npy", "safetensors"] {
            let p = dir.path().join(format!("g{k}.{ext}"));
            write_grid(&p, &back, None).unwrap();
            let layout = Layout {
                level_sizes: Some(back.levels.clone()),
                features: Some(2),
                tensor: None,
            };
            let again = read_grid(&p, &layout).unwrap();
            assert_eq!(again, back, "{ext}");
        }
    }
}

#[test]
fn npy_headers_are_what_numpy_writes() {
    // The f16 .npy is read back by the same reader that reads NumPy's
    // (format::npy for 2-D f32/f16) with identical values.
    let dir = tempfile::tempdir().unwrap();
    let grid = Grid::from_array(
        &[4, 2],
        vec![1.0, -2.0, 0.5, 0.25, 3.0, -4.0, 8.0, 0.0],
        Dtype::F16,
        None,
        None,
    )
    .unwrap();
    let p = dir.path().join("a.npy");
    write_grid(&p, &grid, None).unwrap();
    let m = turboquant3d::format::npy::read_matrix(&p).unwrap();
    assert_eq!((m.rows, m.cols), (4, 2));
    assert_eq!(m.data, grid.data);
    let bytes = std::fs::read(&p).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    assert_eq!(bytes.len(), 10 + header_len + 16);
}

#[test]
fn bytes_do_not_depend_on_the_thread_count() {
    let grid = synthetic(4, 4096, 2, 500, 7);
    let run = |threads: usize| {
        common::on_threads(threads, || {
            file::to_bytes(&compress(&grid, &GridOptions::new(2.7), None).unwrap().0).unwrap()
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn anchors_match_their_closed_forms() {
    let grid = gaussian(2, 4096, 8);
    // Uniform integers: error Δ²/12 per value within the range (Bennett).
    let a = anchors::uniform_per_level(&grid, 8).unwrap();
    let mut predicted = 0.0;
    for l in 0..2 {
        let v = grid.level(l);
        let lo = v.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let step = (hi - lo) as f64 / 255.0;
        predicted += step * step / 12.0 * v.len() as f64;
    }
    let measured: f64 = grid
        .data
        .iter()
        .zip(&a.data)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    assert!(
        (measured / predicted - 1.0).abs() < 0.05,
        "{measured} vs {predicted}"
    );
    assert_eq!(a.bytes, grid.values() as u64 + 8);
    // E4M3 values: exact where representable, saturating at 448.
    for (x, y) in [
        (1.0f32, 1.0f32),
        (1.0625, 1.0),
        (1.1875, 1.25),
        (500.0, 448.0),
        (-0.001953125, -0.001953125),
        (0.0009, 0.0),
    ] {
        assert_eq!(anchors::to_e4m3(x), y, "{x}");
    }
    // k-means: more bits, less error, and within the budget.
    let k2 = anchors::kmeans(&grid, 2.0, 0).unwrap();
    let k4 = anchors::kmeans(&grid, 4.0, 0).unwrap();
    assert!(k2.bits_per_feature(grid.values()) <= 2.0);
    assert!(nmse(&grid.data, &k4.data) < nmse(&grid.data, &k2.data));
}

#[test]
fn the_codec_beats_uniform_integers_on_a_trained_like_grid() {
    let grid = synthetic(6, 4096, 3, 300, 9);
    for b in [2u32, 3, 4] {
        let u = anchors::uniform_per_level(&grid, b).unwrap();
        let (c, _) = compress(
            &grid,
            &GridOptions::new(u.bits_per_feature(grid.values())),
            None,
        )
        .unwrap();
        let ours = nmse(&grid.data, &c.decode().unwrap().data);
        let theirs = nmse(&grid.data, &u.data);
        assert!(ours < theirs, "{b} bits: {ours} vs uniform {theirs}");
    }
}

/// A reader error, as a one-line string.
fn read_err(bytes: &[u8]) -> String {
    let msg = file::from_bytes(bytes, Path::new("x.tq3g"))
        .unwrap_err()
        .to_string();
    assert!(!msg.contains('\n'), "{msg}");
    msg
}

#[test]
fn corrupt_and_truncated_files_are_refused_with_one_line() {
    let grid = synthetic(2, 2048, 1, 64, 10);
    let (c, _) = compress(&grid, &GridOptions::new(3.0), None).unwrap();
    let bytes = file::to_bytes(&c).unwrap();
    assert!(read_err(&bytes[..40]).contains("truncated"));
    assert!(read_err(&bytes[..bytes.len() - 1]).contains("truncated"));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(read_err(&longer).contains("after the last section"));
    for at in [5usize, 20, 90, bytes.len() / 2, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        let msg = read_err(&b);
        assert!(
            msg.contains("checksum") || msg.contains("magic"),
            "byte {at}: {msg}"
        );
    }
    let mut b = bytes.clone();
    b[..8].copy_from_slice(b"TQ3D-TQV");
    assert!(read_err(&b).contains("not a turboquant3d hash-grid"));
}

#[test]
fn bad_tables_are_refused_with_one_line() {
    let msg = |e: Error| {
        let m = e.to_string();
        assert!(!m.contains('\n'));
        m
    };
    let e = Grid::from_array(&[2, 2, 2, 2], vec![0.0; 16], Dtype::F32, None, None).unwrap_err();
    assert!(msg(e).contains("rank 4"));
    let e = Grid::from_array(&[7], vec![0.0; 7], Dtype::F32, None, Some(2)).unwrap_err();
    assert!(msg(e).contains("does not split"));
    let e = Grid::from_array(&[10, 2], vec![0.0; 20], Dtype::F32, Some(&[4, 5]), None).unwrap_err();
    assert!(msg(e).contains("add up to 9 entries"));
    let mut v = vec![0.5f32; 20];
    v[13] = f32::NAN;
    let e = Grid::from_array(&[10, 2], v, Dtype::F32, None, None).unwrap_err();
    assert!(msg(e).contains("row 6, column 1"));
    let mut v = vec![0.5f32; 20];
    v[3] = f32::INFINITY;
    assert!(Grid::from_array(&[10, 2], v, Dtype::F32, None, None).is_err());
    // An unknown dtype in a .npy and in a safetensors file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f8.npy");
    let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }";
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0u8; 32]);
    std::fs::write(&p, &b).unwrap();
    let e = read_grid(&p, &Layout::default()).unwrap_err();
    assert!(msg(e).contains("found <f8"));
    let p = dir.path().join("i32.safetensors");
    let json = r#"{"t":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(json.as_bytes());
    b.extend_from_slice(&[0u8; 16]);
    std::fs::write(&p, &b).unwrap();
    let e = read_grid(&p, &Layout::default()).unwrap_err();
    assert!(msg(e).contains("I32"));
    // Truncated data.
    std::fs::write(&p, &b[..b.len() - 4]).unwrap();
    assert!(read_grid(&p, &Layout::default()).is_err());
}

#[test]
fn gpu_and_cpu_files_are_identical() {
    use common::gpu::{context, ran};
    use turboquant3d::gpu::{Engine, GpuCodec, Ran};
    let Some(ctx) = context() else { return };
    let engine = Engine::with_gpu(Arc::new(GpuCodec::new(ctx)), true);
    let grid = synthetic(3, 2048, 1, 128, 11);
    for g in [8usize, 16] {
        let mut opts = GridOptions::new(3.0);
        opts.group = g;
        let (cpu, _) = compress(&grid, &opts, None).unwrap();
        let (gpu, run) = compress(&grid, &opts, Some(&engine)).unwrap();
        assert!(matches!(run.ran, Ran::Gpu(_)), "{:?}", run.ran);
        assert_eq!(
            file::to_bytes(&gpu).unwrap(),
            file::to_bytes(&cpu).unwrap(),
            "g = {g}"
        );
        ran(&format!("grid compress, dense kernel, d = {}", 2 * g));
    }
}

/// A table far from 1 (all values near 1e-35, an f32 table can hold them)
/// compresses, but its scales fall outside the file's 2^±100 range: the
/// writer refuses it in one line, as the reader would, and writes nothing.
#[test]
fn scales_the_reader_would_refuse_are_never_written() {
    let mut grid = gaussian(2, 512, 9);
    for v in &mut grid.data {
        *v *= 1e-35;
    }
    let (c, _) = compress(&grid, &GridOptions::new(8.0), None).unwrap();
    let e = file::to_bytes(&c).unwrap_err().to_string();
    assert!(e.contains("2^±100") && !e.contains('\n'), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.tq3g");
    assert!(file::write(&out, &c).is_err());
    assert!(!out.exists(), "nothing is written");
    // The same table near 1 is written and reads back.
    let mut near = grid.clone();
    for v in &mut near.data {
        *v *= 1e35;
    }
    let (c, _) = compress(&near, &GridOptions::new(8.0), None).unwrap();
    let b = file::to_bytes(&c).unwrap();
    assert!(file::from_bytes(&b, Path::new("near.tq3g")).is_ok());
}

/// A file whose dense rotation is not orthogonal (a column scaled by 2^120,
/// every checksum recomputed) decoded to ±Inf, which the table check then
/// reported without naming the file (found by the `tq3g_crc` fuzz target).
/// The reader now refuses it, naming the file and the section.
#[test]
fn a_rotation_that_is_not_orthogonal_is_refused_by_the_reader() {
    let grid = synthetic(2, 2048, 1, 64, 10);
    let (c, _) = compress(&grid, &GridOptions::new(3.0), None).unwrap();
    let mut b = file::to_bytes(&c).unwrap();
    assert!(file::from_bytes(&b, Path::new("x.tq3g")).is_ok());
    // Sections follow the 64-byte header: tag, u64 length, CRC-32, payload.
    let mut at = 64;
    let (start, len) = loop {
        let len = u64::from_le_bytes(b[at + 4..at + 12].try_into().unwrap()) as usize;
        if &b[at..at + 4] == b"ROT " {
            break (at + 16, len);
        }
        at += 16 + len;
    };
    let d = ((len / 4) as f64).sqrt() as usize;
    assert_eq!(d * d * 4, len, "a dense rotation is expected here");
    for i in 0..d {
        let p = start + 4 * (i * d + 1);
        let v = f32::from_le_bytes(b[p..p + 4].try_into().unwrap()) * 2f32.powi(120);
        b[p..p + 4].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[start..start + len]);
    b[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
    let msg = read_err(&b);
    assert!(
        msg.contains("x.tq3g") && msg.contains("ROT") && msg.contains("not a rotation"),
        "{msg}"
    );
}
