//! The KV wing's yardsticks: the synthetic cache has each property real
//! caches have (measured here from the tensors, not read back from the
//! generator's parameters), KIVI stays within its quantisation bounds, and
//! the attention metrics agree with figures worked out by hand.
//!
//! The synthetic cache, as `kv::synth::cache` documents it, per head:
//! keys with a steep spectrum (σ_j ∝ 1/(j+1) over a random basis), a few
//! outlier channels at 5–10× the median channel RMS, a shared offset of
//! twice the centred keys' RMS norm, head energies spread 10×, AR(1)
//! latents along tokens (ρ = 0.9), queries in the keys' strong directions
//! around a shared mean, and token 0 an attention sink (key along the mean
//! query direction, 12–22 % of the mass, value row at 0.1×).

use turboquant3d::kv::attention::{Heads, attend_exact};
use turboquant3d::kv::kivi;
use turboquant3d::kv::metrics::{attention_error, attention_mass, attention_weights, nmse};
use turboquant3d::kv::synth::{self, SynthConfig};

/// Per-channel means over tokens 1.. (the sink left out).
fn channel_means(x: &[f32], tokens: usize, width: usize) -> Vec<f64> {
    let mut m = vec![0f64; width];
    for row in x.chunks(width).skip(1) {
        m.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
    }
    m.iter_mut().for_each(|a| *a /= (tokens - 1) as f64);
    m
}

/// Per-channel variance over tokens 1.. about `mean`.
fn channel_vars(x: &[f32], mean: &[f64], tokens: usize) -> Vec<f64> {
    let w = mean.len();
    let mut s = vec![0f64; w];
    for row in x.chunks(w).skip(1) {
        for (c, &b) in row.iter().enumerate() {
            s[c] += (b as f64 - mean[c]).powi(2);
        }
    }
    s.iter_mut().for_each(|a| *a /= (tokens - 1) as f64);
    s
}

/// Eigenvalues of a symmetric matrix (cyclic Jacobi), unordered.
fn eigenvalues(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let n = a.len();
    for _ in 0..50 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-18 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (top, bottom) = a.split_at_mut(q);
                for (x, y) in top[p].iter_mut().zip(bottom[0].iter_mut()) {
                    let (apk, aqk) = (*x, *y);
                    *x = c * apk - s * aqk;
                    *y = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i][i]).collect()
}

