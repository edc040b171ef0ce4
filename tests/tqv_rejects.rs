//! Bad `.tqv` files: every single-byte corruption, every truncation,
//! hostile headers with valid checksums, and set padding bits, each
//! rejected with an error that names the file and field, without a huge
//! allocation.
// Tables of boxed edit closures read best inline.
#![allow(clippy::type_complexity)]
mod common;
#[path = "common/tracking.rs"]
mod tracking;

use common::tqv::*;
use tracking::largest_allocation;
use turboquant3d::Error;
use turboquant3d::format::tqv;

// ---------------------------------------------------------------------------
// Corruption: every single byte of a small file.

fn check_every_flip(bytes: &[u8], what: &str) {
    let secs = walk(bytes);
    let path = label();
    let shown = path.display().to_string();
    let mut b = bytes.to_vec();
    for i in 0..b.len() {
        b[i] ^= 0x01;
        let r = parse(&b, &path, &format!("{what}: byte {i} flipped"));
        b[i] ^= 0x01;
        let e = match r {
            Ok(_) => panic!("{what}: byte {i} flipped, yet the file was accepted"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(
            msg.contains(&shown),
            "{what}: byte {i}: message lacks the path: {msg}"
        );
        if i < 64 {
            match &e {
                Error::Checksum { section, .. } => {
                    assert_eq!(section, "header", "{what}: byte {i}: {msg}")
                }
                Error::Format { .. } => {}
                other => panic!("{what}: header byte {i}: unexpected {other:?}"),
            }
            continue;
        }
        let s = secs
            .iter()
            .find(|s| (s.header..s.payload.end).contains(&i))
            .unwrap();
        if s.payload.contains(&i) {
            match &e {
                Error::Checksum {
                    section,
                    stored,
                    computed,
                    ..
                } => {
                    assert!(
                        section.contains(&s.name),
                        "{what}: byte {i} in the {} payload, error names {section:?}",
                        s.name
                    );
                    assert_eq!(*stored, u32_at(bytes, s.header + 12), "{what}: byte {i}");
                    let mut flipped = bytes[s.payload.clone()].to_vec();
                    flipped[i - s.payload.start] ^= 0x01;
                    assert_eq!(*computed, crc32fast::hash(&flipped), "{what}: byte {i}");
                }
                other => panic!(
                    "{what}: byte {i} in the {} payload: expected Error::Checksum, got {other:?}",
                    s.name
                ),
            }
        } else {
            // The section header: tag, length or CRC.
            match &e {
                Error::Checksum { section, .. } => assert!(
                    section.contains(&s.name),
                    "{what}: byte {i} in the {} section header, error names {section:?}",
                    s.name
                ),
                Error::Format { .. } => {}
                other => panic!(
                    "{what}: byte {i} in the {} section header: unexpected {other:?}",
                    s.name
                ),
            }
            if i >= s.header + 12 {
                assert!(
                    matches!(&e, Error::Checksum { section, .. } if section.contains(&s.name)),
                    "{what}: byte {i} in the {} section CRC: expected a checksum error, got {e:?}",
                    s.name
                );
            }
        }
    }
}

#[test]
fn every_single_byte_flip_is_rejected_dense() {
    check_every_flip(&small_file(), "dense d=45 b=3");
}

#[test]
fn every_single_byte_flip_is_rejected_hadamard() {
    check_every_flip(&small_hadamard_file(), "hadamard d=64 b=2");
}

// ---------------------------------------------------------------------------
// Truncation.

#[test]
fn every_truncation_is_rejected_and_says_so() {
    for (bytes, what) in [(small_file(), "dense"), (small_hadamard_file(), "hadamard")] {
        let path = label();
        let shown = path.display().to_string();
        for k in 0..bytes.len() {
            let e = match parse(&bytes[..k], &path, &format!("{what}: prefix of {k} bytes")) {
                Ok(_) => panic!(
                    "{what}: a prefix of {k} of {} bytes was accepted",
                    bytes.len()
                ),
                Err(e) => e,
            };
            assert!(
                matches!(e, Error::Format { .. }),
                "{what}: prefix {k}: expected Error::Format, got {e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains(&shown), "{what}: prefix {k}: {msg}");
            assert!(msg.contains("truncated"), "{what}: prefix {k}: {msg}");
        }
        assert!(parse(&bytes, &path, what).is_ok());
    }
}

#[test]
fn truncated_files_on_disk_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = small_file();
    for k in [0, 7, 63, 64, 100, bytes.len() - 1] {
        let path = dir.path().join(format!("cut{k}.tqv"));
        std::fs::write(&path, &bytes[..k]).unwrap();
        let e = tqv::read(&path)
            .err()
            .unwrap_or_else(|| panic!("prefix {k} accepted"));
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string()),
            "prefix {k}: {msg}"
        );
        assert!(msg.contains("truncated"), "prefix {k}: {msg}");
    }
    let missing = dir.path().join("missing.tqv");
    match tqv::read(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("missing file: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Hostile headers, each with a valid header CRC so that the field check
// itself is reached.

fn with_header(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = small_file();
    edit(&mut b);
    fix_header_crc(&mut b);
    b
}

#[test]
fn wrong_magic_is_a_format_error() {
    let path = label();
    let mut b = small_file();
    b[..8].copy_from_slice(b"TQ3D-TQX");
    expect_format(parse(&b, &path, "magic"), &path, "magic", "wrong magic");
    // Even with the header CRC fixed up.
    let b = with_header(|b| b[..8].copy_from_slice(b"\x93NUMPY\x01\x00"));
    expect_format(parse(&b, &path, "npy magic"), &path, "magic", "npy magic");
    // 64 bytes of zeros.
    expect_format(parse(&[0u8; 64], &path, "zeros"), &path, "magic", "zeros");
}

#[test]
fn wrong_version_is_a_format_error() {
    let path = label();
    for v in [0u16, 2, u16::MAX] {
        let b = with_header(|b| b[8..10].copy_from_slice(&v.to_le_bytes()));
        let msg = expect_format(parse(&b, &path, "version"), &path, "version", "version");
        assert!(msg.contains(&v.to_string()), "version {v}: {msg}");
    }
}

#[test]
fn header_crc_mismatch_is_a_checksum_error() {
    let path = label();
    // A version change without fixing the CRC must be caught by the CRC.
    let mut b = small_file();
    b[8] = 2;
    match parse(&b, &path, "bad crc") {
        Err(Error::Checksum {
            section,
            stored,
            computed,
            ..
        }) => {
            assert_eq!(section, "header");
            assert_eq!(stored, u32_at(&b, 60));
            assert_eq!(computed, crc32fast::hash(&b[..60]));
        }
        other => panic!("expected a header checksum error, got {other:?}"),
    }
}

#[test]
fn dimension_and_bits_out_of_range_are_format_errors() {
    let path = label();
    for d in [0u32, 1, 70000, u32::MAX] {
        let b = with_header(|b| b[12..16].copy_from_slice(&d.to_le_bytes()));
        let (r, big) = largest_allocation(|| parse(&b, &path, "dim"));
        let msg = expect_format(r, &path, "d", &format!("d = {d}"));
        assert!(msg.contains(&d.to_string()), "d = {d}: {msg}");
        assert!(big < 1 << 20, "d = {d}: allocated {big} bytes at once");
    }
    for bits in [0u8, 9, 255] {
        let b = with_header(|b| b[16] = bits);
        let (r, big) = largest_allocation(|| parse(&b, &path, "bits"));
        let msg = expect_format(r, &path, "b", &format!("b = {bits}"));
        assert!(msg.contains(&bits.to_string()), "b = {bits}: {msg}");
        assert!(big < 1 << 20, "b = {bits}: allocated {big} bytes at once");
    }
}

#[test]
fn unknown_kind_mode_format_flags_and_reserved_bytes_are_format_errors() {
    let path = label();
    for v in [2u8, 255] {
        let b = with_header(|b| b[17] = v);
        expect_format(parse(&b, &path, "rot"), &path, "rotation", "rotation kind");
        let b = with_header(|b| b[18] = v);
        expect_format(parse(&b, &path, "mode"), &path, "scale mode", "scale mode");
        let b = with_header(|b| b[19] = v);
        expect_format(
            parse(&b, &path, "fmt"),
            &path,
            "scale format",
            "scale format",
        );
    }
    let b = with_header(|b| b[10] |= 0x02);
    expect_format(parse(&b, &path, "flags"), &path, "flags", "unknown flag");
    let b = with_header(|b| b[40..44].copy_from_slice(&5u32.to_le_bytes()));
    expect_format(
        parse(&b, &path, "sections"),
        &path,
        "section",
        "section count",
    );
    for at in [20usize, 23, 44, 59] {
        let b = with_header(|b| b[at] = 1);
        expect_format(
            parse(&b, &path, "reserved"),
            &path,
            "reserved",
            "reserved byte",
        );
    }
}

#[test]
fn header_fields_that_disagree_with_the_sections_are_rejected() {
    let path = label();
    // d = 46 or b = 4 with sections written for d = 45, b = 3.
    let b = with_header(|b| b[12..16].copy_from_slice(&46u32.to_le_bytes()));
    assert!(matches!(
        parse(&b, &path, "d=46"),
        Err(Error::Format { .. })
    ));
    let b = with_header(|b| b[16] = 4);
    assert!(matches!(parse(&b, &path, "b=4"), Err(Error::Format { .. })));
    // A Hadamard rotation claimed for d = 45.
    let b = with_header(|b| b[17] = 1);
    assert!(matches!(
        parse(&b, &path, "hadamard 45"),
        Err(Error::Format { .. })
    ));
    // f16 scales claimed for f32 ones.
    let b = with_header(|b| b[19] = 1);
    assert!(matches!(parse(&b, &path, "f16"), Err(Error::Format { .. })));
}

#[test]
fn absurd_counts_are_rejected_without_a_huge_allocation() {
    let path = label();
    let file_len = small_file().len();
    for count in [
        u64::MAX,
        1 << 40,
        1 << 62,
        usize::MAX as u64 / 45 + 1,
        11,
        9,
        0,
    ] {
        let b = with_header(|b| b[24..32].copy_from_slice(&count.to_le_bytes()));
        let (r, big) = largest_allocation(|| parse(&b, &path, &format!("count {count}")));
        match r {
            Ok(_) => panic!("count {count} accepted for a file holding 10 vectors"),
            Err(e @ Error::Format { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()))
            }
            Err(e) => panic!("count {count}: expected Error::Format, got {e:?}"),
        }
        assert!(
            big <= 4 * file_len,
            "count {count}: allocated {big} bytes at once for a {file_len}-byte file"
        );
    }
}

#[test]
fn huge_section_lengths_are_rejected_without_a_huge_allocation() {
    let path = label();
    let base = small_file();
    let secs = walk(&base);
    for s in &secs {
        for len in [u64::MAX, 1 << 40, (base.len() - s.payload.start + 1) as u64] {
            let mut b = base.clone();
            b[s.header + 4..s.header + 12].copy_from_slice(&len.to_le_bytes());
            let (r, big) = largest_allocation(|| parse(&b, &path, "section length"));
            assert!(
                matches!(r, Err(Error::Format { .. })),
                "{} length {len}: {:?}",
                s.name,
                r.err()
            );
            assert!(
                big <= 4 * base.len(),
                "{} length {len}: allocated {big}",
                s.name
            );
        }
    }
}

#[test]
fn trailing_bytes_after_the_last_section_are_rejected() {
    let path = label();
    let base = small_file();
    let secs = walk(&base);
    let cod = &secs[3];
    let mut extras: Vec<Vec<u8>> = vec![vec![0], vec![0xff; 16], b"TQ3D-TQV".to_vec()];
    // A whole duplicate of the last section.
    extras.push(base[cod.header..].to_vec());
    for extra in extras {
        let mut b = base.clone();
        b.extend_from_slice(&extra);
        let r = parse(&b, &path, "trailing bytes");
        assert!(
            matches!(r, Err(Error::Format { .. })),
            "{} trailing bytes: {:?}",
            extra.len(),
            r.err()
        );
    }
}

#[test]
fn bad_payloads_with_valid_checksums_are_format_errors() {
    let path = label();
    // Dense file: non-finite rotation entry, unsorted or non-finite tables,
    // non-finite scales.
    let base = small_file();
    let secs = walk(&base);
    let edits: Vec<(&str, usize, Box<dyn Fn(&mut [u8])>)> = vec![
        (
            "NaN rotation entry",
            0,
            Box::new(|p| p[..4].copy_from_slice(&f32::NAN.to_le_bytes())),
        ),
        (
            "Inf rotation entry",
            0,
            Box::new(|p| p[40..44].copy_from_slice(&f32::INFINITY.to_le_bytes())),
        ),
        (
            // Not a rotation: row 0 scaled by 2^60 (entries leave [−1, 1]).
            "row 0 of the rotation scaled",
            0,
            Box::new(|p| {
                for c in p[..45 * 4].chunks_exact_mut(4) {
                    let v = f32::from_le_bytes(c.try_into().unwrap()) * 2f32.powi(60);
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }),
        ),
        (
            // Entries stay on [−1, 1], which was all a reader checked: the
            // file was accepted and decoded with a matrix that is not Π.
            "column 3 of the rotation scaled",
            0,
            Box::new(|p| {
                for r in 0..45 {
                    let c = &mut p[(r * 45 + 3) * 4..(r * 45 + 4) * 4];
                    let v = f32::from_le_bytes((&*c).try_into().unwrap()) * 1.01;
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }),
        ),
        (
            "swapped centroids",
            1,
            Box::new(|p| {
                let (a, b) = (p[..4].to_vec(), p[4..8].to_vec());
                p[..4].copy_from_slice(&b);
                p[4..8].copy_from_slice(&a);
            }),
        ),
        (
            "NaN boundary",
            1,
            Box::new(|p| {
                let n = p.len();
                p[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes())
            }),
        ),
        (
            "equal centroids",
            1,
            Box::new(|p| {
                let c = p[..4].to_vec();
                p[4..8].copy_from_slice(&c)
            }),
        ),
        (
            "NaN scale",
            2,
            Box::new(|p| p[8..12].copy_from_slice(&f32::NAN.to_le_bytes())),
        ),
        (
            "Inf scale",
            2,
            Box::new(|p| p[..4].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes())),
        ),
    ];
    for (what, idx, edit) in &edits {
        let mut b = base.clone();
        edit(&mut b[secs[*idx].payload.clone()]);
        fix_section_crc(&mut b, &secs[*idx]);
        let msg = expect_format(parse(&b, &path, what), &path, "", what);
        assert!(
            msg.contains(&secs[*idx].name),
            "{what}: message should name the {} section: {msg}",
            secs[*idx].name
        );
    }

    // Hadamard file: bad round count, repeated or out-of-range permutation entry.
    let base = small_hadamard_file();
    let secs = walk(&base);
    let rot = &secs[0];
    let d = 64;
    let rounds = u32_at(&base, rot.payload.start) as usize;
    let perm_at = rot.payload.start + 4 + rounds * d / 8;
    let hadamard_edits: Vec<(&str, Box<dyn Fn(&mut Vec<u8>)>)> = vec![
        (
            "zero rounds",
            Box::new(|b| b[rot.payload.start..rot.payload.start + 4].fill(0)),
        ),
        (
            "17 rounds",
            Box::new(|b| {
                b[rot.payload.start..rot.payload.start + 4].copy_from_slice(&17u32.to_le_bytes())
            }),
        ),
        (
            "repeated permutation entry",
            Box::new(|b| {
                let first = b[perm_at..perm_at + 4].to_vec();
                b[perm_at + 4..perm_at + 8].copy_from_slice(&first)
            }),
        ),
        (
            "permutation entry out of range",
            Box::new(|b| b[perm_at..perm_at + 4].copy_from_slice(&64u32.to_le_bytes())),
        ),
        (
            "huge permutation entry",
            Box::new(|b| b[perm_at..perm_at + 4].copy_from_slice(&u32::MAX.to_le_bytes())),
        ),
    ];
    for (what, edit) in &hadamard_edits {
        let mut b = base.clone();
        edit(&mut b);
        fix_section_crc(&mut b, rot);
        let msg = expect_format(parse(&b, &path, what), &path, "ROT", what);
        assert!(msg.contains("ROT"), "{what}: {msg}");
    }
}

#[test]
fn set_padding_bits_in_the_last_code_byte_are_rejected() {
    // 10 vectors × 45 × 3 bits = 1350 bits: the last COD byte uses 6 bits.
    let mut bytes = small_file();
    let cod = walk(&bytes).into_iter().find(|s| s.name == "COD").unwrap();
    let last = cod.payload.end - 1;
    assert_eq!(bytes[last] >> 6, 0, "the writer zeroes the padding");
    bytes[last] |= 0x80;
    fix_section_crc(&mut bytes, &cod);
    expect_format(
        parse(&bytes, &label(), "padding bit"),
        &label(),
        "COD",
        "padding bit",
    );
}

#[test]
fn a_scale_too_large_to_decode_in_f32_is_refused() {
    // Found by the tqv_crc fuzz target: a finite f32 scale near f32::MAX
    // passed every check and decoded to ±Inf. |x_i| ≤ |s|·√d bounds it.
    let mut bytes = small_file();
    let scl = walk(&bytes).swap_remove(2);
    let d = 45f32;
    for (s, ok) in [
        (f32::MAX / d.sqrt() * 0.99, true),
        (f32::MAX / d.sqrt() * 1.01, false),
    ] {
        bytes[scl.payload.start..scl.payload.start + 4].copy_from_slice(&s.to_le_bytes());
        fix_section_crc(&mut bytes, &scl);
        let r = parse(&bytes, &label(), "a large scale");
        if ok {
            let f = r.unwrap();
            let x = f.quantizer.decode(&f.encoded).unwrap();
            assert!(
                x.iter().all(|v| v.is_finite()),
                "s = {s:e} decoded to a non-finite value"
            );
        } else {
            expect_format(r, &label(), "SCL section", "a large scale");
        }
    }
}
