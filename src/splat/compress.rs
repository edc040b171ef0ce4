//! Compressing a scene: prune, order, encode SH-rest with TurboQuant and
//! the other attributes by profile, and predict the size in closed form
//! before doing any of it.

use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::gpu::{Engine, Ran};
use crate::splat::attributes::{self, AttrBits};
use crate::splat::container::{self, Coding, Header, Normals, Packed, Profile, Stream, tag_name};
use crate::splat::dedup;
use crate::splat::layout::{self, CHUNK_RECORD, Dedup, Facts, ShWidths, tags};
use crate::splat::scene::{Scene, rest_dim, survives_prune};
use crate::splat::sh::{self, ShRun};
use crate::{Error, Result, ScaleMode};

/// The default seed of the SH rotation (any fixed value; the rotation itself
/// is stored in the file).
pub const DEFAULT_SEED: u64 = 0x0003_D702_5041_9874;

/// Gaussians per chunk of the compact profile.
pub const DEFAULT_CHUNK: u32 = 256;

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
    /// [`codec::allocate`](crate::codec::allocate)); when set it replaces
    /// `sh_bits`, and b_i = 0 drops that Gaussian's SH-rest.
    pub sh_widths: Option<Vec<u8>>,
    /// Flip the signs of each Gaussian's SH-rest coordinates by a hash of
    /// its storage index before rotating (header byte 61, bit 0), so that
    /// identical SH vectors get independent errors (docs/THEORY.md §16).
    /// On by default; off only to measure what it does. Deduplicated
    /// SH-rest has no repeats left to decorrelate and is never flipped.
    pub sign_flip: bool,
    /// Code each distinct SH-rest vector once (format version 3, header
    /// byte 61 bit 1), where that stores fewer bytes: palette-coded inputs
    /// such as SOG's repeat whole vectors. Each distinct vector gets the
    /// widest width of the Gaussians that share it. On by default.
    pub dedup: bool,
    /// Store the SH-rest bit-exact as f32 (format version 4, header byte 61
    /// bit 2, stream `SHX `), coded with column palettes where its values
    /// lie on few levels (an spz or SOG input's): no rotation, no codes, no
    /// error. Replaces `sh_bits`, `sh_widths`, the flip and deduplication.
    /// With [`Profile::Exact`] the whole file is lossless. Off by default.
    pub sh_exact: bool,
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
            sign_flip: true,
            dedup: true,
            sh_exact: false,
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
    /// Finding repeated SH-rest vectors and deciding whether to code each
    /// once (with the size prediction).
    pub dedup: Duration,
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
    /// With deduplicated SH-rest, the distinct vectors coded.
    pub sh_distinct: Option<u64>,
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
        .map(drop)
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
    if opts.sh_exact && opts.sh_widths.is_some() {
        return Err(Error::InvalidArgument(
            "bit-exact SH-rest has no widths: per-Gaussian SH widths do not apply".into(),
        ));
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
    // Every array as flat values, a branch-free scan per piece (it
    // vectorises and runs at memory speed); only when one holds a
    // non-finite value is the first bad Gaussian looked for, below.
    let flat: [&[f32]; 7] = [
        scene.positions.as_flattened(),
        scene.dc.as_flattened(),
        &scene.opacity,
        scene.scales.as_flattened(),
        scene.rotations.as_flattened(),
        &scene.sh_rest,
        scene
            .normals
            .as_deref()
            .map_or(&[][..], <[[f32; 3]]>::as_flattened),
    ];
    let all_finite = flat
        .par_iter()
        .flat_map(|v| v.par_chunks(1 << 16))
        .all(|c| {
            // An exponent of all ones is NaN or ±Inf.
            c.iter().fold(0u32, |a, x| {
                a | u32::from(x.to_bits() & 0x7f80_0000 == 0x7f80_0000)
            }) == 0
        });
    if all_finite {
        return Ok(());
    }
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
    let (name, v) = fields
        .into_iter()
        .find(|(_, v)| !v.is_finite())
        .unwrap_or(("a value".into(), f32::NAN));
    Err(Error::InvalidArgument(format!(
        "Gaussian {i}: {name} = {v} is not finite; NaN and ±Inf cannot be compressed"
    )))
}

