//! The whole-scene codec: prune, order, encode SH-rest with TurboQuant and
//! the other attributes by profile, and predict the size in closed form
//! before doing any of it. The reverse builds a [`Scene`] again.

use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::gpu::{Engine, Ran};
use crate::splat::attributes::{self, AttrBits};
use crate::splat::container::{
    self, Coding, Container, Header, Normals, Packed, Profile, Stream, tag_name,
};
use crate::splat::scene::{ExtraProperty, Extras, ScalarType, Scene, rest_dim, sigmoid};
use crate::splat::sh;
pub use crate::splat::sh::{CompressedSh, ShRun};
use crate::{Error, Result, Rotation, RotationKind, ScaleMode};

/// Stream tags, in file order.
pub mod tags {
    pub const ROT: [u8; 4] = *b"ROT ";
    pub const CBK: [u8; 4] = *b"CBK ";
    pub const SHW: [u8; 4] = *b"SHW ";
    pub const SHS: [u8; 4] = *b"SHS ";
    pub const SHC: [u8; 4] = *b"SHC ";
    pub const CHNK: [u8; 4] = *b"CHNK";
    pub const POS: [u8; 4] = *b"POS ";
    pub const SCL: [u8; 4] = *b"SCL ";
    pub const QUAT: [u8; 4] = *b"QUAT";
    pub const OPA: [u8; 4] = *b"OPA ";
    pub const DC: [u8; 4] = *b"DC  ";
    pub const NRM: [u8; 4] = *b"NRM ";
    pub const EXTS: [u8; 4] = *b"EXTS";
    pub const EXTD: [u8; 4] = *b"EXTD";
    pub const CMNT: [u8; 4] = *b"CMNT";
}

/// The default seed of the SH rotation (any fixed value; the rotation itself
/// is stored in the file).
pub const DEFAULT_SEED: u64 = 0x0003_D702_5041_9874;

/// Gaussians per chunk of the compact profile.
pub const DEFAULT_CHUNK: u32 = 256;

/// Bytes of one chunk record in `CHNK`: position, log-scale and DC ranges,
/// each 3 lows then 3 highs, as f32.
pub const CHUNK_RECORD: usize = 18 * 4;

/// How to compress a scene.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressOptions {
    /// How the attributes other than SH-rest are stored.
    pub profile: Profile,
    /// SH-rest bits per coordinate b, 1..=8.
    pub sh_bits: u32,
    /// Keep SH bands up to this degree (lower than the input's truncates).
    pub sh_degree: Option<u8>,
    /// Drop Gaussians whose sigmoid(opacity) is below τ.
    pub prune_opacity: Option<f32>,
    /// Seed of the SH rotation.
    pub seed: u64,
    /// Least-squares or norm scale for SH-rest.
    pub scale_mode: ScaleMode,
    /// Bits of the quantised attributes (compact profile).
    pub attr_bits: AttrBits,
    /// Gaussians per chunk (compact profile), 1..=65536.
    pub chunk_size: u32,
    /// A SH-rest width b_i ∈ 0..=8 per input Gaussian (see
    /// [`allocate`](crate::splat::allocate)); when set it replaces
    /// `sh_bits`, and b_i = 0 drops that Gaussian's SH-rest.
    pub sh_widths: Option<Vec<u8>>,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            profile: Profile::Compact,
            sh_bits: 3,
            sh_degree: None,
            prune_opacity: None,
            seed: DEFAULT_SEED,
            scale_mode: ScaleMode::LeastSquares,
            attr_bits: AttrBits::default(),
            chunk_size: DEFAULT_CHUNK,
            sh_widths: None,
        }
    }
}

/// One stream's share of the predicted size.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSize {
    /// The stream's tag.
    pub tag: String,
    /// Exact bytes (fixed-rate, stored raw), or the raw length that bounds
    /// the entropy-coded stream.
    pub bytes: u64,
    /// Whether `bytes` is exact (true) or an upper bound (false).
    pub exact: bool,
}

/// The size of a compressed scene, known before compressing.
#[derive(Debug, Clone, PartialEq)]
pub struct SizePrediction {
    /// Gaussians in the input.
    pub input_count: u64,
    /// Gaussians kept after pruning.
    pub count: u64,
    /// SH-rest dimension after truncation.
    pub dim: usize,
    /// Per stream.
    pub streams: Vec<StreamSize>,
    /// Header and stream table.
    pub overhead: u64,
}

impl SizePrediction {
    /// The exact bytes: header, table and fixed-rate streams.
    pub fn fixed(&self) -> u64 {
        self.overhead
            + self
                .streams
                .iter()
                .filter(|s| s.exact)
                .map(|s| s.bytes)
                .sum::<u64>()
    }

