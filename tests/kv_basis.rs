//! The per-model key basis: fitted on calibration caches of one model, it
//! diagonalises their key covariance, lowers the attention error of
//! another cache of the same model at equal bits, and a file coded in it
//! decodes only with it.

use turboquant3d::kv::basis::{Basis, fit};
use turboquant3d::kv::cache::{Bits, CacheOptions, compress, decompress};
use turboquant3d::kv::codec::{KvConfig, channel_mean};
use turboquant3d::kv::metrics::attention_error;
use turboquant3d::kv::synth::{SynthConfig, cache};
use turboquant3d::kv::tensors::{Dtype, NamedTensor, RoleGlobs, TensorFile};

const T: usize = 384;
const H: usize = 4;
const D: usize = 64;

/// One model (seed), 2T tokens: the first T a cache to code (with its
/// queries), the last T calibration.
fn halves(seed: u64) -> (TensorFile, TensorFile, Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = cache(&SynthConfig::new(2 * T, H, D, seed)).unwrap();
    let w = H * D;
    let file = |k: &[f32], v: &[f32], q: Option<&[f32]>| {
        let mut t = vec![
            NamedTensor::from_f32("l0.k", Dtype::F32, vec![T, H, D], k).unwrap(),
            NamedTensor::from_f32("l0.v", Dtype::F32, vec![T, H, D], v).unwrap(),
        ];
        if let Some(q) = q {
            t.push(NamedTensor::from_f32("l0.q", Dtype::F32, vec![q.len() / w, H, D], q).unwrap());
        }
        TensorFile::new(t)
    };
    let (k0, v0) = (&c.k[..T * w], &c.v[..T * w]);
    let (k1, v1) = (&c.k[T * w..], &c.v[T * w..]);
    (
        file(k0, v0, Some(&c.q)),
        file(k1, v1, None),
        k0.to_vec(),
        v0.to_vec(),
        c.q.clone(),
    )
}

fn options(basis: Option<Basis>, bits: f64) -> CacheOptions {
    CacheOptions {
        config: KvConfig::default(),
        bits: Bits::Joint(bits),
        heads: None,
        layout: None,
        globs: RoleGlobs::new(&[], &[], &[]).unwrap(),
        use_queries: false,
        basis,
    }
}

#[test]
fn the_basis_diagonalises_the_calibration_keys_in_falling_order() {
    let (_, calib, ..) = halves(3);
    let b = fit(
        std::slice::from_ref(&calib),
        &RoleGlobs::new(&[], &[], &[]).unwrap(),
        None,
        None,
        8,
    )
    .unwrap();
    let k = calib.tensors[0].to_f32().unwrap();
    let w = H * D;
    let mean = channel_mean(&k, T, w);
    for h in 0..H {
        let u = b.matrix("l0.k", 0, h).unwrap();
        // Covariance of the projections y_j = u_jᵀ(x − μ), computed directly.
        let y: Vec<Vec<f64>> = (0..T)
            .map(|t| {
                (0..D)
                    .map(|j| {
                        (0..D)
                            .map(|i| {
                                u[i * D + j] as f64
                                    * (k[t * w + h * D + i] - mean[h * D + i]) as f64
                            })
                            .sum()
                    })
                    .collect()
            })
            .collect();
        let cov = |a: usize, c: usize| y.iter().map(|r| r[a] * r[c]).sum::<f64>() / T as f64;
        let var: Vec<f64> = (0..D).map(|j| cov(j, j)).collect();
        for j in 1..D {
            assert!(
                var[j] <= var[j - 1] * (1.0 + 1e-6),
                "head {h}: variance rises at {j}"
            );
        }
        for (a, c) in [(0, 1), (0, 7), (3, 40), (10, 63)] {
            let r = cov(a, c) / (var[a] * var[c]).sqrt();
            assert!(
                r.abs() < 1e-3,
                "head {h}: correlation {r} between {a} and {c}"
            );
        }
        // A steep spectrum: the 8 leading directions hold most of the energy.
        let lead: f64 = var[..8].iter().sum::<f64>() / var.iter().sum::<f64>();
        assert!(lead > 0.6, "head {h}: {lead}");
    }
}

#[test]
fn a_basis_from_calibration_lowers_attention_error_and_is_required_to_decode() {
    let mut wins = 0;
    for seed in [5u64, 6] {
        let (coded, calib, k, v, q) = halves(seed);
        let globs = RoleGlobs::new(&[], &[], &[]).unwrap();
        let b = fit(&[calib], &globs, None, None, 8).unwrap();
        let heads = turboquant3d::kv::attention::Heads {
            heads: H,
            head_dim: D,
        };
        let err = |basis: Option<Basis>| {
            let (file, rep) = compress(&coded, &options(basis.clone(), 3.25), &|_, _| {}).unwrap();
            assert!(rep.bits_per_element() <= 3.25);
            let back = decompress(&file, basis.as_ref()).unwrap();
            let kh = back.get("l0.k").unwrap().to_f32().unwrap();
            let vh = back.get("l0.v").unwrap().to_f32().unwrap();
            attention_error(&q, &k, &v, &kh, &vh, T, heads, 8)
                .unwrap()
                .output_rel
        };
        let (plain, based) = (err(None), err(Some(b.clone())));
        if based < plain {
            wins += 1;
        }
        // A file coded in the basis needs it, and no other.
        let (file, _) = compress(&coded, &options(Some(b.clone()), 3.25), &|_, _| {}).unwrap();
        let e = decompress(&file, None).unwrap_err().to_string();
        assert!(e.contains("basis"), "{e}");
        let mut other = b.clone();
        other.split = 4;
        let e = decompress(&file, Some(&other)).unwrap_err().to_string();
        assert!(e.contains(&b.digest()), "{e}");
        // Written and read back, the basis is the same one.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("basis.safetensors");
        b.to_file().unwrap().write(&p).unwrap();
        assert_eq!(Basis::read(&p).unwrap().digest(), b.digest());
    }
    assert_eq!(wins, 2, "the basis lost on a synthetic model");
}
