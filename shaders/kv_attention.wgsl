// Attention over a key/value cache, softmax(q·Kᵀ/√d)·V per head, straight
// from TurboQuant codes (`attend_codes`) or from plain f16 K/V packed two per
// u32 (`attend_f16`, the baseline). The CPU reference is kv::attention::attend.
//
// One workgroup per (block of QB queries, head); x = query block, y = head.
// Tokens go in blocks of WG: thread i computes the logits of token i of the
// block for all QB queries (one code read serves QB queries), then every
// thread owns head positions lid, lid+WG, … and adds the block's
// probability-weighted values there, with an online softmax between blocks.
//
// From codes, a key unit of a segment gives ⟨q, k̂⟩ = s·⟨Πq, c[idx]⟩, so each
// query is rotated once per key segment; values are summed in the rotated
// basis (Σ p·s·c[idx]) and rotated back once per query and value segment.
//
// Table `tab` (u32 words, f32 by bitcast): per tensor a head table at
// P.k_heads / P.v_heads of (first segment record, segment count) per head;
// a segment record of SEG words: dim, first position in the head's rotated
// layout, offset of its channel list, offset of its row-major d×d Π, its
// unit index within a token, then the offsets of its centroid tables for
// widths 1..8. Means at P.k_mean / P.v_mean (NONE: no mean).
// Directory `dir`: per unit (keys, then values from P.v_dir), the bit offset
// of its codes and f16(scale) | width << 16.

override WG: u32 = 64u;

const QB: u32 = 4u;
const MAX_HD: u32 = 256u;
const MAX_WG: u32 = 128u;
const MAX_OWN: u32 = 8u; // MAX_HD / smallest WG (32)
const SEG: u32 = 16u;
const NONE: u32 = 0xffffffffu;
const LOW: f32 = -3.0e38; // finite "no max yet": exp(LOW - m) is 0, never NaN

struct Params {
    n_queries: u32,
    tokens: u32,
    head_dim: u32,
    width: u32,
    k_upt: u32,
    v_upt: u32,
    k_heads: u32,
    v_heads: u32,
    k_mean: u32,
    v_mean: u32,
    v_dir: u32,
    q_base: u32,
    inv_sqrt: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> k_data: array<u32>;
@group(0) @binding(4) var<storage, read> v_data: array<u32>;
@group(0) @binding(5) var<storage, read> dir: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> tab: array<u32>;

// Queries (raw, then rotated per key segment) and value accumulators.
var<workgroup> qrot: array<f32, 1024>; // QB * MAX_HD
var<workgroup> acc: array<f32, 1024>;
var<workgroup> lg: array<f32, 512>; // QB * MAX_WG
var<workgroup> pw: array<f32, 512>;
var<workgroup> qmu: array<f32, QB>;

fn k_code(bit: u32, b: u32) -> u32 {
    let w = bit >> 5u;
    let sh = bit & 31u;
    var x = k_data[w] >> sh;
    if sh + b > 32u {
        x |= k_data[w + 1u] << (32u - sh);
    }
    return x & ((1u << b) - 1u);
}

fn v_code(bit: u32, b: u32) -> u32 {
    let w = bit >> 5u;
    let sh = bit & 31u;
    var x = v_data[w] >> sh;
    if sh + b > 32u {
        x |= v_data[w + 1u] << (32u - sh);
    }
    return x & ((1u << b) - 1u);
}

fn tabf(i: u32) -> f32 {
    return bitcast<f32>(tab[i]);
}

fn width_of(e: vec2<u32>) -> u32 {
    return e.y >> 16u;
}

// The f16 scale, widened by hand: unpack2x16float needs a capability
// (SHADER_F16_IN_F32) that llvmpipe and GL ES devices may lack.
fn scale_of(e: vec2<u32>) -> f32 {
    let h = e.y & 0xffffu;
    let ex = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    var x = ldexp(f32(m), -24);
    if ex != 0u {
        x = ldexp(f32(m | 0x400u), i32(ex) - 25);
    }
    return select(x, -x, (h & 0x8000u) != 0u);
}

// The record of the segment of head table `ht` holding position p.
fn segment_at(ht: u32, p: u32) -> u32 {
    let first = tab[ht];
    let n = tab[ht + 1u];
    var rec = first;
    for (var i = 0u; i < n; i++) {
        let r = first + i * SEG;
        if p >= tab[r + 1u] && p < tab[r + 1u] + tab[r] {
            rec = r;
        }
    }
    return rec;
}

@compute @workgroup_size(WG)
fn attend_codes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.y;
    let q0 = P.q_base + wid.x * QB;
    let hd = P.head_dim;
    // Raw queries go to `acc` first, then rotated into `qrot`.
    for (var qb = 0u; qb < QB; qb++) {
        for (var c = lid; c < hd; c += WG) {
            var x = 0.0;
            if q0 + qb < P.n_queries {
                x = queries[(q0 + qb) * P.width + h * hd + c];
            }
            acc[qb * MAX_HD + c] = x;
        }
    }
    workgroupBarrier();
    let kh = P.k_heads + 2u * h;
    let kfirst = tab[kh];
    let kn = tab[kh + 1u];
    for (var p = lid; p < hd; p += WG) {
        let s = segment_at(kh, p);
        let d = tab[s];
        let ch = tab[s + 2u];
        let rot = tab[s + 3u] + (p - tab[s + 1u]) * d;
        for (var qb = 0u; qb < QB; qb++) {
            var sum = 0.0;
            for (var i = 0u; i < d; i++) {
                sum += tabf(rot + i) * acc[qb * MAX_HD + tab[ch + i]];
            }
            qrot[qb * MAX_HD + p] = sum;
        }
    }
    if lid == 0u {
        for (var qb = 0u; qb < QB; qb++) {
            var sum = 0.0;
            if P.k_mean != NONE {
                for (var c = 0u; c < hd; c++) {
                    sum += acc[qb * MAX_HD + c] * tabf(P.k_mean + h * hd + c);
                }
            }
            qmu[qb] = sum;
        }
    }
    workgroupBarrier();

