//! The hash-grid fit (`grid::fit`): encoding geometry against the paper's
//! formulas, gradients against finite differences, determinism across
//! thread counts, untouched entries, and a small fit against the best
//! constant image.

use turboquant3d::Error;
use turboquant3d::grid::fit::{
    FitConfig, FittedGrid, TABLE_INIT, fit, loss_gradient, psnr, render, sensitivity,
};
use turboquant3d::render::{Image, metrics};

/// A smooth RGB image: gradients and a broad bump.
fn smooth_image(w: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (u, v) = ((x as f32 + 0.5) / w as f32, (y as f32 + 0.5) / h as f32);
            let bump = (-((u - 0.4).powi(2) + (v - 0.6).powi(2)) * 8.0).exp();
            out.extend([
                0.2 + 0.6 * u,
                0.3 + 0.4 * u * v + 0.2 * bump,
                0.9 - 0.5 * v * v,
            ]);
        }
    }
    out
}

fn tiny(steps: usize, batch: usize) -> FitConfig {
    FitConfig {
        hidden_width: 16,
        steps,
        batch_size: batch,
        seed: 7,
        ..FitConfig::default()
    }
}

fn image(w: usize, h: usize, data: &[f32]) -> Image {
    Image {
        width: w as u32,
        height: h as u32,
        data: data.to_vec(),
    }
}

/// Mean over pixels and channels of (a − b)², in f64.
fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn levels_follow_the_paper_and_dense_levels_are_bijective() {
    let cfg = FitConfig::default();
    let enc = cfg.encoding().unwrap();
    let t = 1usize << cfg.log2_table_size;
    assert_eq!(enc.table_size(), t);
    assert_eq!(enc.table_len(), cfg.levels * t * 2);
    let (mut dense, mut hashed) = (0, 0);
    for (l, lv) in enc.levels().iter().enumerate() {
        let n = (f64::from(cfg.base_resolution) * cfg.growth.powi(l as i32)).floor() as usize;
        assert_eq!(lv.resolution as usize, n, "level {l}");
        let vertices = (n + 1) * (n + 1);
        assert_eq!(lv.dense, vertices <= t, "level {l}");
        if lv.dense {
            dense += 1;
            assert_eq!(lv.used, vertices);
            let mut seen = vec![false; t];
            for y in 0..=n as u32 {
                for x in 0..=n as u32 {
                    let e = enc.index(l, x, y);
                    assert!(e < vertices, "level {l}: ({x}, {y}) → {e}");
                    assert!(!seen[e], "level {l}: entry {e} twice");
                    seen[e] = true;
                }
            }
            assert_eq!(seen.iter().filter(|&&s| s).count(), vertices);
        } else {
            hashed += 1;
            assert_eq!(lv.used, t);
            for (x, y) in [
                (0u64, 0u64),
                (3, 5),
                (n as u64, n as u64),
                (17, n as u64 / 2),
            ] {
                let want = (x ^ ((y * 2_654_435_761) & 0xffff_ffff)) % t as u64;
                assert_eq!(enc.index(l, x as u32, y as u32) as u64, want);
            }
        }
    }
    assert!(
        dense > 0 && hashed > 0,
        "{dense} dense, {hashed} hashed levels"
    );
}

#[test]
fn interpolation_reproduces_a_linear_function_on_a_dense_level() {
    let enc = FitConfig::default().encoding().unwrap();
    let t = enc.table_size();
    let l = 3;
    let n = enc.levels()[l].resolution;
    assert!(enc.levels()[l].dense);
    let mut table = vec![0f32; enc.table_len()];
    for y in 0..=n {
        for x in 0..=n {
            let e = enc.index(l, x, y);
            table[(l * t + e) * 2] = x as f32;
            table[(l * t + e) * 2 + 1] = 0.5 * y as f32 - 3.0;
        }
    }
    let mut out = vec![0f32; enc.output_dim()];
    for k in 0..50 {
        let pos = [(k as f32 * 0.37).fract(), (k as f32 * 0.61 + 0.05).fract()];
        enc.encode(&table, pos, &mut out).unwrap();
        let (u, v) = (pos[0] * n as f32, pos[1] * n as f32);
        assert!(
            (out[l * 2] - u).abs() < 1e-3,
            "{pos:?}: {} vs {u}",
            out[l * 2]
        );
        assert!((out[l * 2 + 1] - (0.5 * v - 3.0)).abs() < 1e-3);
        assert!(out.iter().enumerate().all(|(i, &o)| i / 2 == l || o == 0.0));
    }
}