    /// Upper bound of the entropy-coded streams (their raw lengths: a stream
    /// zstd cannot shrink is stored raw).
    pub fn entropy_bound(&self) -> u64 {
        self.streams
            .iter()
            .filter(|s| !s.exact)
            .map(|s| s.bytes)
            .sum()
    }

    /// Upper bound of the whole file.
    pub fn total_bound(&self) -> u64 {
        self.fixed() + self.entropy_bound()
    }
}

/// Wall time of each stage of [`compress`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    pub prune_and_order: Duration,
    pub sh: Duration,
    pub attributes: Duration,
    pub entropy: Duration,
}

/// A compressed scene, ready to be written.
#[derive(Debug, Clone)]
pub struct Compressed {
    pub header: Header,
    pub streams: Vec<Packed>,
    pub prediction: SizePrediction,
    pub timings: Timings,
    /// Where the SH-rest was encoded.
    pub sh_run: ShRun,
}

impl Compressed {
    /// Bytes of the file.
    pub fn size(&self) -> u64 {
        container::overhead(self.streams.len())
            + self.streams.iter().map(|s| s.info.stored_len).sum::<u64>()
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size() as usize);
        container::write_to(&mut out, &self.header, &self.streams, Path::new("<memory>"))?;
        Ok(out)
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::format::write_atomic(path, |w| {
            container::write_to(w, &self.header, &self.streams, path)
        })
    }
}

fn check_options(opts: &CompressOptions) -> Result<()> {
    if !(1..=8).contains(&opts.sh_bits) {
        return Err(Error::InvalidBits { bits: opts.sh_bits });
    }
    if let Some(l) = opts.sh_degree
        && l > 3
    {
        return Err(Error::InvalidArgument(format!("SH degree {l} is above 3")));
    }
    if let Some(t) = opts.prune_opacity
        && !(0.0..1.0).contains(&t)
    {
        return Err(Error::InvalidArgument(format!(
            "opacity pruning threshold τ = {t} must be in [0, 1)"
        )));
    }
    if !(1..=65536).contains(&opts.chunk_size) {
        return Err(Error::InvalidArgument(format!(
            "chunk size {} must be in 1..=65536",
            opts.chunk_size
        )));
    }
    opts.attr_bits.validate().map_err(Error::InvalidArgument)
}

/// Every value a Gaussian carries must be finite: the error names the first
/// offending Gaussian and property.
pub fn check_finite(scene: &Scene) -> Result<()> {
    let d = scene.rest_dim();
    let bad = (0..scene.len()).into_par_iter().find_first(|&i| {
        let fin = |v: &[f32]| v.iter().all(|x| x.is_finite());
        !(fin(&scene.positions[i])
            && fin(&scene.dc[i])
            && scene.opacity[i].is_finite()
            && fin(&scene.scales[i])
            && fin(&scene.rotations[i])
            && fin(&scene.sh_rest[i * d..(i + 1) * d])
            && scene.normals.as_ref().is_none_or(|n| fin(&n[i])))
    });
    let Some(i) = bad else { return Ok(()) };
    let mut fields: Vec<(String, f32)> = Vec::new();
    for (a, v) in ["x", "y", "z"].iter().zip(scene.positions[i]) {
        fields.push((a.to_string(), v));
    }
    if let Some(n) = &scene.normals {
        for (a, v) in ["nx", "ny", "nz"].iter().zip(n[i]) {
            fields.push((a.to_string(), v));
        }
    }
    for (k, v) in scene.dc[i].iter().enumerate() {
        fields.push((format!("f_dc_{k}"), *v));
    }
    for (k, v) in scene.sh_rest[i * d..(i + 1) * d].iter().enumerate() {
        fields.push((format!("f_rest_{k}"), *v));
    }
    fields.push(("opacity".into(), scene.opacity[i]));
    for (k, v) in scene.scales[i].iter().enumerate() {
        fields.push((format!("scale_{k}"), *v));
    }
    for (k, v) in scene.rotations[i].iter().enumerate() {
        fields.push((format!("rot_{k}"), *v));
    }
    let (name, v) = fields.into_iter().find(|(_, v)| !v.is_finite()).unwrap();
    Err(Error::InvalidArgument(format!(
        "Gaussian {i}: {name} = {v} is not finite; NaN and ±Inf cannot be compressed"
    )))
}

/// Number of Gaussians kept by pruning at τ (all when τ is `None`).
pub fn kept_count(scene: &Scene, tau: Option<f32>) -> usize {
    match tau {
        None => scene.len(),
        Some(t) => scene
            .opacity
            .par_iter()
            .filter(|&&o| sigmoid(o) >= t)
            .count(),
    }
}

fn extras_schema(extras: &Extras) -> Vec<u8> {
    let mut out = (extras.properties.len() as u32).to_le_bytes().to_vec();
    for p in &extras.properties {
        out.push(p.ty.code());
        out.extend_from_slice(&(p.name.len() as u16).to_le_bytes());
        out.extend_from_slice(p.name.as_bytes());
    }
    out
}

