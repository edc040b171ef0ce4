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
}

/// Reads `bits` bits at bit `at` of LSB-first packed bytes (zeros past the end).
fn get_bits(packed: &[u8], at: u64, bits: u8) -> u8 {
    let i = (at / 8) as usize;
    let lo = packed.get(i).copied().unwrap_or(0) as u16;
    let hi = packed.get(i + 1).copied().unwrap_or(0) as u16;
    (((lo | hi << 8) >> (at % 8)) & ((1u16 << bits) - 1)) as u8
}

/// Appends the `count` symbols of `bits` bits from bit `bit0` of `packed`
/// to `out`: one eight-byte load yields ⌊56 / bits⌋ symbols (at least 57
/// bits remain after the shift to the first one) where the load lies
/// inside `packed`; the last few go through [`get_bits`].
fn unpack(packed: &[u8], bit0: u64, count: u64, bits: u8, out: &mut Vec<u8>) {
    match bits {
        1 => unpack_w::<1>(packed, bit0, count, out),
        2 => unpack_w::<2>(packed, bit0, count, out),
        3 => unpack_w::<3>(packed, bit0, count, out),
        4 => unpack_w::<4>(packed, bit0, count, out),
        5 => unpack_w::<5>(packed, bit0, count, out),
        6 => unpack_w::<6>(packed, bit0, count, out),
        7 => unpack_w::<7>(packed, bit0, count, out),
        _ => unpack_w::<8>(packed, bit0, count, out),
    }
}