#[test]
fn a_small_fit_beats_every_constant_image() {
    let (w, h) = (32, 32);
    let target = smooth_image(w, h);
    let grid = fit(&target, w, h, &tiny(150, 256)).unwrap();
    let img = grid.render(w, h).unwrap();
    let got = psnr(&img, &target).unwrap();
    // The metric agrees with the renderer's own PSNR.
    let reference = metrics::psnr(&image(w, h, &img), &image(w, h, &target)).unwrap();
    assert!((got - reference).abs() < 1e-9, "{got} vs {reference}");
    // The per-channel mean is the constant image of least squared error.
    let mut mean = [0f64; 3];
    for px in target.chunks_exact(3) {
        for (m, &v) in mean.iter_mut().zip(px) {
            *m += f64::from(v) / (w * h) as f64;
        }
    }
    let constant: Vec<f32> = (0..w * h).flat_map(|_| mean.map(|m| m as f32)).collect();
    let best_constant = metrics::psnr(&image(w, h, &constant), &image(w, h, &target)).unwrap();
    assert!(
        got > best_constant + 15.0,
        "fit {got:.2} dB, best constant {best_constant:.2} dB"
    );
    // The loss went down.
    assert!(grid.losses[grid.losses.len() - 1] < 0.01 * grid.losses[0]);
}

/// A grid after a few steps, so that the MLP is away from its init.
fn warm_grid(w: usize, h: usize, target: &[f32]) -> FittedGrid {
    fit(target, w, h, &tiny(30, 256)).unwrap()
}

#[test]
fn loss_gradient_matches_finite_differences() {
    let (w, h) = (24, 20);
    let target = smooth_image(w, h);
    let g0 = warm_grid(w, h, &target);
    let (enc, mlp) = (&g0.encoding, &g0.mlp);
    let grad = loss_gradient(enc, &g0.table, mlp, &target, w, h).unwrap();
    let loss_of = |table: &[f32], mlp: &turboquant3d::grid::fit::Mlp| {
        mse(&render(enc, table, mlp, w, h).unwrap(), &target)
    };
    let base = loss_of(&g0.table, mlp);
    assert!(
        (grad.loss - base).abs() <= 1e-6 * base,
        "{} vs {base}",
        grad.loss
    );

    let t = enc.table_size();
    let mut checked = 0;
    for l in [0, 5, 8, 11] {
        // The three values of this level with the largest gradient.
        let mut idx: Vec<usize> = (l * t * 2..(l + 1) * t * 2).collect();
        idx.sort_by(|&a, &b| grad.table[b].abs().total_cmp(&grad.table[a].abs()));
        for &i in &idx[..3] {
            let hstep = 1e-3f32;
            let mut tp = g0.table.clone();
            tp[i] += hstep;
            let mut tm = g0.table.clone();
            tm[i] -= hstep;
            let fd = (loss_of(&tp, mlp) - loss_of(&tm, mlp)) / (2.0 * f64::from(hstep));
            let an = f64::from(grad.table[i]);
            assert!(an != 0.0);
            assert!(
                (fd - an).abs() <= 0.02 * an.abs(),
                "table value {i} (level {l}): finite difference {fd:e}, gradient {an:e}"
            );
            checked += 1;
        }
    }
    let n_params = mlp.params().len();
    for i in (0..n_params).step_by(n_params / 23) {
        let hstep = 1e-3f32;
        let perturbed = |s: f32| {
            let mut p = mlp.params().to_vec();
            p[i] += s;
            turboquant3d::grid::fit::Mlp::from_params(mlp.sizes().to_vec(), p).unwrap()
        };
        let fd = (loss_of(&g0.table, &perturbed(hstep)) - loss_of(&g0.table, &perturbed(-hstep)))
            / (2.0 * f64::from(hstep));
        let an = f64::from(grad.mlp[i]);
        assert!(
            (fd - an).abs() <= 0.02 * an.abs() + 1e-7,
            "MLP parameter {i}: finite difference {fd:e}, gradient {an:e}"
        );
        checked += 1;
    }
    assert!(checked > 30);
}

