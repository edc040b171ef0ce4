//! Codecs for the attributes other than SH-rest in the compact profile:
//! Morton order, chunked fixed-point ranges, opacity on the sigmoid scale
//! and smallest-three quaternions. Each quantiser states its error bound;
//! tests/scene_codec.rs checks the bounds.

use rayon::prelude::*;

/// The bits of each quantised attribute in the compact profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrBits {
    /// Per position axis, relative to the chunk's bounds (1..=16).
    pub position: u8,
    /// Per log-scale axis, relative to the chunk's range (1..=16).
    pub scale: u8,
    /// Per smallest-three quaternion component (1..=10).
    pub rotation: u8,
    /// Of sigmoid(opacity) on [0, 1] (1..=16).
    pub opacity: u8,
    /// Per DC colour channel, relative to the chunk's range (1..=16).
    pub dc: u8,
}

/// The compact profile's defaults, measured with `tq3d eval --split` and
/// `--attr-bits` on plant.splat (README, "Bit allocation"): at these widths
/// the attributes cost about 1.7 dB of render PSNR against 16/8/10/8/8 while
/// the file shrinks by 18 %, and SH-rest still dominates the error.
impl Default for AttrBits {
    fn default() -> Self {
        AttrBits {
            position: 12,
            scale: 6,
            rotation: 8,
            opacity: 6,
            dc: 6,
        }
    }
}

impl AttrBits {
    /// As stored in the header: position, scale, rotation, opacity, DC.
    pub fn to_array(self) -> [u8; 5] {
        [
            self.position,
            self.scale,
            self.rotation,
            self.opacity,
            self.dc,
        ]
    }

    /// From the header's five bytes.
    pub fn from_array(a: [u8; 5]) -> Self {
        AttrBits {
            position: a[0],
            scale: a[1],
            rotation: a[2],
            opacity: a[3],
            dc: a[4],
        }
    }

    /// Checks each width against its range; the message names the field.
    pub fn validate(self) -> Result<(), String> {
        let checks = [
            ("position", self.position, 16),
            ("scale", self.scale, 16),
            ("rotation", self.rotation, 10),
            ("opacity", self.opacity, 16),
            ("dc", self.dc, 16),
        ];
        for (name, b, max) in checks {
            if b == 0 || b > max {
                return Err(format!("{name} bits = {b}, must be in 1..={max}"));
            }
        }
        Ok(())
    }
}

/// Bytes of one stored code of `bits` bits: 1 up to 8 bits, else 2.
pub fn code_bytes(bits: u8) -> usize {
    if bits <= 8 { 1 } else { 2 }
}

/// Spreads the low 21 bits of `v` to every third bit.
fn spread3(v: u64) -> u64 {
    let mut x = v & 0x1f_ffff;
    x = (x | (x << 32)) & 0x001f_0000_0000_ffff;
    x = (x | (x << 16)) & 0x001f_0000_ff00_00ff;
    x = (x | (x << 8)) & 0x100f_00f0_0f00_f00f;
    x = (x | (x << 4)) & 0x10c3_0c30_c30c_30c3;
    x = (x | (x << 2)) & 0x1249_2492_4924_9249;
    x
}

/// The 63-bit Morton code of a point on a 21-bit grid over `[lo, hi]`.
pub fn morton(p: [f32; 3], lo: [f32; 3], hi: [f32; 3]) -> u64 {
    let mut code = 0u64;
    for a in 0..3 {
        let ext = (hi[a] as f64 - lo[a] as f64).max(f64::MIN_POSITIVE);
        let t = ((p[a] as f64 - lo[a] as f64) / ext * 2_097_151.0).round();
        code |= spread3(t.clamp(0.0, 2_097_151.0) as u64) << a;
    }
    code
}

/// The scene's bounding box.
pub fn bounds(points: &[[f32; 3]]) -> ([f32; 3], [f32; 3]) {
    points
        .par_iter()
        .fold(
            || ([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]),
            |(mut lo, mut hi), p| {
                for a in 0..3 {
                    lo[a] = lo[a].min(p[a]);
                    hi[a] = hi[a].max(p[a]);
                }
                (lo, hi)
            },
        )
        .reduce(
            || ([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]),
            |(l1, h1), (l2, h2)| {
                (
                    [l1[0].min(l2[0]), l1[1].min(l2[1]), l1[2].min(l2[2])],
                    [h1[0].max(h2[0]), h1[1].max(h2[1]), h1[2].max(h2[2])],
                )
            },
        )
}

/// Indices sorted by Morton code, ties by index: the compact profile's
/// storage order. Deterministic (the keys are unique).
pub fn morton_order(points: &[[f32; 3]]) -> Vec<u32> {
    let (lo, hi) = bounds(points);
    let mut keys: Vec<(u64, u32)> = points
        .par_iter()
        .enumerate()
        .map(|(i, &p)| (morton(p, lo, hi), i as u32))
        .collect();
    keys.par_sort_unstable();
    keys.into_iter().map(|(_, i)| i).collect()
}

/// Fixed-point code of `v` on `[lo, hi]` with `bits` bits: round((v − lo) /
/// (hi − lo) · (2^bits − 1)). A degenerate range gives 0.
pub fn quantise_range(v: f32, lo: f32, hi: f32, bits: u8) -> u16 {
    let m = ((1u32 << bits) - 1) as f64;
    let ext = hi as f64 - lo as f64;
    if ext <= 0.0 {
        return 0;
    }
    ((v as f64 - lo as f64) / ext * m).round().clamp(0.0, m) as u16
}

