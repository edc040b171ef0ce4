//! Stream coding 2: the semi-static rANS of packed codes (`SHC `).
//! The coder round-trips exactly, costs within a fraction of a percent of
//! the empirical entropy (computed here from the histogram), rejects
//! hostile input with an error; compressed scenes stay under the
//! closed-form bound and decode to the codes a quantizer gives directly.

mod common;

use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use turboquant3d::codec::entropy::{self, BLOCK_SYMBOLS, PRECISION, Run};
use turboquant3d::splat::container::Profile;
use turboquant3d::splat::synth::{SynthConfig, generate};
use turboquant3d::splat::{self, CompressOptions};
use turboquant3d::{Quantizer, QuantizerConfig, ScaleFormat, ScaleMode, packing};

/// Packs `syms` (each below 2^width) LSB-first, bit by bit.
fn pack_bits(syms: &[(u8, u8)]) -> Vec<u8> {
    let bits: usize = syms.iter().map(|s| s.0 as usize).sum();
    let mut out = vec![0u8; bits.div_ceil(8)];
    let mut at = 0;
    for &(w, s) in syms {
        for k in 0..w as usize {
            if s >> k & 1 == 1 {
                out[at / 8] |= 1 << (at % 8);
            }
            at += 1;
        }
    }
    out
}

/// Draws symbols of `runs` from a skewed distribution (p ∝ 1/(1+s)²).
fn draw(rng: &mut ChaCha8Rng, runs: &[Run]) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    for r in runs {
        let m = 1u32 << r.bits.max(1);
        let w: Vec<f64> = (0..m).map(|s| 1.0 / (1.0 + s as f64).powi(2)).collect();
        let total: f64 = w.iter().sum();
        for _ in 0..r.count {
            let mut u = rng.random::<f64>() * total;
            let mut s = 0;
            while s + 1 < m as usize && u >= w[s] {
                u -= w[s];
                s += 1;
            }
            if r.bits > 0 {
                out.push((r.bits, s as u8));
            }
        }
    }
    out
}

#[test]
fn random_runs_round_trip_exactly() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for case in 0..60 {
        let nruns = rng.random_range(0..6);
        let runs: Vec<Run> = (0..nruns)
            .map(|_| Run {
                bits: rng.random_range(0..=8),
                count: if case % 7 == 0 {
                    rng.random_range(0..3 * BLOCK_SYMBOLS as u64)
                } else {
                    rng.random_range(0..300)
                },
            })
            .collect();
        let syms = draw(&mut rng, &runs);
        let packed = pack_bits(&syms);
        let coded = entropy::encode(&packed, &runs).unwrap();
        assert_eq!(
            entropy::decode(&coded, &runs).unwrap(),
            packed,
            "case {case}: {runs:?}"
        );
        // Unused high bits of the last byte are not coded: they decode as 0.
        if syms.iter().map(|s| s.0 as usize).sum::<usize>() % 8 != 0 {
            let mut dirty = packed.clone();
            *dirty.last_mut().unwrap() |= 0x80;
            let c = entropy::encode(&dirty, &runs).unwrap();
            assert_eq!(entropy::decode(&c, &runs).unwrap(), packed);
        }
    }
}

/// Entropy in bits of the symbols, from their counts (independent of the
/// library's own helper).
fn empirical_entropy_bits(syms: &[(u8, u8)]) -> f64 {
    let mut counts = std::collections::HashMap::<(u8, u8), u64>::new();
    let mut per_width = std::collections::HashMap::<u8, u64>::new();
    for &s in syms {
        *counts.entry(s).or_default() += 1;
        *per_width.entry(s.0).or_default() += 1;
    }
    counts
        .iter()
        .map(|(&(w, _), &c)| {
            let p = c as f64 / per_width[&w] as f64;
            -(c as f64) * p.log2()
        })
        .sum()
}