#[test]
fn sensitivity_matches_finite_differences() {
    let (w, h) = (20, 16);
    let target = smooth_image(w, h);
    let g0 = warm_grid(w, h, &target);
    let (enc, mlp) = (&g0.encoding, &g0.mlp);
    let sens = sensitivity(enc, &g0.table, mlp, w, h).unwrap();
    let p = (w * h) as f64;

    // Per level: the MLP's input gradient by central differences.
    let dim = enc.output_dim();
    let mut per_level = vec![0f64; enc.levels().len()];
    let mut x = vec![0f32; dim];
    for py in 0..h {
        for px in 0..w {
            let pos = [(px as f32 + 0.5) / w as f32, (py as f32 + 0.5) / h as f32];
            enc.encode(&g0.table, pos, &mut x).unwrap();
            for i in 0..dim {
                let hstep = 1e-3f32;
                let mut xp = x.clone();
                xp[i] += hstep;
                let mut xm = x.clone();
                xm[i] -= hstep;
                let (op, om) = (mlp.forward(&xp).unwrap(), mlp.forward(&xm).unwrap());
                for c in 0..3 {
                    let d = f64::from(op[c] - om[c]) / (2.0 * f64::from(hstep));
                    per_level[i / 2] += d * d / (3.0 * p);
                }
            }
        }
    }
    for (l, (&fd, &an)) in per_level.iter().zip(&sens.per_level).enumerate() {
        assert!(
            (fd - an).abs() <= 0.02 * an + 1e-12,
            "level {l}: finite difference {fd:e}, sensitivity {an:e}"
        );
    }

    // Per value, on dense levels (no two corners of a cell share an entry):
    // (1/3P) Σ_pixels Σ_c (∂output_c/∂value)².
    let t = enc.table_size();
    let base = render(enc, &g0.table, mlp, w, h).unwrap();
    for l in [0, 4, 6] {
        assert!(enc.levels()[l].dense);
        let mut idx: Vec<usize> = (l * t * 2..(l + 1) * t * 2).collect();
        idx.sort_by(|&a, &b| sens.per_value[b].total_cmp(&sens.per_value[a]));
        for &i in &idx[..3] {
            let hstep = 1e-3f32;
            let mut tp = g0.table.clone();
            tp[i] += hstep;
            let mut tm = g0.table.clone();
            tm[i] -= hstep;
            let (rp, rm) = (
                render(enc, &tp, mlp, w, h).unwrap(),
                render(enc, &tm, mlp, w, h).unwrap(),
            );
            let fd: f64 = rp
                .iter()
                .zip(&rm)
                .map(|(&a, &b)| (f64::from(a - b) / (2.0 * f64::from(hstep))).powi(2))
                .sum::<f64>()
                / (3.0 * p);
            let an = sens.per_value[i];
            assert!(an > 0.0);
            assert!(
                (fd - an).abs() <= 0.02 * an,
                "value {i} (level {l}): finite difference {fd:e}, sensitivity {an:e}"
            );
        }
        // Values no pixel reads have none.
        let used = enc.levels()[l].used;
        assert!(
            sens.per_value[(l * t + used) * 2..(l + 1) * t * 2]
                .iter()
                .all(|&v| v == 0.0)
        );
    }
    // To first order, random table errors raise the MSE against the
    // unperturbed render by Σ per_value · δ² in expectation (averaged over
    // draws of random signs, so that the cross terms cancel).
    let delta = 1e-3f64;
    let predicted: f64 = sens.per_value.iter().map(|&s| s * delta * delta).sum();
    let draws = 16;
    let mut measured = 0f64;
    for draw in 0..draws {
        let noisy: Vec<f32> = g0
            .table
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let sign = if splitmix(draw << 32 | i as u64) >> 63 == 0 {
                    1.0
                } else {
                    -1.0
                };
                v + (sign * delta) as f32
            })
            .collect();
        measured += mse(&render(enc, &noisy, mlp, w, h).unwrap(), &base) / draws as f64;
    }
    assert!(
        (measured / predicted - 1.0).abs() < 0.1,
        "measured {measured:e}, predicted {predicted:e}"
    );
}

