//! Lloyd–Max scalar codebooks for one coordinate of a uniform point on the
//! unit sphere S^(d−1).
//!
//! The coordinate density is (TurboQuant, arXiv 2504.19874, Lemma 1)
//!
//! ```text
//! f_d(x) = Γ(d/2) / (√π Γ((d−1)/2)) · (1 − x²)^((d−3)/2),   x ∈ [−1, 1]
//! ```
//!
//! A codebook depends on (d, b) alone. It is solved to machine precision with
//! closed-form cell moments (X² ~ Beta(1/2, (d−1)/2), so cell masses are
//! regularised incomplete beta functions and first moments are elementary),
//! a few Lloyd iterations from the quantiles, then Newton's method on the
//! centroid conditions, whose Jacobian is tridiagonal. See docs/THEORY.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use statrs::function::beta::inv_beta_reg;

use crate::{Error, Result};

/// Largest supported vector dimension.
pub const MAX_DIM: usize = 1 << 16;
/// Largest supported bit width.
pub const MAX_BITS: u32 = 8;

/// The Lloyd–Max quantizer of f_d with 2^b levels.
///
/// Centroids are symmetric about 0 and sorted ascending; boundaries are the
/// midpoints between neighbouring centroids, so the middle boundary is 0.
///
/// ```
/// use turboquant3d::Codebook;
/// let cb = Codebook::get(45, 3).unwrap();
/// assert_eq!(cb.centroids().len(), 8);
/// // d·C(d, b): the expected ‖u − û‖² for a unit vector u.
/// assert!((cb.distortion() - 0.03291).abs() < 1e-5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    dim: usize,
    bits: u32,
    centroids: Vec<f64>,
    boundaries: Vec<f64>,
    distortion: f64,
}

/// Checks d and b against what a codebook supports.
pub fn validate_params(dim: usize, bits: u32) -> Result<()> {
    validate_dim(dim)?;
    if !(1..=MAX_BITS).contains(&bits) {
        return Err(Error::InvalidBits { bits });
    }
    Ok(())
}

/// Checks d against 2..=MAX_DIM.
pub fn validate_dim(dim: usize) -> Result<()> {
    if dim < 2 {
        return Err(Error::InvalidDim {
            dim,
            why: "d must be at least 2",
        });
    }
    if dim > MAX_DIM {
        return Err(Error::InvalidDim {
            dim,
            why: "d must be at most 65536",
        });
    }
    Ok(())
}

impl Codebook {
    /// The codebook for (d, b), computed once per process and then shared.
    pub fn get(dim: usize, bits: u32) -> Result<Arc<Codebook>> {
        validate_params(dim, bits)?;
        type Cache = Mutex<HashMap<(usize, u32), Arc<Codebook>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(cb) = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(dim, bits))
        {
            return Ok(cb.clone());
        }
        // Solved outside the lock: two threads racing on one key compute the
        // same deterministic value, and nobody waits on an unrelated key.
        let cb = Arc::new(Self::compute(dim, bits)?);
        let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.entry((dim, bits)).or_insert(cb).clone())
    }

    /// Solves the codebook for (d, b) without touching the cache.
    pub fn compute(dim: usize, bits: u32) -> Result<Codebook> {
        validate_params(dim, bits)?;
        let density = SphereCoordinate::new(dim);
        let half = solve_half(&density, 1usize << (bits - 1));
        let mut centroids: Vec<f64> = half.iter().rev().map(|c| -c).collect();
        centroids.extend_from_slice(&half);
        let boundaries: Vec<f64> = centroids.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();

        // d·E[(X − q(X))²], cell by cell. Each cell's error is integrated
        // directly rather than as 1/d − Σ c²·mass, which would cancel to a
        // few significant digits at b = 8.
        let mut lo = 0.0;
        let mut sum = 0.0;
        for (i, &c) in half.iter().enumerate() {
            let hi = if i + 1 < half.len() {
                0.5 * (c + half[i + 1])
            } else {
                1.0
            };
            sum += density.cell_error(lo, hi, c);
            lo = hi;
        }
        let distortion = dim as f64 * 2.0 * sum;
        Ok(Codebook {
            dim,
            bits,
            centroids,
            boundaries,
            distortion,
        })
    }

    /// The vector dimension d the codebook was solved for.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The bit width b.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The 2^b centroids, ascending, on [−1, 1].
    pub fn centroids(&self) -> &[f64] {
        &self.centroids
    }

    /// The 2^b − 1 decision boundaries, ascending.
    pub fn boundaries(&self) -> &[f64] {
        &self.boundaries
    }

    /// d·C(d, b): the expected ‖u − û‖² for a unit vector u (norm scale).
    pub fn distortion(&self) -> f64 {
        self.distortion
    }

    /// C(d, b): the expected squared error of one coordinate.
    pub fn mse_per_coordinate(&self) -> f64 {
        self.distortion / self.dim as f64
    }

    /// Centroids rounded to f32: the table the quantizer stores and uses.
    pub fn centroids_f32(&self) -> Vec<f32> {
        self.centroids.iter().map(|&c| c as f32).collect()
    }

    /// Boundaries rounded to f32: the table the quantizer searches.
    pub fn boundaries_f32(&self) -> Vec<f32> {
        self.boundaries.iter().map(|&c| c as f32).collect()
    }
}

