//! A semi-static rANS coder for packed fixed-width codes: the symbols of a
//! bit stream whose widths come in runs (one width for every symbol, or a
//! width per group), coded with one stored frequency table per width.
//! Decoding gives back exactly the packed bytes. docs/FORMAT.md (`.tq3s`,
//! "Stream coding 2: rANS") is the specification.
//!
//! The coder is byte-wise rANS with a 32-bit state (x ∈ [2^23, 2^31)) and
//! 15-bit frequencies, in independent blocks of at most [`BLOCK_SYMBOLS`]
//! symbols so that both directions run in parallel and the output does not
//! depend on the thread count.

use rayon::prelude::*;

/// Frequency precision: every table's frequencies sum to 2^PRECISION.
pub const PRECISION: u32 = 15;
/// Symbols per block (the last block may hold fewer). Readers accept any
/// block size in 1..=this, which bounds what one stored byte can decode to.
pub const BLOCK_SYMBOLS: u32 = 1 << 16;
/// Lower end of the state interval.
const L: u32 = 1 << 23;
const MASK: u32 = (1 << PRECISION) - 1;

/// `count` consecutive symbols of `bits` bits each (0 ≤ bits ≤ 8; a run of
/// width 0 holds no bits and codes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Width of each symbol.
    pub bits: u8,
    /// Number of symbols.
    pub count: u64,
}

/// Runs with their first symbol and first bit, widths 0 dropped.
struct Layout {
    runs: Vec<(Run, u64, u64)>,
    symbols: u64,
    bits: u64,
}

impl Layout {
    fn new(runs: &[Run]) -> Result<Layout, String> {
        let (mut s, mut b) = (0u64, 0u64);
        let mut out = Vec::new();
        for r in runs.iter().filter(|r| r.bits > 0 && r.count > 0) {
            if r.bits > 8 {
                return Err(format!("symbol width {} is above 8", r.bits));
            }
            out.push((*r, s, b));
            s = s
                .checked_add(r.count)
                .ok_or_else(|| "symbol count overflows".to_string())?;
            b = r
                .count
                .checked_mul(r.bits as u64)
                .and_then(|x| x.checked_add(b))
                .ok_or_else(|| "bit count overflows".to_string())?;
        }
        Ok(Layout {
            runs: out,
            symbols: s,
            bits: b,
        })
    }

    /// Index of the run holding symbol `s`.
    fn run_of(&self, s: u64) -> usize {
        self.runs.partition_point(|r| r.1 <= s).saturating_sub(1)
    }

    /// The widths used, ascending.
    fn widths(&self) -> Vec<u8> {
        (1..=8u8)
            .filter(|b| self.runs.iter().any(|r| r.0.bits == *b))
            .collect()
    }

    /// Symbols `start..end` as pieces of runs: (width, first bit, count).
    fn segments(&self, start: u64, end: u64) -> impl Iterator<Item = (u8, u64, u64)> + '_ {
        let k = self.run_of(start);
        self.runs[k.min(self.runs.len())..]
            .iter()
            .take_while(move |r| r.1 < end)
            .map(move |&(r, first, bit0)| {
                let s = start.max(first);
                let e = end.min(first + r.count);
                (r.bits, bit0 + (s - first) * r.bits as u64, e - s)
            })
    }

    /// Calls `f(width, first bit)` for symbols `start..end`, in order.
    fn walk(&self, start: u64, end: u64, mut f: impl FnMut(u8, u64)) {
        for (b, bit0, count) in self.segments(start, end) {
            for t in 0..count {
                f(b, bit0 + t * b as u64);
            }
        }
    }
}

/// Reads `bits` bits at bit `at` of LSB-first packed bytes (zeros past the end).
fn get_bits(packed: &[u8], at: u64, bits: u8) -> u8 {
    let i = (at / 8) as usize;
    let lo = packed.get(i).copied().unwrap_or(0) as u16;
    let hi = packed.get(i + 1).copied().unwrap_or(0) as u16;
    (((lo | hi << 8) >> (at % 8)) & ((1u16 << bits) - 1)) as u8
}