/// SplitMix64 (Steele et al. 2014): a well-mixed 64-bit hash of `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn training_is_identical_for_one_and_two_threads() {
    let (w, h) = (32, 32);
    let target = smooth_image(w, h);
    // Batches of three chunks, straddling epochs.
    let cfg = tiny(12, 768);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let g = fit(&target, w, h, &cfg).unwrap();
            let s = sensitivity(&g.encoding, &g.table, &g.mlp, w, h).unwrap();
            let lg = loss_gradient(&g.encoding, &g.table, &g.mlp, &target, w, h).unwrap();
            (g, s, lg)
        })
    };
    let (a, sa, la) = run(1);
    let (b, sb, lb) = run(2);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.table), bits(&b.table));
    assert_eq!(bits(a.mlp.params()), bits(b.mlp.params()));
    assert_eq!(a.touched, b.touched);
    assert_eq!(a.losses, b.losses);
    assert_eq!(sa, sb);
    assert_eq!(bits(&la.table), bits(&lb.table));
    assert_eq!(bits(&la.mlp), bits(&lb.mlp));
    // And a different seed gives a different grid.
    let c = fit(&target, w, h, &FitConfig { seed: 8, ..cfg }).unwrap();
    assert_ne!(bits(&a.table), bits(&c.table));
}

#[test]
fn touched_entries_are_the_pixels_corners_and_the_rest_keep_their_init() {
    let (w, h) = (16, 24);
    let target = smooth_image(w, h);
    // 3 steps × 128 = one epoch: every pixel once.
    let short = fit(&target, w, h, &tiny(3, 128)).unwrap();
    let long = fit(&target, w, h, &tiny(30, 128)).unwrap();
    let enc = &short.encoding;
    let t = enc.table_size() as u64;
    let mut want = vec![false; enc.levels().len() * t as usize];
    for (l, lv) in enc.levels().iter().enumerate() {
        let n = u64::from(lv.resolution);
        for py in 0..h {
            for px in 0..w {
                let cx = ((px as f64 + 0.5) / w as f64 * n as f64).floor() as u64;
                let cy = ((py as f64 + 0.5) / h as f64 * n as f64).floor() as u64;
                for (x, y) in [(cx, cy), (cx + 1, cy), (cx, cy + 1), (cx + 1, cy + 1)] {
                    let e = if (n + 1) * (n + 1) <= t {
                        x + y * (n + 1)
                    } else {
                        (x ^ ((y * 2_654_435_761) & 0xffff_ffff)) % t
                    };
                    want[l * t as usize + e as usize] = true;
                }
            }
        }
    }
    assert_eq!(short.touched, want);
    assert_eq!(long.touched, want);
    let untouched = short.untouched_fraction();
    assert!(untouched.iter().all(|&u| u > 0.5), "{untouched:?}");

    let mut moved = 0;
    for (e, &tch) in want.iter().enumerate() {
        for i in 2 * e..2 * e + 2 {
            if tch {
                moved += usize::from(long.table[i] != short.table[i]);
            } else {
                assert_eq!(
                    long.table[i].to_bits(),
                    short.table[i].to_bits(),
                    "value {i}"
                );
                assert!(long.table[i].abs() <= TABLE_INIT);
            }
        }
    }
    let n_touched = want.iter().filter(|&&x| x).count();
    assert!(
        moved > n_touched,
        "{moved} of {} touched values moved",
        2 * n_touched
    );
}

