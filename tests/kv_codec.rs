//! The KV codec against theory: normalised MSE at the shapes KV caches
//! have, key centring, per-head scales, the byte budget, and appending.

use turboquant3d::codec::allocate::distortions;
use turboquant3d::kv::attention::Heads;
use turboquant3d::kv::codec::{Budget, KvConfig, LayerIn, Mode, Weighting, compress_layer, plan};
use turboquant3d::kv::{CodedTensor, Plan};

/// Deterministic standard normals (Box–Muller over an xorshift stream).
fn normals(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn sq_err(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}

fn energy(a: &[f32]) -> f64 {
    a.iter().map(|&x| (x as f64).powi(2)).sum()
}

#[test]
fn normalised_mse_matches_the_codebook_theory_at_kv_widths() {
    // Gaussian rows: every direction equally likely, so the error of a unit
    // vector is d·C(d, b) (§3), less the least-squares scale's gain, which
    // shrinks like 1/d (§6: under 5 % at d = 45 and b = 4).
    for (d, tokens, bits) in [
        (1024, 400, [2u8, 4]),
        (768, 400, [2, 3]),
        (64, 4000, [3, 4]),
    ] {
        let x = normals(tokens * d, d as u64);
        let dist = distortions(d).unwrap();
        for b in bits {
            let c = CodedTensor::encode(
                &x,
                tokens,
                Plan::uniform(1, d).unwrap(),
                None,
                vec![b; tokens],
                1,
            )
            .unwrap();
            let nmse = sq_err(&x, &c.decode().unwrap()) / energy(&x);
            let theory = dist[b as usize];
            // Monte Carlo: tokens·d coordinates, relative spread ≈ √(2/(N·d)).
            assert!(
                nmse <= theory * 1.02 && nmse >= theory * 0.93,
                "d = {d} b = {b}: {nmse} against d·C(d, b) = {theory}"
            );
        }
    }
}

fn heads64(h: usize) -> Heads {
    Heads {
        heads: h,
        head_dim: 64,
    }
}

#[test]
fn key_centring_removes_the_penalty_of_a_shared_offset() {
    let (tokens, h) = (512, 4);
    let w = 64 * h;
    let noise = normals(tokens * w, 3);
    // The same keys with a shared offset 4× their spread per channel.
    let offset = normals(w, 4);
    let shifted: Vec<f32> = noise
        .iter()
        .enumerate()
        .map(|(i, &x)| x + 4.0 * offset[i % w])
        .collect();
    let run = |k: &[f32], centre: bool| {
        let cfg = KvConfig {
            centre_keys: centre,
            weighting: Weighting::Uniform,
            ..KvConfig::default()
        };
        let input = LayerIn {
            k: Some(k),
            v: None,
            q: None,
            tokens,
            heads: heads64(h),
        };
        let bits = (tokens * w) as u64 * 3;
        let out = compress_layer(&input, &cfg, Budget::Joint(bits)).unwrap();
        sq_err(k, &out.k.unwrap().decode().unwrap())
    };
    let plain = run(&noise, false);
    let centred = run(&shifted, true);
    let uncentred = run(&shifted, false);
    // Centring codes the same spread; only the f16 mean's rounding and the
    // 16 bits per channel it costs separate the two.
    assert!(
        centred <= plain * 1.08,
        "centred {centred} against no offset {plain}"
    );
    assert!(
        uncentred > 5.0 * plain,
        "uncentred {uncentred} against no offset {plain}"
    );
}

#[test]
fn per_head_mode_bounds_the_worst_heads_error() {
    // Head energies spread 10× (log-uniform over 16 heads).
    let (tokens, h) = (256, 16);
    let w = 64 * h;
    let mut x = normals(tokens * w, 9);
    for (i, v) in x.iter_mut().enumerate() {
        let head = (i % w) / 64;
        *v *= 10f32.powf(head as f32 / (h - 1) as f32 / 2.0);
    }
    let worst = |mode: Mode| {
        let cfg = KvConfig {
            mode,
            centre_keys: false,
            weighting: Weighting::Uniform,
            ..KvConfig::default()
        };
        let p = plan(&x, tokens, heads64(h), mode, 0, None).unwrap();
        let per = p.units_per_token();
        // Uniform 4-bit widths, to compare the two cuts alone.
        let c = CodedTensor::encode(&x, tokens, p, None, vec![4; tokens * per], cfg.seed).unwrap();
        let y = c.decode().unwrap();
        (0..h)
            .map(|head| {
                let (mut e, mut n) = (0.0, 0.0);
                for t in 0..tokens {
                    let r = t * w + head * 64..t * w + (head + 1) * 64;
                    e += sq_err(&x[r.clone()], &y[r.clone()]);
                    n += energy(&x[r]);
                }
                e / n
            })
            .fold(0.0f64, f64::max)
    };
    let d64 = distortions(64).unwrap()[4];
    let per_head = worst(Mode::PerHead);
    let whole = worst(Mode::Whole);
    assert!(
        per_head <= d64 * 1.1,
        "per head: worst {per_head}, D = {d64}"
    );
    // Whole width spreads the error evenly over the channels, so the weakest
    // head's relative error is the mean energy over its energy times D.
    assert!(whole > 2.5 * d64, "whole width: worst {whole}, D = {d64}");
}

#[test]
fn the_payload_never_exceeds_the_budget_and_spends_nearly_all_of_it() {
    let (tokens, h) = (300, 4);
    let w = 64 * h;
    let k = normals(tokens * w, 21);
    let v = normals(tokens * w, 22);
    let q = normals(50 * w, 23);
    let elements = (tokens * w) as f64;
    for (bpe, outliers, mode, split) in [
        (2.25, 0, Mode::PerHead, false),
        (3.0, 16, Mode::PerHead, false),
        (4.25, 0, Mode::Whole, true),
        (1.3, 8, Mode::Whole, true),
    ] {
        let cfg = KvConfig {
            mode,
            outliers,
            ..KvConfig::default()
        };
        let input = LayerIn {
            k: Some(&k),
            v: Some(&v),
            q: Some(&q),
            tokens,
            heads: heads64(h),
        };
        let each = (elements * bpe) as u64;
        let budget = if split {
            Budget::Split {
                keys: each,
                values: each,
            }
        } else {
            Budget::Joint(2 * each)
        };
        let out = compress_layer(&input, &cfg, budget).unwrap();
        let (kc, vc) = (out.k.unwrap(), out.v.unwrap());
        let spent = 8 * (kc.payload_bytes() + vc.payload_bytes());
        assert!(spent <= 2 * each, "{bpe}: {spent} > {}", 2 * each);
        // Short by less than the widest upgrade of one unit per tensor.
        assert!(
            spent + 2 * (64 * 8 + 16 + 16) >= 2 * each,
            "{bpe}: {spent} of {}",
            2 * each
        );
    }
}

#[test]
fn appending_tokens_gives_the_bytes_of_coding_them_all_at_once() {
    let (tokens, h) = (97, 2);
    let w = 64 * h;
    let x = normals(tokens * w, 31);
    let mean: Vec<f32> = (0..w).map(|c| (c as f32 * 0.37).sin()).collect();
    let p = plan(&x, tokens, heads64(h), Mode::PerHead, 16, Some(&mean)).unwrap();
    let per = p.units_per_token();
    let widths: Vec<u8> = (0..tokens * per).map(|u| (u * 7 % 9) as u8).collect();
    let all =
        CodedTensor::encode(&x, tokens, p.clone(), Some(mean.clone()), widths.clone(), 5).unwrap();
    for cut in [1, 40, 96] {
        let mut part = CodedTensor::encode(
            &x[..cut * w],
            cut,
            p.clone(),
            Some(mean.clone()),
            widths[..cut * per].to_vec(),
            5,
        )
        .unwrap();
        part.append(&x[cut * w..], tokens - cut, widths[cut * per..].to_vec())
            .unwrap();
        assert_eq!(part, all, "cut at {cut}");
    }
}

/// Attention-output error of our codec and of KIVI (groups of 128) at
/// KIVI's bits per element, on synthetic caches with outlier channels, a
/// shared key offset, head energies spread 10×, correlated tokens and an
/// attention sink (`kv::synth`, each property tested in kv_baselines.rs).
#[test]
fn attention_error_is_below_kivi_at_equal_bits_and_lower_still_with_queries() {
    use turboquant3d::kv::codec::budget_bits;
    use turboquant3d::kv::kivi;
    use turboquant3d::kv::metrics::attention_error;
    use turboquant3d::kv::synth::{SynthConfig, cache};
    let (tokens, h) = (512, 8);
    for seed in [1, 2] {
        let c = cache(&SynthConfig::new(tokens, h, 64, seed)).unwrap();
        let w = c.heads.width();
        let n = (tokens * w) as u64;
        for bits in [2u32, 3, 4] {
            let kk = kivi::quantize_keys(&c.k, tokens, w, bits, 128).unwrap();
            let kv = kivi::quantize_values(&c.v, tokens, w, bits, 128).unwrap();
            let bpe = (kk.stored_bits + kv.stored_bits) as f64 / (2 * n) as f64;
            let theirs = attention_error(&c.q, &c.k, &c.v, &kk.data, &kv.data, tokens, c.heads, 8)
                .unwrap()
                .output_rel;
            let ours = |queries: bool| {
                let input = LayerIn {
                    k: Some(&c.k),
                    v: Some(&c.v),
                    q: queries.then_some(c.q.as_slice()),
                    tokens,
                    heads: c.heads,
                };
                let out = compress_layer(
                    &input,
                    &KvConfig::default(),
                    Budget::Joint(budget_bits(2 * n, bpe)),
                )
                .unwrap();
                let (k, v) = (out.k.unwrap(), out.v.unwrap());
                assert!(
                    8 * (k.payload_bytes() + v.payload_bytes()) <= (bpe * (2 * n) as f64) as u64
                );
                let (kh, vh) = (k.decode().unwrap(), v.decode().unwrap());
                attention_error(&c.q, &c.k, &c.v, &kh, &vh, tokens, c.heads, 8)
                    .unwrap()
                    .output_rel
            };
            let (blind, informed) = (ours(false), ours(true));
            assert!(
                blind <= theirs,
                "seed {seed}, {bpe} bits: ours {blind} > KIVI {theirs}"
            );
            assert!(
                informed < blind,
                "seed {seed}, {bpe} bits: with queries {informed}, without {blind}"
            );
        }
    }
}

#[test]
fn streaming_layers_keep_old_tokens_and_equal_one_encode_at_the_same_widths() {
    use turboquant3d::kv::codec::append_layer;
    let (h, chunk, chunks) = (2, 40, 3);
    let w = 64 * h;
    let k = normals(chunk * chunks * w, 41);
    let v = normals(chunk * chunks * w, 42);
    let cfg = KvConfig {
        outliers: 8,
        ..KvConfig::default()
    };
    let rows = |x: &[f32], c: usize| x[c * chunk * w..(c + 1) * chunk * w].to_vec();
    let input =
        |c: usize, k: &[f32], v: &[f32]| -> (Vec<f32>, Vec<f32>) { (rows(k, c), rows(v, c)) };
    let budget = Budget::Joint((2 * chunk * w) as u64 * 3);
    let (k0, v0) = input(0, &k, &v);
    let mut layer = compress_layer(
        &LayerIn {
            k: Some(&k0),
            v: Some(&v0),
            q: None,
            tokens: chunk,
            heads: heads64(h),
        },
        &cfg,
        budget,
    )
    .unwrap();
    let first = layer.clone();
    for c in 1..chunks {
        let before = layer.clone();
        let (kc, vc) = input(c, &k, &v);
        append_layer(
            &mut layer,
            &LayerIn {
                k: Some(&kc),
                v: Some(&vc),
                q: None,
                tokens: chunk,
                heads: heads64(h),
            },
            &cfg,
            budget,
        )
        .unwrap();
        for (old, new, first) in [
            (&before.k, &layer.k, &first.k),
            (&before.v, &layer.v, &first.v),
        ] {
            let (old, new) = (old.as_ref().unwrap(), new.as_ref().unwrap());
            // Old tokens untouched: their widths, scales and codes are a prefix.
            assert_eq!(new.widths[..old.widths.len()], old.widths[..]);
            assert_eq!(new.scales[..old.scales.len()], old.scales[..]);
            let whole = old.codes.len() - 1;
            assert_eq!(new.codes[..whole], old.codes[..whole]);
            // Plan and mean are the first chunk's.
            assert_eq!(new.plan, first.as_ref().unwrap().plan);
        }
        // The chunk stayed within its budget (codes, scales, widths).
        let grown: u64 = [(&before.k, &layer.k), (&before.v, &layer.v)]
            .iter()
            .map(|(o, n)| n.as_ref().unwrap().payload_bytes() - o.as_ref().unwrap().payload_bytes())
            .sum();
        let Budget::Joint(b) = budget else {
            unreachable!()
        };
        assert!(8 * grown <= b + 16, "chunk {c}: {} bits of {b}", 8 * grown);
    }
    // The promise: one encode of every token with the same plan, mean and widths.
    for (coded, x) in [
        (layer.k.as_ref().unwrap(), &k),
        (layer.v.as_ref().unwrap(), &v),
    ] {
        let once = CodedTensor::encode(
            x,
            chunk * chunks,
            coded.plan.clone(),
            coded.mean.clone(),
            coded.widths.clone(),
            coded.seed,
        )
        .unwrap();
        assert_eq!(&once, coded);
    }
    assert_eq!(
        layer.k.as_ref().unwrap().mean,
        first.k.as_ref().unwrap().mean
    );
}
