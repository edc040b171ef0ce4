// TurboQuant SH-rest decode for host renderers: include this module in a
// shader (prepend or concatenate its source), bind the four buffers below in
// bind group 1, set the two overrides, and call `tq_sh_decode(i, &rest)` for
// Gaussian i. Nothing is decompressed ahead of time: the codes, the f16
// scales, the rotation Π and the codebook are all the GPU holds.
//
// The CPU reference is Quantizer::decode (src/codec/quantizer.rs):
//     x_k = s · Σ_j Π_jk · centroid[code_j],   k = 0..d−1
// i.e. x = s·Πᵀ·c. The SH-rest vector x is the PLY's f_rest order
// (channel-major: red's (L+1)²−1 coefficients, then green's, then blue's).

// SH-rest dimension d: 9, 24 or 45 for SH degree 1, 2, 3 (at most 45).
override TQ_D: u32;
// Bits per code b, 1..=8.
override TQ_BITS: u32;

// Packed codes, LSB-first: code j of Gaussian i is the b bits starting at bit
// (i·d + j)·b of the stream, bit n being bit n % 32 of word n / 32 (the file's
// byte stream read as little-endian u32 words, zero-padded to a whole word).
@group(1) @binding(0) var<storage, read> tq_codes: array<u32>;
// Scales as binary16 pairs: Gaussian 2k in the low half of word k, 2k+1 in
// the high half.
@group(1) @binding(1) var<storage, read> tq_scales: array<u32>;
// Π, d×d row-major (y = Π·u on encode).
@group(1) @binding(2) var<storage, read> tq_rotation: array<f32>;
// The 2^b centroids of the codebook.
@group(1) @binding(3) var<storage, read> tq_centroids: array<f32>;

// binary16 bits → f32, exact, without the shader-f16 capability.
fn tq_f16_bits_to_f32(h: u32) -> f32 {
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

// The scale of Gaussian i.
fn tq_scale(i: u32) -> f32 {
    let word = tq_scales[i >> 1u];
    return tq_f16_bits_to_f32((word >> ((i & 1u) * 16u)) & 0xffffu);
}

// Code j of Gaussian i. The bit index must fit in u32: n·d·b < 2^32.
fn tq_code(i: u32, j: u32) -> u32 {
    let bit = (i * TQ_D + j) * TQ_BITS;
    let word = bit >> 5u;
    let off = bit & 31u;
    var v = tq_codes[word] >> off;
    if off + TQ_BITS > 32u {
        v = v | (tq_codes[word + 1u] << (32u - off));
    }
    return v & ((1u << TQ_BITS) - 1u);
}

// Writes the d SH-rest values of Gaussian i to out[0..d) (the rest of `out`
// is zeroed).
fn tq_sh_decode(i: u32, out: ptr<function, array<f32, 45>>) {
    let s = tq_scale(i);
    var c: array<f32, 45>;
    for (var j = 0u; j < TQ_D; j++) {
        c[j] = tq_centroids[tq_code(i, j)];
    }
    for (var k = 0u; k < 45u; k++) {
        var acc = 0.0;
        if k < TQ_D && s != 0.0 {
            // x_k = Σ_j Π_jk·c_j, summed in j order as the CPU does.
            for (var j = 0u; j < TQ_D; j++) {
                acc += tq_rotation[j * TQ_D + k] * c[j];
            }
        }
        (*out)[k] = acc * s;
    }
}