#[test]
fn invalid_configs_and_images_are_errors() {
    let ok = FitConfig::default();
    let cases: Vec<(&str, FitConfig)> = vec![
        (
            "levels",
            FitConfig {
                levels: 11,
                ..ok.clone()
            },
        ),
        (
            "levels",
            FitConfig {
                levels: 17,
                ..ok.clone()
            },
        ),
        (
            "log2_table_size",
            FitConfig {
                log2_table_size: 13,
                ..ok.clone()
            },
        ),
        (
            "log2_table_size",
            FitConfig {
                log2_table_size: 20,
                ..ok.clone()
            },
        ),
        (
            "features",
            FitConfig {
                features: 4,
                ..ok.clone()
            },
        ),
        (
            "base_resolution",
            FitConfig {
                base_resolution: 1,
                ..ok.clone()
            },
        ),
        (
            "growth",
            FitConfig {
                growth: f64::NAN,
                ..ok.clone()
            },
        ),
        (
            "growth",
            FitConfig {
                growth: 0.9,
                ..ok.clone()
            },
        ),
        (
            "hidden_width",
            FitConfig {
                hidden_width: 4,
                ..ok.clone()
            },
        ),
        (
            "hidden_layers",
            FitConfig {
                hidden_layers: 3,
                ..ok.clone()
            },
        ),
        (
            "learning_rate",
            FitConfig {
                learning_rate: 0.0,
                ..ok.clone()
            },
        ),
        (
            "learning_rate",
            FitConfig {
                learning_rate: f32::INFINITY,
                ..ok.clone()
            },
        ),
        (
            "decay_fraction",
            FitConfig {
                decay_fraction: 1.5,
                ..ok.clone()
            },
        ),
        (
            "final_lr_fraction",
            FitConfig {
                final_lr_fraction: 0.0,
                ..ok.clone()
            },
        ),
        (
            "steps",
            FitConfig {
                steps: 0,
                ..ok.clone()
            },
        ),
        (
            "batch_size",
            FitConfig {
                batch_size: 0,
                ..ok.clone()
            },
        ),
        // 1024 · 4^15 passes the largest resolution.
        (
            "resolution",
            FitConfig {
                base_resolution: 1024,
                growth: 4.0,
                ..ok.clone()
            },
        ),
    ];
    let img = smooth_image(4, 4);
    for (field, cfg) in cases {
        match fit(&img, 4, 4, &cfg) {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains(field), "{field}: {msg}"),
            other => panic!(
                "{field}: expected InvalidArgument, got {:?}",
                other.map(drop)
            ),
        }
    }
    assert!(matches!(fit(&img, 4, 5, &ok), Err(Error::Shape(_))));
    assert!(matches!(fit(&[], 0, 0, &ok), Err(Error::EmptyInput { .. })));
    let mut nan = img.clone();
    nan[7] = f32::NAN;
    assert!(matches!(
        fit(&nan, 4, 4, &ok),
        Err(Error::NonFinite { row: 2, col: 1, .. })
    ));
    let g = fit(&img, 4, 4, &tiny(1, 4)).unwrap();
    assert!(matches!(
        render(&g.encoding, &g.table[1..], &g.mlp, 4, 4),
        Err(Error::Shape(_))
    ));
    assert!(matches!(psnr(&img, &img[3..]), Err(Error::Shape(_))));
}