/// The size of `compress(scene, opts)`, in closed form: exact for the
/// fixed-rate streams, bounded by the raw length for the entropy-coded ones.
///
/// ```
/// use turboquant3d::splat::{self, CompressOptions};
/// use turboquant3d::splat::synth::{SynthConfig, generate};
/// let scene = generate(&SynthConfig { count: 1000, sh_degree: 3, seed: 7 });
/// let opts = CompressOptions::default();
/// let p = splat::predict_size(&scene, &opts).unwrap();
/// let c = splat::compress(&scene, &opts).unwrap();
/// assert!(p.fixed() <= c.size() && c.size() <= p.total_bound());
/// ```
pub fn predict_size(scene: &Scene, opts: &CompressOptions) -> Result<SizePrediction> {
    check_options(opts)?;
    check_widths(scene, opts)?;
    // Deduplication is decided as compress decides it: on the storage
    // order's index stream.
    let degree = sh_degree(scene, opts);
    let dd = if rest_dim(degree) > 0 && opts.dedup && !opts.sh_exact {
        deduplicate(scene, opts, &storage_order(scene, opts), degree)?
    } else {
        None
    };
    Ok(predict_with(scene, opts, dd.as_ref()))
}

/// The widths of `opts.sh_widths`: one per Gaussian, none above 8.
fn check_widths(scene: &Scene, opts: &CompressOptions) -> Result<()> {
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
    Ok(())
}

/// The prediction for `opts`, with the deduplication `dd` decided.
fn predict_with(
    scene: &Scene,
    opts: &CompressOptions,
    dd: Option<&Deduplicated>,
) -> SizePrediction {
    let facts = facts(scene, opts, dd);
    let streams: Vec<StreamSize> = layout::FILE_ORDER
        .iter()
        .filter(|t| facts.present(t))
        .map(|t| StreamSize {
            tag: tag_name(t),
            #[allow(clippy::expect_used)] // `present` was checked just above.
            bytes: facts
                .raw_len(t)
                .expect("the scene fixes every stream it writes")
                .bound(),
            exact: layout::coding(t, opts.profile) == Coding::Raw,
        })
        .collect();
    SizePrediction {
        input_count: scene.len() as u64,
        count: facts.count,
        dim: facts.dim as usize,
        overhead: container::overhead(streams.len()),
        streams,
    }
}

/// What `compress(scene, opts)` will store, for the stream layout; `dd`,
/// the deduplication it decided.
fn facts(scene: &Scene, opts: &CompressOptions, dd: Option<&Deduplicated>) -> Facts {
    let tau = opts.prune_opacity;
    let kept = || (0..scene.len()).filter(move |&i| survives_prune(scene.opacity[i], tau));
    let count = match tau {
        None => scene.len(),
        Some(_) => (0..scene.len())
            .into_par_iter()
            .filter(|&i| survives_prune(scene.opacity[i], tau))
            .count(),
    } as u64;
    // The widths of the SH records: every kept Gaussian's, or each
    // distinct vector's.
    let sh = match (&opts.sh_widths, dd) {
        (None, _) => ShWidths::Uniform(opts.sh_bits as u8),
        (Some(_), Some(dd)) => ShWidths::per_gaussian(&dd.record_widths),
        (Some(w), None) => ShWidths::per_gaussian(&kept().map(|i| w[i]).collect::<Vec<u8>>()),
    };
    let compact = opts.profile == Profile::Compact;
    Facts {
        count,
        dim: rest_dim(sh_degree(scene, opts)) as u64,
        // The generator's rotation is always stored as its seed.
        rotation_kind: sh::KIND_SEEDED,
        sh,
        profile: opts.profile,
        attr_bits: opts.attr_bits,
        chunk_size: if compact { opts.chunk_size } else { 0 },
        normals: normals_mode(scene, opts.profile) == Normals::Stored,
        dedup: match dd {
            Some(dd) => Dedup::Records(dd.record_widths.len() as u64),
            None => Dedup::Off,
        },
        sh_exact: opts.sh_exact,
        extras: (!scene.extras.properties.is_empty()).then(|| {
            (
                layout::extras_schema(&scene.extras).len() as u64,
                scene.extras.stride() as u64,
            )
        }),
        comments: (!scene.comments.is_empty())
            .then(|| layout::comments_bytes(&scene.comments).len() as u64),
    }
}

