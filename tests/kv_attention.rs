//! Attention straight from a coded key/value cache: the CPU reference
//! (`kv::attention::attend`, `logits`) against exact attention over the
//! decoded tensors, and the WGSL kernels (`gpu::attention`) against the CPU
//! reference on lavapipe (CI) or any adapter; the f16 baseline kernel
//! against exact attention over f16-rounded K and V.
//!
//! Locally a machine with no adapter skips the GPU tests with a note; under
//! CI or REQUIRE_GPU=1 a missing adapter fails.

mod common;

use std::sync::{Arc, OnceLock};

use common::data::gaussian;
use common::gpu::{context, note};
use turboquant3d::gpu::attention::{
    AttentionKernels, GpuAttention, KV_ATTENTION_WGSL, attention_source,
};
use turboquant3d::kv::attention::{Heads, attend, attend_exact, logits};
use turboquant3d::kv::{CodedTensor, Plan};
use turboquant3d::{Error, kv::coded::round_f16};

/// Widths 0..=8 in a scrambled order, so that every width, zeros included,
/// lands on every kind of unit.
fn widths(n: usize, seed: u64, lo: u8) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + ((s >> 33) % (9 - lo as u64)) as u8
        })
        .collect()
}

/// Head `h` of `head_dim` split into an outlier segment (every 7th
/// channel from `h`) and the rest; head 0 is kept whole.
fn outlier_plan(heads: usize, head_dim: usize) -> Plan {
    let segments = (0..heads)
        .map(|h| {
            if h == 0 {
                return vec![(0..head_dim as u32).collect()];
            }
            let (out, rest): (Vec<u32>, Vec<u32>) =
                (0..head_dim as u32).partition(|c| (c + h as u32).is_multiple_of(7));
            vec![out, rest]
        })
        .collect();
    Plan::new(heads, head_dim, segments).unwrap()
}

/// One attention problem: queries, a coded K and V, and the shape.
struct Case {
    name: &'static str,
    q: Vec<f32>,
    k: CodedTensor,
    v: CodedTensor,
    heads: Heads,
}

/// Keys get a per-channel offset (what centring removes) and queries a
/// spread that makes the softmax far from uniform.
fn case(
    name: &'static str,
    heads: Heads,
    tokens: usize,
    n_q: usize,
    (k_plan, v_plan): (Plan, Plan),
    lo_width: u8,
    seed: u64,
) -> Case {
    let w = heads.width();
    let offset: Vec<f32> = (0..w).map(|c| ((c * 37 % 11) as f32 - 5.0) * 0.3).collect();
    let mut kx = gaussian(tokens, w, seed);
    for (i, x) in kx.iter_mut().enumerate() {
        *x += offset[i % w];
    }
    let vx = gaussian(tokens, w, seed + 1);
    let q: Vec<f32> = gaussian(n_q, w, seed + 2).iter().map(|x| 2.0 * x).collect();
    let k_mean = Some(offset.clone());
    let v_mean = Some(vec![0.25; w]);
    let ku = k_plan.units_per_token() * tokens;
    let vu = v_plan.units_per_token() * tokens;
    let k = CodedTensor::encode(
        &kx,
        tokens,
        k_plan,
        k_mean,
        widths(ku, seed, lo_width),
        seed,
    )
    .unwrap();
    let v = CodedTensor::encode(
        &vx,
        tokens,
        v_plan,
        v_mean,
        widths(vu, seed + 9, lo_width),
        seed + 5,
    )
    .unwrap();
    Case {
        name,
        q,
        k,
        v,
        heads,
    }
}

fn cases() -> Vec<Case> {
    let h = |heads, head_dim| Heads { heads, head_dim };
    vec![
        case(
            "1×64 uniform, 1 token",
            h(1, 64),
            1,
            3,
            (Plan::uniform(1, 64).unwrap(), Plan::uniform(1, 64).unwrap()),
            0,
            1,
        ),
        case(
            "4×48 outlier keys, uniform values, 300 tokens",
            h(4, 48),
            300,
            7,
            (outlier_plan(4, 48), Plan::uniform(4, 48).unwrap()),
            0,
            2,
        ),
        case(
            "4×64 uniform keys, outlier values, 129 tokens",
            h(4, 64),
            129,
            5,
            (Plan::uniform(4, 64).unwrap(), outlier_plan(4, 64)),
            0,
            3,
        ),
        case(
            "2×256 outlier both, 70 tokens, widths ≥ 1",
            h(2, 256),
            70,
            4,
            (outlier_plan(2, 256), outlier_plan(2, 256)),
            1,
            4,
        ),
    ]
}

