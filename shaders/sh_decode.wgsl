// TurboQuant SH-rest decode for host renderers: include this module in a
// shader (prepend or concatenate its source), bind the four buffers below in
// bind group 1 (four, so that a host's own four fit WebGPU's default of 8
// storage buffers per stage), set the three overrides, and call `tq_sh_decode(i, &rest)` for
// Gaussian i. Nothing is decompressed ahead of time: the codes, the f16
// scales, the widths (per-Gaussian mode), the rotation Π and the codebooks
// are all the GPU holds.
//
// The CPU reference is CompressedSh::decode (src/splat/sh.rs), per Gaussian
// Quantizer::decode (src/codec/quantizer.rs) at that Gaussian's width b:
//     x_k = s · Σ_j Π_jk · centroid_b[code_j],   k = 0..d−1
// i.e. x = s·Πᵀ·c, and x = 0 at b = 0 (SH-rest dropped); with the sign
// flip (TQ_FLIP = 1) x_k is then negated where bit k of Gaussian i's sign
// words is set (tq_sign_word). The SH-rest vector
// x is the PLY's f_rest order (channel-major: red's (L+1)²−1 coefficients,
// then green's, then blue's).
//
// Two modes, chosen by TQ_BITS:
// - uniform (TQ_BITS = b in 1..=8): every Gaussian has width b; Gaussian i's
//   codes start at bit i·d·b, tq_tables holds the 2^b centroids after Π
//   and tq_meta is unused (bind any 4-byte buffer).
// - per-Gaussian (TQ_BITS = 0): Gaussian i's width b_i ∈ 0..=8 and first
//   code bit come from tq_meta, and width b's 2^b centroids sit at offset
//   2^b − 2 of the centroids in tq_tables (b = 1 at 0, b = 2 at 2, b = 3
//   at 6, …).

// SH-rest dimension d: 9, 24 or 45 for SH degree 1, 2, 3 (at most 45).
override TQ_D: u32;
// Bits per code b, 1..=8, shared by every Gaussian; 0 for per-Gaussian
// widths read from tq_meta.
override TQ_BITS: u32;
// 1 when the file's SH flags (header byte 61) have bit 0, the sign flip,
// set; 0 otherwise.
override TQ_FLIP: u32;

// Packed codes, LSB-first: Gaussian i's d codes of b_i bits each start at
// bit o_i = d·Σ_{k<i} b_k (i·d·b in the uniform mode), code j at bit
// o_i + j·b_i; bit n is bit n % 32 of word n / 32 (the file's byte stream
// read as little-endian u32 words, zero-padded to a whole word).
@group(1) @binding(0) var<storage, read> tq_codes: array<u32>;
// Scales as binary16 pairs: Gaussian 2k in the low half of word k, 2k+1 in
// the high half (+0 for width 0).
@group(1) @binding(1) var<storage, read> tq_scales: array<u32>;
// Π, d×d row-major (y = Π·u on encode), at [0, d²); then the centroids
// from d²: in the uniform mode the 2^b centroids, in the per-Gaussian mode
// those of every width b up to the largest used, 2^b of them at d² + 2^b − 2
// (zeros for widths not used).
@group(1) @binding(2) var<storage, read> tq_tables: array<f32>;
// Per-Gaussian mode only: two words per group of 8 Gaussians. Word 2g is
// o_{8g}, the first code bit of Gaussian 8g; word 2g + 1 holds the widths
// of Gaussians 8g..8g+7, 4 bits each, Gaussian 8g + k in bits 4k..4k+3
// (the file's SHW stream read as little-endian u32 words). 1 byte per
// Gaussian.
@group(1) @binding(3) var<storage, read> tq_meta: array<u32>;

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

// The PCG hash (Jarzynski & Olano 2020), as sign_word's in src/splat/sh.rs.
fn tq_pcg(x: u32) -> u32 {
    let s = x * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

// Sign word w of Gaussian i: bit j set negates coordinate 32·w + j.
fn tq_sign_word(i: u32, w: u32) -> u32 {
    return tq_pcg(tq_pcg(i) + w);
}

// The scale of Gaussian i.
fn tq_scale(i: u32) -> f32 {
    let word = tq_scales[i >> 1u];
    return tq_f16_bits_to_f32((word >> ((i & 1u) * 16u)) & 0xffffu);
}

// Per-Gaussian mode: (first code bit, width) of Gaussian i. The first bit
// is the group's plus d times the widths of the Gaussians before i in its
// group: their nibbles, added pairwise into bytes (each ≤ 16), then the
// four bytes (sum ≤ 56) by a multiply into the top byte.
fn tq_width_offset(i: u32) -> vec2<u32> {
    let g = i >> 3u;
    let k = i & 7u;
    let widths = tq_meta[2u * g + 1u];
    let below = widths & ((1u << (4u * k)) - 1u);
    let pairs = (below & 0x0f0f0f0fu) + ((below >> 4u) & 0x0f0f0f0fu);
    let before = (pairs * 0x01010101u) >> 24u;
    return vec2<u32>(tq_meta[2u * g] + before * TQ_D, (widths >> (4u * k)) & 15u);
}

// The b-bit code at bit `bit` of the stream (b in 1..=8; bit + b ≤ the
// stream's length, so word + 1 exists whenever it is read).
fn tq_code_at(bit: u32, b: u32) -> u32 {
    let word = bit >> 5u;
    let off = bit & 31u;
    var v = tq_codes[word] >> off;
    if off + b > 32u {
        v = v | (tq_codes[word + 1u] << (32u - off));
    }
    return v & ((1u << b) - 1u);
}

// Writes the d SH-rest values of Gaussian i to out[0..d) (the rest of `out`
// is zeroed; all of it at width 0).
fn tq_sh_decode(i: u32, out: ptr<function, array<f32, 45>>) {
    // Uniform mode: TQ_BITS is a constant and this is the old fixed-width
    // decode (the bit index i·d·b must fit in u32: n·d·b < 2^32).
    var b = TQ_BITS;
    var first = i * TQ_D * TQ_BITS;
    var table = TQ_D * TQ_D;
    if TQ_BITS == 0u {
        let m = tq_width_offset(i);
        first = m.x;
        b = m.y;
        table += (1u << b) - 2u;
    }
    let s = tq_scale(i);
    var c: array<f32, 45>;
    if b > 0u {
        for (var j = 0u; j < TQ_D; j++) {
            c[j] = tq_tables[table + tq_code_at(first + j * b, b)];
        }
    }
    // The signs to undo (none for a zero vector, width or scale 0: +0).
    var signs = vec2<u32>(0u, 0u);
    if TQ_FLIP != 0u && b > 0u && s != 0.0 {
        signs = vec2<u32>(tq_sign_word(i, 0u), tq_sign_word(i, 1u));
    }
    for (var k = 0u; k < 45u; k++) {
        var acc = 0.0;
        if k < TQ_D && s != 0.0 && b > 0u {
            // x_k = Σ_j Π_jk·c_j, summed in j order as the CPU does.
            for (var j = 0u; j < TQ_D; j++) {
                acc += tq_tables[j * TQ_D + k] * c[j];
            }
        }
        let v = acc * s;
        let neg = ((signs[min(k >> 5u, 1u)] >> (k & 31u)) & 1u) != 0u;
        (*out)[k] = select(v, -v, neg && k < TQ_D);
    }
}