fn comments_bytes(comments: &[String]) -> Vec<u8> {
    comments
        .iter()
        .flat_map(|c| c.bytes().chain([b'\n']))
        .collect()
}

fn codebook_len(bits: u32) -> u64 {
    2 + ((2u64 << bits) - 1) * 4
}

/// The size of `compress(scene, opts)`, in closed form: exact for the
/// fixed-rate streams, bounded by the raw length for the entropy-coded ones.
pub fn predict_size(scene: &Scene, opts: &CompressOptions) -> Result<SizePrediction> {
    check_options(opts)?;
    if let Some(w) = &opts.sh_widths {
        if w.len() != scene.len() {
            return Err(Error::Shape(format!(
                "{} SH widths for {} Gaussians",
                w.len(),
                scene.len()
            )));
        }
        if let Some(i) = w.iter().position(|&b| b > 8) {
            return Err(Error::InvalidArgument(format!(
                "Gaussian {i}: SH width {} is above 8",
                w[i]
            )));
        }
    }
    let n = kept_count(scene, opts.prune_opacity) as u64;
    let degree = opts
        .sh_degree
        .map_or(scene.sh_degree, |l| l.min(scene.sh_degree));
    let d = rest_dim(degree) as u64;
    let b = opts.sh_bits as u64;
    let mut s: Vec<StreamSize> = Vec::new();
    let mut add = |tag: &[u8; 4], bytes: u64, exact: bool| {
        s.push(StreamSize {
            tag: tag_name(tag),
            bytes,
            exact,
        })
    };
    if d > 0 {
        add(&tags::ROT, d * d * 4, true);
        match &opts.sh_widths {
            None => {
                add(&tags::CBK, codebook_len(opts.sh_bits), true);
                add(&tags::SHS, 2 * n, true);
                add(&tags::SHC, (n * d * b).div_ceil(8), true);
            }
            Some(w) => {
                let kept: Vec<u8> = match opts.prune_opacity {
                    None => w.clone(),
                    Some(t) => (0..scene.len())
                        .filter(|&i| sigmoid(scene.opacity[i]) >= t)
                        .map(|i| w[i])
                        .collect(),
                };
                let used: Vec<u8> = (1..=8u8).filter(|b| kept.contains(b)).collect();
                let nonzero = kept.iter().filter(|&&b| b > 0).count() as u64;
                add(&tags::CBK, sh::codebook_len(&used), true);
                add(&tags::SHW, n.div_ceil(2), false);
                add(&tags::SHS, 2 * nonzero, true);
                add(
                    &tags::SHC,
                    sh::codes_len(d as usize, kept.iter().copied()),
                    true,
                );
            }
        }
    }
    match opts.profile {
        Profile::Exact => {
            add(&tags::POS, 12 * n, false);
            add(&tags::SCL, 12 * n, false);
            add(&tags::QUAT, 16 * n, false);
            add(&tags::OPA, 4 * n, false);
            add(&tags::DC, 12 * n, false);
            if scene.normals.is_some() {
                add(&tags::NRM, 12 * n, false);
            }
        }
        Profile::Compact => {
            let ab = opts.attr_bits;
            let cb = |bits: u8| attributes::code_bytes(bits) as u64;
            add(
                &tags::CHNK,
                n.div_ceil(opts.chunk_size as u64) * CHUNK_RECORD as u64,
                true,
            );
            add(&tags::POS, 3 * cb(ab.position) * n, false);
            add(&tags::SCL, 3 * cb(ab.scale) * n, false);
            add(&tags::QUAT, 4 * n, false);
            add(&tags::OPA, cb(ab.opacity) * n, false);
            add(&tags::DC, 3 * cb(ab.dc) * n, false);
        }
    }
    if !scene.extras.properties.is_empty() {
        add(&tags::EXTS, extras_schema(&scene.extras).len() as u64, true);
        add(&tags::EXTD, scene.extras.stride() as u64 * n, false);
    }
    if !scene.comments.is_empty() {
        add(
            &tags::CMNT,
            comments_bytes(&scene.comments).len() as u64,
            true,
        );
    }
    Ok(SizePrediction {
        input_count: scene.len() as u64,
        count: n,
        dim: d as usize,
        overhead: container::overhead(s.len()),
        streams: s,
    })
}

/// Normals mode for a profile.
fn normals_mode(scene: &Scene, profile: Profile) -> Normals {
    match &scene.normals {
        None => Normals::Absent,
        Some(n) if n.par_iter().all(|v| v.iter().all(|c| c.to_bits() == 0)) => Normals::Zero,
        Some(_) if profile == Profile::Exact => Normals::Stored,
        Some(_) => Normals::Dropped,
    }
}

