//! Bit-exact storage (`--lossless`, .tq3s version 4): column palettes for
//! values on few levels, the unit-norm completion of quaternions, and
//! bit-exact SH-rest. The decoded scene must equal the input bit for bit,
//! and a scene on few levels must cost no more than its levels' bits.

mod common;

use std::path::Path;

use turboquant3d::codec::palette;
use turboquant3d::splat::container::{self, Coding, Profile};
use turboquant3d::splat::synth::{SynthConfig, generate};
use turboquant3d::splat::{self, CompressOptions, Scene};

fn lossless() -> CompressOptions {
    CompressOptions {
        profile: Profile::Exact,
        sh_exact: true,
        ..CompressOptions::default()
    }
}

/// A scene as an spz reader leaves it: every value on a grid of few
/// levels, each quaternion's real part the completion of the other three
/// (a few ulps off for some, as a reader computing in f64 leaves it).
fn quantised(n: usize, seed: u64) -> Scene {
    let mut s = generate(&SynthConfig {
        count: n,
        sh_degree: 3,
        seed,
    });
    let snap = |v: f32, step: f32| (v / step).round() * step;
    for p in &mut s.positions {
        *p = p.map(|v| snap(v, 1.0 / 4096.0));
    }
    for c in &mut s.scales {
        *c = c.map(|v| snap(v, 1.0 / 16.0));
    }
    for c in &mut s.dc {
        *c = c.map(|v| snap(v, 1.0 / 64.0));
    }
    for o in &mut s.opacity {
        *o = snap(*o, 0.25);
    }
    for v in &mut s.sh_rest {
        *v = snap(v.clamp(-0.5, 0.5), 1.0 / 16.0);
    }
    for (i, q) in s.rotations.iter_mut().enumerate() {
        let xyz = [q[1], q[2], q[3]].map(|v| snap(v.clamp(-0.7, 0.7), 1.0 / 128.0));
        let w = palette::completion(xyz.into_iter());
        let w = f32::from_bits(w.to_bits().wrapping_add((i % 5) as u32));
        *q = [w, xyz[0], xyz[1], xyz[2]];
    }
    s
}

fn assert_bit_exact(a: &Scene, b: &Scene) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(a.len(), b.len());
    assert_eq!(a.sh_degree, b.sh_degree);
    assert_eq!(
        bits(a.positions.as_flattened()),
        bits(b.positions.as_flattened())
    );
    assert_eq!(bits(a.scales.as_flattened()), bits(b.scales.as_flattened()));
    assert_eq!(
        bits(a.rotations.as_flattened()),
        bits(b.rotations.as_flattened())
    );
    assert_eq!(bits(&a.opacity), bits(&b.opacity));
    assert_eq!(bits(a.dc.as_flattened()), bits(b.dc.as_flattened()));
    assert_eq!(bits(&a.sh_rest), bits(&b.sh_rest));
}

/// Stream `tag`'s table entry.
fn stream(c: &splat::Compressed, tag: &[u8; 4]) -> container::StreamInfo {
    c.streams.iter().find(|s| &s.info.tag == tag).unwrap().info
}

fn coding_of(c: &splat::Compressed, tag: &[u8; 4]) -> Coding {
    stream(c, tag).coding
}

fn stored_of(c: &splat::Compressed, tag: &[u8; 4]) -> u64 {
    stream(c, tag).stored_len
}

#[test]
fn quantised_scene_decodes_bit_exact_within_its_levels_bits() {
    let n = 20_000;
    let s = quantised(n, 3);
    let c = splat::compress(&s, &lossless()).unwrap();
    assert_eq!(c.header.version, 4);
    assert_eq!(c.header.sh_flags, container::SH_EXACT);
    assert_eq!(c.header.sh_bits, 0);
    for tag in [b"SHX ", b"SCL ", b"QUAT", b"OPA ", b"DC  "] {
        assert_eq!(coding_of(&c, tag), Coding::Palette, "{tag:?}");
    }
    // No rotation, codebook, scales or codes.
    assert!(
        c.streams
            .iter()
            .all(|x| !matches!(&x.info.tag, b"ROT " | b"CBK " | b"SHS " | b"SHC "))
    );
    let bytes = c.to_bytes().unwrap();
    let back = splat::decompress(&bytes, Path::new("q.tq3s")).unwrap();
    assert_bit_exact(&s, &back);
    // SH-rest on 17 levels: an index costs at most 5 bits, so 45 of them
    // at most 225 bits per Gaussian, whatever the coder (tables included).
    assert!(
        stored_of(&c, b"SHX ") * 8 <= (n * 45 * 5) as u64 + 45 * 1024,
        "SHX {} bytes",
        stored_of(&c, b"SHX ")
    );
    // The completed real part: three 8-bit-level columns plus a few bits
    // per Gaussian for the ulp differences, far below its 32 raw bits.
    assert!(
        stored_of(&c, b"QUAT") * 8 <= (n * (3 * 8 + 8)) as u64,
        "QUAT {} bytes",
        stored_of(&c, b"QUAT")
    );
    // The prediction bounds every stream.
    let p = splat::predict_size(&s, &lossless()).unwrap();
    common::tq3s::assert_prediction_holds(&p, &c);
}

