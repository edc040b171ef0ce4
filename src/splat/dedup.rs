//! Deduplicated SH-rest (`.tq3s` version 3, header byte 61 bit 1): each
//! distinct SH-rest vector is coded once, and the stream `SHIX` says which
//! record each Gaussian takes (docs/FORMAT.md, "Deduplicated SH-rest").
//!
//! Palette-coded sources store few distinct vectors: a SOG file's SH is a
//! k-means palette of at most 65,536 entries (`skull.sog`: 65,536 among
//! 94,936 Gaussians). Coding every copy spends its bits again; coding each
//! distinct vector once and an index per Gaussian stores the same decode in
//! fewer bytes. The compressor does it only where it stores fewer bytes
//! than the plain layout's bounds ([`worth_it`]).
//!
//! `SHIX` holds one record r_k per Gaussian k, in storage order: 0 for "a
//! new vector, the next record", else the distance back from the next new
//! record, n_k − r_k with n_k the records begun before k. Records are thus
//! numbered in order of first use, the index needs no table, and a repeat
//! of a recent vector (a neighbour in Morton order) is a small number,
//! which zstd stores in a few bits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::codec::packing::copy_bits;
use crate::splat::attributes;
use crate::splat::scene::{Scene, rest_dim, rest_per_channel};
use crate::splat::sh::CompressedSh;

/// The distinct SH-rest vectors of the stored Gaussians.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Palette {
    /// Record of each stored Gaussian, in storage order (0..U).
    pub ids: Vec<u32>,
    /// Storage index of each record's first Gaussian (U entries, ascending).
    pub firsts: Vec<u32>,
}

/// Bytes of one `SHIX` record in a file of `n` Gaussians: enough for
/// n − 1, the largest distance back.
pub(crate) fn index_bytes(n: u64) -> usize {
    match n {
        0..=0x100 => 1,
        0x101..=0x1_0000 => 2,
        0x1_0001..=0x100_0000 => 3,
        _ => 4,
    }
}

/// The SH-rest of input Gaussian `i` truncated to `degree`: the row, or
/// its three channels' first coefficients.
fn row(scene: &Scene, i: usize, degree: u8) -> [&[f32]; 3] {
    let (kin, kout) = (rest_per_channel(scene.sh_degree), rest_per_channel(degree));
    let din = scene.rest_dim();
    let r = &scene.sh_rest[i * din..(i + 1) * din];
    if kin == kout {
        [r, &[], &[]]
    } else {
        std::array::from_fn(|c| &r[c * kin..c * kin + kout])
    }
}

