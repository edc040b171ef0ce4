// Randomized-Hadamard codec for power-of-two d from 32 to 4096: one
// workgroup per vector, E = d / WG values per thread held in registers.
//
// Two register layouts cover every bit of an index i < d:
//   A: thread t holds i = t·E + r   (r < E)  — butterflies on bits 0..log2(E)
//   B: thread t holds i = t + WG·r           — butterflies on bits log2(WG)..log2(d)
// E ≥ √d, so A and B together cover all bits, and a Walsh–Hadamard
// transform costs one exchange through workgroup memory. Butterflies on
// different bits commute, so a round may start in either layout.
//
// Three rounds, as HADAMARD_ROUNDS on the CPU:
//   forward  x ← (1/√d)³ · H S₂ · H S₁ · P · H S₀ · x
//   inverse  the steps backwards.
// Mirrors HadamardRotation::forward_block / inverse_block.

// Threads per workgroup, d / E.
override WG: u32;
// Values per thread, a power of two ≥ 32.
override E: u32;
override LOG_E: u32;
// 2·log2(E) − log2(d): layout-B bits already done in layout A.
override SKIP_B: u32;
// (1/√d)³, rounded to f32 exactly as the CPU rounds it.
override SCALE: f32;

const MAX_E: u32 = 64u;

@group(0) @binding(5) var<storage, read_write> codes: array<u32>;
@group(0) @binding(6) var<storage, read_write> scales: array<atomic<u32>>;

var<workgroup> xchg: array<f32, D>;
var<workgroup> red: array<f32, WG>;
var<workgroup> bcast: vec2<f32>;

fn butterflies(x: ptr<function, array<f32, MAX_E>>, first_bit: u32) {
    for (var q = first_bit; q < LOG_E; q++) {
        let h = 1u << q;
        for (var r = 0u; r < E; r++) {
            if (r & h) == 0u {
                let a = (*x)[r];
                let b = (*x)[r + h];
                (*x)[r] = a + b;
                (*x)[r + h] = a - b;
            }
        }
    }
}

fn index_a(t: u32, r: u32) -> u32 {
    return t * E + r;
}

fn index_b(t: u32, r: u32) -> u32 {
    return t + WG * r;
}

const NO_PERM: u32 = 0xffffffffu;

fn index_in(t: u32, r: u32, layout_b: bool) -> u32 {
    if layout_b {
        return index_b(t, r);
    }
    return index_a(t, r);
}

// Moves the vector between layouts through workgroup memory, optionally
// permuting it on the way: new[j] = old[perm[perm_base + j]].
fn exchange(x: ptr<function, array<f32, MAX_E>>, t: u32, from_b: bool, to_b: bool, perm_base: u32) {
    for (var r = 0u; r < E; r++) {
        xchg[index_in(t, r, from_b)] = (*x)[r];
    }
    workgroupBarrier();
    for (var r = 0u; r < E; r++) {
        var j = index_in(t, r, to_b);
        if perm_base != NO_PERM {
            j = perm[perm_base + j];
        }
        (*x)[r] = xchg[j];
    }
    workgroupBarrier();
}

fn signs_a(x: ptr<function, array<f32, MAX_E>>, t: u32, round: u32) {
    for (var r = 0u; r < E; r++) {
        (*x)[r] *= rot[round * D + index_a(t, r)];
    }
}

fn signs_b(x: ptr<function, array<f32, MAX_E>>, t: u32, round: u32) {
    for (var r = 0u; r < E; r++) {
        (*x)[r] *= rot[round * D + index_b(t, r)];
    }
}

// Sum and max of one value per thread, combined in thread order.
fn reduce(t: u32, v: f32, use_max: bool) -> f32 {
    red[t] = v;
    workgroupBarrier();
    if t == 0u {
        var acc = 0.0;
        for (var i = 0u; i < WG; i++) {
            if use_max {
                acc = max(acc, red[i]);
            } else {
                acc += red[i];
            }
        }
        bcast = vec2<f32>(acc, 0.0);
    }
    workgroupBarrier();
    let out = bcast.x;
    workgroupBarrier();
    return out;
}

// Loads vector v in layout A; returns this thread's largest magnitude.
fn load_a(x: ptr<function, array<f32, MAX_E>>, v: u32, t: u32) -> f32 {
    var m = 0.0;
    let base = params.data_offset + v * params.data_stride;
    for (var r = 0u; r < E; r++) {
        let val = load_data(base + index_a(t, r));
        (*x)[r] = val;
        m = max(m, abs(val));
    }
    return m;
}

// Multiplies by the prescale; returns this thread's sum of squares.
fn prescale_a(x: ptr<function, array<f32, MAX_E>>, pre: f32) -> f32 {
    var s2 = 0.0;
    for (var r = 0u; r < E; r++) {
        let val = (*x)[r] * pre;
        (*x)[r] = val;
        s2 += val * val;
    }
    return s2;
}

fn scale_a(x: ptr<function, array<f32, MAX_E>>, f: f32) {
    for (var r = 0u; r < E; r++) {
        (*x)[r] *= f;
    }
}

