//! Whole-scene rate–distortion: every attribute group's bits, and the SH
//! widths, chosen per scene for a quality or a size (docs/THEORY.md §17).
//!
//! The model is additive over groups: the image MSE of a setting is
//!
//!   floor + Σ_g m_g(b_g) + κ_s·p_s
//!
//! - m_g(b) for the compact groups (positions, log-scales, rotations,
//!   opacity, DC colour) is measured: one render of the scene with only group
//!   g quantised at a probe width p_g, scaled by 4^(p_g − b), the law of a
//!   uniform quantiser whose step halves with each bit (the error is small
//!   enough there to act linearly on the image).
//! - p_s for an SH setting s (uniform or per-Gaussian widths) is the
//!   norm-separation estimate from the *actual* SH errors ‖x_i − x̂_i‖² of
//!   that encoding and each Gaussian's Σ_p w_i(p)² over the views
//!   (render::predict); κ_s (uniform b = 1, uniform b ≥ 2, allocated) is
//!   the measured over the predicted MSE of one probe render: it absorbs
//!   what the estimate leaves out (coherent errors of overlapping
//!   Gaussians, colour clamping).
//! - Sizes are exact: every group's stream is quantised and zstd-coded at
//!   every width, and every SH setting is encoded.
//!
//! [`Model::choose`] then searches all combinations for the smallest file
//! that meets an MSE, or the lowest MSE within a size, and
//! [`verify`] renders a choice to check the prediction.

use rayon::prelude::*;

use crate::codec::allocate;
use crate::render::{Camera, Image, metrics, predict};
use crate::splat::attributes::AttrBits;
use crate::splat::container::{Profile, StreamInfo};
use crate::splat::importance::{Weight, importance};
use crate::splat::layout::tags;
use crate::splat::scene::{Scene, survives_prune};
use crate::splat::{CompressOptions, compress, decompress, storage_order};
use crate::{Error, Result};

/// Renders a scene from each of the views (CPU reference or a GPU).
pub type RenderFn<'a> = dyn Fn(&Scene, &[Camera]) -> Result<Vec<Image>> + Sync + 'a;

/// An attribute group of the compact profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Positions.
    Position,
    /// Log-scales.
    Scale,
    /// Rotations (smallest-three).
    Rotation,
    /// Opacity.
    Opacity,
    /// DC colour.
    Dc,
}

impl Group {
    /// All groups, in [`AttrBits`] order.
    pub const ALL: [Group; 5] = [
        Group::Position,
        Group::Scale,
        Group::Rotation,
        Group::Opacity,
        Group::Dc,
    ];

    /// The name used by `--attr-bits`.
    pub fn name(self) -> &'static str {
        match self {
            Group::Position => "position",
            Group::Scale => "scale",
            Group::Rotation => "rotation",
            Group::Opacity => "opacity",
            Group::Dc => "dc",
        }
    }

    /// Its stream.
    fn tag(self) -> [u8; 4] {
        match self {
            Group::Position => tags::POS,
            Group::Scale => tags::SCL,
            Group::Rotation => tags::QUAT,
            Group::Opacity => tags::OPA,
            Group::Dc => tags::DC,
        }
    }

    /// The widths searched: below these the error stops acting linearly on
    /// the image; above them nothing is left to gain.
    pub fn range(self) -> (u8, u8) {
        match self {
            Group::Position => (8, 16),
            Group::Scale => (3, 12),
            Group::Rotation => (4, 10),
            Group::Opacity => (3, 10),
            Group::Dc => (3, 10),
        }
    }

    /// The widths of the two probe renders: the narrowest searched, where
    /// the error stops acting linearly, and two bits above it, where it is
    /// still well above the renderer's rounding. Between them the model
    /// follows the measured slope; above, the 4^−b law.
    pub fn probes(self) -> [u8; 2] {
        let lo = self.range().0;
        [lo, lo + 2]
    }

    fn set(self, bits: &mut AttrBits, b: u8) {
        match self {
            Group::Position => bits.position = b,
            Group::Scale => bits.scale = b,
            Group::Rotation => bits.rotation = b,
            Group::Opacity => bits.opacity = b,
            Group::Dc => bits.dc = b,
        }
    }

    /// Copies this group's values from `from` into `to` (same order).
    fn copy(self, to: &mut Scene, from: &Scene) {
        match self {
            Group::Position => to.positions.clone_from(&from.positions),
            Group::Scale => to.scales.clone_from(&from.scales),
            Group::Rotation => to.rotations.clone_from(&from.rotations),
            Group::Opacity => to.opacity.clone_from(&from.opacity),
            Group::Dc => to.dc.clone_from(&from.dc),
        }
    }
}