    // The value positions this thread owns: segment record and index.
    let vh = P.v_heads + 2u * h;
    var vrec: array<u32, MAX_OWN>;
    var vpos: array<u32, MAX_OWN>;
    var own = 0u;
    for (var p = lid; p < hd; p += WG) {
        let s = segment_at(vh, p);
        vrec[own] = s;
        vpos[own] = p - tab[s + 1u];
        for (var qb = 0u; qb < QB; qb++) {
            acc[qb * MAX_HD + p] = 0.0;
        }
        own++;
    }

    var m: array<f32, QB>;
    var l: array<f32, QB>;
    for (var qb = 0u; qb < QB; qb++) {
        m[qb] = LOW;
        l[qb] = 0.0;
    }
    for (var t0 = 0u; t0 < P.tokens; t0 += WG) {
        let nb = min(WG, P.tokens - t0);
        if lid < nb {
            let t = t0 + lid;
            var dot: array<f32, QB>;
            for (var i = 0u; i < kn; i++) {
                let rec = kfirst + i * SEG;
                let e = dir[t * P.k_upt + tab[rec + 4u]];
                let b = width_of(e);
                if b == 0u {
                    continue;
                }
                let d = tab[rec];
                let pos = tab[rec + 1u];
                let cb = tab[rec + 4u + b];
                var part: array<f32, QB>;
                for (var r = 0u; r < d; r++) {
                    let c = tabf(cb + k_code(e.x + r * b, b));
                    for (var qb = 0u; qb < QB; qb++) {
                        part[qb] += qrot[qb * MAX_HD + pos + r] * c;
                    }
                }
                let sc = scale_of(e);
                for (var qb = 0u; qb < QB; qb++) {
                    dot[qb] += sc * part[qb];
                }
            }
            for (var qb = 0u; qb < QB; qb++) {
                lg[qb * MAX_WG + lid] = (dot[qb] + qmu[qb]) * P.inv_sqrt;
            }
        }
        workgroupBarrier();
        // Every thread finds the same running max; each its token's weight.
        var mn: array<f32, QB>;
        for (var qb = 0u; qb < QB; qb++) {
            var bm = m[qb];
            for (var j = 0u; j < nb; j++) {
                bm = max(bm, lg[qb * MAX_WG + j]);
            }
            mn[qb] = bm;
            if lid < nb {
                pw[qb * MAX_WG + lid] = exp(lg[qb * MAX_WG + lid] - bm);
            }
        }
        workgroupBarrier();
        var alpha: array<f32, QB>;
        for (var qb = 0u; qb < QB; qb++) {
            alpha[qb] = exp(m[qb] - mn[qb]);
            var sum = 0.0;
            for (var j = 0u; j < nb; j++) {
                sum += pw[qb * MAX_WG + j];
            }
            l[qb] = l[qb] * alpha[qb] + sum;
            m[qb] = mn[qb];
        }
        for (var o = 0u; o < own; o++) {
            let p = lid + o * WG;
            let rec = vrec[o];
            let r = vpos[o];
            let unit = P.v_dir + tab[rec + 4u];
            var a: array<f32, QB>;
            for (var qb = 0u; qb < QB; qb++) {
                a[qb] = acc[qb * MAX_HD + p] * alpha[qb];
            }
            for (var j = 0u; j < nb; j++) {
                let e = dir[unit + (t0 + j) * P.v_upt];
                let b = width_of(e);
                if b == 0u {
                    continue;
                }
                let c = scale_of(e) * tabf(tab[rec + 4u + b] + v_code(e.x + r * b, b));
                for (var qb = 0u; qb < QB; qb++) {
                    a[qb] += pw[qb * MAX_WG + j] * c;
                }
            }
            for (var qb = 0u; qb < QB; qb++) {
                acc[qb * MAX_HD + p] = a[qb];
            }
        }
        workgroupBarrier();
    }