fn f32_planes<const K: usize>(v: &[[f32; K]], order: &[u32]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(order.len() * K * 4);
    for &i in order {
        for c in v[i as usize] {
            raw.extend_from_slice(&c.to_le_bytes());
        }
    }
    attributes::to_byte_planes(&raw, K * 4)
}

/// Compact attribute streams: CHNK, POS, SCL, QUAT, OPA, DC.
fn compact_streams(scene: &Scene, order: &[u32], bits: AttrBits, chunk: usize) -> [Vec<u8>; 6] {
    let n = order.len();
    let chunks: Vec<[Vec<u8>; 6]> = order
        .par_chunks(chunk)
        .map(|idx| {
            let range = |get: &dyn Fn(usize) -> [f32; 3]| {
                let mut lo = [f32::INFINITY; 3];
                let mut hi = [f32::NEG_INFINITY; 3];
                for &i in idx {
                    let v = get(i as usize);
                    for a in 0..3 {
                        lo[a] = lo[a].min(v[a]);
                        hi[a] = hi[a].max(v[a]);
                    }
                }
                (lo, hi)
            };
            let pos = range(&|i| scene.positions[i]);
            let scl = range(&|i| scene.scales[i]);
            let dc = range(&|i| scene.dc[i]);
            let mut rec = Vec::with_capacity(CHUNK_RECORD);
            for (lo, hi) in [pos, scl, dc] {
                for v in lo.iter().chain(&hi) {
                    rec.extend_from_slice(&v.to_le_bytes());
                }
            }
            let put = |out: &mut Vec<u8>, q: u16, b: u8| {
                if attributes::code_bytes(b) == 1 {
                    out.push(q as u8);
                } else {
                    out.extend_from_slice(&q.to_le_bytes());
                }
            };
            let (mut p, mut s, mut r, mut o, mut c) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for &i in idx {
                let i = i as usize;
                for a in 0..3 {
                    let qp = attributes::quantise_range(
                        scene.positions[i][a],
                        pos.0[a],
                        pos.1[a],
                        bits.position,
                    );
                    put(&mut p, qp, bits.position);
                    let qs = attributes::quantise_range(
                        scene.scales[i][a],
                        scl.0[a],
                        scl.1[a],
                        bits.scale,
                    );
                    put(&mut s, qs, bits.scale);
                    let qc = attributes::quantise_range(scene.dc[i][a], dc.0[a], dc.1[a], bits.dc);
                    put(&mut c, qc, bits.dc);
                }
                r.extend_from_slice(
                    &attributes::quantise_quat(scene.rotations[i], bits.rotation).to_le_bytes(),
                );
                put(
                    &mut o,
                    attributes::quantise_opacity(scene.opacity[i], bits.opacity),
                    bits.opacity,
                );
            }
            [rec, p, s, r, o, c]
        })
        .collect();
    let mut out: [Vec<u8>; 6] = Default::default();
    for (k, v) in out.iter_mut().enumerate() {
        let len: usize = chunks.iter().map(|c| c[k].len()).sum();
        v.reserve_exact(len);
        for c in &chunks {
            v.extend_from_slice(&c[k]);
        }
    }
    let cb = |b: u8| attributes::code_bytes(b);
    let elems = [
        CHUNK_RECORD,
        3 * cb(bits.position),
        3 * cb(bits.scale),
        4,
        cb(bits.opacity),
        3 * cb(bits.dc),
    ];
    debug_assert_eq!(out[3].len(), 4 * n);
    let mut planed: [Vec<u8>; 6] = Default::default();
    for (k, v) in out.into_iter().enumerate() {
        planed[k] = if k == 0 {
            v
        } else {
            attributes::to_byte_planes(&v, elems[k])
        };
    }
    planed
}

/// The input indices of the stored Gaussians, in storage order: the
/// Gaussians kept by pruning, in their original order (exact profile) or in
/// Morton order (compact profile). Stored Gaussian k is input Gaussian
/// `storage_order(..)[k]`.
pub fn storage_order(scene: &Scene, opts: &CompressOptions) -> Vec<u32> {
    let kept: Vec<u32> = match opts.prune_opacity {
        None => (0..scene.len() as u32).collect(),
        Some(tau) => (0..scene.len() as u32)
            .into_par_iter()
            .filter(|&i| sigmoid(scene.opacity[i as usize]) >= tau)
            .collect(),
    };
    match opts.profile {
        Profile::Exact => kept,
        Profile::Compact => {
            let pts: Vec<[f32; 3]> = kept
                .par_iter()
                .map(|&i| scene.positions[i as usize])
                .collect();
            attributes::morton_order(&pts)
                .into_par_iter()
                .map(|k| kept[k as usize])
                .collect()
        }
    }
}

/// Compresses a scene. The output is a function of the scene and the
/// options alone: the same bytes on every run, thread count and platform.
pub fn compress(scene: &Scene, opts: &CompressOptions) -> Result<Compressed> {
    compress_with(scene, opts, None)
}