/// The SH degree stored: the input's, truncated to the options'.
fn sh_degree(scene: &Scene, opts: &CompressOptions) -> u8 {
    opts.sh_degree
        .map_or(scene.sh_degree, |l| l.min(scene.sh_degree))
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

/// Whether the scene looks already quantised, as one read from an .spz or
/// .sog file is: each SH-rest coefficient (the DC colour without SH-rest)
/// takes at most 256 values over the first 4096 Gaussians. Then the
/// bit-exact file ([`CompressOptions::sh_exact`] with the exact profile,
/// column palettes) may be smaller than a lossy one; the target modes of
/// `tq3d compress` compare the two.
pub fn few_levels(scene: &Scene) -> bool {
    let n = scene.len().min(4096);
    let d = scene.rest_dim();
    let levels = |get: &dyn Fn(usize) -> f32| {
        let mut v: Vec<u32> = (0..n).map(|i| get(i).to_bits()).collect();
        v.sort_unstable();
        v.dedup();
        v.len() <= 256
    };
    n > 0
        && if d > 0 {
            (0..d).all(|k| levels(&|i| scene.sh_rest[i * d + k]))
        } else {
            (0..3).all(|k| levels(&|i| scene.dc[i][k]))
        }
}

/// The SH-rest of the stored Gaussians as the byte planes of d f32 columns,
/// a column's four planes per task (each value read once, not once per
/// plane).
fn sh_planes(scene: &Scene, order: &[u32], d: usize) -> Vec<u8> {
    let n = order.len();
    let mut out = vec![0u8; n * 4 * d];
    if n == 0 {
        return out;
    }
    out.par_chunks_mut(4 * n).enumerate().for_each(|(c, dst)| {
        let (b0, rest) = dst.split_at_mut(n);
        let (b1, rest) = rest.split_at_mut(n);
        let (b2, b3) = rest.split_at_mut(n);
        for (i, &g) in order.iter().enumerate() {
            let v = scene.sh_rest[g as usize * d + c].to_le_bytes();
            (b0[i], b1[i], b2[i], b3[i]) = (v[0], v[1], v[2], v[3]);
        }
    });
    out
}

/// Compact attribute streams: CHNK, POS, SCL, QUAT, OPA, DC. The codes are
/// computed chunk by chunk into arrays in storage order, then each stream's
/// byte planes are written straight from them.
fn compact_streams(scene: &Scene, order: &[u32], bits: AttrBits, chunk: usize) -> [Vec<u8>; 6] {
    let n = order.len();
    let mut rec = vec![[0f32; CHUNK_RECORD / 4]; n.div_ceil(chunk)];
    let mut pos = vec![[0u16; 3]; n];
    let mut scl = vec![[0u16; 3]; n];
    let mut dc = vec![[0u16; 3]; n];
    let mut quat = vec![0u32; n];
    let mut opa = vec![0u16; n];
    order
        .par_chunks(chunk)
        .zip(rec.par_iter_mut())
        .zip(pos.par_chunks_mut(chunk))
        .zip(scl.par_chunks_mut(chunk))
        .zip(dc.par_chunks_mut(chunk))
        .zip(quat.par_chunks_mut(chunk))
        .zip(opa.par_chunks_mut(chunk))
        .for_each(|((((((idx, rec), p), s), c), r), o)| {
            // The chunk's attributes first, in one loop of independent loads
            // (storage order is a permutation of the input's, so nearly every
            // row is a cache miss, and they overlap only here), then the codes.
            let g: Vec<([[f32; 3]; 3], [f32; 4], f32)> = idx
                .iter()
                .map(|&i| {
                    let i = i as usize;
                    (
                        [scene.positions[i], scene.scales[i], scene.dc[i]],
                        scene.rotations[i],
                        scene.opacity[i],
                    )
                })
                .collect();
            // Per attribute (position, log-scale, DC), the chunk's lo and hi.
            let mut lo = [[f32::INFINITY; 3]; 3];
            let mut hi = [[f32::NEG_INFINITY; 3]; 3];
            for (v, _, _) in &g {
                for t in 0..3 {
                    for a in 0..3 {
                        lo[t][a] = lo[t][a].min(v[t][a]);
                        hi[t][a] = hi[t][a].max(v[t][a]);
                    }
                }
            }
            for t in 0..3 {
                rec[6 * t..6 * t + 3].copy_from_slice(&lo[t]);
                rec[6 * t + 3..6 * t + 6].copy_from_slice(&hi[t]);
            }
            for (j, (v, rot, opacity)) in g.iter().enumerate() {
                for a in 0..3 {
                    p[j][a] =
                        attributes::quantise_range(v[0][a], lo[0][a], hi[0][a], bits.position);
                    s[j][a] = attributes::quantise_range(v[1][a], lo[1][a], hi[1][a], bits.scale);
                    c[j][a] = attributes::quantise_range(v[2][a], lo[2][a], hi[2][a], bits.dc);
                }
                r[j] = attributes::quantise_quat(*rot, bits.rotation);
                o[j] = attributes::quantise_opacity(*opacity, bits.opacity);
            }
        });
    let chnk: Vec<u8> = rec
        .iter()
        .flat_map(|r| r.iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    // Byte k of a record of three w-byte codes is byte k mod w of code k / w.
    let triple = |codes: &[[u16; 3]], b: u8| {
        let w = attributes::code_bytes(b);
        attributes::planes(n, 3 * w, |k, i| (codes[i][k / w] >> (8 * (k % w))) as u8)
    };
    let w_opa = attributes::code_bytes(bits.opacity);
    [
        chnk,
        triple(&pos, bits.position),
        triple(&scl, bits.scale),
        attributes::planes(n, 4, |k, i| (quat[i] >> (8 * k)) as u8),
        attributes::planes(n, w_opa, |k, i| (opa[i] >> (8 * k)) as u8),
        triple(&dc, bits.dc),
    ]
}

/// The input indices of the stored Gaussians, in storage order: the
/// Gaussians kept by pruning, in their original order (exact profile) or in
/// Morton order (compact profile). Stored Gaussian k is input Gaussian
/// `storage_order(..)[k]`.
pub fn storage_order(scene: &Scene, opts: &CompressOptions) -> Vec<u32> {
    let tau = opts.prune_opacity;
    let kept: Vec<u32> = match tau {
        None => (0..scene.len() as u32).collect(),
        Some(_) => (0..scene.len() as u32)
            .into_par_iter()
            .filter(|&i| survives_prune(scene.opacity[i as usize], tau))
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
///
/// ```
/// use turboquant3d::splat::{self, CompressOptions};
/// use turboquant3d::splat::container::Profile;
/// use turboquant3d::splat::synth::{SynthConfig, generate};
/// let scene = generate(&SynthConfig { count: 500, sh_degree: 1, seed: 3 });
/// let opts = CompressOptions { profile: Profile::Exact, sh_bits: 4, ..Default::default() };
/// let c = splat::compress(&scene, &opts).unwrap();
/// assert_eq!(c.header.count, 500);
/// assert_eq!(c.to_bytes().unwrap().len() as u64, c.size());
/// ```
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
    check_widths(scene, opts)?;
    let mut timings = Timings::default();

    let t = Instant::now();
    let order = storage_order(scene, opts);
    timings.prune_and_order = t.elapsed();
    if order.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "pruning at τ = {} removes all {} Gaussians",
            opts.prune_opacity.unwrap_or(0.0),
            scene.len()
        )));
    }

    let degree = sh_degree(scene, opts);
    let d = rest_dim(degree);
    let t = Instant::now();
    let palette = if d > 0 && opts.dedup && !opts.sh_exact {
        deduplicate(scene, opts, &order, degree)?
    } else {
        None
    };
    let prediction = predict_with(scene, opts, palette.as_ref());
    timings.dedup = t.elapsed();
    // The SH records in storage order (input indices): every stored
    // Gaussian, or the first of each distinct vector.
    let records: std::borrow::Cow<[u32]> = match &palette {
        Some(p) => p
            .palette
            .firsts
            .iter()
            .map(|&k| order[k as usize])
            .collect(),
        None => (&order[..]).into(),
    };
    let widths_of: Option<&[u8]> = match &palette {
        Some(p) => p.widths.as_deref(),
        None => opts.sh_widths.as_deref(),
    };
    // The widths of SHC's codes, which its rANS coding needs.
    let per: Vec<u8> = match widths_of {
        Some(w) => records.iter().map(|&i| w[i as usize]).collect(),
        None => Vec::new(),
    };
    let shc_runs = layout::code_runs(records.len() as u64, d as u64, opts.sh_bits as u8, &per);
    // Streams to pack, in file order; SHIX arrives packed (the decision to
    // deduplicate measured what it stores).
    let mut raw: Vec<Pending> = Vec::new();
    let stream = |tag: [u8; 4], data: Vec<u8>| {
        Pending::Raw(Stream {
            tag,
            coding: layout::coding(&tag, opts.profile),
            columns: layout::palette_columns(&tag, opts.profile, d).unwrap_or(0) as u8,
            data,
            runs: if tag == tags::SHC {
                shc_runs.clone()
            } else {
                Vec::new()
            },
        })
    };
    let mut push = |s: Pending| raw.push(s);
    let mut shix = palette.as_ref().map(|p| p.index.clone());
    let t = Instant::now();
    let mut rotation_kind = 0;
    let mut sh_run = ShRun {
        ran: Ran::Cpu,
        ties: 0,
        fell_back: false,
    };
    let mut max_width = 0u8;
    if d > 0 && opts.sh_exact {
        push(stream(tags::SHX, sh_planes(scene, &order, d)));
    } else if d > 0 {
        let widths = match widths_of {
            Some(w) => {
                max_width = per.iter().copied().max().unwrap_or(0);
                sh::Widths::PerGaussian(w)
            }
            None => {
                max_width = opts.sh_bits as u8;
                sh::Widths::Uniform(opts.sh_bits)
            }
        };
        let st = sh::encode(
            scene,
            &records,
            degree,
            widths,
            opts.seed,
            opts.scale_mode,
            opts.sign_flip && palette.is_none(),
            engine,
        )?;
        rotation_kind = st.rotation_kind;
        sh_run = st.run;
        push(stream(tags::ROT, st.rot));
        push(stream(tags::CBK, st.cbk));
        if let Some(packed) = shix.take() {
            push(Pending::Packed(packed));
        }
        if let Some(w) = st.shw {
            push(stream(tags::SHW, w));
        }
        push(stream(tags::SHS, st.shs));
        push(stream(tags::SHC, st.shc));
    }
    timings.sh = t.elapsed();

    let t = Instant::now();
    let normals = normals_mode(scene, opts.profile);
    match opts.profile {
        Profile::Exact => {
            let opa: Vec<[f32; 1]> = scene.opacity.iter().map(|&o| [o]).collect();
            push(stream(tags::POS, f32_planes(&scene.positions, &order)));
            push(stream(tags::SCL, f32_planes(&scene.scales, &order)));
            push(stream(tags::QUAT, f32_planes(&scene.rotations, &order)));
            push(stream(tags::OPA, f32_planes(&opa, &order)));
            push(stream(tags::DC, f32_planes(&scene.dc, &order)));
            if let (Normals::Stored, Some(n)) = (normals, &scene.normals) {
                push(stream(tags::NRM, f32_planes(n, &order)));
            }
        }
        Profile::Compact => {
            let [chnk, pos, scl, quat, opa, dc] =
                compact_streams(scene, &order, opts.attr_bits, opts.chunk_size as usize);
            push(stream(tags::CHNK, chnk));
            push(stream(tags::POS, pos));
            push(stream(tags::SCL, scl));
            push(stream(tags::QUAT, quat));
            push(stream(tags::OPA, opa));
            push(stream(tags::DC, dc));
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
        push(stream(tags::EXTS, layout::extras_schema(&scene.extras)));
        push(stream(tags::EXTD, data));
    }
    if !scene.comments.is_empty() {
        push(stream(tags::CMNT, layout::comments_bytes(&scene.comments)));
    }
    timings.attributes = t.elapsed();

    let t = Instant::now();
    let streams = raw
        .into_par_iter()
        .map(|s| match s {
            Pending::Raw(s) => container::pack_stream(s),
            Pending::Packed(p) => Ok(p),
        })
        .collect::<Result<Vec<_>>>()?;
    timings.entropy = t.elapsed();

    let sh_flags = match (d > 0, &palette, opts.sign_flip) {
        (false, _, _) => 0,
        (true, _, _) if opts.sh_exact => container::SH_EXACT,
        (true, Some(_), _) => container::SH_DEDUP,
        (true, None, true) => container::SH_SIGN_FLIP,
        (true, None, false) => 0,
    };
    let header = Header {
        version: container::version_for(
            sh_flags,
            streams.iter().any(|s| s.info.coding == Coding::Palette),
        ),
        count: order.len() as u64,
        input_count: scene.len() as u64,
        sh_degree: degree,
        profile: opts.profile,
        sh_bits: if d > 0 { max_width } else { 0 },
        sh_width_mode: (d > 0 && !opts.sh_exact && opts.sh_widths.is_some()) as u8,
        rotation_kind,
        scale_mode: match opts.scale_mode {
            _ if opts.sh_exact => 0,
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
        sh_flags,
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
        sh_distinct: palette.map(|p| p.palette.firsts.len() as u64),
    })
}