/// How the SH-rest widths of a setting are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShSetting {
    /// Every Gaussian at b bits (1..=8).
    Uniform(u8),
    /// Widths per Gaussian at b̄ bits per coefficient on average (footprint
    /// weights, as `tq3d compress --sh-bits` allocates by default).
    Allocated(f64),
}

impl std::fmt::Display for ShSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShSetting::Uniform(0) => write!(f, "none (no SH-rest)"),
            ShSetting::Uniform(b) => write!(f, "uniform b = {b}"),
            ShSetting::Allocated(b) => write!(f, "allocated b̄ = {b}"),
        }
    }
}

/// One SH setting of the model.
#[derive(Debug, Clone)]
pub struct ShOption {
    /// What it is.
    pub setting: ShSetting,
    /// Per-Gaussian widths (input order), for [`ShSetting::Allocated`].
    pub widths: Option<Vec<u8>>,
    /// Bytes of the file without the five attribute streams.
    pub base_bytes: u64,
    /// The norm-separation estimate of its image MSE (before κ).
    pub estimate: f64,
}

/// Where a setting stands.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Attribute bits.
    pub attr_bits: AttrBits,
    /// Index into [`Model::sh`].
    pub sh: usize,
    /// File size, bytes (exact).
    pub bytes: u64,
    /// Predicted image MSE against the original's render.
    pub mse: f64,
}

impl Choice {
    /// Predicted PSNR (dB, pixel range 1).
    pub fn psnr(&self) -> f64 {
        metrics::psnr_from_mse(self.mse)
    }
}

/// A target for [`Model::choose`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The smallest file whose predicted PSNR is at least this (dB).
    Psnr(f64),
    /// The best predicted PSNR in at most this many bytes.
    Bytes(u64),
}

/// The per-scene model: exact sizes and measured or predicted errors.
#[derive(Debug, Clone)]
pub struct Model {
    /// The options the model was built around (profile compact, seed,
    /// pruning, degree, chunk size).
    pub base: CompressOptions,
    /// Stored bytes of each group's stream at each width (index = width,
    /// 1..=16, rotation 1..=10).
    pub attr_bytes: [[u64; 17]; 5],
    /// Measured image MSE of each group alone at its two probe widths
    /// (narrow, wide).
    pub attr_probe: [[(u8, f64); 2]; 5],
    /// MSE of the storage-ordered, pruned but otherwise exact scene.
    pub floor: f64,
    /// The SH settings.
    pub sh: Vec<ShOption>,
    /// κ (measured / estimate) for uniform widths b ≥ 2 (measured at 2),
    /// for allocated widths (at b̄ = 1), and for uniform b = 1, where the
    /// sign flip decorrelates least (docs/THEORY.md §16).
    pub kappa: [f64; 3],
    /// Render passes spent building the model (each over every view).
    pub renders: usize,
    /// Groups held at a width (`--attr-bits`), in [`Group::ALL`] order.
    pub pinned: [Option<u8>; 5],
}

/// The input scene permuted into storage order at `degree`: what the
/// decoder's output is compared with attribute by attribute.
pub fn in_storage_order(scene: &Scene, order: &[u32], degree: u8) -> Scene {
    let mut s = scene.clone();
    s.truncate_sh(degree);
    let d = s.rest_dim();
    Scene {
        sh_degree: s.sh_degree,
        positions: order.iter().map(|&i| s.positions[i as usize]).collect(),
        normals: None,
        dc: order.iter().map(|&i| s.dc[i as usize]).collect(),
        sh_rest: order
            .iter()
            .flat_map(|&i| s.sh_rest[i as usize * d..(i as usize + 1) * d].to_vec())
            .collect(),
        opacity: order.iter().map(|&i| s.opacity[i as usize]).collect(),
        scales: order.iter().map(|&i| s.scales[i as usize]).collect(),
        rotations: order.iter().map(|&i| s.rotations[i as usize]).collect(),
        ..Scene::default()
    }
}

/// Mean image MSE of `scene`'s renders against `reference`.
pub fn mean_mse(
    render: &RenderFn,
    scene: &Scene,
    views: &[Camera],
    reference: &[Image],
) -> Result<f64> {
    let imgs = render(scene, views)?;
    let mut s = 0.0;
    for (a, b) in imgs.iter().zip(reference) {
        s += metrics::mse(a, b)?;
    }
    Ok(s / views.len().max(1) as f64)
}

