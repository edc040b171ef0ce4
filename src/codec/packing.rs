//! The portable bit layout of b-bit codes.
//!
//! Codes form one little-endian bit stream: code k occupies stream bits
//! `[k·b, (k+1)·b)`, least significant bit first, and stream bit n is bit
//! `n mod 8` of byte `n / 8`. Equivalently, reading the bytes as
//! little-endian u32 words, stream bit n is bit `n mod 32` of word `n / 32`,
//! which is how a GPU shader sees the same buffer. Codes may straddle byte
//! and word boundaries; there is no padding between codes or vectors, and
//! unused high bits of the last byte are zero.
//!
//! For N vectors of dimension d, code j of vector i is code `k = i·d + j`,
//! and the stream is `ceil(N·d·b / 8)` bytes long.
//!
//! ```
//! use turboquant3d::packing::{pack, unpack};
//! let codes = [5u8, 0, 7, 2];
//! let packed = pack(&codes, 3).unwrap();
//! // 101 000 111 010 → bits LSB-first: byte0 = 0b11_000_101, byte1 = 0b0000_0101
//! assert_eq!(packed, vec![0b1100_0101, 0b0000_0101]);
//! assert_eq!(unpack(&packed, 3, 4).unwrap(), codes);
//! ```

use crate::{Error, Result};

/// Bytes needed for `count` codes of `bits` bits.
pub fn packed_len(count: usize, bits: u32) -> usize {
    (count as u128 * bits as u128).div_ceil(8) as usize
}

fn check_bits(bits: u32) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(Error::InvalidBits { bits })
    }
}

/// Packs codes into a new buffer. Every code must be below 2^b.
pub fn pack(codes: &[u8], bits: u32) -> Result<Vec<u8>> {
    let mut out = vec![0u8; packed_len(codes.len(), bits)];
    pack_into(codes, bits, &mut out)?;
    Ok(out)
}

/// Packs codes into `out`, which must be exactly `packed_len(codes.len(), bits)` bytes.
pub fn pack_into(codes: &[u8], bits: u32, out: &mut [u8]) -> Result<()> {
    check_bits(bits)?;
    if out.len() != packed_len(codes.len(), bits) {
        return Err(Error::Shape(format!(
            "packing {} codes of {bits} bits needs {} bytes, the output has {}",
            codes.len(),
            packed_len(codes.len(), bits),
            out.len()
        )));
    }
    if let Some(i) = codes.iter().position(|&c| (c as u32) >> bits != 0) {
        return Err(Error::InvalidArgument(format!(
            "code {i} = {} does not fit in {bits} bits",
            codes[i]
        )));
    }
    let mut w = BitWriter::new(out);
    for &c in codes {
        w.put(c as u32, bits);
    }
    w.finish();
    Ok(())
}

/// Unpacks `count` codes of `bits` bits.
pub fn unpack(packed: &[u8], bits: u32, count: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; count];
    unpack_into(packed, bits, &mut out)?;
    Ok(out)
}

/// Unpacks `out.len()` codes from `packed`.
pub fn unpack_into(packed: &[u8], bits: u32, out: &mut [u8]) -> Result<()> {
    check_bits(bits)?;
    if packed.len() < packed_len(out.len(), bits) {
        return Err(Error::Shape(format!(
            "unpacking {} codes of {bits} bits needs {} bytes, the input has {}",
            out.len(),
            packed_len(out.len(), bits),
            packed.len()
        )));
    }
    let mut r = BitReader::new(packed);
    for c in out.iter_mut() {
        *c = r.get(bits) as u8;
    }
    Ok(())
}

/// Copies `count` b-bit codes from code index `src_index` of the packed
/// stream `src` to code index `dst_index` of `dst`, overwriting what was
/// there.
pub fn copy_codes(
    src: &[u8],
    src_index: usize,
    dst: &mut [u8],
    dst_index: usize,
    count: usize,
    bits: u32,
) {
    let b = bits as usize;
    copy_bits(src, src_index * b, dst, dst_index * b, count * b);
}

/// Copies `n` bits from bit `src_bit` of `src` to bit `dst_bit` of `dst`
/// (LSB-first bit order, as in the code streams), overwriting what was
/// there. Byte-aligned runs move a byte at a time.
pub fn copy_bits(src: &[u8], src_bit: usize, dst: &mut [u8], dst_bit: usize, n: usize) {
    let mut t = 0;
    while t < n {
        let (s, d) = (src_bit + t, dst_bit + t);
        if s % 8 == 0 && d % 8 == 0 && n - t >= 8 {
            let k = (n - t) / 8;
            dst[d / 8..d / 8 + k].copy_from_slice(&src[s / 8..s / 8 + k]);
            t += 8 * k;
            continue;
        }
        // Up to the next byte boundary of the destination, at most 8 bits.
        let take = (8 - d % 8).min(n - t);
        // Read `take` bits from src at s (may straddle two bytes).
        let lo = src[s / 8] as u16;
        let hi = src.get(s / 8 + 1).copied().unwrap_or(0) as u16;
        let v = (((hi << 8) | lo) >> (s % 8)) as u8 & ((1u16 << take) - 1) as u8;
        let mask = (((1u16 << take) - 1) as u8) << (d % 8);
        dst[d / 8] = (dst[d / 8] & !mask) | (v << (d % 8));
        t += take;
    }
}

/// Writes codes into a zero-initialised or overwritten byte slice, starting
/// at bit 0. Whole bytes are stored; the caller sizes the slice.
pub(crate) struct BitWriter<'a> {
    out: &'a mut [u8],
    byte: usize,
    acc: u64,
    nbits: u32,
}

impl<'a> BitWriter<'a> {
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        BitWriter {
            out,
            byte: 0,
            acc: 0,
            nbits: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn put(&mut self, code: u32, bits: u32) {
        self.acc |= (code as u64) << self.nbits;
        self.nbits += bits;
        if self.nbits >= 32 {
            self.out[self.byte..self.byte + 4].copy_from_slice(&(self.acc as u32).to_le_bytes());
            self.byte += 4;
            self.acc >>= 32;
            self.nbits -= 32;
        }
    }

    /// Flushes the partial tail, zero-filling its unused high bits.
    pub(crate) fn finish(mut self) {
        while self.nbits > 0 {
            self.out[self.byte] = self.acc as u8;
            self.byte += 1;
            self.acc >>= 8;
            self.nbits = self.nbits.saturating_sub(8);
        }
    }
}

/// Reads codes from a byte slice, starting at bit 0.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    byte: usize,
    acc: u64,
    nbits: u32,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            byte: 0,
            acc: 0,
            nbits: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn get(&mut self, bits: u32) -> u32 {
        if self.nbits < bits {
            if let Some(w) = self
                .data
                .get(self.byte..)
                .and_then(|rest| rest.first_chunk::<4>())
            {
                let w = u32::from_le_bytes(*w);
                self.acc |= (w as u64) << self.nbits;
                self.byte += 4;
                self.nbits += 32;
            } else {
                while self.nbits < bits {
                    let b = self.data.get(self.byte).copied().unwrap_or(0);
                    self.acc |= (b as u64) << self.nbits;
                    self.byte += 1;
                    self.nbits += 8;
                }
            }
        }
        let c = (self.acc & ((1u64 << bits) - 1)) as u32;
        self.acc >>= bits;
        self.nbits -= bits;
        c
    }
}
