//! Column palettes: a lossless coding of f32 columns that take few distinct
//! values, as data read from an already-quantised format does (an spz
//! file's 8-bit scales, its 4- and 5-bit SH, SOG's codebooks). Each such
//! column is stored as its distinct values, sorted, and one index per row.
//! A column that completes its row to unit length (a quaternion's real part
//! derived from the other three, as spz's reader derives it) is stored as
//! its difference from that completion, in units in the last place. Every
//! other column is stored as its four byte planes. Each column is one frame
//! of zstd or rANS, whichever is smaller. Decoding gives back exactly the
//! byte planes that were coded. docs/FORMAT.md (`.tq3s`, "Stream coding 3:
//! column palettes") is the specification.
//!
//! ```text
//! u8        K, the columns
//! K × u32   m_c: 0 (planes), 1..=65536 (a palette of m_c values) or
//!           0xFFFFFFFF (unit-norm completion)
//! Σ m_c × u32  each palette's values (f32 bits), strictly increasing in
//!           f32 total order
//! K × frame    u8 coding (1 zstd, 2 rANS), u32 length, the coded bytes of
//!           the column's data: 4 planes of N bytes (planes, and the
//!           completion's zigzag ulp differences), N index bytes (m_c ≤ 256;
//!           with rANS, the indices packed at ceil(log2 m_c) bits, at least
//!           1), or 2 planes of N bytes, low then high (m_c > 256, zstd)
//! ```

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::codec::entropy::{self, Run};
use crate::codec::frame;
use crate::codec::packing;

/// The largest palette: indices fit two bytes.
pub const MAX_PALETTE: usize = 1 << 16;

/// `m_c` of a column stored as its difference from the unit-norm
/// completion of the row's other columns.
pub const COMPLETION: u32 = u32::MAX;

/// Rows looked at before deciding that a column is continuous: when more
/// than half of the first [`SAMPLE`] values differ, the column gets no
/// palette without counting the rest.
const SAMPLE: usize = 4096;

/// A completion pays when the sample's differences are this small (ulps).
const COMPLETION_ULPS: u32 = 1 << 12;

/// Frame codings.
const ZSTD: u8 = 1;
const RANS: u8 = 2;

/// How one column is stored.
enum Column {
    Planes,
    /// The sorted distinct values (bits) and each row's index.
    Palette(Vec<u32>, Vec<u16>),
    /// The zigzag differences from the unit-norm completion.
    Completion(Vec<u32>),
}

impl Column {
    fn code(&self) -> u32 {
        match self {
            Column::Planes => 0,
            Column::Palette(v, _) => v.len() as u32,
            Column::Completion(_) => COMPLETION,
        }
    }
}

/// Bytes per row of a column with `m_c = m`.
fn row_bytes(m: u32) -> usize {
    match m {
        1..=256 => 1,
        257..=0x1_0000 => 2,
        _ => 4,
    }
}

/// The value of row `i` of column `c` in byte planes of `n` rows.
fn value(planes: &[u8], n: usize, c: usize, i: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|b| planes[(4 * c + b) * n + i]))
}

/// The unit-norm completion of a row from its other columns' values:
/// sqrt(max(0, 1 − Σ v²)), the sum in column order, every step an f32
/// operation (IEEE 754 rounding, no fused multiply-add).
pub fn completion(others: impl Iterator<Item = f32>) -> f32 {
    let mut s = 0f32;
    for v in others {
        s += v * v;
    }
    (1.0 - s).max(0.0).sqrt()
}

fn zigzag(d: i32) -> u32 {
    ((d << 1) ^ (d >> 31)) as u32
}

fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

/// Column `c`'s completion differences for rows `rows`.
fn completion_diffs(
    planes: &[u8],
    n: usize,
    k: usize,
    c: usize,
    rows: std::ops::Range<usize>,
) -> Vec<u32> {
    rows.map(|i| {
        let pred = completion(
            (0..k)
                .filter(|&j| j != c)
                .map(|j| f32::from_bits(value(planes, n, j, i))),
        );
        zigzag(value(planes, n, c, i).wrapping_sub(pred.to_bits()) as i32)
    })
    .collect()
}

