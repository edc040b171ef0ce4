//! `.tq3s` rotation kind 2: the writer stores the seed and the matrix
//! digest, the reader regenerates Π and refuses a seed or digest that does
//! not match; explicit (kind 0) files, version 1 included, still decode.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::codec::rotation::matrix_digest;
use turboquant3d::splat::container::{self, Profile};
use turboquant3d::splat::synth::{SynthConfig, generate};
use turboquant3d::splat::{self, CompressOptions, Scene};
use turboquant3d::{Codebook, Rotation, ScaleMode};

const HEADER: usize = 128;
const ENTRY: usize = 32;

/// A scene whose SH-rest vectors are isotropic Gaussians, so the SH error
/// has a closed form whatever the rotation.
fn scene(n: usize) -> Scene {
    let mut s = generate(&SynthConfig {
        count: n,
        sh_degree: 3,
        seed: 4,
    });
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for x in s.sh_rest.iter_mut() {
        *x = StandardNormal.sample(&mut rng);
    }
    s
}

fn compress(s: &Scene, opts: &CompressOptions) -> Vec<u8> {
    splat::compress(s, opts).unwrap().to_bytes().unwrap()
}

fn decode(bytes: &[u8]) -> turboquant3d::Result<Scene> {
    splat::decompress(bytes, Path::new("r.tq3s"))
}

/// A file's header and its streams (table entry, stored bytes).
struct Parts {
    header: Vec<u8>,
    streams: Vec<([u8; ENTRY], Vec<u8>)>,
}

fn split(bytes: &[u8]) -> Parts {
    let n = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let mut at = HEADER + n * ENTRY + 4;
    let streams = (0..n)
        .map(|k| {
            let e: [u8; ENTRY] = bytes[HEADER + k * ENTRY..HEADER + (k + 1) * ENTRY]
                .try_into()
                .unwrap();
            let len = u64::from_le_bytes(e[16..24].try_into().unwrap()) as usize;
            at += len;
            (e, bytes[at - len..at].to_vec())
        })
        .collect();
    Parts {
        header: bytes[..HEADER].to_vec(),
        streams,
    }
}

