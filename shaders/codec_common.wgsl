// Shared by every codec kernel family (prepended to dense.wgsl and
// hadamard.wgsl). The CPU reference is src/codec/quantizer.rs; the bit layout
// is docs/FORMAT.md ("Code packing").

// Vector dimension d.
override D: u32;
// Bits per coordinate b, 1..=8.
override BITS: u32;
// true: least-squares scale ‖x‖·⟨y, ĉ⟩/‖ĉ‖²; false: the norm ‖x‖.
override SCALE_LS: bool;
// true: scales are packed f16 pairs (vector 2k in the low half); false: f32.
override SCALE_F16: bool;

struct Params {
    // Vectors in this dispatch.
    n: u32,
    // Input (encode) or output (decode) element of vector 0, component 0.
    data_offset: u32,
    // Elements between consecutive vectors in the input/output.
    data_stride: u32,
    // First code word of vector 0 (codes of vector 0 start on a word boundary).
    code_offset: u32,
    // First scale of vector 0, counted in scales (even when SCALE_F16).
    scale_offset: u32,
    // Workgroups along x in a 2-D dispatch.
    groups_x: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Dense: the d×d matrix Π row-major. Hadamard: the sign vectors, round-major.
@group(0) @binding(1) var<storage, read> rot: array<f32>;
// Hadamard: the permutation, then its inverse. Dense: unused (one word).
@group(0) @binding(2) var<storage, read> perm: array<u32>;
// The 2^b centroids, then the 2^b − 1 boundaries.
@group(0) @binding(3) var<storage, read> tables: array<f32>;

fn centroid(code: u32) -> f32 {
    return tables[code];
}

// #{i : boundary_i < y}, by a branch-free binary search over the sorted
// boundaries (the CPU's quantise_one).
fn quantise(y: f32) -> u32 {
    let nb = 1u << BITS;
    var idx = 0u;
    var step = 1u << (BITS - 1u);
    loop {
        if step == 0u {
            break;
        }
        if tables[nb + idx + step - 1u] < y {
            idx += step;
        }
        step = step >> 1u;
    }
    return idx;
}

// The power of two 2^(127 − e) that brings the largest magnitude m into
// [1, 2) (clamped as on the CPU), and its inverse.
fn prescale(m: f32) -> vec2<f32> {
    let e = clamp((bitcast<u32>(m) >> 23u) & 0xffu, 1u, 253u);
    return vec2<f32>(bitcast<f32>((254u - e) << 23u), bitcast<f32>(e << 23u));
}

// f32 → binary16 bits, round to nearest even: the same result as the CPU's
// half::f16::from_f32, independent of the device's own conversion.
fn f32_to_f16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let exp = (b >> 23u) & 0xffu;
    let man = b & 0x7fffffu;
    if exp == 0xffu {
        var nan = 0u;
        if man != 0u {
            nan = 0x200u | (man >> 13u);
        }
        return sign | 0x7c00u | nan;
    }
    let e = i32(exp) - 112;
    if e >= 31 {
        return sign | 0x7c00u;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x800000u;
        let shift = u32(14 - e);
        var h = m >> shift;
        let rem = m & ((1u << shift) - 1u);
        let half = 1u << (shift - 1u);
        if rem > half || (rem == half && (h & 1u) == 1u) {
            h += 1u;
        }
        return sign | h;
    }
    var h = (u32(e) << 10u) | (man >> 13u);
    let rem = man & 0x1fffu;
    if rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u) {
        h += 1u;
    }
    return sign | h;
}

// binary16 bits (low half) → f32, exactly, without the optional
// SHADER_FLOAT16_IN_FLOAT32 capability that unpack2x16float needs on some
// backends.
fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let exp = (h >> 10u) & 0x1fu;
    let man = h & 0x3ffu;
    if exp == 0u {
        // Zero or subnormal: man · 2^−24, exact in f32.
        return bitcast<f32>(sign | bitcast<u32>(f32(man) * 5.9604645e-8));
    }
    if exp == 31u {
        return bitcast<f32>(sign | 0x7f800000u | (man << 13u));
    }
    return bitcast<f32>(sign | ((exp + 112u) << 23u) | (man << 13u));
}