/// [`compress`], with the SH-rest encoded on the engine's device: a GPU
/// when it has one. The bytes are the same as [`compress`]'s.
pub fn compress_on(scene: &Scene, opts: &CompressOptions, engine: &Engine) -> Result<Compressed> {
    compress_with(scene, opts, Some(engine))
}

fn compress_with(
    scene: &Scene,
    opts: &CompressOptions,
    engine: Option<&Engine>,
) -> Result<Compressed> {
    check_options(opts)?;
    scene.check_consistent().map_err(Error::InvalidArgument)?;
    if scene.is_empty() {
        return Err(Error::EmptyInput {
            what: "the scene has no Gaussians".into(),
        });
    }
    if scene.len() > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{} Gaussians exceed the container's limit of 2^32 − 1",
            scene.len()
        )));
    }
    check_finite(scene)?;
    let prediction = predict_size(scene, opts)?;
    if prediction.count == 0 {
        return Err(Error::InvalidArgument(format!(
            "pruning at τ = {} removes all {} Gaussians",
            opts.prune_opacity.unwrap_or(0.0),
            scene.len()
        )));
    }
    let mut timings = Timings::default();

    let t = Instant::now();
    let order = storage_order(scene, opts);
    timings.prune_and_order = t.elapsed();

    let degree = opts
        .sh_degree
        .map_or(scene.sh_degree, |l| l.min(scene.sh_degree));
    let d = rest_dim(degree);
    let mut raw: Vec<Stream> = Vec::new();
    let mut push =
        |tag: [u8; 4], coding: Coding, data: Vec<u8>| raw.push(Stream { tag, coding, data });
    let t = Instant::now();
    let mut rotation_kind = 0;
    let mut sh_run = ShRun {
        ran: Ran::Cpu,
        ties: 0,
        fell_back: false,
    };
    let mut max_width = 0u8;
    if d > 0 {
        let widths = match &opts.sh_widths {
            Some(w) => {
                max_width = order.iter().map(|&i| w[i as usize]).max().unwrap_or(0);
                sh::Widths::PerGaussian(w)
            }
            None => {
                max_width = opts.sh_bits as u8;
                sh::Widths::Uniform(opts.sh_bits)
            }
        };
        let st = sh::encode(
            scene,
            &order,
            degree,
            widths,
            opts.seed,
            opts.scale_mode,
            engine,
        )?;
        rotation_kind = st.rotation_kind;
        sh_run = st.run;
        push(tags::ROT, Coding::Raw, st.rot);
        push(tags::CBK, Coding::Raw, st.cbk);
        if let Some(w) = st.shw {
            push(tags::SHW, Coding::Zstd, w);
        }
        push(tags::SHS, Coding::Raw, st.shs);
        push(tags::SHC, Coding::Raw, st.shc);
    }
    timings.sh = t.elapsed();

    let t = Instant::now();
    let normals = normals_mode(scene, opts.profile);
    match opts.profile {
        Profile::Exact => {
            let opa: Vec<[f32; 1]> = scene.opacity.iter().map(|&o| [o]).collect();
            push(
                tags::POS,
                Coding::Zstd,
                f32_planes(&scene.positions, &order),
            );
            push(tags::SCL, Coding::Zstd, f32_planes(&scene.scales, &order));
            push(
                tags::QUAT,
                Coding::Zstd,
                f32_planes(&scene.rotations, &order),
            );
            push(tags::OPA, Coding::Zstd, f32_planes(&opa, &order));
            push(tags::DC, Coding::Zstd, f32_planes(&scene.dc, &order));
            if normals == Normals::Stored {
                push(
                    tags::NRM,
                    Coding::Zstd,
                    f32_planes(scene.normals.as_ref().unwrap(), &order),
                );
            }
        }
        Profile::Compact => {
            let [chnk, pos, scl, quat, opa, dc] =
                compact_streams(scene, &order, opts.attr_bits, opts.chunk_size as usize);
            push(tags::CHNK, Coding::Raw, chnk);
            push(tags::POS, Coding::Zstd, pos);
            push(tags::SCL, Coding::Zstd, scl);
            push(tags::QUAT, Coding::Zstd, quat);
            push(tags::OPA, Coding::Zstd, opa);
            push(tags::DC, Coding::Zstd, dc);
        }
    }
    if !scene.extras.properties.is_empty() {
        let stride = scene.extras.stride();
        let mut data = Vec::with_capacity(order.len() * stride);
        for &i in &order {
            data.extend_from_slice(
                &scene.extras.data[i as usize * stride..(i as usize + 1) * stride],
            );
        }
        push(tags::EXTS, Coding::Raw, extras_schema(&scene.extras));
        push(tags::EXTD, Coding::Zstd, data);
    }
    if !scene.comments.is_empty() {
        push(tags::CMNT, Coding::Raw, comments_bytes(&scene.comments));
    }
    timings.attributes = t.elapsed();

    let t = Instant::now();
    let streams = raw
        .into_par_iter()
        .map(container::pack_stream)
        .collect::<Result<Vec<_>>>()?;
    timings.entropy = t.elapsed();

    let header = Header {
        count: order.len() as u64,
        input_count: scene.len() as u64,
        sh_degree: degree,
        profile: opts.profile,
        sh_bits: if d > 0 { max_width } else { 0 },
        sh_width_mode: (d > 0 && opts.sh_widths.is_some()) as u8,
        rotation_kind,
        scale_mode: match opts.scale_mode {
            ScaleMode::Norm => 0,
            ScaleMode::LeastSquares => 1,
        },
        normals,
        order: (opts.profile == Profile::Compact) as u8,
        dim: d as u32,
        chunk_size: if opts.profile == Profile::Compact {
            opts.chunk_size
        } else {
            0
        },
        attr_bits: if opts.profile == Profile::Compact {
            opts.attr_bits.to_array()
        } else {
            [0; 5]
        },
        prune_opacity: opts.prune_opacity.unwrap_or(0.0),
        seed: opts.seed,
        extra_count: scene.extras.properties.len() as u32,
    };
    Ok(Compressed {
        header,
        streams,
        prediction,
        timings,
        sh_run,
    })
}