fn stored(infos: &[StreamInfo], tag: [u8; 4]) -> u64 {
    infos
        .iter()
        .find(|s| s.tag == tag)
        .map_or(0, |s| s.stored_len)
}

/// The SH settings the model considers at SH-rest dimension d > 0.
pub fn default_sh_settings() -> Vec<ShSetting> {
    let mut v: Vec<ShSetting> = (1..=6).map(ShSetting::Uniform).collect();
    for b in [
        0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0,
    ] {
        v.push(ShSetting::Allocated(b));
    }
    v
}

/// Builds the model of `scene` on `views`, whose renders of the original
/// are `reference`. `progress` hears what is being done.
pub fn build_model(
    scene: &Scene,
    base: &CompressOptions,
    views: &[Camera],
    reference: &[Image],
    render: &RenderFn,
    progress: &dyn Fn(&str),
) -> Result<Model> {
    if views.is_empty() || views.len() != reference.len() {
        return Err(Error::InvalidArgument(
            "the rate–distortion model needs at least one view and its reference render".into(),
        ));
    }
    let mut base = base.clone();
    base.profile = Profile::Compact;
    base.sh_widths = None;
    let degree = base
        .sh_degree
        .map_or(scene.sh_degree, |l| l.min(scene.sh_degree));
    let order = storage_order(scene, &base);
    if order.is_empty() {
        return Err(Error::InvalidArgument(
            "pruning removes every Gaussian".into(),
        ));
    }
    let sorted = in_storage_order(scene, &order, degree);
    let mut renders = 0;

    progress("rendering the exact scene");
    let floor = mean_mse(render, &sorted, views, reference)?;
    renders += 1;

    // Every group's stream at every width, from one compression per width
    // (all groups at that width, SH dropped so it costs nothing here).
    progress("coding the attributes at every width");
    let widths: Vec<u8> = (1..=16).collect();
    let per_width: Vec<(u8, Vec<StreamInfo>, Option<Scene>)> = widths
        .iter()
        .map(|&w| {
            let mut o = base.clone();
            o.sh_degree = Some(0);
            o.attr_bits = AttrBits {
                position: w,
                scale: w,
                rotation: w.min(10),
                opacity: w,
                dc: w,
            };
            let c = compress(scene, &o)?;
            let infos: Vec<StreamInfo> = c.streams.iter().map(|p| p.info).collect();
            let keep = Group::ALL.iter().any(|g| g.probes().contains(&w));
            let back = if keep {
                Some(decompress(
                    &c.to_bytes()?,
                    std::path::Path::new("<memory>"),
                )?)
            } else {
                None
            };
            Ok((w, infos, back))
        })
        .collect::<Result<_>>()?;
    let mut attr_bytes = [[0u64; 17]; 5];
    for (k, g) in Group::ALL.iter().enumerate() {
        let max = if *g == Group::Rotation { 10 } else { 16 };
        for (w, infos, _) in &per_width {
            if *w <= max {
                attr_bytes[k][*w as usize] = stored(infos, g.tag());
            }
        }
    }

    let mut attr_probe = [[(0u8, 0f64); 2]; 5];
    for (k, g) in Group::ALL.iter().enumerate() {
        for (j, &w) in g.probes().iter().enumerate() {
            progress(&format!("measuring {} at {w} bits", g.name()));
            let back = per_width
                .iter()
                .find(|(x, _, _)| *x == w)
                .and_then(|(_, _, b)| b.as_ref())
                .ok_or_else(|| Error::InvalidArgument("no probe decode".into()))?;
            let mut hybrid = sorted.clone();
            g.copy(&mut hybrid, back);
            let m = mean_mse(render, &hybrid, views, reference)?;
            renders += 1;
            attr_probe[k][j] = (w, (m - floor).max(0.0));
        }
    }

    let mut sh = Vec::new();
    let mut kappa = [1.0, 1.0, 1.0];
    if sorted.rest_dim() > 0 {
        progress("weighing each Gaussian over the views");
        let (_, w2) = predict::coverage_sq_over_views(&sorted, views);
        let pixels: u64 = views.iter().map(|c| c.width as u64 * c.height as u64).sum();
        let kept: Vec<bool> = scene
            .opacity
            .iter()
            .map(|&o| survives_prune(o, base.prune_opacity))
            .collect();
        let values = importance(scene, degree, Weight::OpacityFootprint, None)?;
        let d = sorted.rest_dim();
        let settings = default_sh_settings();
        progress("encoding the SH settings");
        let encoded: Vec<(ShOption, Scene)> = settings
            .par_iter()
            .map(|&s| {
                let mut o = base.clone();
                let widths = match s {
                    ShSetting::Uniform(b) => {
                        o.sh_bits = b as u32;
                        None
                    }
                    ShSetting::Allocated(b) => {
                        let a = allocate::for_average_bits(&values, &kept, d, b)?;
                        o.sh_widths = Some(a.widths.clone());
                        Some(a.widths)
                    }
                };
                let c = compress(scene, &o)?;
                let infos: Vec<StreamInfo> = c.streams.iter().map(|p| p.info).collect();
                let attrs: u64 = Group::ALL.iter().map(|g| stored(&infos, g.tag())).sum();
                let back = decompress(&c.to_bytes()?, std::path::Path::new("<memory>"))?;
                // Σ_i a_i·‖e_i‖² with a_i = Σ_p w_i(p)², as predict_mse.
                let num: f64 = (0..sorted.len())
                    .map(|i| {
                        let e: f64 = sorted
                            .rest(i)
                            .iter()
                            .zip(back.rest(i))
                            .map(|(&x, &y)| ((x - y) as f64).powi(2))
                            .sum();
                        w2[i] * e
                    })
                    .sum();
                let estimate = predict::predict_mse((0.0, num), pixels, 1.0).estimate;
                Ok((
                    ShOption {
                        setting: s,
                        widths,
                        base_bytes: c.size() - attrs,
                        estimate,
                    },
                    back,
                ))
            })
            .collect::<Result<_>>()?;
        // κ from one probe of each kind, SH alone quantised.
        for (slot, probe) in [
            (0usize, ShSetting::Uniform(2)),
            (1, ShSetting::Allocated(1.0)),
            (2, ShSetting::Uniform(1)),
        ] {
            progress(&format!("measuring SH at {probe}"));
            if let Some((opt, back)) = encoded.iter().find(|(o, _)| o.setting == probe) {
                let mut hybrid = sorted.clone();
                hybrid.sh_rest.clone_from(&back.sh_rest);
                let m = (mean_mse(render, &hybrid, views, reference)? - floor).max(0.0);
                renders += 1;
                if opt.estimate > 0.0 && m > 0.0 {
                    kappa[slot] = m / opt.estimate;
                }
            }
        }
        sh = encoded.into_iter().map(|(o, _)| o).collect();
    } else {
        let c = compress(scene, &base)?;
        let infos: Vec<StreamInfo> = c.streams.iter().map(|p| p.info).collect();
        let attrs: u64 = Group::ALL.iter().map(|g| stored(&infos, g.tag())).sum();
        sh.push(ShOption {
            setting: ShSetting::Uniform(0),
            widths: None,
            base_bytes: c.size() - attrs,
            estimate: 0.0,
        });
    }
    Ok(Model {
        base,
        attr_bytes,
        attr_probe,
        floor,
        sh,
        kappa,
        renders,
        pinned: [None; 5],
    })
}