#[test]
fn coded_size_is_within_a_fraction_of_a_percent_of_the_entropy() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for runs in [
        vec![Run {
            bits: 3,
            count: 400_000,
        }],
        vec![
            Run {
                bits: 2,
                count: 100_000,
            },
            Run {
                bits: 5,
                count: 150_000,
            },
            Run {
                bits: 1,
                count: 50_000,
            },
        ],
        vec![Run {
            bits: 8,
            count: 300_000,
        }],
    ] {
        let syms = draw(&mut rng, &runs);
        let packed = pack_bits(&syms);
        let coded = entropy::encode(&packed, &runs).unwrap();
        let h = empirical_entropy_bits(&syms) / 8.0;
        // An ideal coder reaches the entropy; 15-bit frequencies, the
        // tables and 8 bytes per block of 2^16 symbols cost a little more.
        let n = syms.len() as f64;
        let overhead = 2.0 + 4.0 + 8.0 * (n / BLOCK_SYMBOLS as f64).ceil();
        let tables: f64 = runs
            .iter()
            .map(|r| 1.0 + 2.0 * (1u32 << r.bits) as f64)
            .sum();
        let len = coded.len() as f64;
        assert!(len >= h, "{len} below the entropy {h}");
        assert!(
            len <= h * 1.005 + overhead + tables,
            "{len} bytes vs entropy {h:.1} ({runs:?})"
        );
        assert!(len < packed.len() as f64, "no gain on skewed symbols");
    }
}

#[test]
fn hostile_streams_are_errors_not_panics() {
    let runs = [Run {
        bits: 3,
        count: 5000,
    }];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let packed = pack_bits(&draw(&mut rng, &runs));
    let good = entropy::encode(&packed, &runs).unwrap();
    // Layout: precision, table count, width, 8 u16 frequencies, u32 block
    // size, u32 block length, the block.
    assert_eq!(good[0] as u32, PRECISION);
    assert_eq!(good[1], 1);
    assert_eq!(good[2], 3);
    let freq_sum: u32 = (0..8)
        .map(|k| u16::from_le_bytes([good[3 + 2 * k], good[4 + 2 * k]]) as u32)
        .sum();
    assert_eq!(freq_sum, 1 << PRECISION);
    let err = |b: &[u8]| entropy::decode(b, &runs).unwrap_err();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    assert!(err(&with(&|b| b[0] = 12)).contains("precision"));
    assert!(err(&with(&|b| b[1] = 2)).contains("tables"));
    assert!(err(&with(&|b| b[2] = 4)).contains("width"));
    // A sum that is not 2^15, and all frequencies zero.
    assert!(err(&with(&|b| b[3] ^= 1)).contains("sum"));
    assert!(err(&with(&|b| b[3..19].fill(0))).contains("sum"));
    // Block size zero or too large.
    assert!(err(&with(&|b| b[19..23].copy_from_slice(&0u32.to_le_bytes()))).contains("block size"));
    assert!(
        err(&with(
            &|b| b[19..23].copy_from_slice(&(BLOCK_SYMBOLS + 1).to_le_bytes())
        ))
        .contains("block size")
    );
    assert!(err(&with(&|b| b.push(0))).contains("after the last block"));
    for cut in [1, 2, 10, 20, 24, 27, good.len() - 1] {
        assert!(entropy::decode(&good[..cut], &runs).is_err(), "cut {cut}");
    }
    // Other widths than the stream was coded for.
    assert!(
        entropy::decode(
            &good,
            &[Run {
                bits: 3,
                count: 5001
            }]
        )
        .is_err()
    );
    // Every single-byte change, and random bytes: an error or some output,
    // never a panic; a changed coder state is caught by the final state.
    for i in 0..good.len() {
        for x in [1u8, 0x80, 0xff] {
            let _ = entropy::decode(&with(&|b| b[i] ^= x), &runs);
        }
    }
    let state = 27;
    assert!(err(&with(&|b| b[state] ^= 1)).contains("block 0"));
    for _ in 0..2000 {
        let n = rng.random_range(0..64);
        let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let _ = entropy::decode(&junk, &runs);
    }
}

fn scene(n: usize, degree: u8, seed: u64) -> splat::Scene {
    generate(&SynthConfig {
        count: n,
        sh_degree: degree,
        seed,
    })
}

