//! A per-model key basis: each layer's and head's principal directions of
//! the centred keys, computed once from calibration caches and kept in a
//! file of its own, then used for many caches of the same model.
//!
//! The codec is rotation-invariant inside a vector (the random rotation
//! makes every direction alike), so a basis helps only through the split
//! it allows: in the basis, a head's strongest `split` directions hold
//! most of the key energy, and become their own vector (the plan's outlier
//! segment), which the allocator codes at more bits per coordinate than
//! the rest (docs/THEORY.md §15, "A per-model basis").
//!
//! A `.tq3k` coded with a basis names the basis's digest in its metadata;
//! decoding needs the same basis file, and refuses any other.

use std::collections::BTreeMap;
use std::path::Path;

use crate::kv::tensors::{Dtype, NamedTensor, TensorFile};
use crate::{Error, Result};

/// Marks a basis file in its safetensors metadata.
pub const KIND: &str = "turboquant3d kv basis";

/// Largest head dimension a basis is computed for (the eigensolver is
/// O(d³) per head and layer).
pub const MAX_HEAD_DIM: usize = 256;

/// Per key tensor (by name): per layer and head, a d × d orthogonal matrix
/// U, row-major, whose column j is the j-th principal direction (falling
/// variance); and how many leading directions form their own vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Basis {
    /// Per key tensor name: (layers, heads, head_dim, U for every layer and
    /// head back to back).
    pub tensors: BTreeMap<String, (usize, usize, usize, Vec<f32>)>,
    /// Leading directions coded as their own vector.
    pub split: usize,
}

/// One key tensor's sums: (layers, heads, d, Σ x, Σ x xᵀ per layer and
/// head, tokens).
type Sums = (usize, usize, usize, Vec<f64>, Vec<f64>, u64);

/// Accumulates key covariances per layer and head.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    sums: BTreeMap<String, Sums>,
}

impl Calibration {
    /// Adds one cache's keys of tensor `name`: `layers × tokens × heads·d`
    /// values, row-major.
    pub fn add(
        &mut self,
        name: &str,
        data: &[f32],
        layers: usize,
        tokens: usize,
        heads: usize,
        d: usize,
    ) -> Result<()> {
        if !(2..=MAX_HEAD_DIM).contains(&d) {
            return Err(Error::InvalidArgument(format!(
                "keys {name:?}: a basis needs a head dimension in 2..={MAX_HEAD_DIM}, got {d}"
            )));
        }
        let w = heads * d;
        if data.len() != layers * tokens * w {
            return Err(Error::Shape(format!(
                "keys {name:?}: {layers} × {tokens} × {w} values needed, got {}",
                data.len()
            )));
        }
        let e = self.sums.entry(name.to_string()).or_insert_with(|| {
            (
                layers,
                heads,
                d,
                vec![0.0; layers * w],
                vec![0.0; layers * heads * d * d],
                0,
            )
        });
        if (e.0, e.1, e.2) != (layers, heads, d) {
            return Err(Error::Shape(format!(
                "keys {name:?}: {layers} layers × {heads} heads × {d} here, {} × {} × {} in an earlier cache",
                e.0, e.1, e.2
            )));
        }
        for l in 0..layers {
            for t in 0..tokens {
                let row = &data[(l * tokens + t) * w..][..w];
                for h in 0..heads {
                    let x = &row[h * d..(h + 1) * d];
                    let s = &mut e.3[l * w + h * d..][..d];
                    for (a, &v) in s.iter_mut().zip(x) {
                        *a += v as f64;
                    }
                    let c = &mut e.4[(l * heads + h) * d * d..][..d * d];
                    for i in 0..d {
                        for j in 0..d {
                            c[i * d + j] += x[i] as f64 * x[j] as f64;
                        }
                    }
                }
            }
        }
        e.5 += tokens as u64;
        Ok(())
    }

    /// The basis: eigenvectors of each layer's and head's covariance.
    pub fn finish(self, split: usize) -> Result<Basis> {
        let mut tensors = BTreeMap::new();
        for (name, (layers, heads, d, sum, sq, n)) in self.sums {
            if split == 0 || split + 2 > d {
                return Err(Error::InvalidArgument(format!(
                    "a split of {split} directions in heads of {d}: need 1..={}",
                    d - 2
                )));
            }
            let n = n.max(1) as f64;
            let mut u = Vec::with_capacity(layers * heads * d * d);
            for l in 0..layers {
                for h in 0..heads {
                    let m = &sum[l * heads * d + h * d..][..d];
                    let c = &sq[(l * heads + h) * d * d..][..d * d];
                    let cov: Vec<f64> = (0..d * d)
                        .map(|k| c[k] / n - (m[k / d] / n) * (m[k % d] / n))
                        .collect();
                    u.extend(eigenvectors(cov, d).iter().map(|&x| x as f32));
                }
            }
            tensors.insert(name, (layers, heads, d, u));
        }
        Ok(Basis { tensors, split })
    }
}