/// The decoded length every stream must have, from the header alone.
fn expected_len(h: &Header, tag: &[u8; 4], chunk_count: u64) -> Option<u64> {
    let n = h.count;
    let d = h.dim as u64;
    let ab = AttrBits::from_array(h.attr_bits);
    let cb = |b: u8| attributes::code_bytes(b) as u64;
    let compact = h.profile == Profile::Compact;
    Some(match *tag {
        tags::ROT => d * d * 4,
        tags::CBK => codebook_len(h.sh_bits as u32),
        tags::SHS => 2 * n,
        tags::SHC => (n * d * h.sh_bits as u64).div_ceil(8),
        tags::CHNK => chunk_count * CHUNK_RECORD as u64,
        tags::POS if compact => 3 * cb(ab.position) * n,
        tags::SCL if compact => 3 * cb(ab.scale) * n,
        tags::QUAT if compact => 4 * n,
        tags::OPA if compact => cb(ab.opacity) * n,
        tags::DC if compact => 3 * cb(ab.dc) * n,
        tags::POS | tags::SCL | tags::DC | tags::NRM => 12 * n,
        tags::QUAT => 16 * n,
        tags::OPA => 4 * n,
        _ => return None,
    })
}

/// Reads a `.tq3s` file into a scene.
pub fn read(path: &Path) -> Result<Scene> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decompress(&bytes, path)
}

fn f32s_from_planes<const K: usize>(bytes: &[u8]) -> Vec<[f32; K]> {
    attributes::from_byte_planes(bytes, K * 4)
        .chunks_exact(K * 4)
        .map(|r| {
            std::array::from_fn(|k| f32::from_le_bytes(r[k * 4..k * 4 + 4].try_into().unwrap()))
        })
        .collect()
}