#[test]
fn coded_scenes_stay_within_the_closed_form_bound() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for case in 0..24u64 {
        let n = rng.random_range(1..3000);
        let degree = rng.random_range(1..=3);
        let s = scene(n, degree, case);
        let b = rng.random_range(1..=8);
        let widths = (case % 3 == 0).then(|| (0..n).map(|_| rng.random_range(0..=6)).collect());
        let opts = CompressOptions {
            sh_bits: b,
            sh_widths: widths,
            profile: if case % 2 == 0 {
                Profile::Compact
            } else {
                Profile::Exact
            },
            // One record per Gaussian: the bound computed below is the
            // plain layout's (tests/sh_dedup.rs checks the deduplicated).
            dedup: false,
            ..Default::default()
        };
        let p = splat::predict_size(&s, &opts).unwrap();
        let c = splat::compress(&s, &opts).unwrap();
        let ps = p.streams.iter().find(|s| s.tag == "SHC").unwrap();
        assert!(!ps.exact, "SHC is entropy-coded: its size is a bound");
        let cs = c.streams.iter().find(|s| &s.info.tag == b"SHC ").unwrap();
        // The bound: the packed codes' length, computed here.
        let d = 3 * ((degree as usize + 1).pow(2) - 1);
        let bits: usize = match &opts.sh_widths {
            None => n * d * b as usize,
            Some(w) => w.iter().map(|&x| d * x as usize).sum(),
        };
        assert_eq!(ps.bytes as usize, bits.div_ceil(8), "case {case}");
        assert!(cs.info.stored_len <= ps.bytes, "case {case}");
        assert!(c.size() <= p.total_bound() && c.size() >= p.fixed());
        // The decoded file holds exactly the raw packing of the codes.
        let bytes = c.to_bytes().unwrap();
        let (_, sh) = splat::decompress_split(&bytes, Path::new("t.tq3s")).unwrap();
        assert_eq!(sh.unwrap().codes.len(), bits.div_ceil(8));
    }
}

#[test]
fn coded_codes_are_the_quantizers_codes() {
    // Exact profile keeps the input order: the file's codes must be the
    // packed codes a quantizer with the same seed gives for the SH-rest
    // (without the sign flip, which changes the quantizer's input).
    let s = scene(20_000, 3, 11);
    for b in [1u32, 2, 3, 4] {
        let opts = CompressOptions {
            profile: Profile::Exact,
            sh_bits: b,
            scale_mode: ScaleMode::LeastSquares,
            sign_flip: false,
            ..Default::default()
        };
        let c = splat::compress(&s, &opts).unwrap();
        let cs = c.streams.iter().find(|s| &s.info.tag == b"SHC ").unwrap();
        let mut cfg = QuantizerConfig::new(45, b);
        cfg.seed = opts.seed;
        cfg.scale_mode = ScaleMode::LeastSquares;
        cfg.scale_format = ScaleFormat::F16;
        let q = Quantizer::new(&cfg).unwrap();
        let enc = q.encode(&s.sh_rest).unwrap();
        let bytes = c.to_bytes().unwrap();
        let (_, sh) = splat::decompress_split(&bytes, Path::new("t.tq3s")).unwrap();
        assert_eq!(sh.unwrap().codes, enc.codes(), "b = {b}");
        // The writer keeps the smallest of rANS, zstd and raw: never more
        // than the codes' order-0 entropy plus rANS's small overhead.
        let codes = packing::unpack(enc.codes(), b, 20_000 * 45).unwrap();
        let mut hist = vec![0u64; 1 << b];
        for &x in &codes {
            hist[x as usize] += 1;
        }
        let h: f64 = hist
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / codes.len() as f64;
                -p * p.log2()
            })
            .sum();
        let ideal = h * codes.len() as f64 / 8.0;
        assert!(
            (cs.info.stored_len as f64) < ideal * 1.005 + 200.0,
            "b = {b}: {} vs entropy {ideal:.0}",
            cs.info.stored_len
        );
    }
}