#[test]
fn synthetic_cache_has_the_structure_of_real_caches() {
    let (tokens, heads, d) = (512, 8, 64);
    let w = heads * d;
    for seed in [1u64, 2, 3] {
        let c = synth::cache(&SynthConfig::new(tokens, heads, d, seed)).unwrap();
        assert_eq!(
            (c.k.len(), c.v.len(), c.q.len()),
            (tokens * w, tokens * w, 64 * w)
        );
        let mk = channel_means(&c.k, tokens, w);
        let vk = channel_vars(&c.k, &mk, tokens);
        let mv = channel_means(&c.v, tokens, w);
        let vv = channel_vars(&c.v, &mv, tokens);

        // Outlier channels: 5–10× the head's median channel RMS (with
        // slack for 512 correlated tokens), and d/32 = 2 per head.
        assert_eq!(c.outlier_channels.len(), 2 * heads);
        for &ch in &c.outlier_channels {
            let h = ch / d;
            let mut others: Vec<f64> = (h * d..(h + 1) * d)
                .filter(|x| !c.outlier_channels.contains(x))
                .map(|x| vk[x].sqrt())
                .collect();
            others.sort_by(f64::total_cmp);
            let ratio = vk[ch].sqrt() / others[others.len() / 2];
            assert!(
                (3.5..=13.0).contains(&ratio),
                "seed {seed} channel {ch}: {ratio}"
            );
        }

        // Shared offset: the mean key row is long against the spread, and
        // it is the offset the generator reports.
        let mut energy_k = vec![0f64; heads];
        let mut energy_v = vec![0f64; heads];
        for h in 0..heads {
            let off: f64 = mk[h * d..(h + 1) * d]
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt();
            energy_k[h] = vk[h * d..(h + 1) * d].iter().sum();
            energy_v[h] = vv[h * d..(h + 1) * d].iter().sum();
            let r = off / energy_k[h].sqrt();
            assert!(
                (1.4..=2.8).contains(&r),
                "seed {seed} head {h}: offset/spread {r}"
            );
        }
        let off_err: f64 = mk
            .iter()
            .zip(&c.key_offset)
            .map(|(a, &b)| (a - b as f64).powi(2))
            .sum::<f64>();
        let off_norm: f64 = c.key_offset.iter().map(|&x| (x as f64).powi(2)).sum();
        assert!(off_err < 0.1 * off_norm);

        // Head energies spread about 10× (keys and values).
        for e in [&energy_k, &energy_v] {
            let max = e.iter().copied().fold(0.0, f64::max);
            let min = e.iter().copied().fold(f64::INFINITY, f64::min);
            assert!(
                (8.0..=14.0).contains(&(max / min)),
                "seed {seed}: {}",
                max / min
            );
        }

        // Lag-1 correlation along tokens, pooled over channels.
        for (x, m) in [(&c.k, &mk), (&c.v, &mv)] {
            let (mut num, mut den) = (0f64, 0f64);
            for t in 1..tokens - 1 {
                for ch in 0..w {
                    let a = x[t * w + ch] as f64 - m[ch];
                    let b = x[(t + 1) * w + ch] as f64 - m[ch];
                    num += a * b;
                    den += a * a;
                }
            }
            let rho = num / den;
            assert!((0.82..=0.95).contains(&rho), "seed {seed}: lag-1 {rho}");
        }

        // The sink: 10–25 % of the mass, the most of any token, the
        // smallest value norm and the largest centred key norm.
        let mass = attention_mass(&c.q, &c.k, tokens, c.heads).unwrap();
        assert!(
            (0.10..=0.25).contains(&mass[0]),
            "seed {seed}: sink {}",
            mass[0]
        );
        assert!(mass[1..].iter().all(|&m| m < mass[0]));
        let norm = |x: &[f32], t: usize, m: &[f64]| -> f64 {
            x[t * w..(t + 1) * w]
                .iter()
                .zip(m)
                .map(|(&a, b)| (a as f64 - b).powi(2))
                .sum()
        };
        let zero = vec![0f64; w];
        let vn: Vec<f64> = (0..tokens).map(|t| norm(&c.v, t, &zero)).collect();
        assert!(
            vn[1..].iter().all(|&n| n > vn[0]),
            "seed {seed}: sink value norm"
        );
        let kn: Vec<f64> = (0..tokens).map(|t| norm(&c.k, t, &mk)).collect();
        assert!(
            kn[1..].iter().all(|&n| n < kn[0]),
            "seed {seed}: sink key norm"
        );

        // A steep key spectrum: most centred key energy of a head in the
        // top tenth (7 of 64) of its principal directions.
        let h = 0;
        let mut cov = vec![vec![0f64; d]; d];
        for row in c.k.chunks(w).skip(1) {
            let r: Vec<f64> = (0..d)
                .map(|i| row[h * d + i] as f64 - mk[h * d + i])
                .collect();
            for i in 0..d {
                for j in 0..d {
                    cov[i][j] += r[i] * r[j];
                }
            }
        }
        let mut ev = eigenvalues(cov);
        ev.sort_by(|a, b| b.total_cmp(a));
        let top: f64 = ev[..d.div_ceil(10)].iter().sum::<f64>() / ev.iter().sum::<f64>();
        assert!(top >= 0.8, "seed {seed}: top tenth holds {top}");

        // Deterministic in the seed.
        let again = synth::cache(&SynthConfig::new(tokens, heads, d, seed)).unwrap();
        assert_eq!(again, c);
    }
    let a = synth::cache(&SynthConfig::new(64, 2, 8, 1)).unwrap();
    let b = synth::cache(&SynthConfig::new(64, 2, 8, 2)).unwrap();
    assert_ne!(a.k, b.k);
    assert!(synth::cache(&SynthConfig::new(1, 2, 8, 1)).is_err());
    assert!(synth::cache(&SynthConfig::new(64, 0, 8, 1)).is_err());
    assert!(synth::cache(&SynthConfig::new(usize::MAX, 2, 8, 1)).is_err());
}

#[test]
fn random_queries_are_standard_normal() {
    let q = synth::random_queries(256, 4, 64, 9).unwrap();
    assert_eq!(q.len(), 256 * 256);
    let n = q.len() as f64;
    let mean = q.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = q.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    // Standard errors: 1/√n ≈ 0.004 for the mean, √(2/n) ≈ 0.0055 for the variance.
    assert!(
        mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
        "{mean} {var}"
    );
    assert_eq!(q, synth::random_queries(256, 4, 64, 9).unwrap());
    assert_ne!(q, synth::random_queries(256, 4, 64, 10).unwrap());
}

