//! The `.tq3k` file (docs/FORMAT.md): round trips, the size prediction, and
//! the reader's defences (truncation, corruption, parameters that are not
//! the seed's, outputs that must not be written).

use std::path::{Path, PathBuf};

use turboquant3d::kv::file::{Body, EntryData, KvEntry, KvFile, Role, table_bytes};
use turboquant3d::kv::{CodedTensor, Plan};
use turboquant3d::{Codebook, Error, Rotation, RotationKind};

const SEED: u64 = 11;

fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

fn coded(
    plan: Plan,
    tokens: usize,
    mean: bool,
    widths: impl Fn(usize) -> u8,
    seed: u32,
) -> CodedTensor {
    let width = plan.width();
    let x = pseudo(tokens * width, seed);
    let per = plan.units_per_token();
    let mean = mean.then(|| pseudo(width, seed + 100));
    let widths = (0..tokens * per).map(widths).collect();
    CodedTensor::encode(&x, tokens, plan, mean, widths, SEED).unwrap()
}

/// Keys (two layers, uniform heads, centred, every width 0..=8), values
/// with an outlier segment, a whole-width Hadamard (d = 64) entry, a raw
/// i64 tensor, and metadata.
fn sample() -> KvFile {
    let outliers = Plan::new(
        2,
        8,
        vec![
            vec![(0..8).collect()],
            vec![vec![0, 3, 5], vec![1, 2, 4, 6, 7]],
        ],
    )
    .unwrap();
    let keys = (0..2)
        .map(|l| coded(Plan::uniform(2, 8).unwrap(), 5, true, |u| (u % 9) as u8, l))
        .collect();
    let values = vec![coded(outliers, 4, false, |u| ((u * 5) % 9) as u8, 7)];
    let whole = vec![coded(
        Plan::uniform(1, 64).unwrap(),
        3,
        false,
        |u| [2, 0, 4][u % 3],
        9,
    )];
    let raw: Vec<u8> = (0..6i64)
        .flat_map(|v| (v * -1_000_003).to_le_bytes())
        .collect();
    KvFile::new(
        SEED,
        vec![
            KvEntry {
                name: "layers.k".into(),
                dtype: "F16".into(),
                shape: vec![2, 5, 2, 8],
                layout: "lthd".into(),
                body: Body::Coded {
                    role: Role::Key,
                    layers: keys,
                },
            },
            KvEntry {
                name: "layers.v ü".into(),
                dtype: "BF16".into(),
                shape: vec![4, 16],
                layout: "tc".into(),
                body: Body::Coded {
                    role: Role::Value,
                    layers: values,
                },
            },
            KvEntry {
                name: "whole".into(),
                dtype: "F32".into(),
                shape: vec![3, 64],
                layout: "".into(),
                body: Body::Coded {
                    role: Role::Value,
                    layers: whole,
                },
            },
            KvEntry {
                name: "positions".into(),
                dtype: "I64".into(),
                shape: vec![2, 3],
                layout: "bt".into(),
                body: Body::Raw(raw),
            },
        ],
        Some(r#"{"bits": 4.25, "mode": "per-head", "centre_keys": true}"#.into()),
    )
}

fn one_line(e: &Error, name: &str) -> String {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
    assert!(msg.contains(name), "error does not name {name}: {msg}");
    msg
}

/// The sections after the 64-byte header, walked from their headers alone:
/// (tag, range of the 16-byte header and payload, range of the payload).
fn sections(b: &[u8]) -> Vec<([u8; 4], std::ops::Range<usize>, std::ops::Range<usize>)> {
    let mut at = 64;
    let mut out = Vec::new();
    while at < b.len() {
        let len = u64::from_le_bytes(b[at + 4..at + 12].try_into().unwrap()) as usize;
        let tag = b[at..at + 4].try_into().unwrap();
        out.push((tag, at..at + 16 + len, at + 16..at + 16 + len));
        at += 16 + len;
    }
    assert_eq!(at, b.len());
    out
}

/// Rewrites the CRC-32 of the section whose payload is `r`.
fn fix_crc(b: &mut [u8], r: std::ops::Range<usize>) {
    let crc = crc32fast::hash(&b[r.clone()]);
    b[r.start - 4..r.start].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn entries_round_trip_byte_and_decode_exact() {
    let f = sample();
    let b = f.to_bytes().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cache.tq3k");
    assert_eq!(f.write(&p).unwrap(), b.len() as u64);
    assert_eq!(std::fs::read(&p).unwrap(), b);
    for g in [
        KvFile::read(&p).unwrap(),
        KvFile::from_bytes(&b, &p).unwrap(),
    ] {
        assert_eq!(g, f);
        assert_eq!(g.to_bytes().unwrap(), b);
        for (i, e) in f.entries.iter().enumerate() {
            let d = g.decode_entry(i).unwrap();
            assert_eq!(
                (d.name, d.dtype, d.shape, d.layout),
                (&*e.name, &*e.dtype, &*e.shape, &*e.layout)
            );
            match (&e.body, d.data) {
                (Body::Raw(raw), EntryData::Raw(got)) => assert_eq!(got, &raw[..]),
                (Body::Coded { layers, .. }, EntryData::Values(got)) => {
                    // Each layer decoded with the seed's own rotations.
                    let want: Vec<f32> = layers.iter().flat_map(|t| t.decode().unwrap()).collect();
                    assert_eq!(got.len() as u64, e.shape.iter().product::<u64>());
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "entry {i}"
                    );
                }
                _ => panic!("entry {i} changed kind"),
            }
        }
    }
    // Every width 0..=8 of d = 8 is used, so every table of d = 8 is stored.
    let tables = f.tables_used();
    assert!((1..=8).all(|b| tables.contains(&(8, b))), "{tables:?}");
    assert_eq!(
        f.dims_used().into_iter().collect::<Vec<_>>(),
        vec![3, 5, 8, 64]
    );
}

#[test]
fn the_size_is_the_overhead_plus_the_payload() {
    let f = sample();
    let payload: u64 = f
        .entries
        .iter()
        .flat_map(|e| match &e.body {
            Body::Coded { layers, .. } => layers.iter().map(|t| t.payload_bytes()).collect(),
            Body::Raw(_) => vec![],
        })
        .sum();
    let over = f.overhead_bytes().unwrap();
    assert_eq!(f.to_bytes().unwrap().len() as u64, over + payload);

    // The overhead counted by hand from docs/FORMAT.md: header; ROT (d = 3,
    // 5, 8 dense: 4d²; d = 64 Hadamard, 3 rounds: 4 + 3·8 + 256); CBK
    // (4·2^b each); META; ENT; per layer LHD (17 + plan table) and 3 empty
    // section headers; RAW.
    let rot: u64 = [4 * 9, 4 * 25, 4 * 64, 4 + 24 + 256]
        .iter()
        .map(|r| 16 + 5 + r)
        .sum();
    let cbk: u64 = f
        .tables_used()
        .iter()
        .map(|&(_, b)| 16 + 5 + (4u64 << b))
        .sum();
    let meta = 16 + f.metadata.as_ref().unwrap().len() as u64;
    let ent: u64 = f
        .entries
        .iter()
        .map(|e| {
            let coded = matches!(e.body, Body::Coded { .. });
            16 + 2
                + e.name.len() as u64
                + 1
                + e.dtype.len() as u64
                + 1
                + 8 * e.shape.len() as u64
                + 1
                + e.layout.len() as u64
                + 1
                + if coded { 4 } else { 0 }
        })
        .sum();
    // 4 layers; the outlier plan: head 0 one segment (1 byte), head 1 two
    // (1 + 8 ids).
    let layers = 4 * (4 * 16 + 17) + (1 + 1 + 8);
    let raw = 16 + 48;
    assert_eq!(over, 64 + rot + cbk + meta + ent + layers + raw);

    // A skeleton of all-zero widths prices the same file without tables.
    let mut skeleton = f.clone();
    for e in &mut skeleton.entries {
        if let Body::Coded { layers, .. } = &mut e.body {
            for t in layers {
                t.widths.fill(0);
                t.scales.fill(0.0);
                t.codes.clear();
            }
        }
    }
    let tables: u64 = f.tables_used().iter().map(|&(_, b)| table_bytes(b)).sum();
    assert_eq!(skeleton.overhead_bytes().unwrap() + tables, over);
}

#[test]
fn every_truncation_is_refused() {
    let b = sample().to_bytes().unwrap();
    let p = Path::new("cut.tq3k");
    for n in 0..b.len() {
        let e = KvFile::from_bytes(&b[..n], p).unwrap_err();
        one_line(&e, "cut.tq3k");
    }
    // Through the file reader too, at section boundaries and inside them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.tq3k");
    for (_, whole, payload) in sections(&b) {
        for n in [
            whole.start,
            whole.start + 7,
            payload.start,
            (payload.start + payload.end) / 2,
        ] {
            std::fs::write(&path, &b[..n]).unwrap();
            one_line(&KvFile::read(&path).unwrap_err(), "cut.tq3k");
        }
    }
    // And a byte too many.
    let mut long = b.clone();
    long.push(0);
    std::fs::write(&path, &long).unwrap();
    let msg = one_line(&KvFile::read(&path).unwrap_err(), "cut.tq3k");
    assert!(msg.contains("after the last section"), "{msg}");
}

#[test]
fn a_flipped_byte_anywhere_is_refused_and_in_a_payload_by_its_crc() {
    let b = sample().to_bytes().unwrap();
    let p = Path::new("flip.tq3k");
    let secs = sections(&b);
    let tags: std::collections::BTreeSet<[u8; 4]> = secs.iter().map(|s| s.0).collect();
    for t in [
        b"ROT ", b"CBK ", b"META", b"ENT ", b"RAW ", b"LHD ", b"WID ", b"SCL ", b"COD ",
    ] {
        assert!(tags.contains(t), "no {t:?} section in the sample");
    }
    for i in 0..b.len() {
        let mut c = b.clone();
        c[i] ^= 0x10;
        let e = KvFile::from_bytes(&c, p).unwrap_err();
        one_line(&e, "flip.tq3k");
        let in_payload = (8..64).contains(&i) || secs.iter().any(|s| s.2.contains(&i));
        if in_payload {
            assert!(matches!(e, Error::Checksum { .. }), "byte {i}: {e}");
        }
    }
}

#[test]
fn parameters_other_than_the_seeds_are_refused() {
    let b = sample().to_bytes().unwrap();
    let p = Path::new("param.tq3k");
    let secs = sections(&b);
    let payload = |tag: &[u8; 4], d: u32, b_: Option<u8>| {
        secs.iter()
            .find(|s| {
                &s.0 == tag
                    && b[s.2.start..s.2.start + 4] == d.to_le_bytes()
                    && b_.is_none_or(|x| b[s.2.start + 4] == x)
            })
            .unwrap()
            .2
            .clone()
    };

    // d = 8: the dense rotation of another seed, same size, valid.
    let r = payload(b"ROT ", 8, None);
    let mut c = b.clone();
    let other = Rotation::new(RotationKind::Dense, 8, SEED + 1)
        .unwrap()
        .to_bytes();
    c[r.start + 5..r.end].copy_from_slice(&other);
    fix_crc(&mut c, r);
    let msg = one_line(&KvFile::from_bytes(&c, p).unwrap_err(), "param.tq3k");
    assert!(msg.contains("d = 8") && msg.contains("rotation"), "{msg}");

    // d = 64: the Hadamard rotation with its sign bits of round 1 flipped.
    let r = payload(b"ROT ", 64, None);
    let mut c = b.clone();
    c[r.start + 9] ^= 1;
    fix_crc(&mut c, r);
    let msg = one_line(&KvFile::from_bytes(&c, p).unwrap_err(), "param.tq3k");
    assert!(msg.contains("d = 64"), "{msg}");

    // (d = 5, b = 2): one centroid one ulp away, still ascending.
    let (d, bits) = *f_tables(&b).iter().find(|t| t.0 == 5).unwrap();
    let r = payload(b"CBK ", d as u32, Some(bits));
    let mut c = b.clone();
    let at = r.start + 5 + 4;
    let v = f32::from_le_bytes(c[at..at + 4].try_into().unwrap());
    assert_eq!(v, Codebook::get(d, bits as u32).unwrap().centroids_f32()[1]);
    c[at..at + 4].copy_from_slice(&f32::from_bits(v.to_bits() + 1).to_le_bytes());
    fix_crc(&mut c, r);
    let msg = one_line(&KvFile::from_bytes(&c, p).unwrap_err(), "param.tq3k");
    assert!(msg.contains(&format!("d = {d}, b = {bits}")), "{msg}");

    // Another seed in the header: every stored rotation is now foreign.
    let mut c = b.clone();
    c[24] ^= 1;
    let crc = crc32fast::hash(&c[..60]);
    c[60..64].copy_from_slice(&crc.to_le_bytes());
    let msg = one_line(&KvFile::from_bytes(&c, p).unwrap_err(), "param.tq3k");
    assert!(msg.contains("ROT") && msg.contains("seed"), "{msg}");

    // An unknown version, said as such.
    let mut c = b.clone();
    c[8] = 2;
    let crc = crc32fast::hash(&c[..60]);
    c[60..64].copy_from_slice(&crc.to_le_bytes());
    let msg = one_line(&KvFile::from_bytes(&c, p).unwrap_err(), "param.tq3k");
    assert!(msg.contains("version") && msg.contains('2'), "{msg}");
}

fn f_tables(b: &[u8]) -> Vec<(usize, u8)> {
    KvFile::from_bytes(b, Path::new("x"))
        .unwrap()
        .tables_used()
        .into_iter()
        .collect()
}

#[test]
fn a_segment_id_out_of_range_is_refused_by_name() {
    let b = sample().to_bytes().unwrap();
    // The values' LHD: 17 fixed bytes, head 0 (1 segment), head 1 (2 + ids).
    let (_, _, r) = sections(&b)
        .into_iter()
        .filter(|s| &s.0 == b"LHD ")
        .nth(2)
        .unwrap();
    let mut c = b.clone();
    assert_eq!(c[r.start + 18], 2);
    c[r.start + 19] = 2;
    fix_crc(&mut c, r);
    let msg = one_line(
        &KvFile::from_bytes(&c, Path::new("seg.tq3k")).unwrap_err(),
        "seg.tq3k",
    );
    assert!(
        msg.contains("entry 1") && msg.contains("layer 0") && msg.contains("LHD"),
        "{msg}"
    );
}

fn layer0(g: &mut KvFile) -> &mut CodedTensor {
    match &mut g.entries[0].body {
        Body::Coded { layers, .. } => &mut layers[0],
        Body::Raw(_) => unreachable!(),
    }
}

#[test]
fn the_writer_refuses_what_the_reader_would() {
    let f = sample();
    let with = |edit: &dyn Fn(&mut KvFile)| {
        let mut g = f.clone();
        edit(&mut g);
        g.to_bytes().unwrap_err().to_string()
    };
    let m = with(&|g| layer0(g).seed = 3);
    assert!(m.contains("seed"), "{m}");
    let m = with(&|g| layer0(g).scales[1] = 0.1);
    assert!(m.contains("f16"), "{m}");
    let m = with(&|g| g.entries[1].shape = vec![4, 15]);
    assert!(m.contains("shape"), "{m}");
    let m = with(&|g| g.entries[3].shape = vec![7, 1]);
    assert!(m.contains("bytes"), "{m}");
    let m = with(&|g| g.entries[2].name = "layers.k".into());
    assert!(m.contains("twice"), "{m}");
    let m = with(&|g| g.metadata = Some("{bits: 4".into()));
    assert!(m.contains("JSON"), "{m}");
}

#[test]
fn the_input_and_a_folder_are_not_written() {
    let f = sample();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.tq3k");
    f.write(&input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let link = dir.path().join("link.tq3k");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let mut small = f.clone();
    small.entries.truncate(1);
    for out in [&input, &link] {
        let e = small.write_checked(out, &[&input]).unwrap_err();
        assert!(matches!(e, Error::Output { .. }), "{e}");
    }
    assert_eq!(std::fs::read(&input).unwrap(), before);
    let folder: PathBuf = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let e = f.write(&folder).unwrap_err();
    assert!(matches!(e, Error::Output { .. }), "{e}");
    assert!(std::fs::read_dir(&folder).unwrap().next().is_none());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// Writes the fuzz seeds of target `tq3k` under
/// `$TQ3D_WRITE_FUZZ_CORPUS/tq3k/`: the sample file, keys alone, and a raw
/// entry with metadata.
#[test]
#[ignore = "writes the fuzz seed corpus; run by hand"]
fn write_corpus() {
    let root =
        PathBuf::from(std::env::var("TQ3D_WRITE_FUZZ_CORPUS").expect("set TQ3D_WRITE_FUZZ_CORPUS"));
    let dir = root.join("tq3k");
    std::fs::create_dir_all(&dir).unwrap();
    let f = sample();
    let mut keys = f.clone();
    keys.entries.truncate(1);
    keys.metadata = None;
    let mut raw = f.clone();
    raw.entries.drain(..3);
    for (name, file) in [
        ("sample.tq3k", &f),
        ("keys.tq3k", &keys),
        ("raw.tq3k", &raw),
    ] {
        let b = file.to_bytes().unwrap();
        assert!(b.len() <= 64 << 10, "{name} is {} bytes", b.len());
        std::fs::write(dir.join(name), b).unwrap();
    }
}

/// docs/FORMAT.md, "Appending tokens": a layer coded from more tokens has
/// the shorter one's WID, SCL and COD as prefixes (but for the last, partly
/// filled WID and COD bytes), with the same LHD but for T.
#[test]
fn more_tokens_extend_the_layer_sections_as_prefixes() {
    let plan = Plan::new(1, 8, vec![vec![vec![0, 2], vec![1, 3, 4, 5, 6, 7]]]).unwrap();
    let (short, long) = (3, 7);
    let x = pseudo(long * 8, 5);
    let mean = Some(pseudo(8, 6));
    let widths: Vec<u8> = (0..long * 2).map(|u| [3, 0, 5, 8, 1][u % 5]).collect();
    let layer = |t: usize| {
        let c = CodedTensor::encode(
            &x[..t * 8],
            t,
            plan.clone(),
            mean.clone(),
            widths[..t * 2].to_vec(),
            SEED,
        )
        .unwrap();
        let f = KvFile::new(
            SEED,
            vec![KvEntry {
                name: "k".into(),
                dtype: "F32".into(),
                shape: vec![t as u64, 8],
                layout: "".into(),
                body: Body::Coded {
                    role: Role::Key,
                    layers: vec![c],
                },
            }],
            None,
        );
        let b = f.to_bytes().unwrap();
        let secs = sections(&b);
        let n = secs.len();
        secs[n - 4..]
            .iter()
            .map(|s| b[s.2.clone()].to_vec())
            .collect::<Vec<_>>()
    };
    let (a, b) = (layer(short), layer(long));
    assert_eq!(a[0][8..], b[0][8..], "LHD but for T");
    for (k, name) in [(1, "WID"), (2, "SCL"), (3, "COD")] {
        let keep = a[k].len().saturating_sub(1);
        assert!(b[k].len() > a[k].len(), "{name} grows");
        assert_eq!(a[k][..keep], b[k][..keep], "{name}");
    }
    // SCL has no partial byte: all of it is a prefix.
    assert_eq!(a[2][..], b[2][..a[2].len()]);
}
