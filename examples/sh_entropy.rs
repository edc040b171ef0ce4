//! How far the SH-rest codes (stream `SHC `) and the attribute streams are
//! from their empirical entropy, and what each entropy coder gets: raw
//! packing, zstd (packed, and one code per byte), the semi-static rANS of
//! stream coding 2 (tables included), an ideal adaptive order-0 model, and
//! a context of the coordinate index j.
//!
//! ```text
//! cargo run --release --example sh_entropy -- /work/shared/data/fourth_st.spz /work/shared/data/skull.sog
//! ```

use std::path::Path;
use std::time::Instant;

use turboquant3d::codec::entropy::{self, Run};
use turboquant3d::packing;
use turboquant3d::splat::{self, CompressOptions, formats};

/// Ideal code length of an adaptive order-0 model (counts start at 1/2,
/// the Krichevsky–Trofimov estimator), in bits.
fn adaptive_bits(codes: &[u8], bits: u8) -> f64 {
    let m = 1usize << bits;
    let mut c = vec![0.5f64; m];
    let mut total = 0.5 * m as f64;
    let mut sum = 0.0;
    for &s in codes {
        sum -= (c[s as usize] / total).log2();
        c[s as usize] += 1.0;
        total += 1.0;
    }
    sum
}

fn zstd_len(b: &[u8], level: i32) -> usize {
    zstd::bulk::compress(b, level).map_or(usize::MAX, |z| z.len())
}

fn kib(n: f64) -> String {
    format!("{:>9.1}", n / 1024.0)
}

fn sh_report(name: &str, scene: &splat::Scene, b: u32) -> Result<(), turboquant3d::Error> {
    let opts = CompressOptions {
        sh_bits: b,
        ..Default::default()
    };
    let c = splat::compress(scene, &opts)?;
    let bytes = c.to_bytes()?;
    let (_, sh) = splat::decompress_split(&bytes, Path::new(name))?;
    let Some(sh) = sh else { return Ok(()) };
    let (n, d) = (sh.len(), sh.dim());
    let packed = &sh.codes;
    let codes = packing::unpack(packed, b, n * d)?;
    let runs = [Run {
        bits: b as u8,
        count: (n * d) as u64,
    }];
    let hist = entropy::histogram(packed, &runs).map_err(turboquant3d::Error::InvalidArgument)?;
    let h = entropy::entropy_bits(&hist[b as usize]);
    // Context j: one histogram per coordinate.
    let m = 1usize << b;
    let mut hj = vec![vec![0u64; m]; d];
    for (i, &s) in codes.iter().enumerate() {
        hj[i % d][s as usize] += 1;
    }
    let hctx: f64 = hj
        .iter()
        .map(|h| entropy::entropy_bits(h) * h.iter().sum::<u64>() as f64)
        .sum::<f64>()
        / (n * d) as f64;
    let ctx_table = (d * m * 2) as f64;
    let t = Instant::now();
    let rans = entropy::encode(packed, &runs).map_err(turboquant3d::Error::InvalidArgument)?;
    let enc_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = entropy::decode(&rans, &runs).map_err(turboquant3d::Error::InvalidArgument)?;
    let dec_s = t.elapsed().as_secs_f64();
    assert_eq!(&back, packed);
    let t = Instant::now();
    let z = zstd_len(packed, 6);
    let zs = t.elapsed().as_secs_f64();
    let z19 = zstd_len(packed, 19);
    let zb = zstd_len(&codes, 6);
    let syms = (n * d) as f64;
    println!(
        "{name} b={b}: N={n} d={d}  H={h:.4} bits (H|j={hctx:.4})  KiB: raw {} | entropy {} | rANS {} ({:.4} b/sym, {:+.2}% over H) | H|j+tables {} | adaptive {} | zstd6 {} zstd19 {} | zstd6 byte/code {}  | rANS enc {:.0} ms dec {:.0} ms, zstd6 enc {:.0} ms",
        kib(packed.len() as f64),
        kib(h * syms / 8.0),
        kib(rans.len() as f64),
        rans.len() as f64 * 8.0 / syms,
        (rans.len() as f64 * 8.0 / (h * syms) - 1.0) * 100.0,
        kib(hctx * syms / 8.0 + ctx_table),
        kib(adaptive_bits(&codes, b as u8) / 8.0),
        kib(z as f64),
        kib(z19 as f64),
        kib(zb as f64),
        enc_s * 1e3,
        dec_s * 1e3,
        zs * 1e3,
    );
    Ok(())
}

/// The attribute streams of the default (compact) profile: today's zstd of
/// byte planes against rANS with one table per byte plane.
fn attr_report(name: &str, scene: &splat::Scene) -> Result<(), turboquant3d::Error> {
    let c = splat::compress(scene, &CompressOptions::default())?;
    let n = c.header.count as usize;
    let (mut tz, mut tr, mut traw) = (0usize, 0usize, 0usize);
    for s in &c.streams {
        let tag = splat::container::tag_name(&s.info.tag);
        if !["POS", "SCL", "QUAT", "OPA", "DC"].contains(&tag.as_str()) {
            continue;
        }
        let raw = match s.info.coding {
            splat::container::Coding::Zstd => {
                zstd::bulk::decompress(&s.stored, s.info.raw_len as usize)
                    .map_err(|e| turboquant3d::Error::InvalidArgument(format!("zstd: {e}")))?
            }
            _ => s.stored.clone(),
        };
        // One rANS stream per byte plane of N bytes (its own table).
        let mut rans = 0;
        let mut hsum = 0.0;
        for plane in raw.chunks(n) {
            let runs = [Run {
                bits: 8,
                count: plane.len() as u64,
            }];
            rans += entropy::encode(plane, &runs)
                .map_err(turboquant3d::Error::InvalidArgument)?
                .len();
            let hist =
                entropy::histogram(plane, &runs).map_err(turboquant3d::Error::InvalidArgument)?;
            hsum += entropy::entropy_bits(&hist[8]) * plane.len() as f64 / 8.0;
        }
        tz += s.info.stored_len as usize;
        tr += rans;
        traw += raw.len();
        println!(
            "{name} {tag:<4}: raw {} KiB | planes+zstd6 {} KiB | planes+rANS {} KiB | order-0 entropy {} KiB",
            kib(raw.len() as f64),
            kib(s.info.stored_len as f64),
            kib(rans as f64),
            kib(hsum),
        );
    }
    println!(
        "{name} attributes: raw {} KiB | planes+zstd6 {} KiB | planes+rANS {} KiB",
        kib(traw as f64),
        kib(tz as f64),
        kib(tr as f64)
    );
    Ok(())
}

fn main() -> Result<(), turboquant3d::Error> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    for p in &paths {
        let scene = formats::read_scene(Path::new(p))?;
        let name = Path::new(p)
            .file_name()
            .map_or(p.clone(), |f| f.to_string_lossy().into_owned());
        for b in 1..=4 {
            sh_report(&name, &scene, b)?;
        }
        attr_report(&name, &scene)?;
    }
    Ok(())
}