/// Inverse of [`quantise_range`]: lo + q/(2^bits − 1)·(hi − lo), rounded to
/// f32 once. Error ≤ (hi − lo)/(2·(2^bits − 1)) plus half an f32 ulp.
pub fn dequantise_range(q: u16, lo: f32, hi: f32, bits: u8) -> f32 {
    let m = ((1u32 << bits) - 1) as f64;
    (lo as f64 + q as f64 / m * (hi as f64 - lo as f64)) as f32
}

/// Opacity code: sigmoid(o) on [0, 1] with `bits` bits.
pub fn quantise_opacity(o: f32, bits: u8) -> u16 {
    let m = ((1u32 << bits) - 1) as f64;
    let a = 1.0 / (1.0 + (-(o as f64)).exp());
    (a * m).round().clamp(0.0, m) as u16
}

/// Inverse of [`quantise_opacity`], as a logit. The end codes map to
/// alpha 1/(2M) and 1 − 1/(2M) (M = 2^bits − 1) so the logit stays finite;
/// the alpha error is at most 1/(2M) everywhere.
pub fn dequantise_opacity(q: u16, bits: u8) -> f32 {
    let m = ((1u32 << bits) - 1) as f64;
    let a = (q as f64 / m).clamp(0.5 / m, 1.0 - 0.5 / m);
    (a / (1.0 - a)).ln() as f32
}

const SQRT1_2: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// Smallest-three code of a quaternion (w, x, y, z): 2 bits for the index
/// of the largest |component|, which is made non-negative (q and −q are the
/// same rotation), then the other three on [−1/√2, 1/√2] with `bits` bits
/// each, highest index first in the high bits. The quaternion is normalised
/// first, as the rasteriser does; a zero quaternion becomes the identity.
pub fn quantise_quat(q: [f32; 4], bits: u8) -> u32 {
    let mut v = q.map(|c| c as f64);
    let n = v.iter().map(|c| c * c).sum::<f64>().sqrt();
    if n == 0.0 {
        v = [1.0, 0.0, 0.0, 0.0];
    } else {
        v = v.map(|c| c / n);
    }
    let mut big = 0;
    for k in 1..4 {
        if v[k].abs() > v[big].abs() {
            big = k;
        }
    }
    if v[big] < 0.0 {
        v = v.map(|c| -c);
    }
    let m = ((1u32 << bits) - 1) as f64;
    let mut code = big as u32;
    for (k, &c) in v.iter().enumerate() {
        if k == big {
            continue;
        }
        let t = ((c + SQRT1_2) / (2.0 * SQRT1_2) * m).round().clamp(0.0, m) as u32;
        code = (code << bits) | t;
    }
    code
}

/// Inverse of [`quantise_quat`]: a unit quaternion (w, x, y, z). Each small
/// component is within 1/(√2·M) of the normalised input's (M = 2^bits − 1)
/// up to the sign of the whole quaternion.
pub fn dequantise_quat(code: u32, bits: u8) -> [f32; 4] {
    let m = ((1u32 << bits) - 1) as f64;
    let mask = (1u32 << bits) - 1;
    let big = (code >> (3 * bits as u32)) as usize & 3;
    let mut v = [0f64; 4];
    let mut shift = 2 * bits as u32;
    let mut sum = 0.0;
    for (k, c) in v.iter_mut().enumerate() {
        if k == big {
            continue;
        }
        let t = ((code >> shift) & mask) as f64;
        *c = t / m * (2.0 * SQRT1_2) - SQRT1_2;
        sum += *c * *c;
        shift = shift.wrapping_sub(bits as u32);
    }
    v[big] = (1.0 - sum).max(0.0).sqrt();
    let n = v.iter().map(|c| c * c).sum::<f64>().sqrt();
    v.map(|c| (c / n) as f32)
}

/// Splits an array of `elem`-byte little-endian values into byte planes
/// (all first bytes, then all second bytes, …): zstd finds far more
/// structure in the planes than in interleaved bytes.
pub fn to_byte_planes(bytes: &[u8], elem: usize) -> Vec<u8> {
    if elem == 1 {
        return bytes.to_vec();
    }
    debug_assert_eq!(bytes.len() % elem, 0);
    planes(bytes.len() / elem, elem, |k, i| bytes[i * elem + k])
}

/// `n` records of `elem` bytes as byte planes (`out[k·n + i]` = byte k of
/// record i, which `get(k, i)` gives), one plane per task: records built
/// on the fly need no interleaved copy first.
pub(crate) fn planes(n: usize, elem: usize, get: impl Fn(usize, usize) -> u8 + Sync) -> Vec<u8> {
    let mut out = vec![0u8; n * elem];
    if n > 0 {
        out.par_chunks_mut(n).enumerate().for_each(|(k, plane)| {
            for (i, o) in plane.iter_mut().enumerate() {
                *o = get(k, i);
            }
        });
    }
    out
}

/// Inverse of [`to_byte_planes`].
pub fn from_byte_planes(planes: &[u8], elem: usize) -> Vec<u8> {
    if elem == 1 {
        return planes.to_vec();
    }
    let n = planes.len() / elem;
    let mut out = vec![0u8; planes.len()];
    out.par_chunks_mut(elem * 4096)
        .enumerate()
        .for_each(|(c, dst)| {
            for (j, rec) in dst.chunks_exact_mut(elem).enumerate() {
                let i = c * 4096 + j;
                for (k, o) in rec.iter_mut().enumerate() {
                    *o = planes[k * n + i];
                }
            }
        });
    out
}
