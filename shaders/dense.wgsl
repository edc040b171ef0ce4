// Dense-rotation codec for small d (45 for SH, or any d ≤ 128): one thread
// per vector, WG vectors per workgroup, Π staged in workgroup memory when it
// fits (MAT_IN_WG) and read from the storage buffer otherwise. Loads and
// stores go through a workgroup tile so that global memory is read and
// written in contiguous runs whatever the row stride. Mirrors
// Quantizer::encode_chunk_portable / decode_chunk_portable.
//
// Requires WG·D·BITS to be a multiple of 32 (WG = 32 always is), so that
// each workgroup's codes are whole words.

override WG: u32 = 32u;
override MAT_IN_WG: bool;
// D·D when MAT_IN_WG, else 1.
override MAT_LEN: u32;
// WG·D.
override TILE_LEN: u32;
// WG·D·BITS / 32.
override CODE_WORDS: u32;

// Tie flags, for GpuQuantizer::encode_exact (0 disables them). A vector with
// a rotated coordinate within TIE_EPS of a decision boundary, or whose scale
// lies within a relative TIE_REL of an f16 rounding midpoint, may round the
// other way on the CPU, whose sums run in another order. Such a vector is
// flagged by the sign bit of its stored scale (scales are never negative),
// and the host re-encodes it on the CPU.
override TIE_EPS: f32 = 0.0;
override TIE_REL: f32 = 0.0;
// Tests only: perturbs every rotated coordinate by ±SIM_ERR and the scale by
// a relative 2·SIM_ERR, imitating a device that rounds differently.
override SIM_ERR: f32 = 0.0;

const MAX_D: u32 = 128u;

@group(0) @binding(5) var<storage, read_write> codes: array<u32>;
@group(0) @binding(6) var<storage, read_write> scales: array<u32>;

var<workgroup> mat: array<f32, MAT_LEN>;
var<workgroup> tile: array<f32, TILE_LEN>;
var<workgroup> words: array<atomic<u32>, CODE_WORDS>;
var<workgroup> wscale: array<f32, WG>;

fn mat_at(i: u32) -> f32 {
    if MAT_IN_WG {
        return mat[i];
    }
    return rot[i];
}

fn stage_matrix(t: u32) {
    if MAT_IN_WG {
        for (var i = t; i < D * D; i += WG) {
            mat[i] = rot[i];
        }
    }
}