#[test]
fn kivi_within_its_bounds_on_a_synthetic_cache() {
    let (tokens, heads, d) = (300, 4, 64);
    let w = heads * d;
    let c = synth::cache(&SynthConfig::new(tokens, heads, d, 5)).unwrap();
    for bits in [1u32, 2, 4, 8] {
        for keys in [true, false] {
            let g = 128;
            let x = if keys { &c.k } else { &c.v };
            let q = if keys {
                kivi::quantize_keys(x, tokens, w, bits, g).unwrap()
            } else {
                kivi::quantize_values(x, tokens, w, bits, g).unwrap()
            };
            let levels = ((1u32 << bits) - 1) as f64;
            // Each group, bounded from its own range: the minimum moves
            // down by at most one f16 ulp (≤ |min|·2⁻¹⁰ or 2⁻²⁴), the step
            // up by at most one (relative 2⁻¹⁰); the error is ≤ step/2.
            let (lines, len) = if keys { (w, tokens) } else { (tokens, w) };
            let at = |line: usize, j: usize| if keys { j * w + line } else { line * w + j };
            let (mut sq, mut pred) = (0f64, 0f64);
            for line in 0..lines {
                for a in (0..len).step_by(g) {
                    let b = (a + g).min(len);
                    let vals: Vec<f64> = (a..b).map(|j| x[at(line, j)] as f64).collect();
                    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let tiny = 2f64.powi(-24);
                    let step = ((hi - lo + lo.abs() * 2f64.powi(-10) + tiny) / levels)
                        * (1.0 + 2f64.powi(-10))
                        + tiny;
                    let bound = step / 2.0 + 1e-6 * lo.abs().max(hi.abs());
                    for j in a..b {
                        let e = (x[at(line, j)] as f64 - q.data[at(line, j)] as f64).abs();
                        assert!(
                            e <= bound,
                            "bits {bits} keys {keys} line {line} j {j}: {e} > {bound}"
                        );
                        sq += e * e;
                    }
                    pred += (b - a) as f64 * ((hi - lo) / levels).powi(2) / 12.0;
                }
            }
            // At 8 bits the rounding error is uniform: MSE ≈ step²/12.
            if bits == 8 {
                let r = sq / pred;
                assert!((0.85..=1.2).contains(&r), "keys {keys}: {r}");
            }
            let groups = lines * len.div_ceil(g);
            assert_eq!(
                q.stored_bits,
                (tokens * w) as u64 * bits as u64 + 32 * groups as u64
            );
        }
    }
    // One more bit divides the error by about 4 (a uniform quantiser).
    let e = |b| {
        let q = kivi::quantize_values(&c.v, tokens, w, b, 128).unwrap();
        nmse(&c.v, &q.data, tokens, w).unwrap()
    };
    for b in 3..=6 {
        let r = e(b) / e(b + 1);
        assert!((3.0..=5.5).contains(&r), "bits {b}: {r}");
    }
}