/// A column's palette, when storing it so takes fewer raw bytes than its
/// planes.
fn palette_of(planes: &[u8], n: usize, c: usize) -> Column {
    let head = n.min(SAMPLE);
    let mut seen: FxHashMap<u32, u32> = FxHashMap::default();
    seen.reserve(head);
    for i in 0..head {
        seen.insert(value(planes, n, c, i), 0);
    }
    if head > 16 && seen.len() > head / 2 {
        return Column::Planes;
    }
    for i in head..n {
        seen.insert(value(planes, n, c, i), 0);
        if seen.len() > MAX_PALETTE {
            return Column::Planes;
        }
    }
    let m = seen.len();
    // Raw bytes: the table and the indices against the planes.
    if 4 * m + row_bytes(m as u32) * n >= 4 * n {
        return Column::Planes;
    }
    let mut values: Vec<u32> = seen.keys().copied().collect();
    values.sort_unstable_by(|a, b| f32::from_bits(*a).total_cmp(&f32::from_bits(*b)));
    for (k, v) in values.iter().enumerate() {
        seen.insert(*v, k as u32);
    }
    let index = (0..n)
        .map(|i| seen[&value(planes, n, c, i)] as u16)
        .collect();
    Column::Palette(values, index)
}

/// The column's bytes before coding, and whether rANS may code them (as
/// packed codes of that many bits).
fn column_data(planes: &[u8], n: usize, c: usize, col: &Column) -> (Vec<u8>, Option<u8>) {
    match col {
        Column::Planes => (planes[4 * c * n..4 * (c + 1) * n].to_vec(), None),
        Column::Completion(z) => {
            let mut out = vec![0u8; 4 * n];
            for (i, v) in z.iter().enumerate() {
                for (b, byte) in v.to_le_bytes().into_iter().enumerate() {
                    out[b * n + i] = byte;
                }
            }
            (out, None)
        }
        Column::Palette(v, idx) if v.len() <= 256 => (
            idx.iter().map(|&q| q as u8).collect(),
            Some(index_bits(v.len())),
        ),
        Column::Palette(_, idx) => (
            idx.iter()
                .map(|&q| q as u8)
                .chain(idx.iter().map(|&q| (q >> 8) as u8))
                .collect(),
            None,
        ),
    }
}

/// Bits of a packed index into a palette of `m` ≤ 256 values (at least 1).
fn index_bits(m: usize) -> u8 {
    (usize::BITS - (m.max(2) - 1).leading_zeros()) as u8
}

/// One column's frame: zstd, or rANS where that is smaller.
fn frame(data: &[u8], rans_bits: Option<u8>, level: i32) -> Result<Vec<u8>, String> {
    let z = zstd::bulk::compress(data, level).map_err(|e| format!("zstd: {e}"))?;
    let mut best = (ZSTD, z);
    if let Some(bits) = rans_bits {
        let packed = packing::pack(data, bits as u32).map_err(|e| e.to_string())?;
        let runs = [Run {
            bits,
            count: data.len() as u64,
        }];
        let r = entropy::encode(&packed, &runs)?;
        if r.len() < best.1.len() {
            best = (RANS, r);
        }
    }
    let mut out = vec![best.0];
    out.extend_from_slice(&(best.1.len() as u32).to_le_bytes());
    out.extend_from_slice(&best.1);
    Ok(out)
}