/// Quantises a histogram to frequencies summing to 2^[`PRECISION`], every
/// symbol that occurs getting at least 1 (`hist` must not be all zero and
/// must have at most 2^PRECISION non-zero entries). Integer arithmetic
/// only, so every platform gets the same table.
pub fn quantise_frequencies(hist: &[u64]) -> Vec<u32> {
    let total: u128 = hist.iter().map(|&h| h as u128).sum();
    let target = 1u32 << PRECISION;
    if total == 0 {
        return vec![0; hist.len()];
    }
    let mut f: Vec<u32> = hist
        .iter()
        .map(|&h| {
            if h == 0 {
                0
            } else {
                ((h as u128 * target as u128 + total / 2) / total).max(1) as u32
            }
        })
        .collect();
    // Fix the sum one unit at a time where it costs least: the code length
    // of symbol s changes by about h_s/f_s bits per unit of f_s.
    let mut sum: u32 = f.iter().sum();
    let better = |a: usize, b: usize, f: &[u32]| {
        // h_a/f_a > h_b/f_b, in integers.
        hist[a] as u128 * f[b] as u128 > hist[b] as u128 * f[a] as u128
    };
    while sum < target {
        let mut best = usize::MAX;
        for s in (0..hist.len()).filter(|&s| hist[s] > 0) {
            if best == usize::MAX || better(s, best, &f) {
                best = s;
            }
        }
        f[best] += 1;
        sum += 1;
    }
    while sum > target {
        let mut best = usize::MAX;
        for s in (0..hist.len()).filter(|&s| f[s] > 1) {
            if best == usize::MAX || better(best, s, &f) {
                best = s;
            }
        }
        f[best] -= 1;
        sum -= 1;
    }
    f
}

/// Shannon entropy of a histogram, in bits per symbol.
pub fn entropy_bits(hist: &[u64]) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    hist.iter()
        .filter(|&&h| h > 0)
        .map(|&h| {
            let p = h as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

/// One width's table, ready for coding.
struct Table {
    freq: Vec<u32>,
    cum: Vec<u32>,
    /// Slot → symbol, 2^PRECISION entries (decoder only).
    lut: Vec<u8>,
}

impl Table {
    fn new(freq: Vec<u32>, with_lut: bool) -> Table {
        let mut cum = Vec::with_capacity(freq.len());
        let mut c = 0;
        for &f in &freq {
            cum.push(c);
            c += f;
        }
        let mut lut = Vec::new();
        if with_lut {
            lut.reserve_exact(1 << PRECISION);
            for (s, &f) in freq.iter().enumerate() {
                lut.extend(std::iter::repeat_n(s as u8, f as usize));
            }
        }
        Table { freq, cum, lut }
    }
}

/// Per-width histograms of the symbols, indexed by width.
fn histograms(packed: &[u8], lay: &Layout) -> Vec<Vec<u64>> {
    let blocks = lay.symbols.div_ceil(BLOCK_SYMBOLS as u64);
    (0..blocks)
        .into_par_iter()
        .map(|k| {
            let mut h: Vec<Vec<u64>> = (0..=8u32).map(|b| vec![0; 1 << b]).collect();
            let start = k * BLOCK_SYMBOLS as u64;
            let end = lay.symbols.min(start + BLOCK_SYMBOLS as u64);
            lay.walk(start, end, |b, at| {
                h[b as usize][get_bits(packed, at, b) as usize] += 1
            });
            h
        })
        .reduce(
            || (0..=8u32).map(|b| vec![0; 1 << b]).collect(),
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    for (p, q) in x.iter_mut().zip(y) {
                        *p += q;
                    }
                }
                a
            },
        )
}

/// The per-width histograms of the symbols `runs` lays out in `packed`
/// (index b holds width b's 2^b counts), for measurement.
pub fn histogram(packed: &[u8], runs: &[Run]) -> Result<Vec<Vec<u64>>, String> {
    let lay = Layout::new(runs)?;
    check_len(packed, &lay)?;
    Ok(histograms(packed, &lay))
}

fn check_len(packed: &[u8], lay: &Layout) -> Result<(), String> {
    if packed.len() as u64 != lay.bits.div_ceil(8) {
        return Err(format!(
            "{} packed bytes for {} bits of symbols",
            packed.len(),
            lay.bits
        ));
    }
    Ok(())
}