impl Model {
    /// Predicted MSE of group `k` at width `b`.
    pub fn attr_mse(&self, k: usize, b: u8) -> f64 {
        let [(pl, ml), (ph, mh)] = self.attr_probe[k];
        let law = |p: u8, m: f64| m * 4f64.powi(p as i32 - b as i32);
        if mh <= 0.0 {
            // The wide probe shows nothing: the narrow one and the 4^−b law
            // of a uniform quantiser.
            return law(pl, ml);
        }
        if b >= ph || ml <= mh {
            // Above the wide probe (or where the narrow one shows no
            // steeper growth): the 4^−b law.
            return law(ph, mh);
        }
        // Log-linear through the two probes, and on below the narrow one
        // with at least the 4^−b slope.
        let slope = (ml / mh).ln() / (ph - pl) as f64;
        if b >= pl {
            mh * (slope * (ph - b) as f64).exp()
        } else {
            ml * (slope.max(4f64.ln()) * (pl - b) as f64).exp()
        }
    }

    /// Predicted SH MSE of setting `s` (κ applied).
    pub fn sh_mse(&self, s: usize) -> f64 {
        let o = &self.sh[s];
        let k = match o.setting {
            ShSetting::Uniform(1) => self.kappa[2],
            ShSetting::Uniform(_) => self.kappa[0],
            ShSetting::Allocated(_) => self.kappa[1],
        };
        k * o.estimate
    }