#[test]
fn continuous_scene_is_stored_as_planes_and_exactly() {
    let s = generate(&SynthConfig {
        count: 5000,
        sh_degree: 2,
        seed: 9,
    });
    let c = splat::compress(&s, &lossless()).unwrap();
    // Continuous values have no palette to pay for.
    assert_ne!(coding_of(&c, b"SHX "), Coding::Palette);
    assert_ne!(coding_of(&c, b"POS "), Coding::Palette);
    let bytes = c.to_bytes().unwrap();
    assert_eq!(bytes[8], 4, "bit-exact SH-rest is version 4");
    assert_bit_exact(&s, &splat::decompress(&bytes, Path::new("c.tq3s")).unwrap());
    // The renderer's path: nothing is left coded.
    let (split, sh) = splat::decompress_split(&bytes, Path::new("c.tq3s")).unwrap();
    assert!(sh.is_none());
    assert_bit_exact(&s, &split);
}

#[test]
fn exact_profile_alone_uses_palettes_and_stays_lossless() {
    // The exact profile with coded SH: the attributes on few levels get
    // palettes (version 4), the SH-rest keeps its codes.
    let s = quantised(3000, 5);
    let opts = CompressOptions {
        profile: Profile::Exact,
        ..CompressOptions::default()
    };
    let c = splat::compress(&s, &opts).unwrap();
    assert_eq!(c.header.version, 4);
    assert_eq!(coding_of(&c, b"SCL "), Coding::Palette);
    assert_ne!(coding_of(&c, b"SHC "), Coding::Palette);
    let back = splat::decompress(&c.to_bytes().unwrap(), Path::new("e.tq3s")).unwrap();
    let bits = |v: &[[f32; 4]]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&s.rotations), bits(&back.rotations));
    // The compact profile never uses them: its streams are codes.
    let c = splat::compress(&s, &CompressOptions::default()).unwrap();
    assert!(c.streams.iter().all(|x| x.info.coding != Coding::Palette));
    assert!(c.header.version < 4);
}