/// Codes the symbols that `runs` lays out in `packed` (LSB-first, each
/// symbol's bits right after the previous one's). `packed` must be exactly
/// ceil(Σ bits / 8) bytes; bits past the last symbol are not stored (the
/// decoder writes them as zeros).
pub fn encode(packed: &[u8], runs: &[Run]) -> Result<Vec<u8>, String> {
    let lay = Layout::new(runs)?;
    check_len(packed, &lay)?;
    let hist = histograms(packed, &lay);
    let mut tables: Vec<Option<Table>> = (0..=8).map(|_| None).collect();
    let mut out = vec![PRECISION as u8];
    let widths = lay.widths();
    out.push(widths.len() as u8);
    for &b in &widths {
        let f = quantise_frequencies(&hist[b as usize]);
        out.push(b);
        for &x in &f {
            out.extend_from_slice(&(x as u16).to_le_bytes());
        }
        tables[b as usize] = Some(Table::new(f, false));
    }
    out.extend_from_slice(&BLOCK_SYMBOLS.to_le_bytes());
    let blocks = lay.symbols.div_ceil(BLOCK_SYMBOLS as u64);
    let coded: Vec<Vec<u8>> = (0..blocks)
        .into_par_iter()
        .map(|k| {
            let start = k * BLOCK_SYMBOLS as u64;
            let end = lay.symbols.min(start + BLOCK_SYMBOLS as u64);
            let segs: Vec<(u8, u64, u64)> = lay.segments(start, end).collect();
            let mut syms: Vec<u8> = Vec::with_capacity((end - start) as usize);
            for &(b, bit0, count) in &segs {
                syms.extend((0..count).map(|t| get_bits(packed, bit0 + t * b as u64, b)));
            }
            encode_block(&segs, &syms, &tables)
        })
        .collect();
    for c in &coded {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
    }
    for c in coded {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// rANS-codes one block: symbols in reverse, bytes emitted backwards, then
/// reversed so that the decoder reads forward.
fn encode_block(segs: &[(u8, u64, u64)], syms: &[u8], tables: &[Option<Table>]) -> Vec<u8> {
    let mut x = L;
    let mut rev = Vec::with_capacity(syms.len() + 4);
    let mut end = syms.len();
    for &(b, _, count) in segs.iter().rev() {
        let part = &syms[end - count as usize..end];
        end -= count as usize;
        // Every width used has a table, built from these very symbols (f ≥ 1).
        let Some(t) = &tables[b as usize] else {
            continue;
        };
        for &s in part.iter().rev() {
            let (f, c) = (t.freq[s as usize], t.cum[s as usize]);
            let x_max = ((L >> PRECISION) << 8) * f;
            while x >= x_max {
                rev.push(x as u8);
                x >>= 8;
            }
            x = ((x / f) << PRECISION) + x % f + c;
        }
    }
    rev.extend_from_slice(&x.to_be_bytes());
    rev.reverse();
    rev
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize, what: &str) -> Result<&'a [u8], String> {
    let s = b
        .get(*at..*at + n)
        .ok_or_else(|| format!("rANS: truncated in the {what}"))?;
    *at += n;
    Ok(s)
}

/// Inverse of [`encode`]: the packed bytes (exactly ceil(Σ bits / 8)) of
/// the symbols `runs` lays out. Every malformed input is an error, never a
/// panic; memory is bounded by `coded`'s length times 2^16 symbols per
/// four bytes.
pub fn decode(coded: &[u8], runs: &[Run]) -> Result<Vec<u8>, String> {
    let lay = Layout::new(runs)?;
    let mut at = 0;
    let p = take(coded, &mut at, 2, "header")?;
    if p[0] as u32 != PRECISION {
        return Err(format!(
            "rANS: precision {} (this version reads {PRECISION})",
            p[0]
        ));
    }
    let widths = lay.widths();
    if p[1] as usize != widths.len() {
        return Err(format!(
            "rANS: {} frequency tables, the widths need {}",
            p[1],
            widths.len()
        ));
    }
    let mut tables: Vec<Option<Table>> = (0..=8).map(|_| None).collect();
    for (k, &want) in widths.iter().enumerate() {
        let b = take(coded, &mut at, 1, "tables")?[0];
        if b != want {
            return Err(format!(
                "rANS: table {k} has width {b}, expected {want} (the widths used, ascending)"
            ));
        }
        let raw = take(coded, &mut at, 2 << b, "tables")?;
        let f: Vec<u32> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect();
        let sum: u32 = f.iter().sum();
        if sum != 1 << PRECISION {
            return Err(format!(
                "rANS: the frequencies of width {b} sum to {sum}, not 2^{PRECISION}"
            ));
        }
        tables[b as usize] = Some(Table::new(f, true));
    }
    let bs = take(coded, &mut at, 4, "block size")?;
    let bs = u32::from_le_bytes([bs[0], bs[1], bs[2], bs[3]]);
    if !(1..=BLOCK_SYMBOLS).contains(&bs) {
        return Err(format!(
            "rANS: block size {bs} is outside 1..={BLOCK_SYMBOLS}"
        ));
    }
    let blocks = lay.symbols.div_ceil(bs as u64);
    // Each block takes at least 4 length bytes and 4 state bytes: checked
    // before anything proportional to the block count is allocated.
    if blocks.saturating_mul(8) > (coded.len() - at) as u64 {
        return Err(format!(
            "rANS: {blocks} blocks cannot fit in the {} bytes left",
            coded.len() - at
        ));
    }
    let lens = take(coded, &mut at, blocks as usize * 4, "block lengths")?;
    let mut slices = Vec::with_capacity(blocks as usize);
    for (k, c) in lens.chunks_exact(4).enumerate() {
        let n = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
        let s = coded
            .get(at..at + n)
            .ok_or_else(|| format!("rANS: block {k} is truncated"))?;
        slices.push(s);
        at += n;
    }
    if at != coded.len() {
        return Err(format!(
            "rANS: {} bytes after the last block",
            coded.len() - at
        ));
    }
    let parts: Vec<(u64, Vec<u8>)> = slices
        .par_iter()
        .enumerate()
        .map(|(k, s)| {
            let start = k as u64 * bs as u64;
            let end = lay.symbols.min(start + bs as u64);
            decode_block(s, start, end, &lay, &tables).map_err(|e| format!("rANS block {k}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut out = vec![0u8; lay.bits.div_ceil(8) as usize];
    for (bit0, bytes) in parts {
        let o = (bit0 / 8) as usize;
        for (d, s) in out[o..].iter_mut().zip(bytes) {
            *d |= s;
        }
    }
    Ok(out)
}

/// Decodes symbols `start..end` and packs them from their first bit's
/// offset within its byte; returns that first bit and the bytes.
fn decode_block(
    s: &[u8],
    start: u64,
    end: u64,
    lay: &Layout,
    tables: &[Option<Table>],
) -> Result<(u64, Vec<u8>), String> {
    let head = s.first_chunk::<4>().ok_or("truncated state")?;
    let mut x = u32::from_le_bytes(*head);
    if !(L..1 << 31).contains(&x) {
        return Err(format!("initial state {x} is outside [2^23, 2^31)"));
    }
    let mut at = 4;
    let first = lay.runs[lay.run_of(start)];
    let bit0 = first.2 + (start - first.1) * first.0.bits as u64;
    let want = (bit_after(end, lay).div_ceil(8) - bit0 / 8) as usize;
    let mut bytes: Vec<u8> = Vec::with_capacity(want + 4);
    // Output bits gather in `acc` (its low `fill` bits), 32 at a time.
    let (mut acc, mut fill) = (0u64, (bit0 % 8) as u32);
    for (b, _, count) in lay.segments(start, end) {
        let t = tables[b as usize].as_ref().ok_or("no table")?;
        for _ in 0..count {
            let slot = x & MASK;
            let sym = t.lut[slot as usize];
            x = t.freq[sym as usize] * (x >> PRECISION) + slot - t.cum[sym as usize];
            while x < L {
                let byte = *s.get(at).ok_or("truncated coder data")?;
                x = (x << 8) | byte as u32;
                at += 1;
            }
            acc |= (sym as u64) << fill;
            fill += b as u32;
            if fill >= 32 {
                bytes.extend_from_slice(&(acc as u32).to_le_bytes());
                acc >>= 32;
                fill -= 32;
            }
        }
    }
    bytes.extend_from_slice(&acc.to_le_bytes()[..fill.div_ceil(8) as usize]);
    if at != s.len() {
        return Err(format!("{} bytes left over", s.len() - at));
    }
    if x != L {
        return Err(format!("final state {x}, expected 2^23"));
    }
    bytes.truncate(want);
    Ok((bit0, bytes))
}

/// First bit after symbol `end − 1`.
fn bit_after(end: u64, lay: &Layout) -> u64 {
    if end == 0 {
        return 0;
    }
    let (r, first, bit0) = lay.runs[lay.run_of(end - 1)];
    bit0 + (end - first) * r.bits as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantised_frequencies_sum_to_the_precision_and_keep_every_symbol() {
        for hist in [
            vec![1u64, 0, 0, 1_000_000],
            vec![5; 256],
            vec![1; 256],
            vec![0, 0, 7, 0],
            vec![1_000_000_000, 1, 1, 1, 1, 1, 1, 1],
        ] {
            let f = quantise_frequencies(&hist);
            assert_eq!(f.iter().sum::<u32>(), 1 << PRECISION, "{hist:?}");
            for (h, f) in hist.iter().zip(&f) {
                assert_eq!(*h > 0, *f > 0, "{hist:?}");
            }
        }
    }
}