@compute @workgroup_size(WG)
fn encode(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = (wg.x + wg.y * params.groups_x) * WG;
    if first >= params.n {
        return;
    }
    let count = min(WG, params.n - first);
    stage_matrix(t);
    for (var i = t; i < WG * D; i += WG) {
        let v = i / D;
        var x = 0.0;
        if v < count {
            x = load_data(params.data_offset + (first + v) * params.data_stride + i % D);
        }
        tile[i] = x;
    }
    for (var i = t; i < CODE_WORDS; i += WG) {
        atomicStore(&words[i], 0u);
    }
    workgroupBarrier();

    // Scale and normalise (the CPU's normalise_block).
    var u: array<f32, MAX_D>;
    var m = 0.0;
    for (var k = 0u; k < D; k++) {
        let x = tile[t * D + k];
        u[k] = x;
        m = max(m, abs(x));
    }
    let p = prescale(m);
    var s2 = 0.0;
    for (var k = 0u; k < D; k++) {
        let x = u[k] * p.x;
        u[k] = x;
        s2 += x * x;
    }
    let r = sqrt(s2);
    var inv = 0.0;
    if r > 0.0 {
        inv = 1.0 / r;
    }
    for (var k = 0u; k < D; k++) {
        u[k] *= inv;
    }
    let norm = r * p.y;

    // Rotate, quantise, pack.
    var tie = false;
    var yc = 0.0;
    var cc = 0.0;
    var ca = 0.0;
    let bit0 = t * D * BITS;
    for (var j = 0u; j < D; j++) {
        var y = 0.0;
        for (var k = 0u; k < D; k++) {
            y += mat_at(j * D + k) * u[k];
        }
        if SIM_ERR != 0.0 {
            y += select(-SIM_ERR, SIM_ERR, ((j + t) & 1u) == 0u);
        }
        let code = quantise(y);
        let c = centroid(code);
        if TIE_EPS > 0.0 {
            let nb = 1u << BITS;
            if code > 0u && y - tables[nb + code - 1u] <= TIE_EPS {
                tie = true;
            }
            if code + 1u < nb && tables[nb + code] - y <= TIE_EPS {
                tie = true;
            }
        }
        yc += y * c;
        cc += c * c;
        ca += abs(c);
        if t < count {
            let bit = bit0 + j * BITS;
            let sh = bit & 31u;
            atomicOr(&words[bit >> 5u], code << sh);
            if sh + BITS > 32u {
                atomicOr(&words[(bit >> 5u) + 1u], code >> (32u - sh));
            }
        }
    }
    var s = norm;
    if SCALE_LS {
        s = norm * (yc / cc);
    }
    s *= 1.0 + 2.0 * SIM_ERR;
    // Coordinates within d·2⁻²³ of another device's (kernel.rs,
    // coordinate_error_bound) move ⟨y, ĉ⟩ by at most that times Σ|ĉ_j|:
    // the least-squares scale's share of the margin, per vector (at b = 1
    // it exceeds TIE_REL alone).
    var rel = TIE_REL;
    if SCALE_LS && TIE_EPS > 0.0 && yc != 0.0 {
        rel += f32(D) * 1.1920929e-7 * ca / abs(yc);
    }
    if TIE_REL > 0.0 && SCALE_F16 && f32_to_f16_bits(s * (1.0 + rel)) != f32_to_f16_bits(s * (1.0 - rel)) {
        tie = true;
    }
    // A zero vector rotates to exact zeros on every device: never a tie.
    if tie && r > 0.0 {
        s = -s;
    }
    wscale[t] = s;
    workgroupBarrier();

    let nwords = (count * D * BITS + 31u) / 32u;
    let word0 = params.code_offset + (first / WG) * CODE_WORDS;
    for (var i = t; i < nwords; i += WG) {
        codes[word0 + i] = atomicLoad(&words[i]);
    }
    if SCALE_F16 {
        // Two scales per word; scale_offset and first are even.
        if 2u * t < count {
            var hi = 0u;
            if 2u * t + 1u < count {
                hi = f32_to_f16_bits(wscale[2u * t + 1u]) << 16u;
            }
            scales[(params.scale_offset + first) / 2u + t] = f32_to_f16_bits(wscale[2u * t]) | hi;
        }
    } else if t < count {
        scales[params.scale_offset + first + t] = bitcast<u32>(s);
    }
}

@compute @workgroup_size(WG)
fn decode(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let first = (wg.x + wg.y * params.groups_x) * WG;
    if first >= params.n {
        return;
    }
    let count = min(WG, params.n - first);
    stage_matrix(t);
    let nwords = (count * D * BITS + 31u) / 32u;
    let word0 = params.code_offset + (first / WG) * CODE_WORDS;
    for (var i = t; i < CODE_WORDS; i += WG) {
        var w = 0u;
        if i < nwords {
            w = codes[word0 + i];
        }
        atomicStore(&words[i], w);
    }
    var s = 0.0;
    if t < count {
        if SCALE_F16 {
            let w = scales[(params.scale_offset + first + t) / 2u];
            s = f16_bits_to_f32(w >> (16u * ((params.scale_offset + first + t) & 1u)));
        } else {
            s = bitcast<f32>(scales[params.scale_offset + first + t]);
        }
    }
    workgroupBarrier();

    // Unpack and look up: c_j = centroid[code_j].
    var c: array<f32, MAX_D>;
    let bit0 = t * D * BITS;
    let mask = (1u << BITS) - 1u;
    for (var j = 0u; j < D; j++) {
        let bit = bit0 + j * BITS;
        let sh = bit & 31u;
        var code = atomicLoad(&words[bit >> 5u]) >> sh;
        if sh + BITS > 32u {
            code |= atomicLoad(&words[(bit >> 5u) + 1u]) << (32u - sh);
        }
        c[j] = centroid(code & mask);
    }
    // x = s · Πᵀ c, through the tile so that stores are contiguous.
    for (var k = 0u; k < D; k++) {
        var x = 0.0;
        for (var j = 0u; j < D; j++) {
            x += mat_at(j * D + k) * c[j];
        }
        var out = 0.0;
        if s != 0.0 {
            out = x * s;
        }
        tile[t * D + k] = out;
    }
    workgroupBarrier();
    for (var i = t; i < count * D; i += WG) {
        store_data(params.data_offset + (first + i / D) * params.data_stride + i % D, tile[i]);
    }
}
