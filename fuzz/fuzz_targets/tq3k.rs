//! `.tq3k` (KV caches): `KvFile::from_bytes`, then every entry decoded when
//! the coded entries hold at most 2^22 values (a valid file may declare many
//! width-0 units, each half a byte that decodes to d zeros, or the mean). On
//! `Ok`: each decoded entry has its shape's count of values, all finite, and
//! the file writes back to exactly the input bytes (the format is canonical).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::kv::file::{Body, EntryData, KvFile};
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// Plans hold ≤ 256 channels a file byte (the reader's limit), up to
/// 28 bytes a channel with the Vec of each one-segment head of 2 channels,
/// and the transient unit lists beside them; a unit is ≤ 2 a byte of
/// widths (13 bytes of widths, scales and offsets); decoding is capped at
/// 2^22 f32 values, a few copies.
const BOUND: Bound = Bound {
    a: 16384,
    b: 96 << 20,
};

const DECODE_AT_MOST: u64 = 1 << 22;

fn run(data: &[u8]) {
    let name = "fuzz.tq3k";
    let g = begin(data.len(), BOUND);
    let r = KvFile::from_bytes(data, Path::new(name)).and_then(|f| {
        let coded: u64 = f
            .entries
            .iter()
            .filter(|e| matches!(e.body, Body::Coded { .. }))
            .map(|e| e.shape.iter().product::<u64>())
            .sum();
        let mut seen = Vec::new();
        if coded <= DECODE_AT_MOST {
            for i in 0..f.entries.len() {
                let d = f.decode_entry(i)?;
                let want: u64 = d.shape.iter().product();
                seen.push(match d.data {
                    EntryData::Values(v) => (v.len() as u64 == want, v.iter().all(|x| x.is_finite())),
                    EntryData::Raw(_) => (true, true),
                });
            }
        }
        Ok((f, seen))
    });
    drop(g);
    match r {
        Ok((f, seen)) => {
            for (i, (count, finite)) in seen.into_iter().enumerate() {
                assert!(count, "entry {i}: not its shape's count of values");
                assert!(finite, "entry {i}: a non-finite value");
            }
            assert!(f.to_bytes().expect("an Ok file writes") == data, "not written back as read");
        }
        Err(e) => check_error(&e, name),
    }
}

fuzz_target!(|data: &[u8]| run(data));