fn codes_from_planes(bytes: &[u8], comps: usize, bits: u8) -> Vec<u16> {
    let cb = attributes::code_bytes(bits);
    let aos = attributes::from_byte_planes(bytes, comps * cb);
    if cb == 1 {
        aos.iter().map(|&b| b as u16).collect()
    } else {
        aos.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
}

/// Decodes a `.tq3s` file's bytes into a scene (`path` names it in errors).
pub fn decompress(bytes: &[u8], path: &Path) -> Result<Scene> {
    decode_file(bytes, path, true).map(|(scene, _)| scene)
}

/// Decodes a file but leaves SH-rest compressed: the scene comes back with
/// SH degree 0 and no SH-rest, and the SH-rest as stored (`None` when the
/// file has none). A renderer uploads the codes and decodes them in its own
/// shader.
pub fn decompress_split(bytes: &[u8], path: &Path) -> Result<(Scene, Option<CompressedSh>)> {
    decode_file(bytes, path, false)
}

fn decode_file(
    bytes: &[u8],
    path: &Path,
    decode_sh: bool,
) -> Result<(Scene, Option<CompressedSh>)> {
    let (h, infos) = container::read_table(bytes, path)?;
    let bad = |field: &str, why: String| Error::format(path, field, why);
    if h.count > u32::MAX as u64 {
        return Err(bad("count", format!("{} exceeds 2^32 − 1", h.count)));
    }
    let compact = h.profile == Profile::Compact;
    if compact {
        AttrBits::from_array(h.attr_bits)
            .validate()
            .map_err(|why| bad("attribute bits", why))?;
        if h.chunk_size == 0 || h.chunk_size > 65536 {
            return Err(bad(
                "chunk size",
                format!("{} must be in 1..=65536", h.chunk_size),
            ));
        }
    }
    let chunk_count = if compact {
        h.count.div_ceil(h.chunk_size as u64)
    } else {
        0
    };
    // Every stream's decoded length is checked against the header before
    // anything is decompressed or allocated.
    for info in &infos {
        let want = match info.tag {
            // Raw streams whose length the container checks against the file.
            tags::EXTS | tags::CMNT => None,
            // Bounded below by max_raw; its exact length needs the schema.
            tags::EXTD => None,
            // Per-Gaussian widths: the lengths depend on the widths, and
            // sh::parse checks them exactly; here only their upper bounds.
            t @ (tags::CBK | tags::SHS | tags::SHC) if h.sh_width_mode == 1 => {
                let most = match t {
                    tags::CBK => sh::codebook_len(&[1, 2, 3, 4, 5, 6, 7, 8]),
                    tags::SHS => 2 * h.count,
                    _ => h.count * h.dim as u64,
                };
                if info.raw_len > most {
                    return Err(bad(
                        &format!("stream {}", tag_name(&t)),
                        format!(
                            "declares {} decoded bytes, at most {most} possible",
                            info.raw_len
                        ),
                    ));
                }
                None
            }
            tags::SHW if h.sh_width_mode == 1 => Some(h.count.div_ceil(2)),
            t => Some(expected_len(&h, &t, chunk_count).ok_or_else(|| {
                bad(
                    &format!("stream {}", tag_name(&t)),
                    "unknown to this version".into(),
                )
            })?),
        };
        if let Some(w) = want
            && w != info.raw_len
        {
            return Err(bad(
                &format!("stream {}", tag_name(&info.tag)),
                format!(
                    "declares {} decoded bytes, the header implies {w}",
                    info.raw_len
                ),
            ));
        }
    }
    let max_extd = h.count.saturating_mul(8 * h.extra_count as u64);
    let max_raw = infos
        .iter()
        .map(|i| {
            if i.tag == tags::EXTD {
                max_extd
            } else {
                i.raw_len
            }
        })
        .max()
        .unwrap_or(0);
    let c: Container = container::from_bytes(bytes, path, max_raw)?;
    let n = h.count as usize;
    let req = |tag: &[u8; 4]| c.require(tag, expected_len(&h, tag, chunk_count), path);

    let mut scene = Scene {
        sh_degree: h.sh_degree,
        ..Scene::default()
    };
    let d = h.dim as usize;
    let mut kept_sh = None;
    if d > 0 {
        let kind = if h.rotation_kind == 0 {
            RotationKind::Dense
        } else {
            RotationKind::Hadamard
        };
        let rotation = Rotation::from_bytes(kind, d, req(&tags::ROT)?)
            .map_err(|why| bad("stream ROT", why))?;
        let scale_mode = if h.scale_mode == 0 {
            ScaleMode::Norm
        } else {
            ScaleMode::LeastSquares
        };
        let variable = h.sh_width_mode == 1;
        let present = |tag: &[u8; 4]| c.require(tag, None, path);
        let shw = if variable {
            Some(present(&tags::SHW)?)
        } else {
            None
        };
        let parsed = sh::parse(
            n,
            h.sh_degree,
            (!variable).then_some(h.sh_bits),
            rotation,
            scale_mode,
            present(&tags::CBK)?,
            shw,
            present(&tags::SHS)?,
            present(&tags::SHC)?,
        )
        .map_err(|(field, why)| Error::format(path, field, why))?;
        if variable && parsed.widths.iter().copied().max().unwrap_or(0) != h.sh_bits {
            return Err(bad(
                "SH bits",
                format!("the header's b = {} is not the widest width", h.sh_bits),
            ));
        }
        if decode_sh {
            scene.sh_rest = parsed.decode()?;
        } else {
            scene.sh_degree = 0;
            kept_sh = Some(parsed);
        }
    }

    if compact {
        let ab = AttrBits::from_array(h.attr_bits);
        let chnk: Vec<f32> = req(&tags::CHNK)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if let Some(k) = chnk.iter().position(|v| !v.is_finite()) {
            return Err(bad(
                "stream CHNK",
                format!("chunk {} has a non-finite range", k / 18),
            ));
        }
        let pos = codes_from_planes(req(&tags::POS)?, 3, ab.position);
        let scl = codes_from_planes(req(&tags::SCL)?, 3, ab.scale);
        let dc = codes_from_planes(req(&tags::DC)?, 3, ab.dc);
        let opa = codes_from_planes(req(&tags::OPA)?, 1, ab.opacity);
        let quat: Vec<u32> = attributes::from_byte_planes(req(&tags::QUAT)?, 4)
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let limit = |bits: u8| ((1u32 << bits) - 1) as u16;
        for (name, v, bits) in [
            ("POS", &pos, ab.position),
            ("SCL", &scl, ab.scale),
            ("DC", &dc, ab.dc),
            ("OPA", &opa, ab.opacity),
        ] {
            if let Some(i) = v.iter().position(|&q| q > limit(bits)) {
                return Err(bad(
                    &format!("stream {name}"),
                    format!("code {} at index {i} exceeds {bits} bits", v[i]),
                ));
            }
        }
        let qmax = 3 * ab.rotation as u32 + 2;
        if let Some(i) = quat.iter().position(|&q| qmax < 32 && q >> qmax != 0) {
            return Err(bad(
                "stream QUAT",
                format!("code at index {i} exceeds {qmax} bits"),
            ));
        }
        let cs = h.chunk_size as usize;
        let range = |i: usize, off: usize, a: usize| {
            let r = &chnk[(i / cs) * 18 + off..];
            (r[a], r[3 + a])
        };
        scene.positions = (0..n)
            .into_par_iter()
            .map(|i| {
                std::array::from_fn(|a| {
                    let (lo, hi) = range(i, 0, a);
                    attributes::dequantise_range(pos[3 * i + a], lo, hi, ab.position)
                })
            })
            .collect();
        scene.scales = (0..n)
            .into_par_iter()
            .map(|i| {
                std::array::from_fn(|a| {
                    let (lo, hi) = range(i, 6, a);
                    attributes::dequantise_range(scl[3 * i + a], lo, hi, ab.scale)
                })
            })
            .collect();
        scene.dc = (0..n)
            .into_par_iter()
            .map(|i| {
                std::array::from_fn(|a| {
                    let (lo, hi) = range(i, 12, a);
                    attributes::dequantise_range(dc[3 * i + a], lo, hi, ab.dc)
                })
            })
            .collect();
        scene.opacity = opa
            .par_iter()
            .map(|&q| attributes::dequantise_opacity(q, ab.opacity))
            .collect();
        scene.rotations = quat
            .par_iter()
            .map(|&q| attributes::dequantise_quat(q, ab.rotation))
            .collect();
    } else {
        scene.positions = f32s_from_planes::<3>(req(&tags::POS)?);
        scene.scales = f32s_from_planes::<3>(req(&tags::SCL)?);
        scene.rotations = f32s_from_planes::<4>(req(&tags::QUAT)?);
        scene.opacity = f32s_from_planes::<1>(req(&tags::OPA)?)
            .into_iter()
            .map(|[o]| o)
            .collect();
        scene.dc = f32s_from_planes::<3>(req(&tags::DC)?);
    }
    scene.normals = match h.normals {
        Normals::Absent | Normals::Dropped => None,
        Normals::Zero => Some(vec![[0.0; 3]; n]),
        Normals::Stored => Some(f32s_from_planes::<3>(req(&tags::NRM)?)),
    };

    if h.extra_count > 0 {
        let schema = c.require(&tags::EXTS, None, path)?;
        scene.extras.properties =
            parse_schema(schema, h.extra_count).map_err(|why| bad("stream EXTS", why))?;
        let stride = scene.extras.stride() as u64;
        scene.extras.data = c
            .require(&tags::EXTD, Some(stride * h.count), path)?
            .to_vec();
    }
    if let Some(cm) = c.stream(&tags::CMNT) {
        let text = std::str::from_utf8(cm).map_err(|_| bad("stream CMNT", "not UTF-8".into()))?;
        scene.comments = text.lines().map(str::to_string).collect();
    }
    scene
        .check_consistent()
        .map_err(|why| bad("streams", why))?;
    Ok((scene, kept_sh))
}

fn parse_schema(b: &[u8], count: u32) -> std::result::Result<Vec<ExtraProperty>, String> {
    if b.len() < 4 || u32::from_le_bytes(b[0..4].try_into().unwrap()) != count {
        return Err(format!("does not list the header's {count} properties"));
    }
    let mut at = 4;
    let mut out = Vec::new();
    for k in 0..count {
        if b.len() < at + 3 {
            return Err(format!("property {k} is truncated"));
        }
        let ty = ScalarType::from_code(b[at])
            .ok_or_else(|| format!("property {k} has unknown type code {}", b[at]))?;
        let len = u16::from_le_bytes([b[at + 1], b[at + 2]]) as usize;
        at += 3;
        let name = b
            .get(at..at + len)
            .and_then(|s| std::str::from_utf8(s).ok())
            .ok_or_else(|| format!("property {k} has a truncated or non-UTF-8 name"))?;
        out.push(ExtraProperty {
            name: name.to_string(),
            ty,
        });
        at += len;
    }
    if at != b.len() {
        return Err(format!("{} bytes after the last property", b.len() - at));
    }
    Ok(out)
}