    /// Scales every predicted error term by `f` (after a verifying render
    /// measured `f` times the prediction).
    pub fn scale_errors(&mut self, f: f64) {
        for p in self.attr_probe.iter_mut().flatten() {
            p.1 *= f;
        }
        for k in &mut self.kappa {
            *k *= f;
        }
    }

    /// The compress options of a choice.
    pub fn options(&self, c: &Choice) -> CompressOptions {
        let mut o = self.base.clone();
        o.attr_bits = c.attr_bits;
        match (&self.sh[c.sh].setting, &self.sh[c.sh].widths) {
            (ShSetting::Allocated(_), Some(w)) => o.sh_widths = Some(w.clone()),
            (ShSetting::Uniform(b), _) if *b > 0 => o.sh_bits = *b as u32,
            _ => {}
        }
        o
    }

    /// The Pareto front of (bytes, MSE) over the attribute groups' widths.
    fn attr_front(&self) -> Vec<(u64, f64, AttrBits)> {
        // Per group: (width, bytes, mse), dominated widths removed.
        let per: Vec<Vec<(u8, u64, f64)>> = (0..5)
            .map(|k| {
                let (lo, hi) = match self.pinned[k] {
                    Some(b) => (b, b),
                    None => Group::ALL[k].range(),
                };
                let mut v: Vec<(u8, u64, f64)> = (lo..=hi)
                    .map(|b| (b, self.attr_bytes[k][b as usize], self.attr_mse(k, b)))
                    .collect();
                v.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)));
                let mut out: Vec<(u8, u64, f64)> = Vec::new();
                for x in v {
                    if out.last().is_none_or(|l| x.2 < l.2) {
                        out.push(x);
                    }
                }
                out
            })
            .collect();
        // Cartesian product, then the Pareto front of (bytes, mse).
        let mut all: Vec<(u64, f64, AttrBits)> = vec![(0, 0.0, AttrBits::default())];
        for (k, opts) in per.iter().enumerate() {
            let mut next = Vec::with_capacity(all.len() * opts.len());
            for &(b0, m0, bits) in &all {
                for &(w, b, m) in opts {
                    let mut nb = bits;
                    Group::ALL[k].set(&mut nb, w);
                    next.push((b0 + b, m0 + m, nb));
                }
            }
            next.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            all.clear();
            for x in next {
                if all.last().is_none_or(|l| x.1 < l.1) {
                    all.push(x);
                }
            }
        }
        all
    }

    /// The Pareto front of the whole model: for each size, the lowest
    /// predicted MSE, ascending in bytes.
    pub fn front(&self) -> Vec<Choice> {
        let attrs = self.attr_front();
        let mut all: Vec<Choice> = Vec::new();
        for s in 0..self.sh.len() {
            let (sb, sm) = (self.sh[s].base_bytes, self.floor + self.sh_mse(s));
            for &(b, m, bits) in &attrs {
                all.push(Choice {
                    attr_bits: bits,
                    sh: s,
                    bytes: sb + b,
                    mse: sm + m,
                });
            }
        }
        all.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(a.mse.total_cmp(&b.mse)));
        let mut out: Vec<Choice> = Vec::new();
        for c in all {
            if out.last().is_none_or(|l| c.mse < l.mse) {
                out.push(c);
            }
        }
        out
    }

    /// The best setting for the target, or `None` when none reaches it.
    pub fn choose(&self, target: Target) -> Option<Choice> {
        let front = self.front();
        match target {
            Target::Psnr(p) => {
                let mse = 10f64.powf(-p / 10.0);
                front.into_iter().find(|c| c.mse <= mse)
            }
            Target::Bytes(n) => front.into_iter().rev().find(|c| c.bytes <= n),
        }
    }
}

/// Compresses `scene` with a choice and measures its mean MSE on the views.
pub fn verify(
    scene: &Scene,
    model: &Model,
    choice: &Choice,
    views: &[Camera],
    reference: &[Image],
    render: &RenderFn,
) -> Result<(u64, f64)> {
    let c = compress(scene, &model.options(choice))?;
    let bytes = c.to_bytes()?;
    let back = decompress(&bytes, std::path::Path::new("<memory>"))?;
    Ok((
        bytes.len() as u64,
        mean_mse(render, &back, views, reference)?,
    ))
}