#[test]
fn same_bytes_at_any_thread_count() {
    let s = quantised(9000, 7);
    let run = |threads: usize| {
        common::on_threads(threads, || {
            splat::compress(&s, &lossless())
                .unwrap()
                .to_bytes()
                .unwrap()
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn few_levels_tells_quantised_from_trained() {
    assert!(splat::few_levels(&quantised(5000, 1)));
    assert!(!splat::few_levels(&generate(&SynthConfig {
        count: 5000,
        sh_degree: 3,
        seed: 1
    })));
}

#[test]
fn options_that_contradict_it_are_refused() {
    let s = quantised(100, 2);
    let opts = CompressOptions {
        sh_widths: Some(vec![2; 100]),
        ..lossless()
    };
    let e = splat::compress(&s, &opts).unwrap_err().to_string();
    assert!(e.contains("widths do not apply"), "{e}");
}

/// A damaged file: every rewrite keeps the checksums valid.
fn rejects(b: &[u8], what: &str) {
    let e = splat::decompress(b, Path::new("bad.tq3s"))
        .unwrap_err()
        .to_string();
    assert!(e.contains(what), "expected {what:?} in: {e}");
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(e.contains("bad.tq3s"), "names the file: {e}");
}

fn fix_header_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[..124]);
    b[124..128].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn damaged_files_are_refused_in_one_line() {
    let s = quantised(2000, 4);
    let good = splat::compress(&s, &lossless())
        .unwrap()
        .to_bytes()
        .unwrap();
    // SH_EXACT in a version-3 file.
    let mut b = good.clone();
    b[8] = 3;
    fix_header_crc(&mut b);
    rejects(&b, "SH flags");
    // SH_EXACT with another flag (b = 0 is then refused first, or the
    // flags: either field, in one line).
    let mut b = good.clone();
    b[61] |= container::SH_SIGN_FLIP;
    fix_header_crc(&mut b);
    rejects(&b, "invalid SH");
    // SH_EXACT with a width.
    let mut b = good.clone();
    b[42] = 3;
    fix_header_crc(&mut b);
    rejects(&b, "SH bits");
    // A palette index outside its palette: shrink SCL's first palette by
    // one value (its last).
    let b = common::tq3s::restream(&good, |st| {
        (&st.tag == b"SCL ").then(|| {
            let mut v = st.stored.to_vec();
            let m = u32::from_le_bytes(v[1..5].try_into().unwrap());
            let values_end = 1 + 4 * 3 + 4 * m as usize;
            v[1..5].copy_from_slice(&(m - 1).to_le_bytes());
            v.drain(values_end - 4..values_end);
            (3, v)
        })
    });
    rejects(&b, "outside its palette");
    // The column count of another stream.
    let b = common::tq3s::restream(&good, |st| {
        (&st.tag == b"OPA ").then(|| {
            // A valid coding of as many bytes in 2 columns, not 1.
            let zeros = vec![0u8; st.raw_len as usize];
            (3, palette::encode(&zeros, 2, 3).unwrap().unwrap())
        })
    });
    rejects(&b, "column palettes of 2 columns, the stream has 1");
    // Column palettes on a stream that may not have them.
    let c = splat::compress(&s, &CompressOptions::default()).unwrap();
    let mut compact = c.to_bytes().unwrap();
    compact[8] = 4;
    fix_header_crc(&mut compact);
    let b = common::tq3s::restream(&compact, |st| {
        (&st.tag == b"POS ").then(|| (3, st.stored.to_vec()))
    });
    rejects(&b, "coding 3 (column palettes) is defined");
}

/// A real spz capture: bit-exact, and smaller than the .spz it came from.
#[test]
fn spz_capture_is_stored_bit_exact_below_the_spz_size() {
    let Some(path) = common::data::shared_data("fourth_st.spz") else {
        return;
    };
    let s = splat::formats::read_scene(&path).unwrap();
    assert!(splat::few_levels(&s));
    let c = splat::compress(&s, &lossless()).unwrap();
    let bytes = c.to_bytes().unwrap();
    assert_bit_exact(&s, &splat::decompress(&bytes, Path::new("f.tq3s")).unwrap());
    let spz = std::fs::metadata(&path).unwrap().len();
    assert!(
        (bytes.len() as u64) < spz,
        "{} bytes against the .spz's {spz}",
        bytes.len()
    );
}

/// Every byte of every palette-coded stream changed behind valid checksums
/// decodes or is refused, never panics; and with the checksums left alone
/// every flipped byte and every truncation is refused.
#[test]
fn mutated_palettes_never_panic() {
    let s = quantised(120, 6);
    let good = splat::compress(&s, &lossless())
        .unwrap()
        .to_bytes()
        .unwrap();
    for k in 0..good.len() {
        let mut bad = good.clone();
        bad[k] ^= 0x5a;
        assert!(
            splat::decompress(&bad, Path::new("m.tq3s")).is_err(),
            "byte {k}"
        );
    }
    for len in 0..good.len() {
        assert!(splat::decompress(&good[..len], Path::new("m.tq3s")).is_err());
    }
    let mut streams = Vec::new();
    common::tq3s::restream(&good, |st| {
        if st.coding == 3 {
            streams.push((st.tag, st.stored.len()));
        }
        None
    });
    assert!(streams.len() >= 4, "{streams:?}");
    for (tag, len) in streams {
        for k in 0..len {
            let b = common::tq3s::restream(&good, |st| {
                (st.tag == tag).then(|| {
                    let mut v = st.stored.to_vec();
                    v[k] ^= 0x5a;
                    (3, v)
                })
            });
            // Either outcome is fine; a panic fails the test.
            let _ = splat::decompress(&b, Path::new("m.tq3s"));
        }
    }
}