/// Codes `planes` (the byte planes of `n` rows of `k` f32 values, as
/// `attributes::to_byte_planes` writes them) with column palettes and
/// completions, or `None` when no column has either that pays. `level` is
/// zstd's.
pub fn encode(planes: &[u8], k: usize, level: i32) -> Result<Option<Vec<u8>>, String> {
    if k == 0 || k > u8::MAX as usize || !planes.len().is_multiple_of(4 * k) {
        return Err(format!(
            "{} bytes are not rows of {k} f32 values",
            planes.len()
        ));
    }
    let n = planes.len() / (4 * k);
    let mut columns: Vec<Column> = (0..k)
        .into_par_iter()
        .map(|c| palette_of(planes, n, c))
        .collect();
    // At most one completed column (the others must decode first): the
    // first without a palette whose sample lies within a few ulps.
    if k >= 2 && n > 0 {
        let head = n.min(SAMPLE);
        let close = |c: usize| {
            let mut d = completion_diffs(planes, n, k, c, 0..head);
            d.sort_unstable();
            d[head / 2] < COMPLETION_ULPS
        };
        if let Some(c) = (0..k).find(|&c| matches!(columns[c], Column::Planes) && close(c)) {
            columns[c] = Column::Completion(completion_diffs(planes, n, k, c, 0..n));
        }
    }
    if columns.iter().all(|c| matches!(c, Column::Planes)) {
        return Ok(None);
    }
    let frames = columns
        .par_iter()
        .enumerate()
        .map(|(c, col)| {
            let (data, bits) = column_data(planes, n, c, col);
            frame(&data, bits, level)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut out = vec![k as u8];
    for c in &columns {
        out.extend_from_slice(&c.code().to_le_bytes());
    }
    for c in &columns {
        if let Column::Palette(v, _) = c {
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    for f in frames {
        out.extend_from_slice(&f);
    }
    Ok(Some(out))
}

/// The column count a coded stream declares.
pub fn columns(coded: &[u8]) -> Option<usize> {
    coded.first().map(|&k| k as usize)
}

/// Reads `len` bytes at `*at`.
fn take<'a>(b: &'a [u8], at: &mut usize, len: usize, what: &str) -> Result<&'a [u8], String> {
    let s = at
        .checked_add(len)
        .and_then(|end| b.get(*at..end))
        .ok_or_else(|| format!("truncated {what}"))?;
    *at += len;
    Ok(s)
}

/// Decodes a stream of `raw_len` bytes coded by [`encode`] back to its byte
/// planes; every count, length and index is checked before it is used.
pub fn decode(coded: &[u8], raw_len: u64) -> Result<Vec<u8>, String> {
    let k = *coded.first().ok_or("empty")? as usize;
    if k == 0 || !raw_len.is_multiple_of(4 * k as u64) {
        return Err(format!(
            "{k} columns do not divide the {raw_len} decoded bytes into rows of f32"
        ));
    }
    let n = (raw_len / (4 * k as u64)) as usize;
    let mut at = 1;
    let codes: Vec<u32> = take(coded, &mut at, 4 * k, "palette sizes")?
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut completed = None;
    for (c, &m) in codes.iter().enumerate() {
        if m == COMPLETION {
            if completed.replace(c).is_some() || k < 2 {
                return Err(format!(
                    "column {c}: a second completed column, or one with no others"
                ));
            }
        } else if m as usize > MAX_PALETTE || m as usize > n {
            return Err(format!(
                "column {c}: a palette of {m} values, more than {} possible",
                n.min(MAX_PALETTE)
            ));
        }
    }
    let mut palettes = Vec::with_capacity(k);
    for (c, &m) in codes.iter().enumerate() {
        let len = if m == COMPLETION { 0 } else { m as usize };
        let p: Vec<u32> = take(coded, &mut at, 4 * len, "palette values")?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(j) = p.windows(2).position(|w| {
            f32::from_bits(w[0])
                .total_cmp(&f32::from_bits(w[1]))
                .is_ge()
        }) {
            return Err(format!(
                "column {c}: palette values {j} and {} are not increasing",
                j + 1
            ));
        }
        palettes.push(p);
    }
    let mut frames = Vec::with_capacity(k);
    for c in 0..k {
        let head = take(coded, &mut at, 5, "column frame")?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        frames.push((
            head[0],
            take(coded, &mut at, len, &format!("column {c}'s frame"))?,
        ));
    }
    if at != coded.len() {
        return Err(format!("{} bytes after the last column", coded.len() - at));
    }
    let data = frames
        .par_iter()
        .zip(&codes)
        .enumerate()
        .map(|(c, (&(coding, f), &m))| {
            let want = row_bytes(m) * n;
            let d = match coding {
                ZSTD => frame::unzstd(f, want as u64).map_err(|e| format!("zstd: {e}"))?,
                RANS if (1..=256).contains(&m) => {
                    let bits = index_bits(m as usize);
                    let runs = [Run {
                        bits,
                        count: n as u64,
                    }];
                    let packed = entropy::decode(f, &runs)?;
                    packing::unpack(&packed, bits as u32, n).map_err(|e| e.to_string())?
                }
                x => return Err(format!("column {c}: unknown frame coding {x}")),
            };
            if d.len() != want {
                return Err(format!(
                    "column {c}: decodes to {} bytes, {want} expected",
                    d.len()
                ));
            }
            Ok(d)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut out = vec![0u8; raw_len as usize];
    for (c, (p, src)) in palettes.iter().zip(&data).enumerate() {
        if codes[c] == COMPLETION {
            continue;
        }
        let dst = &mut out[4 * c * n..4 * (c + 1) * n];
        if p.is_empty() {
            dst.copy_from_slice(src);
            continue;
        }
        for i in 0..n {
            let q = match p.len() {
                1..=256 => src[i] as usize,
                _ => src[i] as usize | (src[n + i] as usize) << 8,
            };
            let v = *p.get(q).ok_or_else(|| {
                format!(
                    "column {c}, row {i}: index {q} outside its palette of {}",
                    p.len()
                )
            })?;
            for (b, byte) in v.to_le_bytes().into_iter().enumerate() {
                dst[b * n + i] = byte;
            }
        }
    }
    if let Some(c) = completed {
        let z = &data[c];
        for i in 0..n {
            let pred = completion(
                (0..k)
                    .filter(|&j| j != c)
                    .map(|j| f32::from_bits(value(&out, n, j, i))),
            );
            let zi = u32::from_le_bytes(std::array::from_fn(|b| z[b * n + i]));
            let v = pred.to_bits().wrapping_add(unzigzag(zi) as u32);
            for (b, byte) in v.to_le_bytes().into_iter().enumerate() {
                out[(4 * c + b) * n + i] = byte;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planes_of(rows: &[Vec<f32>]) -> Vec<u8> {
        let k = rows[0].len();
        let raw: Vec<u8> = rows
            .iter()
            .flat_map(|r| r.iter().flat_map(|v| v.to_le_bytes()))
            .collect();
        crate::splat::attributes::to_byte_planes(&raw, 4 * k)
    }

    #[test]
    fn round_trip_mixed_columns() {
        // Column 0 on a 16-level grid, 1 continuous, 2 with 1000 values
        // (two-byte indices), 3 constant with a negative zero and a NaN-free
        // mix of signs.
        let rows: Vec<Vec<f32>> = (0..20_000u32)
            .map(|i| {
                let h = i.wrapping_mul(2_654_435_761);
                vec![
                    ((h >> 7) % 16) as f32 * 0.0625 - 0.5,
                    (h as f32).sqrt() * 1.000_1,
                    ((h >> 3) % 1000) as f32 / 4096.0 - 0.1,
                    if i % 3 == 0 { -0.0 } else { 0.0 },
                ]
            })
            .collect();
        let planes = planes_of(&rows);
        let coded = encode(&planes, 4, 6).unwrap().expect("palettes pay");
        assert_eq!(columns(&coded), Some(4));
        let sizes: Vec<u32> = (0..4)
            .map(|c| u32::from_le_bytes(coded[1 + 4 * c..5 + 4 * c].try_into().unwrap()))
            .collect();
        assert_eq!(sizes, [16, 0, 1000, 2]);
        assert_eq!(decode(&coded, planes.len() as u64).unwrap(), planes);
    }

    #[test]
    fn continuous_data_is_left_alone() {
        let rows: Vec<Vec<f32>> = (0..5000).map(|i| vec![(i as f32).sin()]).collect();
        assert!(encode(&planes_of(&rows), 1, 6).unwrap().is_none());
    }

    #[test]
    fn damage_is_refused() {
        let rows: Vec<Vec<f32>> = (0..1000).map(|i| vec![(i % 5) as f32]).collect();
        let planes = planes_of(&rows);
        let coded = encode(&planes, 1, 6).unwrap().unwrap();
        // A palette size beyond the rows.
        let mut bad = coded.clone();
        bad[1..5].copy_from_slice(&5000u32.to_le_bytes());
        assert!(decode(&bad, 4000).unwrap_err().contains("palette of 5000"));
        // Values out of order.
        let mut bad = coded.clone();
        bad[5..9].copy_from_slice(&9.0f32.to_bits().to_le_bytes());
        assert!(decode(&bad, 4000).unwrap_err().contains("not increasing"));
        // A shrunken palette leaves indices outside it.
        let mut bad = coded[..1].to_vec();
        bad.extend_from_slice(&4u32.to_le_bytes());
        bad.extend_from_slice(&coded[9..25]);
        bad.extend_from_slice(&coded[25..]);
        assert!(
            decode(&bad, 4000)
                .unwrap_err()
                .contains("outside its palette")
        );
        // Wrong declared length.
        assert!(decode(&coded, 4004).is_err());
        assert!(decode(&coded, 8000).is_err());
    }
}