/// A stream of [`compress_with`] before packing.
enum Pending {
    Raw(Stream),
    /// Packed already (`SHIX`, by the decision to deduplicate).
    Packed(Packed),
}

/// Deduplicated SH-rest, as [`compress_with`] stores it.
struct Deduplicated {
    palette: dedup::Palette,
    /// Per input Gaussian, its width with each record's first Gaussian
    /// given the widest of its record (per-Gaussian widths only).
    widths: Option<Vec<u8>>,
    /// Each record's width: the widest of its Gaussians'.
    record_widths: Vec<u8>,
    /// The `SHIX` stream, packed.
    index: Packed,
}

/// The distinct SH-rest vectors of the stored Gaussians, when coding each
/// once stores fewer bytes ([`dedup::worth_it`]).
fn deduplicate(
    scene: &Scene,
    opts: &CompressOptions,
    order: &[u32],
    degree: u8,
) -> Result<Option<Deduplicated>> {
    let Some(palette) = dedup::find(scene, order, degree, opts.sh_widths.as_deref()) else {
        return Ok(None);
    };
    let d = rest_dim(degree) as u64;
    let width = |k: usize| match &opts.sh_widths {
        Some(w) => w[order[k] as usize],
        None => opts.sh_bits as u8,
    };
    let mut record_width = vec![0u8; palette.firsts.len()];
    for (k, &r) in palette.ids.iter().enumerate() {
        record_width[r as usize] = record_width[r as usize].max(width(k));
    }
    let per = opts.sh_widths.is_some();
    let plain = dedup::sh_raw_bytes((0..order.len()).map(width), d, per);
    let deduped = dedup::sh_raw_bytes(record_width.iter().copied(), d, per);
    // What SHIX stores can only be less than its raw length.
    if !dedup::worth_it(plain, deduped, 0) {
        return Ok(None);
    }
    let index = container::pack_stream(Stream {
        tag: tags::SHIX,
        coding: layout::coding(&tags::SHIX, opts.profile),
        data: dedup::index_stream(&palette.ids),
        runs: Vec::new(),
        columns: 0,
    })?;
    if !dedup::worth_it(plain, deduped, index.info.stored_len) {
        return Ok(None);
    }
    let widths = opts.sh_widths.as_ref().map(|w| {
        let mut w = w.clone();
        for (&k, &b) in palette.firsts.iter().zip(&record_width) {
            w[order[k as usize] as usize] = b;
        }
        w
    });
    Ok(Some(Deduplicated {
        palette,
        widths,
        record_widths: record_width,
        index,
    }))
}