/// A 64-bit hash of a row's bits: independent multiplies per coordinate
/// (so they pipeline), summed, then a final mix. Any hash does: equal
/// hashes are confirmed on the rows themselves.
fn hash(parts: [&[f32]; 3]) -> u64 {
    let mut h = 0u64;
    let mut j = 0u64;
    for x in parts.iter().flat_map(|p| p.iter()) {
        j += 1;
        h = h.wrapping_add(
            (x.to_bits() as u64 ^ j.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .wrapping_mul(0xff51_afd7_ed55_8ccd),
        );
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Finds the distinct SH-rest vectors (bit for bit) of the Gaussians
/// `order` (input indices, storage order) truncated to `degree`; `None`
/// when fewer than 1/64 of them repeat an earlier one, counting only rows
/// of a width above 0 (`widths`, per input Gaussian, when they vary) whose
/// first coefficients are not all zero: below that, deduplication cannot
/// pay for its index. Width 0 stores nothing to save, and all-zero rows
/// (5 % of the procedural scenes', some in trained ones) cost little
/// without it: the allocator gives them width 0, and at a uniform width
/// their identical codes are what zstd stores in a few bytes.
pub(crate) fn find(
    scene: &Scene,
    order: &[u32],
    degree: u8,
    widths: Option<&[u8]>,
) -> Option<Palette> {
    let n = order.len();
    if rest_dim(degree) == 0 || n < 2 {
        return None;
    }
    // First a filter on each row's first eight coefficients (a row's
    // first cache line: a repeated row repeats them too), in input order.
    // Rows of width 0 and rows whose prefix is zero are neither hashed
    // nor marked (`None`).
    let prefix = |i: usize| {
        if widths.is_some_and(|w| w[i] == 0) {
            return None;
        }
        let r = row(scene, i, degree)[0];
        let r = &r[..r.len().min(8)];
        r.iter().any(|&x| x != 0.0).then(|| hash([r, &[], &[]]))
    };
    let hashes: Vec<Option<u64>> = (0..scene.len()).into_par_iter().map(prefix).collect();
    let coded = |i: usize| hashes[i].is_some();
    // A bitmap of 64 bits per Gaussian: n less the bits set counts the
    // repeats, plus a few false ones (about n/128), whatever the order the
    // bits are set in. Below the threshold no table is built.
    let bits = (64 * n).next_power_of_two();
    let seen: Vec<AtomicU64> = (0..bits / 64).map(|_| AtomicU64::new(0)).collect();
    let mark = |i: usize| {
        if let Some(h) = hashes[i] {
            let h = h as usize & (bits - 1);
            seen[h / 64].fetch_or(1 << (h % 64), Ordering::Relaxed);
        }
    };
    let marked = if n == scene.len() {
        (0..n).into_par_iter().for_each(mark);
        (0..n).into_par_iter().filter(|&i| coded(i)).count()
    } else {
        order.par_iter().for_each(|&i| mark(i as usize));
        order.par_iter().filter(|&&i| coded(i as usize)).count()
    };
    let set: usize = seen
        .par_iter()
        .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
        .sum();
    if marked - set < n / 64 {
        return None;
    }
    drop(seen);
    // Then the whole rows' hashes.
    let counted: Vec<bool> = hashes.iter().map(Option::is_some).collect();
    let hashes: Vec<u64> = (0..scene.len())
        .into_par_iter()
        .map(|i| hash(row(scene, i, degree)))
        .collect();
    let mut first_of: HashMap<u64, u32> = HashMap::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut firsts: Vec<u32> = Vec::new();
    let mut repeats = 0usize;
    for (k, &i) in order.iter().enumerate() {
        let h = hashes[i as usize];
        let same = first_of.get(&h).copied().filter(|&r| {
            // Equal hashes: compare the rows themselves.
            let other = order[firsts[r as usize] as usize] as usize;
            row(scene, i as usize, degree)
                .iter()
                .zip(row(scene, other, degree))
                .all(|(a, b)| {
                    a.iter()
                        .map(|x| x.to_bits())
                        .eq(b.iter().map(|x| x.to_bits()))
                })
        });
        match same {
            Some(r) => {
                repeats += counted[i as usize] as usize;
                ids.push(r)
            }
            None => {
                let r = firsts.len() as u32;
                // A colliding hash keeps its first vector's record.
                first_of.entry(h).or_insert(r);
                firsts.push(k as u32);
                ids.push(r);
            }
        }
    }
    if repeats < n / 64 {
        return None;
    }
    Some(Palette { ids, firsts })
}

/// The `SHIX` stream of record ids (storage order): planes of
/// [`index_bytes`]-byte little-endian records r_k (see the module docs).
pub(crate) fn index_stream(ids: &[u32]) -> Vec<u8> {
    let n = ids.len();
    let w = index_bytes(n as u64);
    let mut next = 0u32;
    let r: Vec<u32> = ids
        .iter()
        .map(|&id| {
            if id == next {
                next += 1;
                0
            } else {
                next - id
            }
        })
        .collect();
    attributes::planes(n, w, |k, i| (r[i] >> (8 * k)) as u8)
}

/// Inverse of [`index_stream`] for `n` Gaussians: the record of each, and
/// the number of records U. Refuses a record 0 that is not new, a distance
/// beyond the records begun, and a length other than n records.
pub(crate) fn parse_index(bytes: &[u8], n: usize) -> Result<(Vec<u32>, usize), String> {
    let w = index_bytes(n as u64);
    if bytes.len() != w * n {
        return Err(format!(
            "{} bytes, {n} records of {w} bytes need {}",
            bytes.len(),
            w * n
        ));
    }
    let mut next = 0u32;
    let mut ids = Vec::with_capacity(n);
    for k in 0..n {
        let r = (0..w).fold(0u32, |r, j| r | (bytes[j * n + k] as u32) << (8 * j));
        if r == 0 {
            ids.push(next);
            next += 1;
        } else if r <= next {
            ids.push(next - r);
        } else {
            return Err(format!(
                "Gaussian {k} refers {r} records back, only {next} begun"
            ));
        }
    }
    Ok((ids, next as usize))
}

/// The per-Gaussian SH of a deduplicated file: record `ids[k]` of `sh`
/// (its width, scale and codes) for every Gaussian k.
pub(crate) fn expand(sh: CompressedSh, ids: &[u32]) -> CompressedSh {
    let d = sh.dim() as u64;
    let offsets = sh.bit_offsets();
    let widths: Vec<u8> = ids.iter().map(|&r| sh.widths[r as usize]).collect();
    let scales = ids.iter().map(|&r| sh.scales[r as usize]).collect();
    let total: u64 = widths.iter().map(|&b| d * b as u64).sum();
    let mut codes = vec![0u8; total.div_ceil(8) as usize];
    let mut at = 0usize;
    for &r in ids {
        let len = (d * sh.widths[r as usize] as u64) as usize;
        copy_bits(&sh.codes, offsets[r as usize] as usize, &mut codes, at, len);
        at += len;
    }
    CompressedSh {
        widths,
        scales,
        codes,
        ..sh
    }
}

/// Raw bytes of the SH streams (`SHW `, `SHS `, `SHC `) for records of
/// widths `w` (`per_gaussian`: whether `SHW ` is stored).
pub(crate) fn sh_raw_bytes(w: impl Iterator<Item = u8>, d: u64, per_gaussian: bool) -> u64 {
    let (mut count, mut nonzero, mut sum) = (0u64, 0u64, 0u64);
    for b in w {
        count += 1;
        nonzero += (b > 0) as u64;
        sum += b as u64;
    }
    let shw = if per_gaussian { count.div_ceil(2) } else { 0 };
    shw + 2 * nonzero + (d * sum).div_ceil(8)
}

/// Whether deduplication stores fewer bytes: the raw SH bytes it saves
/// exceed `index_stored`, what `SHIX` stores, plus its table entry. Then
/// the file also stays within the plain layout's size bounds.
pub(crate) fn worth_it(plain: u64, deduped: u64, index_stored: u64) -> bool {
    plain.saturating_sub(deduped) > index_stored + crate::splat::container::ENTRY_LEN as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_records_round_trip_and_bad_ones_are_named() {
        let ids = [0u32, 1, 0, 2, 1, 3, 3, 0];
        let s = index_stream(&ids);
        // Distances: new, new, 2 back, new, 2 back, new, 1 back, 4 back.
        assert_eq!(s, vec![0, 0, 2, 0, 2, 0, 1, 4]);
        assert_eq!(parse_index(&s, 8).unwrap(), (ids.to_vec(), 4));
        let e = parse_index(&[1, 0], 2).unwrap_err();
        assert!(e.contains("Gaussian 0"), "{e}");
        let e = parse_index(&[0, 0, 3], 3).unwrap_err();
        assert!(e.contains("Gaussian 2 refers 3"), "{e}");
        assert!(parse_index(&[0, 0], 3).is_err());
    }

    #[test]
    fn record_width_holds_the_largest_distance() {
        for (n, w) in [
            (1u64, 1),
            (256, 1),
            (257, 2),
            (65536, 2),
            (65537, 3),
            (1 << 24, 3),
        ] {
            assert_eq!(index_bytes(n), w, "n = {n}");
            assert!(n - 1 < 1u64 << (8 * w));
        }
        assert_eq!(index_bytes((1 << 24) + 1), 4);
    }
}
