//! How much each Gaussian's SH-rest error shows: the values v_i = w_i·γ_i²
//! that [`codec::allocate`](crate::codec::allocate) spends bits by
//! (docs/THEORY.md §12). γ_i² is the energy of the Gaussian's SH-rest, w_i
//! its [`Weight`].

use rayon::prelude::*;

use crate::splat::scene::{Scene, rest_per_channel, sigmoid};
use crate::{Error, Result};

/// How much a Gaussian's SH error shows, before its SH energy γ².
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// w = 1: γ² alone.
    Energy,
    /// w = sigmoid(opacity).
    Opacity,
    /// w = sigmoid(opacity) × the product of the two largest axes.
    OpacityFootprint,
    /// w = Σ over views of the Gaussian's blending weight over all pixels
    /// (its expected screen coverage); needs views.
    Coverage,
}

impl Weight {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Weight::Energy => "energy",
            Weight::Opacity => "opacity",
            Weight::OpacityFootprint => "footprint",
            Weight::Coverage => "coverage",
        }
    }
}

/// v_i = w_i·γ_i² for every Gaussian of the input: γ_i² is the energy of
/// its SH-rest truncated to `degree`, w_i the weight. `coverage` (one value
/// per Gaussian, from a renderer) is needed for [`Weight::Coverage`].
///
/// ```
/// use turboquant3d::codec::allocate;
/// use turboquant3d::splat::importance::{Weight, importance};
/// use turboquant3d::splat::synth::{SynthConfig, generate};
/// let scene = generate(&SynthConfig { count: 64, sh_degree: 3, seed: 1 });
/// let v = importance(&scene, 3, Weight::OpacityFootprint, None).unwrap();
/// let a = allocate::for_average_bits(&v, &vec![true; v.len()], scene.rest_dim(), 2.0).unwrap();
/// assert_eq!(a.widths.len(), scene.len());
/// ```
pub fn importance(
    scene: &Scene,
    degree: u8,
    weight: Weight,
    coverage: Option<&[f64]>,
) -> Result<Vec<f64>> {
    let (k_in, k) = (
        rest_per_channel(scene.sh_degree),
        rest_per_channel(degree.min(scene.sh_degree)),
    );
    if weight == Weight::Coverage && coverage.is_none_or(|c| c.len() != scene.len()) {
        return Err(Error::InvalidArgument(
            "the coverage weight needs one coverage value per Gaussian (render views first)".into(),
        ));
    }
    Ok((0..scene.len())
        .into_par_iter()
        .map(|i| {
            let r = scene.rest(i);
            let g2: f64 = (0..3)
                .flat_map(|c| &r[c * k_in..c * k_in + k])
                .map(|&v| (v as f64) * (v as f64))
                .sum();
            let alpha = sigmoid(scene.opacity[i]) as f64;
            let w = match weight {
                Weight::Energy => 1.0,
                Weight::Opacity => alpha,
                Weight::OpacityFootprint => {
                    let mut s = scene.scales[i];
                    s.sort_by(f32::total_cmp);
                    alpha * ((s[1] + s[2]) as f64).exp()
                }
                Weight::Coverage => coverage.map_or(0.0, |c| c[i]),
            };
            w * g2
        })
        .collect())
}