#[test]
fn metrics_on_cases_worked_by_hand() {
    let one = Heads {
        heads: 1,
        head_dim: 1,
    };
    // Logits ℓ = k (d = 1, q = 1): [4, 3, 2, 1], centred [1.5, 0.5, −0.5, −1.5].
    let q = [1.0f32];
    let k = [4.0f32, 3.0, 2.0, 1.0];
    let v = [1.0f32, 2.0, 3.0, 4.0];
    let same = attention_error(&q, &k, &v, &k, &v, 4, one, 2).unwrap();
    assert_eq!(
        (same.output_rel, same.logit_rmse_rel, same.topk_agreement),
        (0.0, 0.0, 1.0)
    );
    // Swapping the keys of tokens 1 and 3: top-2 {0, 1} becomes {0, 3};
    // ℓ − ℓ̂ = [0, 2, 0, −2]: √(8 / 5).
    let k_hat = [4.0f32, 1.0, 2.0, 3.0];
    let e = attention_error(&q, &k, &v, &k_hat, &v, 4, one, 2).unwrap();
    assert!((e.topk_agreement - 0.5).abs() < 1e-12);
    assert!((e.logit_rmse_rel - (8.0f64 / 5.0).sqrt()).abs() < 1e-12);
    // All logits shifted alike (k + 7): no logit error, same weights.
    let shifted: Vec<f32> = k.iter().map(|x| x + 7.0).collect();
    let e = attention_error(&q, &k, &v, &shifted, &v, 4, one, 3).unwrap();
    assert!(e.logit_rmse_rel < 1e-12 && e.output_rel < 1e-6 && e.topk_agreement == 1.0);
    // Keys × 1.5: the centred logit error is half the centred logits.
    let scaled: Vec<f32> = k.iter().map(|x| x * 1.5).collect();
    let e = attention_error(&q, &k, &v, &scaled, &v, 4, one, 2).unwrap();
    assert!((e.logit_rmse_rel - 0.5).abs() < 1e-12 && e.topk_agreement == 1.0);

    // Zero query: uniform weights, O = (v0 + v1)/2 = (0.5, 0.5); with v0
    // doubled Ô = (1, 0.5): ‖O − Ô‖/‖O‖ = 0.5/√0.5.
    let two = Heads {
        heads: 1,
        head_dim: 2,
    };
    let (q0, k0) = ([0.0f32, 0.0], [0.3f32, -1.0, 2.0, 0.5]);
    let (v0, v0_hat) = ([1.0f32, 0.0, 0.0, 1.0], [2.0f32, 0.0, 0.0, 1.0]);
    let e = attention_error(&q0, &k0, &v0, &k0, &v0_hat, 2, two, 1).unwrap();
    assert!((e.output_rel - 0.5 / 0.5f64.sqrt()).abs() < 1e-7);
    let wts = attention_weights(&q0, &k0, 2, two).unwrap();
    assert_eq!(wts, vec![0.5, 0.5]);

    // A constant added to every value row moves every output by it.
    let c = synth::cache(&SynthConfig::new(64, 2, 8, 4)).unwrap();
    let delta = 0.01f32;
    let v_hat: Vec<f32> = c.v.iter().map(|x| x + delta).collect();
    let o = attend_exact(&c.q, &c.k, &c.v, 64, c.heads).unwrap();
    let on = o.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let expect = (o.len() as f64).sqrt() * delta as f64 / on;
    let e = attention_error(&c.q, &c.k, &c.v, &c.k, &v_hat, 64, c.heads, 8).unwrap();
    assert!(
        (e.output_rel / expect - 1.0).abs() < 1e-3,
        "{} vs {expect}",
        e.output_rel
    );
    assert!(e.logit_rmse_rel == 0.0 && e.topk_agreement == 1.0);

    assert!(attention_error(&q, &k, &v, &k[..3], &v, 4, one, 2).is_err());
    assert!(attention_error(&q, &k, &v, &k, &v, 4, one, 0).is_err());
}

/// Not an assertion: KIVI at 2/3/4 bits on a 1024 × 16 × 64 synthetic
/// cache, for the record (`cargo test --release --test kv_baselines --
/// --nocapture`).
#[test]
fn kivi_table_on_a_synthetic_cache() {
    let (tokens, heads, d) = (1024, 16, 64);
    let w = heads * d;
    let c = synth::cache(&SynthConfig::new(tokens, heads, d, 7)).unwrap();
    println!("KIVI, group 128, synthetic cache {tokens} tokens × {heads} heads × {d}, 64 queries");
    println!("bits  bpe(K)  bpe(V)  nmse(K)   nmse(V)   out_rel  logit_rel  top8");
    for bits in [2u32, 3, 4] {
        let kq = kivi::quantize_keys(&c.k, tokens, w, bits, 128).unwrap();
        let vq = kivi::quantize_values(&c.v, tokens, w, bits, 128).unwrap();
        let e = attention_error(&c.q, &c.k, &c.v, &kq.data, &vq.data, tokens, c.heads, 8).unwrap();
        println!(
            "{bits}     {:.3}   {:.3}   {:.5}  {:.5}  {:.4}   {:.4}     {:.3}",
            kq.bits_per_element(),
            vq.bits_per_element(),
            nmse(&c.k, &kq.data, tokens, w).unwrap(),
            nmse(&c.v, &vq.data, tokens, w).unwrap(),
            e.output_rel,
            e.logit_rmse_rel,
            e.topk_agreement
        );
    }
}