/// Eigenvectors of a symmetric d × d matrix as the columns of a row-major
/// matrix, by falling eigenvalue (cyclic Jacobi rotations until the
/// off-diagonal mass is 10⁻²⁴ of the total; ties to the lower index).
/// Hand-written: d ≤ 256, one call per head and layer, and 40 lines
/// instead of a linear-algebra dependency.
pub fn eigenvectors(mut a: Vec<f64>, d: usize) -> Vec<f64> {
    let mut v = vec![0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum::<f64>().max(1e-300);
    for _sweep in 0..60 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| i * d + j))
            .map(|k| a[k] * a[k])
            .sum();
        if off <= 1e-24 * total {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = if theta == 0.0 {
                    1.0
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (x, y) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * x - s * y;
                    a[k * d + q] = s * x + c * y;
                }
                for k in 0..d {
                    let (x, y) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * x - s * y;
                    a[q * d + k] = s * x + c * y;
                }
                for k in 0..d {
                    let (x, y) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * x - s * y;
                    v[k * d + q] = s * x + c * y;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| a[j * d + j].total_cmp(&a[i * d + i]).then(i.cmp(&j)));
    let mut out = vec![0f64; d * d];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..d {
            out[k * d + new] = v[k * d + old];
        }
    }
    out
}

/// The basis of every key tensor in the calibration caches (roles, layout
/// and heads as `tq3d kv compress` reads them), with `split` leading
/// directions per head.
pub fn fit(
    caches: &[TensorFile],
    globs: &crate::kv::tensors::RoleGlobs,
    layout: Option<&crate::kv::tensors::Layout>,
    heads: Option<usize>,
    split: usize,
) -> Result<Basis> {
    use crate::kv::tensors::{Role, assign, to_canonical};
    let mut cal = Calibration::default();
    for f in caches {
        let a = assign(&f.tensors, globs)?;
        for (t, role) in f.tensors.iter().zip(&a.roles) {
            if *role != Role::Key {
                continue;
            }
            let c = to_canonical(t, layout, heads)?;
            cal.add(&t.name, &c.data, c.layers, c.tokens, c.heads, c.head_dim)?;
        }
    }
    if cal.sums.is_empty() {
        return Err(Error::InvalidArgument(
            "the calibration caches hold no key tensors".into(),
        ));
    }
    cal.finish(split)
}

impl Basis {
    /// The d × d matrix of `name`'s layer `l`, head `h`.
    pub fn matrix(&self, name: &str, l: usize, h: usize) -> Option<&[f32]> {
        let (layers, heads, d, u) = self.tensors.get(name)?;
        (l < *layers && h < *heads).then(|| &u[(l * heads + h) * d * d..][..d * d])
    }

    /// Rows of `layers × tokens × heads·d` into the basis (y = Uᵀx per head,
    /// `forward`) or back (x = U·y).
    pub fn apply(&self, name: &str, data: &mut [f32], tokens: usize, forward: bool) -> Result<()> {
        let layers = self.tensors.get(name).map_or(0, |t| t.0);
        self.apply_from(name, 0, layers, data, tokens, forward)
    }