/// The law of one coordinate X of a uniform point on S^(d−1), restricted to
/// what the solver needs on the half-line [0, 1].
struct SphereCoordinate {
    dim: f64,
    /// β = (d − 1)/2, so X² ~ Beta(1/2, β).
    beta: f64,
    /// The normalising constant Γ(d/2) / (√π Γ((d−1)/2)).
    norm: f64,
}

impl SphereCoordinate {
    fn new(dim: usize) -> Self {
        let d = dim as f64;
        let mut sc = SphereCoordinate {
            dim: d,
            beta: 0.5 * (d - 1.0),
            norm: 1.0,
        };
        // Normalise by the same quadrature that computes the cell masses, so
        // that masses sum to 1/2 on each side to rounding, with no lnΓ
        // differences (which lose ~12 digits' worth of ulps at d = 65536).
        sc.norm = 0.5 / sc.mass(0.0, 1.0);
        sc
    }

    /// f_d(t).
    fn density(&self, t: f64) -> f64 {
        let k = 0.5 * (self.dim - 3.0);
        self.norm * (k * (-t * t).ln_1p()).exp()
    }

    /// ∫_s^t g(θ(x))·f_d(x) dx for 0 ≤ s ≤ t ≤ 1, by Gauss–Legendre in
    /// θ = asin x, where f_d(x) dx = norm·cos^(d−2) θ dθ is smooth for every
    /// d ≥ 2. Panels are a quarter of the density's width 1/√d; 60 widths past
    /// s the density is below e^−1800 of its value at s, so the range stops.
    fn integrate(&self, s: f64, t: f64, g: impl Fn(f64) -> f64) -> f64 {
        let (nodes, weights) = gauss_legendre_16();
        let width = 1.0 / self.dim.sqrt();
        let a = s.asin();
        let b = t.asin().min(a + 60.0 * width);
        if b <= a {
            return 0.0;
        }
        let panels = ((b - a) / (0.25 * width)).ceil().max(1.0) as usize;
        let h = (b - a) / panels as f64;
        let power = self.dim - 2.0;
        let mut total = 0.0;
        for p in 0..panels {
            let mid = a + (p as f64 + 0.5) * h;
            let mut panel = 0.0;
            for (x, w) in nodes.iter().zip(weights) {
                let th = mid + 0.5 * h * x;
                panel += w * g(th) * (power * th.cos().ln()).exp();
            }
            total += 0.5 * h * panel;
        }
        self.norm * total
    }

    /// P(s < X < t) for 0 ≤ s ≤ t ≤ 1.
    fn mass(&self, s: f64, t: f64) -> f64 {
        self.integrate(s, t, |_| 1.0)
    }

    /// ∫_s^t (x − c)² f_d(x) dx: one cell's contribution to the distortion,
    /// integrated directly rather than as M2 − 2c·M1 + c²·M0, which cancels
    /// to a few significant digits in the narrow cells of b = 8.
    fn cell_error(&self, s: f64, t: f64, c: f64) -> f64 {
        self.integrate(s, t, |th| (th.sin() - c).powi(2))
    }

    /// ∫_s^t x f_d(x) dx = norm/(d−1) · [(1−s²)^β − (1−t²)^β], in a form that
    /// keeps full relative precision for narrow cells.
    fn first_moment(&self, s: f64, t: f64) -> f64 {
        let a = self.beta * (-s * s).ln_1p();
        let b = if t >= 1.0 {
            f64::NEG_INFINITY
        } else {
            self.beta * (-t * t).ln_1p()
        };
        let diff = if b == f64::NEG_INFINITY {
            a.exp()
        } else {
            b.exp() * (a - b).exp_m1()
        };
        self.norm / (self.dim - 1.0) * diff
    }
}