/// The largest |a − b| / (1 + |b|).
fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&a, &b)| (a as f64 - b as f64).abs() / (1.0 + (b as f64).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn attention_from_codes_equals_exact_attention_over_the_decoded_cache() {
    for c in cases() {
        let (kd, vd) = (c.k.decode().unwrap(), c.v.decode().unwrap());
        let want = attend_exact(&c.q, &kd, &vd, c.k.tokens, c.heads).unwrap();
        let got = attend(&c.q, &c.k, &c.v, c.heads).unwrap();
        // Both sum in f64; what differs is the f32 rounding of the decoded
        // values (Πᵀ applied in f32), a few ulps of each.
        let err = max_rel(&got, &want);
        assert!(err < 1e-5, "{}: {err:e}", c.name);
        // Not uniform: the output is not just the mean of V.
        let spread = got.iter().map(|&g| (g - got[0]).abs()).fold(0f32, f32::max);
        assert!(spread > 1e-2, "{}", c.name);
    }
}

#[test]
fn logits_from_codes_equal_dot_products_with_decoded_keys() {
    for c in cases() {
        let kd = c.k.decode().unwrap();
        let (w, hd, t) = (c.heads.width(), c.heads.head_dim, c.k.tokens);
        let got = logits(&c.q, &c.k, c.heads).unwrap();
        let n_q = c.q.len() / w;
        assert_eq!(got.len(), n_q * c.heads.heads * t);
        for i in 0..n_q {
            for h in 0..c.heads.heads {
                for tok in 0..t {
                    let dot: f64 = (0..hd)
                        .map(|j| c.q[i * w + h * hd + j] as f64 * kd[tok * w + h * hd + j] as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt();
                    let g = got[(i * c.heads.heads + h) * t + tok] as f64;
                    assert!(
                        (g - dot).abs() < 1e-5 * (1.0 + dot.abs()),
                        "{} q{i} h{h} t{tok}: {g} vs {dot}",
                        c.name
                    );
                }
            }
        }
    }
}

#[test]
fn whole_width_coding_is_refused_with_a_clear_error() {
    let heads = Heads {
        heads: 2,
        head_dim: 8,
    };
    let x = gaussian(3, 16, 9);
    let whole =
        CodedTensor::encode(&x, 3, Plan::uniform(1, 16).unwrap(), None, vec![4; 3], 1).unwrap();
    let per_head =
        CodedTensor::encode(&x, 3, Plan::uniform(2, 8).unwrap(), None, vec![4; 6], 1).unwrap();
    let q = gaussian(1, 16, 10);
    for (k, v) in [(&whole, &per_head), (&per_head, &whole)] {
        match attend(&q, k, v, heads) {
            Err(Error::Shape(m)) => assert!(m.contains("per-head coding"), "{m}"),
            other => panic!("expected a shape error, got {other:?}"),
        }
    }
    assert!(matches!(logits(&q, &whole, heads), Err(Error::Shape(_))));
}

#[test]
fn the_attention_shader_validates_with_naga() {
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let check = |src: &str, caps: Capabilities| -> Vec<String> {
        let module = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
        Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
        module.entry_points.iter().map(|e| e.name.clone()).collect()
    };
    // The kernel from codes needs no capability at all.
    let codes = attention_source("attend_codes");
    assert_eq!(check(codes, Capabilities::empty()), ["attend_codes"]);
    // The baseline needs unpack2x16float, and naga says so.
    let whole = attention_source("attend_f16");
    assert_eq!(whole, KV_ATTENTION_WGSL);
    assert!(
        naga::front::wgsl::parse_str(whole)
            .ok()
            .and_then(
                |m| Validator::new(ValidationFlags::all(), Capabilities::empty())
                    .validate(&m)
                    .ok()
            )
            .is_none()
    );
    assert_eq!(
        check(whole, Capabilities::SHADER_FLOAT16_IN_FLOAT32),
        ["attend_codes", "attend_f16"]
    );
}

fn kernels() -> Option<Arc<AttentionKernels>> {
    static K: OnceLock<Option<Arc<AttentionKernels>>> = OnceLock::new();
    K.get_or_init(|| context().map(|ctx| AttentionKernels::new(ctx).unwrap()))
        .clone()
}

/// GPU and CPU both compute s·⟨Πq, c⟩ and the softmax-weighted sums, the
/// GPU in f32 in another order (blocks of 64 tokens, online max). Logits
/// are O(10) sums of ≤ 256 terms, so their f32 error is ~1e-5 at worst; a
/// logit error δ changes weights by a factor e^δ, and outputs are O(1):
/// 1e-4 relative leaves a margin while any indexing slip (a wrong code,
/// scale, channel or rotation row) is off by O(0.1).
const GPU_TOL: f64 = 1e-4;

#[test]
fn gpu_attention_from_codes_matches_the_cpu_reference() {
    let Some(kernels) = kernels() else { return };
    for c in cases() {
        let gpu = GpuAttention::new(&kernels, &c.k, &c.v, c.heads).unwrap();
        let got = gpu.attend(&c.q).unwrap();
        let want = attend(&c.q, &c.k, &c.v, c.heads).unwrap();
        let err = max_rel(&got, &want);
        note(&format!(
            "GPU attention from codes, {}: max rel err {err:.2e}",
            c.name
        ));
        assert!(err < GPU_TOL, "{}: {err:e}", c.name);
    }
}

#[test]
fn gpu_f16_baseline_matches_exact_attention_over_f16_values() {
    let Some(kernels) = kernels() else { return };
    for (heads, head_dim, tokens, n_q) in [(1, 64, 1, 1), (4, 48, 300, 6), (3, 33, 65, 4)] {
        let hs = Heads { heads, head_dim };
        let w = hs.width();
        let k = gaussian(tokens, w, 20 + heads as u64);
        let v = gaussian(tokens, w, 30 + heads as u64);
        let q: Vec<f32> = gaussian(n_q, w, 40).iter().map(|x| 2.0 * x).collect();
        let gpu = GpuAttention::from_f16(&kernels, &k, &v, tokens, hs).unwrap();
        let got = gpu.attend(&q).unwrap();
        let want = attend_exact(&q, &round_f16(&k), &round_f16(&v), tokens, hs).unwrap();
        let err = max_rel(&got, &want);
        note(&format!(
            "GPU f16 attention {heads}×{head_dim}, {tokens} tokens: {err:.2e}"
        ));
        assert!(err < GPU_TOL, "{heads}×{head_dim}: {err:e}");
        // And f16 rounding is visible against f32 K/V, so the kernel really
        // read the f16 values (not a stray f32 copy).
        let f32_exact = attend_exact(&q, &k, &v, tokens, hs).unwrap();
        assert!(max_rel(&want, &f32_exact) > 1e-6);
    }
}

#[test]
fn gpu_attention_refuses_what_it_cannot_run() {
    let Some(kernels) = kernels() else { return };
    let hs = Heads {
        heads: 1,
        head_dim: 260,
    };
    let x = gaussian(2, 260, 1);
    let c =
        CodedTensor::encode(&x, 2, Plan::uniform(1, 260).unwrap(), None, vec![2; 2], 1).unwrap();
    match GpuAttention::new(&kernels, &c, &c, hs) {
        Err(Error::GpuUnsupported(m)) => assert!(m.contains("head_dim 260"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let whole =
        CodedTensor::encode(&x, 2, Plan::uniform(2, 130).unwrap(), None, vec![2; 4], 1).unwrap();
    assert!(matches!(
        GpuAttention::new(&kernels, &whole, &whole, hs),
        Err(Error::Shape(_)) | Err(Error::GpuUnsupported(_))
    ));
}