    /// [`Basis::apply`] to `layers` layers from layer `first`.
    pub fn apply_from(
        &self,
        name: &str,
        first: usize,
        layers: usize,
        data: &mut [f32],
        tokens: usize,
        forward: bool,
    ) -> Result<()> {
        let (all, heads, d, _) = self.tensors.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!("the basis has no keys named {name:?}"))
        })?;
        let (heads, d) = (*heads, *d);
        let w = heads * d;
        if first + layers > *all || data.len() != layers * tokens * w {
            return Err(Error::Shape(format!(
                "keys {name:?}: the basis is for {all} layers × {heads} heads × {d}, the tensor has {} values for {layers} layers of {tokens} tokens",
                data.len()
            )));
        }
        let mut tmp = vec![0f32; d];
        for (r, row) in data.chunks_exact_mut(w).enumerate() {
            let l = first + r / tokens.max(1);
            for h in 0..heads {
                let u = self.matrix(name, l, h).unwrap_or(&[]);
                let x = &mut row[h * d..(h + 1) * d];
                for (j, t) in tmp.iter_mut().enumerate() {
                    let mut s = 0f32;
                    for k in 0..d {
                        // Uᵀx: column j of U; U·y: row j of U.
                        let m = if forward { u[k * d + j] } else { u[j * d + k] };
                        s += m * x[k];
                    }
                    *t = s;
                }
                x.copy_from_slice(&tmp);
            }
        }
        Ok(())
    }

    /// The basis as named tensors (`[layers, heads, d, d]` f32 per key
    /// tensor) with its split in the metadata.
    pub fn to_file(&self) -> Result<TensorFile> {
        let mut tensors = Vec::new();
        for (name, (layers, heads, d, u)) in &self.tensors {
            tensors.push(NamedTensor::from_f32(
                name.clone(),
                Dtype::F32,
                vec![*layers, *heads, *d, *d],
                u,
            )?);
        }
        let mut f = TensorFile::new(tensors);
        f.metadata = Some(BTreeMap::from([
            ("kind".to_string(), KIND.to_string()),
            ("split".to_string(), self.split.to_string()),
        ]));
        Ok(f)
    }

    /// Reads a basis file, checking its kind, shapes and orthogonality.
    pub fn read(path: &Path) -> Result<Basis> {
        let f = TensorFile::read(path)?;
        let bad = |why: String| Error::Format {
            path: path.to_path_buf(),
            field: "KV basis".into(),
            why,
        };
        let meta = f.metadata.clone().unwrap_or_default();
        if meta.get("kind").map(String::as_str) != Some(KIND) {
            return Err(bad(format!(
                "not a KV basis (no \"kind\": \"{KIND}\" in its metadata)"
            )));
        }
        let split: usize = meta
            .get("split")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no valid \"split\" in its metadata".into()))?;
        let mut tensors = BTreeMap::new();
        for t in &f.tensors {
            let [layers, heads, d, d2] = t.shape[..] else {
                return Err(bad(format!(
                    "tensor {:?} is not [layers, heads, d, d]",
                    t.name
                )));
            };
            if d != d2 || !(2..=MAX_HEAD_DIM).contains(&d) || split == 0 || split + 2 > d {
                return Err(bad(format!(
                    "tensor {:?}: shape {:?} with a split of {split}",
                    t.name, t.shape
                )));
            }
            let u = t.to_f32()?;
            for (m, chunk) in u.chunks_exact(d * d).enumerate() {
                // UᵀU = I within f32 rounding.
                for i in 0..d {
                    for j in 0..d {
                        let dot: f64 = (0..d)
                            .map(|k| chunk[k * d + i] as f64 * chunk[k * d + j] as f64)
                            .sum();
                        let want = if i == j { 1.0 } else { 0.0 };
                        if (dot - want).abs() > 1e-4 {
                            return Err(bad(format!(
                                "tensor {:?}, matrix {m}: not orthogonal (column {i}·{j} = {dot})",
                                t.name
                            )));
                        }
                    }
                }
            }
            tensors.insert(t.name.clone(), (layers, heads, d, u));
        }
        Ok(Basis { tensors, split })
    }

    /// A digest of the matrices and split (FNV-1a over their bytes), which
    /// a `.tq3k` coded in this basis stores.
    pub fn digest(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: &[u8]| {
            for &x in b {
                h ^= x as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&(self.split as u64).to_le_bytes());
        for (name, (l, hh, d, u)) in &self.tensors {
            eat(name.as_bytes());
            for v in [*l, *hh, *d] {
                eat(&(v as u64).to_le_bytes());
            }
            for x in u {
                eat(&x.to_le_bytes());
            }
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigenvectors_diagonalise_and_sort() {
        // A = Q diag(5, 3, 1) Qᵀ for a rotation Q in the (0, 2) plane.
        let (c, s) = (0.6f64, 0.8f64);
        let q = [c, 0.0, -s, 0.0, 1.0, 0.0, s, 0.0, c];
        let l = [5.0, 3.0, 1.0];
        let a: Vec<f64> = (0..9)
            .map(|k| {
                (0..3)
                    .map(|m| q[(k / 3) * 3 + m] * l[m] * q[(k % 3) * 3 + m])
                    .sum()
            })
            .collect();
        let u = eigenvectors(a, 3);
        for j in 0..3 {
            // Column j is ±column j of Q.
            let dot: f64 = (0..3).map(|k| u[k * 3 + j] * q[k * 3 + j]).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-12, "column {j}: {dot}");
        }
    }
}