/// The 16-point Gauss–Legendre rule on [−1, 1], by Newton's method on P_16
/// (a table this small does not justify a linear-algebra dependency).
fn gauss_legendre_16() -> &'static ([f64; 16], [f64; 16]) {
    static RULE: OnceLock<([f64; 16], [f64; 16])> = OnceLock::new();
    RULE.get_or_init(|| {
        const N: usize = 16;
        let (mut x, mut w) = ([0.0; N], [0.0; N]);
        for i in 0..N / 2 {
            let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (N as f64 + 0.5)).cos();
            let mut dp = 0.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, z);
                for k in 2..=N {
                    let k = k as f64;
                    let p2 = ((2.0 * k - 1.0) * z * p1 - (k - 1.0) * p0) / k;
                    p0 = p1;
                    p1 = p2;
                }
                dp = N as f64 * (z * p1 - p0) / (z * z - 1.0);
                let dz = p1 / dp;
                z -= dz;
                if dz.abs() < 1e-16 {
                    break;
                }
            }
            let wi = 2.0 / ((1.0 - z * z) * dp * dp);
            (x[i], w[i]) = (-z, wi);
            (x[N - 1 - i], w[N - 1 - i]) = (z, wi);
        }
        (x, w)
    })
}

/// Solves the positive half of the symmetric Lloyd–Max quantizer with `h`
/// levels on (0, 1): returns c_1 < … < c_h.
fn solve_half(density: &SphereCoordinate, h: usize) -> Vec<f64> {
    // Start at the quantile midpoints of |X| ~ sqrt(Beta(1/2, β)).
    let mut c: Vec<f64> = (0..h)
        .map(|i| {
            let p = (i as f64 + 0.5) / h as f64;
            inv_beta_reg(0.5, density.beta, p).sqrt()
        })
        .collect();
    // Lloyd iterations bring the start into Newton's basin.
    for _ in 0..8 {
        c = lloyd_step(density, &c);
    }
    // Newton on G_i(c) = M1_i − c_i M0_i = 0, tridiagonal Jacobian.
    let mut g = residual(density, &c);
    for _ in 0..100 {
        let step = newton_step(density, &c, &g);
        let mut scale = 1.0;
        let g_norm = max_abs(&g);
        let mut accepted = false;
        for _ in 0..40 {
            let trial: Vec<f64> = c
                .iter()
                .zip(&step)
                .map(|(ci, si)| ci - scale * si)
                .collect();
            if is_valid_half(&trial) {
                let gt = residual(density, &trial);
                if max_abs(&gt) <= g_norm {
                    let moved = c
                        .iter()
                        .zip(&trial)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    c = trial;
                    g = gt;
                    accepted = true;
                    if moved <= 1e-15 * c[h - 1] {
                        return c;
                    }
                    break;
                }
            }
            scale *= 0.5;
        }
        if !accepted {
            // No step lowers the residual: we are at floating-point precision.
            break;
        }
    }
    c
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn is_valid_half(c: &[f64]) -> bool {
    c.first().is_some_and(|&x| x > 0.0)
        && c.last().is_some_and(|&x| x < 1.0)
        && c.windows(2).all(|w| w[0] < w[1])
        && c.iter().all(|x| x.is_finite())
}

/// Cell edges t_0 = 0, t_i = (c_i + c_{i+1})/2, t_h = 1.
fn edges(c: &[f64]) -> Vec<f64> {
    let mut t = Vec::with_capacity(c.len() + 1);
    t.push(0.0);
    t.extend(c.windows(2).map(|w| 0.5 * (w[0] + w[1])));
    t.push(1.0);
    t
}

fn lloyd_step(density: &SphereCoordinate, c: &[f64]) -> Vec<f64> {
    let t = edges(c);
    (0..c.len())
        .map(|i| {
            let m0 = density.mass(t[i], t[i + 1]);
            let m1 = density.first_moment(t[i], t[i + 1]);
            if m0 > 0.0 { m1 / m0 } else { c[i] }
        })
        .collect()
}

fn residual(density: &SphereCoordinate, c: &[f64]) -> Vec<f64> {
    let t = edges(c);
    (0..c.len())
        .map(|i| density.first_moment(t[i], t[i + 1]) - c[i] * density.mass(t[i], t[i + 1]))
        .collect()
}

/// Solves J·step = g for the tridiagonal Jacobian of `residual`.
fn newton_step(density: &SphereCoordinate, c: &[f64], g: &[f64]) -> Vec<f64> {
    let h = c.len();
    let t = edges(c);
    let (mut lower, mut diag, mut upper) = (vec![0.0; h], vec![0.0; h], vec![0.0; h]);
    for i in 0..h {
        // ∂G_i/∂c_i through the cell mass, then through both moving edges.
        diag[i] = -density.mass(t[i], t[i + 1]);
        if i + 1 < h {
            let w = 0.5 * density.density(t[i + 1]) * (t[i + 1] - c[i]);
            diag[i] += w;
            upper[i] = w;
        }
        if i > 0 {
            let w = -0.5 * density.density(t[i]) * (t[i] - c[i]);
            diag[i] += w;
            lower[i] = w;
        }
    }
    // Thomas algorithm.
    let mut cp = vec![0.0; h];
    let mut dp = vec![0.0; h];
    cp[0] = upper[0] / diag[0];
    dp[0] = g[0] / diag[0];
    for i in 1..h {
        let m = diag[i] - lower[i] * cp[i - 1];
        cp[i] = upper[i] / m;
        dp[i] = (g[i] - lower[i] * dp[i - 1]) / m;
    }
    let mut x = vec![0.0; h];
    x[h - 1] = dp[h - 1];
    for i in (0..h - 1).rev() {
        x[i] = dp[i] - cp[i] * x[i + 1];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::function::beta::beta_reg;
    use statrs::function::gamma::ln_gamma;

    /// Integrates f_d numerically (Simpson on θ, x = sin θ) as an independent
    /// check of the closed-form moments.
    fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
        let h = (b - a) / n as f64;
        let mut s = f(a) + f(b);
        for i in 1..n {
            s += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0
    }

    #[test]
    fn moments_match_quadrature() {
        for &d in &[2usize, 3, 5, 45, 1024] {
            let sc = SphereCoordinate::new(d);
            for &(s, t) in &[(0.0, 0.05), (0.02, 0.3), (0.3, 1.0), (0.0, 1.0)] {
                let (a, b) = (f64::asin(s), f64::asin(t));
                // dx = cos θ dθ and (1 − x²)^k = cos^(2k) θ.
                let m0 = simpson(|th| sc.norm * th.cos().powf(d as f64 - 2.0), a, b, 20000);
                let m1 = simpson(
                    |th| sc.norm * th.sin() * th.cos().powf(d as f64 - 2.0),
                    a,
                    b,
                    20000,
                );
                assert!(
                    (sc.mass(s, t) - m0).abs() < 1e-10,
                    "d={d} [{s},{t}] mass {} vs {m0}",
                    sc.mass(s, t)
                );
                assert!(
                    (sc.first_moment(s, t) - m1).abs() < 1e-10,
                    "d={d} first moment"
                );
            }
            assert!((sc.mass(0.0, 1.0) - 0.5).abs() < 1e-14);
            // The quadrature normalisation equals Γ(d/2) / (√π Γ((d−1)/2)).
            let closed = (ln_gamma(0.5 * d as f64) - ln_gamma(0.5 * (d as f64 - 1.0))).exp()
                / std::f64::consts::PI.sqrt();
            assert!(
                (sc.norm / closed - 1.0).abs() < 1e-11,
                "d={d}: {} vs {closed}",
                sc.norm
            );
        }
    }

    #[test]
    fn gauss_legendre_integrates_polynomials_to_degree_31_exactly() {
        let (x, w) = gauss_legendre_16();
        for deg in 0..32 {
            let got: f64 = x.iter().zip(w).map(|(x, w)| w * x.powi(deg)).sum();
            let want = if deg % 2 == 1 {
                0.0
            } else {
                2.0 / (deg as f64 + 1.0)
            };
            assert!((got - want).abs() < 1e-14, "degree {deg}: {got} vs {want}");
        }
    }

    #[test]
    fn cell_error_agrees_with_the_moment_identity() {
        // ∫(x − c)² f = M2 − 2c·M1 + c²·M0, with M2 from E[X²·1{cell}] = (1/d)·½·ΔI(3/2, β).
        for &d in &[2usize, 3, 45, 1024] {
            let sc = SphereCoordinate::new(d);
            for &(s, t, c) in &[(0.0, 0.05, 0.02), (0.02, 0.3, 0.1), (0.1, 1.0, 0.2)] {
                let m2 = 0.5 / d as f64
                    * (beta_reg(1.5, sc.beta, t * t) - beta_reg(1.5, sc.beta, s * s));
                let want = m2 - 2.0 * c * sc.first_moment(s, t) + c * c * sc.mass(s, t);
                let got = sc.cell_error(s, t, c);
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs() + 1e-15,
                    "d={d} [{s},{t}] c={c}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn rejects_out_of_range() {
        assert!(matches!(
            Codebook::compute(1, 2),
            Err(Error::InvalidDim { .. })
        ));
        assert!(matches!(
            Codebook::compute(MAX_DIM + 1, 2),
            Err(Error::InvalidDim { .. })
        ));
        assert!(matches!(
            Codebook::compute(8, 0),
            Err(Error::InvalidBits { .. })
        ));
        assert!(matches!(
            Codebook::compute(8, 9),
            Err(Error::InvalidBits { .. })
        ));
    }
}