/// Reassembles a file with every length and checksum recomputed, so that
/// only the semantic checks can object (raw streams only are edited).
fn join(p: &Parts) -> Vec<u8> {
    let mut h = p.header.clone();
    let crc = crc32fast::hash(&h[..HEADER - 4]);
    h[HEADER - 4..].copy_from_slice(&crc.to_le_bytes());
    let mut table = Vec::new();
    for (e, data) in &p.streams {
        let mut e = *e;
        if e[4] == 0 {
            e[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        }
        e[16..24].copy_from_slice(&(data.len() as u64).to_le_bytes());
        e[24..28].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
        table.extend_from_slice(&e);
    }
    let mut out = h;
    out.extend_from_slice(&table);
    out.extend_from_slice(&crc32fast::hash(&table).to_le_bytes());
    for (_, data) in &p.streams {
        out.extend_from_slice(data);
    }
    out
}

/// A named corruption of a file's parts and what the refusal must say.
type Case = (&'static str, fn(&mut Parts), &'static str);

fn rot(p: &mut Parts) -> &mut Vec<u8> {
    &mut p
        .streams
        .iter_mut()
        .find(|(e, _)| &e[0..4] == b"ROT ")
        .unwrap()
        .1
}

fn opts() -> CompressOptions {
    CompressOptions {
        profile: Profile::Compact,
        sh_bits: 3,
        scale_mode: ScaleMode::Norm,
        ..Default::default()
    }
}

#[test]
fn the_writer_stores_seed_and_digest_and_the_reader_regenerates_pi() {
    let s = scene(4000);
    let o = opts();
    let bytes = compress(&s, &o);
    let mut p = split(&bytes);
    assert_eq!(p.header[8..10], 2u16.to_le_bytes(), "version");
    assert_eq!(p.header[44], 2, "rotation kind");
    // The digest is computed here from the matrix the generator gives (its
    // bits are pinned against the Python implementation in rotation_spec.rs).
    let want_pi = Rotation::dense(45, o.seed).unwrap();
    let digest = matrix_digest(want_pi.matrix().unwrap());
    let mut want = o.seed.to_le_bytes().to_vec();
    want.extend_from_slice(&digest.to_le_bytes());
    assert_eq!(*rot(&mut p), want);
    // Closed-form size: stays exact with the 16-byte ROT.
    let pred = splat::predict_size(&s, &o).unwrap();
    let rot_pred = pred.streams.iter().find(|t| t.tag == "ROT").unwrap();
    assert_eq!(rot_pred.bytes, 16);
    assert!(pred.fixed() <= bytes.len() as u64 && bytes.len() as u64 <= pred.total_bound());

    let (back, sh) = splat::decompress_split(&bytes, Path::new("r.tq3s")).unwrap();
    assert_eq!(back.len(), s.len());
    assert_eq!(sh.unwrap().rotation.matrix(), want_pi.matrix());
    // SH error against theory: E‖x − x̂‖² = ‖x‖²·d·C(d, b) for any fixed Π
    // when x is isotropic (the f16 scale adds ~2^−24 relative). The exact
    // profile keeps the input order, so rows pair up directly.
    let exact = CompressOptions {
        profile: Profile::Exact,
        ..o
    };
    let back = decode(&compress(&s, &exact)).unwrap();
    let (mut err, mut energy) = (0.0f64, 0.0f64);
    for (x, y) in s.sh_rest.iter().zip(&back.sh_rest) {
        err += ((x - y) as f64).powi(2);
        energy += (*x as f64).powi(2);
    }
    let ratio = err / energy / Codebook::get(45, 3).unwrap().distortion();
    assert!((ratio - 1.0).abs() < 0.03, "measured/theory = {ratio}");
}

#[test]
fn a_corrupted_seed_or_digest_is_refused_with_one_line() {
    let bytes = compress(&scene(300), &opts());
    let cases: [Case; 5] = [
        ("digest bit", |p| rot(p)[12] ^= 0x10, "digest"),
        ("ROT seed", |p| rot(p)[0] ^= 1, "digest"),
        (
            "both seeds",
            |p| {
                rot(p)[3] ^= 0x80;
                p.header[71] ^= 0x80;
            },
            "digest",
        ),
        ("header seed", |p| p.header[68] ^= 1, "header's seed"),
        ("ROT length", |p| rot(p).push(0), "implies 16"),
    ];
    for (what, edit, says) in cases {
        let mut p = split(&bytes);
        edit(&mut p);
        let e = decode(&join(&p)).unwrap_err().to_string();
        assert!(
            e.contains("ROT") && e.contains(says) && !e.contains('\n'),
            "{what}: {e}"
        );
    }
    // The reassembly alone changes nothing.
    decode(&join(&split(&bytes))).unwrap();
}

#[test]
fn kind_2_needs_version_2() {
    let mut p = split(&compress(&scene(100), &opts()));
    p.header[8..10].copy_from_slice(&1u16.to_le_bytes());
    let e = decode(&join(&p)).unwrap_err().to_string();
    assert!(e.contains("rotation kind"), "{e}");
}

#[test]
fn explicit_matrix_files_still_decode_in_both_versions() {
    let s = scene(500);
    // Version 1 had no sign flip (a reader refuses one there).
    let v1 = CompressOptions {
        sign_flip: false,
        ..opts()
    };
    for o in [
        v1.clone(),
        CompressOptions {
            profile: Profile::Exact,
            ..v1
        },
    ] {
        let bytes = compress(&s, &o);
        let seeded = decode(&bytes).unwrap();
        // Kind 0: the same file with Π stored as its d² f32 entries,
        // row-major, as version 1 wrote it.
        let m = Rotation::dense(45, o.seed).unwrap();
        for version in [1u16, 2] {
            let mut p = split(&bytes);
            p.header[8..10].copy_from_slice(&version.to_le_bytes());
            p.header[44] = 0;
            *rot(&mut p) = m
                .matrix()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            let explicit = decode(&join(&p)).unwrap();
            assert_eq!(explicit.sh_rest, seeded.sh_rest, "version {version}");
            // The header reports the file's version (`tq3d info` prints
            // it), not the library's.
            let (h, _) = container::parse_header(&join(&p), Path::new("v.tq3s")).unwrap();
            assert_eq!(h.version, version);
            assert_eq!(explicit.positions, seeded.positions);
            // An explicit matrix is whatever the file stores: another
            // rotation decodes too, to other values.
            let other = Rotation::dense(45, o.seed ^ 1).unwrap();
            *rot(&mut p) = other
                .matrix()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            let e = decode(&join(&p)).unwrap();
            assert_ne!(e.sh_rest, seeded.sh_rest);
        }
    }
}