#[test]
fn coded_files_are_deterministic_across_thread_counts() {
    let s = scene(70_000, 3, 12);
    let opts = CompressOptions {
        sh_bits: 3,
        ..Default::default()
    };
    let run = |threads: usize| {
        common::on_threads(threads, || {
            splat::compress(&s, &opts).unwrap().to_bytes().unwrap()
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    let (_, infos) = splat::container::read_table(&one, Path::new("t")).unwrap();
    let shc = infos.iter().find(|i| &i.tag == b"SHC ").unwrap();
    assert_eq!(shc.coding.name(), "rans");
    // More than one block, decoded back the same.
    assert!(70_000 * 45 > 2 * BLOCK_SYMBOLS as usize);
    let back = splat::decompress(&one, Path::new("t")).unwrap();
    assert_eq!(back.len(), 70_000);
}

/// The same file with `SHC ` re-stored with rANS (coding 2) whatever the
/// writer chose, and `tweak` applied to its coded bytes; the checksums are
/// recomputed, so only the rANS layer can catch the change.
fn with_rans_shc(b: &[u8], tweak: &dyn Fn(&mut Vec<u8>)) -> Vec<u8> {
    let (_, sh) = splat::decompress_split(b, Path::new("t")).unwrap();
    let sh = sh.unwrap();
    let d = sh.dim() as u64;
    let runs: Vec<Run> = sh
        .widths
        .iter()
        .map(|&w| Run { bits: w, count: d })
        .collect();
    common::tq3s::restream(b, |s| {
        (&s.tag == b"SHC ").then(|| {
            let mut stored = entropy::encode(&sh.codes, &runs).unwrap();
            tweak(&mut stored);
            (2, stored)
        })
    })
}

#[test]
fn a_rans_coded_file_is_read_and_its_damage_is_one_line_errors() {
    let s = scene(40, 1, 21);
    let w: Vec<u8> = (0..40).map(|i| (i % 5) as u8).collect();
    for (name, widths) in [("uniform", None), ("per_gaussian", Some(w))] {
        let opts = CompressOptions {
            sh_bits: 3,
            sh_widths: widths,
            ..Default::default()
        };
        let bytes = splat::compress(&s, &opts).unwrap().to_bytes().unwrap();
        let want = splat::decompress(&bytes, Path::new("t")).unwrap();
        let coded = with_rans_shc(&bytes, &|_| {});
        let (_, infos) = splat::container::read_table(&coded, Path::new("t")).unwrap();
        assert!(
            infos
                .iter()
                .any(|i| &i.tag == b"SHC " && i.coding.name() == "rans")
        );
        let got = splat::decompress(&coded, Path::new("t")).unwrap();
        assert_eq!(got.sh_rest, want.sh_rest, "{name}");
        if let Ok(dir) = std::env::var("TQ3D_WRITE_FUZZ_CORPUS") {
            std::fs::write(
                Path::new(&dir).join(format!("tq3s/rans_{name}.tq3s")),
                &coded,
            )
            .unwrap();
        }
        let stream = std::cell::RefCell::new(Vec::new());
        with_rans_shc(&bytes, &|v| stream.borrow_mut().clone_from(v));
        let stream = stream.into_inner();
        let check = |f: &dyn Fn(&mut Vec<u8>)| match splat::decompress(
            &with_rans_shc(&bytes, f),
            Path::new("hostile.tq3s"),
        ) {
            Ok(sc) => assert_eq!(sc.len(), 40),
            Err(e) => {
                let m = e.to_string();
                assert!(!m.contains('\n') && m.contains("hostile.tq3s"), "{m}");
                assert!(m.contains("SHC"), "{m}");
            }
        };
        for i in 0..stream.len() {
            check(&|v| v[i] ^= 0x5a);
        }
        let must_fail = |f: &dyn Fn(&mut Vec<u8>)| {
            let e = splat::decompress(&with_rans_shc(&bytes, f), Path::new("hostile.tq3s"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("SHC") && !e.contains('\n'), "{e}");
        };
        must_fail(&|v| v.push(0));
        must_fail(&|v| {
            v.pop();
        });
        must_fail(&|v| v.truncate(3));
        must_fail(&|v| v.clear());
    }
    // Coding 2 on any other stream is refused.
    let bytes = splat::compress(&s, &CompressOptions::default())
        .unwrap()
        .to_bytes()
        .unwrap();
    let mut b = bytes.clone();
    let n = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    let k = (0..n)
        .find(|&k| &b[128 + 32 * k..132 + 32 * k] == b"POS ")
        .unwrap();
    b[128 + 32 * k + 4] = 2;
    let table_end = 128 + 32 * n;
    let crc = crc32fast::hash(&b[128..table_end]);
    b[table_end..table_end + 4].copy_from_slice(&crc.to_le_bytes());
    let e = splat::decompress(&b, Path::new("p.tq3s"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("POS") && e.contains("SHC alone"), "{e}");
}

/// FORMAT.md's "Stream coding 2", written from the text with the plain
/// division and a renormalisation loop: the library's coder (a multiply by
/// the reciprocal, branch-free steps, several blocks interleaved per
/// thread) must give these very bytes.
fn textbook_encode(syms: &[(u8, u8)], widths_used: &[u8]) -> Vec<u8> {
    const L: u32 = 1 << 23;
    let mut out = vec![15u8, widths_used.len() as u8];
    let mut tables = std::collections::HashMap::new();
    for &w in widths_used {
        let mut hist = vec![0u64; 1 << w];
        for &(sw, s) in syms {
            if sw == w {
                hist[s as usize] += 1;
            }
        }
        let f = entropy::quantise_frequencies(&hist);
        out.push(w);
        for &x in &f {
            out.extend_from_slice(&(x as u16).to_le_bytes());
        }
        let cum: Vec<u32> = f
            .iter()
            .scan(0, |c, &x| {
                let v = *c;
                *c += x;
                Some(v)
            })
            .collect();
        tables.insert(w, (f, cum));
    }
    out.extend_from_slice(&BLOCK_SYMBOLS.to_le_bytes());
    let blocks: Vec<Vec<u8>> = syms
        .chunks(BLOCK_SYMBOLS as usize)
        .map(|block| {
            let mut x = L;
            let mut rev = Vec::new();
            for &(w, s) in block.iter().rev() {
                let (f, cum) = &tables[&w];
                let (f, c) = (f[s as usize], cum[s as usize]);
                while x >= ((L >> 15) << 8) * f {
                    rev.push(x as u8);
                    x >>= 8;
                }
                x = ((x / f) << 15) + x % f + c;
            }
            rev.extend_from_slice(&x.to_be_bytes());
            rev.reverse();
            rev
        })
        .collect();
    for b in &blocks {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    }
    for b in blocks {
        out.extend_from_slice(&b);
    }
    out
}

#[test]
fn the_coder_writes_the_bytes_of_the_textbook_coder() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for case in 0..12 {
        // Per-Gaussian widths, as SHC has them (45 codes each), and a few
        // long uniform runs; 5 to 11 blocks, so the interleaved lanes run
        // together, alone and part-full.
        let runs: Vec<Run> = if case % 3 == 0 {
            vec![
                Run {
                    bits: rng.random_range(1..=8),
                    count: rng.random_range(3 * BLOCK_SYMBOLS as u64..6 * BLOCK_SYMBOLS as u64),
                },
                Run {
                    bits: rng.random_range(1..=8),
                    count: rng.random_range(1..4 * BLOCK_SYMBOLS as u64),
                },
            ]
        } else {
            (0..rng.random_range(8_000..16_000))
                .map(|_| Run {
                    bits: [0, 1, 1, 2, 2, 3, 4, 6, 8][rng.random_range(0..9)],
                    count: 45,
                })
                .collect()
        };
        let syms = draw(&mut rng, &runs);
        let packed = pack_bits(&syms);
        let mut used: Vec<u8> = syms.iter().map(|s| s.0).collect();
        used.sort_unstable();
        used.dedup();
        let coded = entropy::encode(&packed, &runs).unwrap();
        assert!(
            coded == textbook_encode(&syms, &used),
            "case {case}: the bytes differ from the textbook coder's"
        );
        assert_eq!(
            entropy::decode(&coded, &runs).unwrap(),
            packed,
            "case {case}"
        );
    }
}