    // Back from the rotated basis, x_i = Σ_r Π[r, i]·y_r, and scattered to
    // channels.
    for (var o = 0u; o < own; o++) {
        let rec = vrec[o];
        let i = vpos[o];
        let d = tab[rec];
        let pos = tab[rec + 1u];
        let rot = tab[rec + 3u];
        let c = h * hd + tab[tab[rec + 2u] + i];
        var mean = 0.0;
        if P.v_mean != NONE {
            mean = tabf(P.v_mean + c);
        }
        for (var qb = 0u; qb < QB; qb++) {
            if q0 + qb < P.n_queries {
                var x = 0.0;
                for (var r = 0u; r < d; r++) {
                    x += tabf(rot + r * d + i) * acc[qb * MAX_HD + pos + r];
                }
                out[(q0 + qb) * P.width + c] = x / l[qb] + mean;
            }
        }
    }
}

// ---- f16 baseline (needs SHADER_F16_IN_F32 for unpack2x16float) ----

fn k_half(i: u32) -> f32 {
    return unpack2x16float(k_data[i >> 1u])[i & 1u];
}

fn v_half(i: u32) -> f32 {
    return unpack2x16float(v_data[i >> 1u])[i & 1u];
}

// Raw queries of this block and head into `qrot`, zero past n_queries.
fn load_queries(q0: u32, h: u32, lid: u32) {
    let hd = P.head_dim;
    for (var qb = 0u; qb < QB; qb++) {
        for (var c = lid; c < hd; c += WG) {
            var x = 0.0;
            if q0 + qb < P.n_queries {
                x = queries[(q0 + qb) * P.width + h * hd + c];
            }
            qrot[qb * MAX_HD + c] = x;
        }
    }
}

// The same attention over f16 K and V (row-major [tokens, width], two
// values per u32): the baseline compressed attention is measured against.
@compute @workgroup_size(WG)
fn attend_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.y;
    let q0 = P.q_base + wid.x * QB;
    let hd = P.head_dim;
    let base = h * hd;
    load_queries(q0, h, lid);
    for (var p = lid; p < hd; p += WG) {
        for (var qb = 0u; qb < QB; qb++) {
            acc[qb * MAX_HD + p] = 0.0;
        }
    }
    workgroupBarrier();
    var m: array<f32, QB>;
    var l: array<f32, QB>;
    for (var qb = 0u; qb < QB; qb++) {
        m[qb] = LOW;
        l[qb] = 0.0;
    }
    for (var t0 = 0u; t0 < P.tokens; t0 += WG) {
        let nb = min(WG, P.tokens - t0);
        if lid < nb {
            let row = (t0 + lid) * P.width + base;
            var dot: array<f32, QB>;
            for (var c = 0u; c < hd; c++) {
                let k = k_half(row + c);
                for (var qb = 0u; qb < QB; qb++) {
                    dot[qb] += qrot[qb * MAX_HD + c] * k;
                }
            }
            for (var qb = 0u; qb < QB; qb++) {
                lg[qb * MAX_WG + lid] = dot[qb] * P.inv_sqrt;
            }
        }
        workgroupBarrier();
        var mn: array<f32, QB>;
        for (var qb = 0u; qb < QB; qb++) {
            var bm = m[qb];
            for (var j = 0u; j < nb; j++) {
                bm = max(bm, lg[qb * MAX_WG + j]);
            }
            mn[qb] = bm;
            if lid < nb {
                pw[qb * MAX_WG + lid] = exp(lg[qb * MAX_WG + lid] - bm);
            }
        }
        workgroupBarrier();
        var alpha: array<f32, QB>;
        for (var qb = 0u; qb < QB; qb++) {
            alpha[qb] = exp(m[qb] - mn[qb]);
            var sum = 0.0;
            for (var j = 0u; j < nb; j++) {
                sum += pw[qb * MAX_WG + j];
            }
            l[qb] = l[qb] * alpha[qb] + sum;
            m[qb] = mn[qb];
        }
        for (var p = lid; p < hd; p += WG) {
            var a: array<f32, QB>;
            for (var qb = 0u; qb < QB; qb++) {
                a[qb] = acc[qb * MAX_HD + p] * alpha[qb];
            }
            for (var j = 0u; j < nb; j++) {
                let x = v_half((t0 + j) * P.width + base + p);
                for (var qb = 0u; qb < QB; qb++) {
                    a[qb] += pw[qb * MAX_WG + j] * x;
                }
            }
            for (var qb = 0u; qb < QB; qb++) {
                acc[qb * MAX_HD + p] = a[qb];
            }
        }
        workgroupBarrier();
    }
    for (var p = lid; p < hd; p += WG) {
        for (var qb = 0u; qb < QB; qb++) {
            if q0 + qb < P.n_queries {
                out[(q0 + qb) * P.width + base + p] = acc[qb * MAX_HD + p] / l[qb];
            }
        }
    }
}