// Quantises and packs this thread's E values (layout A): E·BITS contiguous
// bits, a whole number of words because E is a multiple of 32. Returns the
// partial sums (Σ y·c, Σ c²) of the least-squares scale.
fn quantise_pack_a(x: ptr<function, array<f32, MAX_E>>, v: u32, t: u32) -> vec2<f32> {
    var yc = 0.0;
    var cc = 0.0;
    let word0 = params.code_offset + v * (D * BITS / 32u) + t * (E * BITS / 32u);
    var acc = 0u;
    var filled = 0u;
    var w = 0u;
    for (var r = 0u; r < E; r++) {
        let y = (*x)[r] * SCALE;
        let code = quantise(y);
        let c = centroid(code);
        yc += y * c;
        cc += c * c;
        acc |= code << filled;
        filled += BITS;
        if filled >= 32u {
            codes[word0 + w] = acc;
            w += 1u;
            filled -= 32u;
            acc = 0u;
            if filled > 0u {
                acc = code >> (BITS - filled);
            }
        }
    }
    return vec2<f32>(yc, cc);
}

// Unpacks this thread's E codes (layout A) and looks up their centroids.
fn unpack_a(x: ptr<function, array<f32, MAX_E>>, v: u32, t: u32) {
    let word0 = params.code_offset + v * (D * BITS / 32u) + t * (E * BITS / 32u);
    let mask = (1u << BITS) - 1u;
    var acc = codes[word0];
    var w = 1u;
    var avail = 32u;
    for (var r = 0u; r < E; r++) {
        var code: u32;
        if avail >= BITS {
            code = acc & mask;
            acc = acc >> BITS;
            avail -= BITS;
            if avail == 0u && r + 1u < E {
                acc = codes[word0 + w];
                w += 1u;
                avail = 32u;
            }
        } else {
            let next = codes[word0 + w];
            w += 1u;
            code = (acc | (next << avail)) & mask;
            acc = next >> (BITS - avail);
            avail = 32u - (BITS - avail);
        }
        (*x)[r] = centroid(code);
    }
}

fn write_scale(v: u32, s: f32) {
    let i = params.scale_offset + v;
    if SCALE_F16 {
        // Neighbouring vectors share a word: the host zeroes the range first.
        atomicOr(&scales[i / 2u], f32_to_f16_bits(s) << (16u * (i & 1u)));
    } else {
        atomicStore(&scales[i], bitcast<u32>(s));
    }
}

fn read_scale(v: u32) -> f32 {
    let i = params.scale_offset + v;
    if SCALE_F16 {
        return f16_bits_to_f32(atomicLoad(&scales[i / 2u]) >> (16u * (i & 1u)));
    }
    return bitcast<f32>(atomicLoad(&scales[i]));
}

// out = x · SCALE · s, or +0.0 when s = 0 (the CPU's zero vector).
fn output_value(x: f32, s: f32) -> f32 {
    if s != 0.0 {
        return x * SCALE * s;
    }
    return 0.0;
}

@compute @workgroup_size(WG)
fn encode(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let v = wg.x + wg.y * params.groups_x;
    if v >= params.n {
        return;
    }
    var x: array<f32, MAX_E>;
    let p = prescale(reduce(t, load_a(&x, v, t), true));
    let rr = sqrt(reduce(t, prescale_a(&x, p.x), false));
    var inv = 0.0;
    if rr > 0.0 {
        inv = 1.0 / rr;
    }
    scale_a(&x, inv);
    let norm = rr * p.y;

    // Round 0, then the permutation; round 1; round 2 (starting in B).
    signs_a(&x, t, 0u);
    butterflies(&x, 0u);
    exchange(&x, t, false, true, NO_PERM);
    butterflies(&x, SKIP_B);
    exchange(&x, t, true, false, 0u);
    signs_a(&x, t, 1u);
    butterflies(&x, 0u);
    exchange(&x, t, false, true, NO_PERM);
    butterflies(&x, SKIP_B);
    signs_b(&x, t, 2u);
    butterflies(&x, SKIP_B);
    exchange(&x, t, true, false, NO_PERM);
    butterflies(&x, 0u);

    let sums = quantise_pack_a(&x, v, t);
    var s = norm;
    if SCALE_LS {
        s = norm * (reduce(t, sums.x, false) / reduce(t, sums.y, false));
    }
    if t == 0u {
        write_scale(v, s);
    }
}

@compute @workgroup_size(WG)
fn decode(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let v = wg.x + wg.y * params.groups_x;
    if v >= params.n {
        return;
    }
    var x: array<f32, MAX_E>;
    unpack_a(&x, v, t);
    let s = read_scale(v);

    // Inverse of round 2, round 1, the permutation, round 0.
    butterflies(&x, 0u);
    exchange(&x, t, false, true, NO_PERM);
    butterflies(&x, SKIP_B);
    signs_b(&x, t, 2u);
    butterflies(&x, SKIP_B);
    exchange(&x, t, true, false, NO_PERM);
    butterflies(&x, 0u);
    signs_a(&x, t, 1u);
    exchange(&x, t, false, false, D);
    butterflies(&x, 0u);
    exchange(&x, t, false, true, NO_PERM);
    butterflies(&x, SKIP_B);
    signs_b(&x, t, 0u);

    let base = params.data_offset + v * params.data_stride;
    for (var r = 0u; r < E; r++) {
        store_data(base + index_b(t, r), output_value(x[r], s));
    }
}