#[inline(always)]
fn unpack_w<const B: u64>(packed: &[u8], bit0: u64, count: u64, out: &mut Vec<u8>) {
    let (per, mask) = (56 / B, (1u64 << B) - 1);
    out.reserve(count as usize);
    let mut t = 0;
    while t < count {
        let at = bit0 + t * B;
        let Some(w) = packed
            .get((at / 8) as usize..)
            .and_then(<[u8]>::first_chunk::<8>)
        else {
            break;
        };
        let w = u64::from_le_bytes(*w) >> (at % 8);
        let k = per.min(count - t);
        out.extend((0..k).map(|j| ((w >> (j * B)) & mask) as u8));
        t += k;
    }
    out.extend((t..count).map(|t| get_bits(packed, bit0 + t * B, B as u8)));
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

/// How the encoder codes one symbol: x ↦ x + cum + ⌊x/f⌋·(2^P − f), the
/// same number as (⌊x/f⌋ << P) + x mod f + cum, with the quotient taken by
/// an exact multiply-shift instead of a division (Granlund and Montgomery
/// 1994, Theorem 4.2: for every x < 2^31, ⌊x/f⌋ = ⌊x·m / 2^(31+l)⌋ with
/// l = ⌈log2 f⌉ and m = ⌈2^(31+l)/f⌉ ≤ 2^32).
#[derive(Clone, Copy, Default)]
struct EncSymbol {
    rcp: u64,
    shift: u32,
    cmpl: u32,
    cum: u32,
    /// States at or above this emit a byte first: ((L >> P) << 8)·f.
    x_max: u32,
}

impl EncSymbol {
    fn new(f: u32, cum: u32) -> EncSymbol {
        if f == 0 {
            return EncSymbol::default();
        }
        let l = 32 - (f - 1).leading_zeros(); // ⌈log2 f⌉, 0 for f = 1
        let shift = 31 + l;
        EncSymbol {
            rcp: (1u64 << shift).div_ceil(f as u64),
            shift,
            cmpl: (1 << PRECISION) - f,
            cum,
            x_max: ((L >> PRECISION) << 8) * f,
        }
    }

    /// ⌊x/f⌋ for x < 2^31.
    #[inline(always)]
    fn quotient(&self, x: u32) -> u32 {
        ((x as u64 * self.rcp) >> self.shift) as u32
    }
}

/// Every width's table, ready for coding.
struct Tables {
    /// Width b's symbols start at `enc[enc_base[b]]` (encoder).
    enc_base: [u16; 9],
    enc: Vec<EncSymbol>,
    /// Width b's table is number `number[b]` among the widths used
    /// (decoder); its 2^P slots start at `number[b] << P` in `lut` and `step`.
    number: [u8; 9],
    /// Slot → symbol.
    lut: Vec<u8>,
    /// Slot → f·2^16 + (slot − cum) of its symbol: the state update
    /// x ↦ f·(x >> P) + slot − cum from one load.
    step: Vec<u32>,
}

impl Tables {
    /// The tables of `freqs`, one (width, frequencies) per width used.
    fn new(freqs: &[(u8, Vec<u32>)], for_decoder: bool) -> Tables {
        let mut t = Tables {
            enc_base: [0; 9],
            enc: Vec::new(),
            number: [0; 9],
            lut: Vec::new(),
            step: Vec::new(),
        };
        for (k, (b, freq)) in freqs.iter().enumerate() {
            t.enc_base[*b as usize] = t.enc.len() as u16;
            t.number[*b as usize] = k as u8;
            let mut c = 0;
            for (s, &f) in freq.iter().enumerate() {
                t.enc.push(EncSymbol::new(f, c));
                if for_decoder {
                    t.lut.extend(std::iter::repeat_n(s as u8, f as usize));
                    t.step.extend((0..f).map(|k| (f << 16) | k));
                }
                c += f;
            }
        }
        t
    }
}

/// Blocks coded together by one thread, one rANS state each, their steps
/// interleaved so that the CPU overlaps the states' dependency chains. Each
/// block is still coded on its own: the bytes are the same as one at a time.
const LANES: usize = 4;

/// Per-width histograms of the symbols, indexed by width.
fn histograms(packed: &[u8], lay: &Layout) -> Vec<Vec<u64>> {
    let blocks = lay.symbols.div_ceil(BLOCK_SYMBOLS as u64);
    (0..blocks)
        .into_par_iter()
        .map(|k| {
            // Four counters per symbol, taken in turn: a run of one symbol
            // then does not wait on its own previous increment.
            let mut c = vec![[[0u32; 4]; 256]; 9];
            let start = k * BLOCK_SYMBOLS as u64;
            let end = lay.symbols.min(start + BLOCK_SYMBOLS as u64);
            let mut syms = Vec::new();
            for (b, bit0, count) in lay.segments(start, end) {
                syms.clear();
                unpack(packed, bit0, count, b, &mut syms);
                let cb = &mut c[b as usize];
                let mut quads = syms.chunks_exact(4);
                for q in &mut quads {
                    for (l, &x) in q.iter().enumerate() {
                        cb[x as usize][l] += 1;
                    }
                }
                for &x in quads.remainder() {
                    cb[x as usize][0] += 1;
                }
            }
            (0..=8usize)
                .map(|b| {
                    c[b][..1 << b]
                        .iter()
                        .map(|q| q.iter().map(|&n| n as u64).sum())
                        .collect()
                })
                .collect::<Vec<Vec<u64>>>()
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
    let mut out = vec![PRECISION as u8];
    let widths = lay.widths();
    out.push(widths.len() as u8);
    let mut freqs = Vec::with_capacity(widths.len());
    for &b in &widths {
        let f = quantise_frequencies(&hist[b as usize]);
        out.push(b);
        for &x in &f {
            out.extend_from_slice(&(x as u16).to_le_bytes());
        }
        freqs.push((b, f));
    }
    let tables = Tables::new(&freqs, false);
    out.extend_from_slice(&BLOCK_SYMBOLS.to_le_bytes());
    let blocks = lay.symbols.div_ceil(BLOCK_SYMBOLS as u64) as usize;
    let groups: Vec<Vec<Vec<u8>>> = (0..blocks.div_ceil(LANES))
        .into_par_iter()
        .map(|g| {
            let first = g * LANES;
            let lanes: Vec<Vec<u16>> = (first..blocks.min(first + LANES))
                .map(|k| {
                    let start = k as u64 * BLOCK_SYMBOLS as u64;
                    let end = lay.symbols.min(start + BLOCK_SYMBOLS as u64);
                    block_symbols(packed, &lay, start, end, &tables)
                })
                .collect();
            encode_blocks(&lanes, &tables)
        })
        .collect();
    let coded: Vec<Vec<u8>> = groups.into_iter().flatten().collect();
    for c in &coded {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
    }
    for c in coded {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Symbols `start..end`, each as its index in `tables.enc`.
fn block_symbols(packed: &[u8], lay: &Layout, start: u64, end: u64, tables: &Tables) -> Vec<u16> {
    let mut idx = Vec::with_capacity((end - start) as usize);
    let mut syms = Vec::new();
    for (b, bit0, count) in lay.segments(start, end) {
        syms.clear();
        unpack(packed, bit0, count, b, &mut syms);
        let base = tables.enc_base[b as usize];
        idx.extend(syms.iter().map(|&s| base + s as u16));
    }
    idx
}

/// One encoder step: renormalise, then code symbol `e`. A state below
/// 2^31 needs at most two bytes out (2^31 >> 16 ≤ x_max for every f ≥ 1),
/// so renormalisation is two conditional steps without a branch: every
/// byte is written, and the position moves on only when it is emitted.
#[inline(always)]
fn encode_step(x: &mut u32, rev: &mut [u8], pos: &mut usize, e: &EncSymbol) {
    for _ in 0..2 {
        let out = *x >= e.x_max;
        rev[*pos] = *x as u8;
        *pos += out as usize;
        *x = if out { *x >> 8 } else { *x };
    }
    *x = *x + e.cum + e.quotient(*x) * e.cmpl;
}

/// rANS-codes up to [`LANES`] blocks, each on its own state: symbols in
/// reverse, bytes emitted backwards, then reversed so that the decoder
/// reads forward.
fn encode_blocks(lanes: &[Vec<u16>], tables: &Tables) -> Vec<Vec<u8>> {
    let n = lanes.len();
    let len: [usize; LANES] = std::array::from_fn(|j| lanes.get(j).map_or(0, Vec::len));
    let mut x = [L; LANES];
    let mut pos = [0usize; LANES];
    let mut rev: [Vec<u8>; LANES] = std::array::from_fn(|j| vec![0u8; 2 * len[j] + 8]);
    let enc = &tables.enc[..];
    // Every lane while all have symbols left, then each lane's rest.
    let common = len[..n].iter().copied().min().unwrap_or(0);
    for i in 0..common {
        for j in 0..n {
            let e = &enc[lanes[j][len[j] - 1 - i] as usize];
            encode_step(&mut x[j], &mut rev[j], &mut pos[j], e);
        }
    }
    for j in 0..n {
        for i in common..len[j] {
            let e = &enc[lanes[j][len[j] - 1 - i] as usize];
            encode_step(&mut x[j], &mut rev[j], &mut pos[j], e);
        }
    }
    rev.into_iter()
        .take(n)
        .enumerate()
        .map(|(j, mut r)| {
            r.truncate(pos[j]);
            r.extend_from_slice(&x[j].to_be_bytes());
            r.reverse();
            r
        })
        .collect()
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
    let mut freqs = Vec::with_capacity(widths.len());
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
        freqs.push((b, f));
    }
    let tables = Tables::new(&freqs, true);
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
        .par_chunks(LANES)
        .enumerate()
        .map(|(g, group)| decode_blocks(group, g * LANES, bs as u64, &lay, &tables))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let mut out = vec![0u8; lay.bits.div_ceil(8) as usize];
    for (bit0, bytes) in parts {
        let o = (bit0 / 8) as usize;
        for (d, s) in out[o..].iter_mut().zip(bytes) {
            *d |= s;
        }
    }
    Ok(out)
}

/// One decoder step on table number `tb`: the symbol, and the
/// state renormalised. x ≥ 2^8 after the update (f ≥ 1, x >> P ≥ 2^8), so
/// two bytes at most bring it back to [2^23, 2^31). Past the end a zero is
/// read and `at` still counts it, which the caller reports.
#[inline(always)]
fn decode_step(x: &mut u32, s: &[u8], at: &mut usize, tb: u8, tables: &Tables) -> u8 {
    let k = ((tb as usize) << PRECISION) | (*x & MASK) as usize;
    let sym = tables.lut[k];
    let st = tables.step[k];
    *x = (st >> 16) * (*x >> PRECISION) + (st & 0xFFFF);
    for _ in 0..2 {
        let need = *x < L;
        let byte = s.get(*at).copied().unwrap_or(0) as u32;
        *x = if need { (*x << 8) | byte } else { *x };
        *at += need as usize;
    }
    sym
}

/// Decodes the blocks `group` (block `first` and on, `bs` symbols each, on
/// interleaved states as [`encode_blocks`] codes them) and packs each from
/// its first bit's offset within its byte: per block, that first bit and
/// the bytes.
fn decode_blocks(
    group: &[&[u8]],
    first: usize,
    bs: u64,
    lay: &Layout,
    tables: &Tables,
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let n = group.len();
    let mut x = [L; LANES];
    let mut at = [4usize; LANES];
    // Per lane: the table number of each symbol, then the symbols.
    let mut tb: [Vec<u8>; LANES] = Default::default();
    let mut syms: [Vec<u8>; LANES] = Default::default();
    let mut range = [(0u64, 0u64); LANES];
    for j in 0..n {
        let k = first + j;
        let head = group[j]
            .first_chunk::<4>()
            .ok_or_else(|| format!("rANS block {k}: truncated state"))?;
        x[j] = u32::from_le_bytes(*head);
        if !(L..1 << 31).contains(&x[j]) {
            return Err(format!(
                "rANS block {k}: initial state {} is outside [2^23, 2^31)",
                x[j]
            ));
        }
        let start = k as u64 * bs;
        let end = lay.symbols.min(start + bs);
        range[j] = (start, end);
        tb[j].reserve_exact((end - start) as usize);
        for (b, _, count) in lay.segments(start, end) {
            tb[j].extend(std::iter::repeat_n(
                tables.number[b as usize],
                count as usize,
            ));
        }
        syms[j] = vec![0u8; tb[j].len()];
    }
    let common = tb[..n].iter().map(Vec::len).min().unwrap_or(0);
    for i in 0..common {
        for j in 0..n {
            syms[j][i] = decode_step(&mut x[j], group[j], &mut at[j], tb[j][i], tables);
        }
    }
    for j in 0..n {
        for i in common..tb[j].len() {
            syms[j][i] = decode_step(&mut x[j], group[j], &mut at[j], tb[j][i], tables);
        }
    }
    (0..n)
        .map(|j| {
            let k = first + j;
            let s = group[j];
            if at[j] > s.len() {
                return Err(format!("rANS block {k}: truncated coder data"));
            }
            if at[j] != s.len() {
                return Err(format!(
                    "rANS block {k}: {} bytes left over",
                    s.len() - at[j]
                ));
            }
            if x[j] != L {
                return Err(format!(
                    "rANS block {k}: final state {}, expected 2^23",
                    x[j]
                ));
            }
            Ok(pack_block(&syms[j], range[j].0, range[j].1, lay))
        })
        .collect()
}

/// Packs the symbols `start..end` from their first bit's offset within its
/// byte; returns that first bit and the bytes.
fn pack_block(syms: &[u8], start: u64, end: u64, lay: &Layout) -> (u64, Vec<u8>) {
    let first = lay.runs[lay.run_of(start)];
    let bit0 = first.2 + (start - first.1) * first.0.bits as u64;
    let want = (bit_after(end, lay).div_ceil(8) - bit0 / 8) as usize;
    let mut bytes: Vec<u8> = Vec::with_capacity(want + 8);
    // Output bits gather in `acc` (its low `fill` bits), 32 at a time.
    let (mut acc, mut fill) = (0u64, (bit0 % 8) as u32);
    let mut i = 0;
    for (b, _, count) in lay.segments(start, end) {
        for &sym in &syms[i..i + count as usize] {
            acc |= (sym as u64) << fill;
            fill += b as u32;
            if fill >= 32 {
                bytes.extend_from_slice(&(acc as u32).to_le_bytes());
                acc >>= 32;
                fill -= 32;
            }
        }
        i += count as usize;
    }
    bytes.extend_from_slice(&acc.to_le_bytes()[..fill.div_ceil(8) as usize]);
    bytes.truncate(want);
    (bit0, bytes)
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
