//! The `.tq3k` file: a compressed KV cache (docs/FORMAT.md, "`.tq3k`"), the
//! reference implementation of its specification. It follows the `.tqv`
//! layout: a 64-byte header with its CRC-32, then sections of a 16-byte
//! header (tag, u64 payload length, CRC-32 of the payload) and the payload.
//!
//! ```text
//! header  64 bytes  magic "TQ3D-KVC", version, flags, R, C, E, seed, CRC
//! ROT     × R       one per unit dimension: d, kind, the rotation (as .tqv)
//! CBK     × C       one per (d, b) used: d, b, 2^b centroids (f32)
//! META    if flagged  free-form JSON
//! per entry:
//!   ENT             name, dtype, shape, layout, kind (raw, key, value), L
//!   RAW             raw entries: the bytes
//!   per layer of a coded entry: LHD (tokens, plan, mean), WID, SCL, COD
//! ```
//!
//! The rotations and centroid tables are not fields of [`KvFile`]: the
//! writer derives them from the seed and the entries, and the reader checks
//! that those stored are exactly those, so what decodes a file is what
//! encoded it.

mod read;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::codec::codebook::MAX_DIM;
use crate::codec::rotation::{HADAMARD_ROUNDS, Rotation, RotationKind};
use crate::format::{check_distinct, write_atomic};
use crate::kv::coded::{CodedTensor, Rotations};
use crate::{Codebook, Error, Result};

/// The file's first eight bytes.
pub const MAGIC: [u8; 8] = *b"TQ3D-KVC";
/// The version this library writes and reads.
pub const VERSION: u16 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Size of each section header.
pub const SECTION_HEADER_LEN: usize = 16;
/// A reader refuses a file whose plans declare more channels (Σ over
/// coded layers of heads · head_dim) than this many per byte of the file:
/// a plan costs memory per channel even when it codes no token.
pub const MAX_CHANNELS_PER_BYTE: u64 = 256;
/// Most segments in one head of a segmented plan (segment ids are bytes).
pub const MAX_SEGMENTS: usize = 255;

const FLAG_METADATA: u16 = 1;
const LAYER_SEGMENTED: u8 = 1;
const LAYER_MEAN: u8 = 2;
/// Fixed bytes of an `LHD ` payload: tokens, heads, head_dim, flags.
const LAYER_FIXED: u64 = 8 + 4 + 4 + 1;
/// Fixed bytes of a `ROT ` or `CBK ` payload before its values: d, and the
/// kind or b.
const PARAM_PREFIX: u64 = 5;

/// Whether a coded entry holds keys or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Keys (usually centred: their mean is stored per layer).
    Key,
    /// Values.
    Value,
}

/// What an entry stores.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A key or value tensor, one coded tensor per layer.
    Coded {
        /// Key or value.
        role: Role,
        /// The layers, in order (at least one).
        layers: Vec<CodedTensor>,
    },
    /// A tensor carried losslessly: its bytes as they were.
    Raw(Vec<u8>),
}

/// One tensor of the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    /// The tensor's name (UTF-8, unique in the file, no control characters).
    pub name: String,
    /// The original dtype: a safetensors dtype string ("F32", "F16",
    /// "BF16", "I64", …), or another, up to 255 bytes.
    pub dtype: String,
    /// The original shape.
    pub shape: Vec<u64>,
    /// One ASCII letter per axis ("lthd"), or empty.
    pub layout: String,
    /// The coded layers or the raw bytes.
    pub body: Body,
}

/// A decoded entry: its description and its values or bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEntry<'a> {
    /// The entry's name.
    pub name: &'a str,
    /// Its original dtype.
    pub dtype: &'a str,
    /// Its original shape.
    pub shape: &'a [u64],
    /// Its axis letters.
    pub layout: &'a str,
    /// What it decodes to.
    pub data: EntryData<'a>,
}

/// The contents of a decoded entry.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryData<'a> {
    /// A coded entry: layer by layer, token by token, `width` values each
    /// (`[layers][tokens][width]`).
    Values(Vec<f32>),
    /// A raw entry's bytes.
    Raw(&'a [u8]),
}

/// A compressed KV cache: entries, their common seed, optional metadata.
#[derive(Debug, Clone)]
pub struct KvFile {
    /// The seed of every unit rotation (every coded tensor's `seed`).
    pub seed: u64,
    /// The entries, in file order.
    pub entries: Vec<KvEntry>,
    /// Free-form JSON (the encoder's settings), if any.
    pub metadata: Option<String>,
    /// The rotations a reader found in the file (checked to equal the
    /// seed's); `None` for a file built in memory.
    stored: Option<HashMap<usize, Arc<Rotation>>>,
}

impl PartialEq for KvFile {
    fn eq(&self, other: &KvFile) -> bool {
        self.seed == other.seed && self.entries == other.entries && self.metadata == other.metadata
    }
}

/// Bytes of a `CBK ` section (header included) for width b, any d.
pub fn table_bytes(bits: u8) -> u64 {
    SECTION_HEADER_LEN as u64 + PARAM_PREFIX + 4 * (1u64 << bits.min(8))
}

/// Bytes of the `ROT ` section (header included) of dimension d.
pub fn rotation_bytes(dim: usize) -> u64 {
    let d = dim as u64;
    let body = match RotationKind::default_for(dim) {
        RotationKind::Dense => 4 * d * d,
        RotationKind::Hadamard => 4 + HADAMARD_ROUNDS as u64 * d.div_ceil(8) + 4 * d,
    };
    SECTION_HEADER_LEN as u64 + PARAM_PREFIX + body
}

/// The safetensors dtypes whose element size is known: a raw entry of one
/// of them must hold shape-product × size bytes.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype.to_ascii_uppercase().as_str() {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

fn kind_code(kind: RotationKind) -> u8 {
    match kind {
        RotationKind::Dense => 0,
        RotationKind::Hadamard => 1,
    }
}

/// Whether a plan is every head one segment 0..head_dim (stored as a flag).
fn is_uniform(t: &CodedTensor) -> bool {
    t.plan.segments.iter().all(|s| s.len() == 1)
}

/// The segmented plan table of `LHD `: per head its segment count, then,
/// for a head of several, the segment id of each channel.
fn plan_table(t: &CodedTensor) -> Vec<u8> {
    let mut out = Vec::new();
    for segs in &t.plan.segments {
        out.push(segs.len() as u8);
        if segs.len() > 1 {
            let mut ids = vec![0u8; t.plan.head_dim];
            for (k, s) in segs.iter().enumerate() {
                for &c in s {
                    ids[c as usize] = k as u8;
                }
            }
            out.extend_from_slice(&ids);
        }
    }
    out
}

/// Appends one section: tag, payload length, CRC-32, payload.
fn put_section(out: &mut Vec<u8>, tag: &[u8; 4], payload: &[u8]) {
    out.extend_from_slice(tag);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The f16 bits of `x`, which must be exactly representable and finite.
fn exact_f16(x: f32) -> Option<[u8; 2]> {
    let h = half::f16::from_f32(x);
    (h.is_finite() && h.to_f32().to_bits() == x.to_bits()).then(|| h.to_le_bytes())
}

fn shape_product(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |a, &s| a.checked_mul(s))
}

impl KvFile {
    /// A file of these entries; nothing is checked until it is written.
    pub fn new(seed: u64, entries: Vec<KvEntry>, metadata: Option<String>) -> KvFile {
        KvFile {
            seed,
            entries,
            metadata,
            stored: None,
        }
    }

    /// Every coded layer of every entry, in file order, with its entry.
    fn layers(&self) -> impl Iterator<Item = (&KvEntry, &CodedTensor)> {
        self.entries.iter().flat_map(|e| match &e.body {
            Body::Coded { layers, .. } => layers.iter().map(move |t| (e, t)).collect(),
            Body::Raw(_) => Vec::new(),
        })
    }

    /// The unit dimensions of every plan, ascending: one `ROT ` each.
    pub fn dims_used(&self) -> BTreeSet<usize> {
        self.layers().flat_map(|(_, t)| t.plan.dims()).collect()
    }

    /// Every (d, b ≥ 1) some unit is coded at, ascending: one `CBK ` each.
    pub fn tables_used(&self) -> BTreeSet<(usize, u8)> {
        let mut out = BTreeSet::new();
        for (_, t) in self.layers() {
            let dims: Vec<usize> = t.plan.units().iter().map(|(_, c)| c.len()).collect();
            let per = dims.len().max(1);
            for (u, &w) in t.widths.iter().enumerate() {
                if w > 0 {
                    out.insert((dims[u % per], w));
                }
            }
        }
        out
    }

    /// The rotations to decode with: those read from the file (checked to
    /// be the seed's), or, for a file built in memory, the seed's.
    pub fn rotations(&self) -> Result<Rotations> {
        match &self.stored {
            Some(by_dim) => Ok(Rotations::from_parts(self.seed, by_dim.clone())),
            None => Rotations::new(&self.dims_used().into_iter().collect::<Vec<_>>(), self.seed),
        }
    }

    /// Entry `i`, decoded: a coded entry's layers one after another
    /// (`[layers][tokens][width]`), or a raw entry's bytes.
    pub fn decode_entry(&self, i: usize) -> Result<DecodedEntry<'_>> {
        let e = self.entries.get(i).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "entry {i} asked of a file of {} entries",
                self.entries.len()
            ))
        })?;
        let data = match &e.body {
            Body::Raw(b) => EntryData::Raw(b),
            Body::Coded { layers, .. } => {
                let rotations = self.rotations()?;
                let mut out = Vec::new();
                for t in layers {
                    out.extend(t.decode_with(&rotations)?);
                }
                EntryData::Values(out)
            }
        };
        Ok(DecodedEntry {
            name: &e.name,
            dtype: &e.dtype,
            shape: &e.shape,
            layout: &e.layout,
            data,
        })
    }

    /// Every byte of the file beyond the coded layers' payload
    /// ([`CodedTensor::payload_bytes`]: codes, scales, widths, means): the
    /// header, section headers, rotations, centroid tables, metadata, entry
    /// and layer headers with their plan tables, and raw entries' bytes.
    /// `to_bytes().len()` is exactly this plus the payloads. The tables are
    /// [`table_bytes`]`(b)` for each of [`KvFile::tables_used`]: a codec
    /// planning widths can price a file of all-zero widths and add those.
    pub fn overhead_bytes(&self) -> Result<u64> {
        self.check()?;
        let sh = SECTION_HEADER_LEN as u64;
        let mut n = HEADER_LEN as u64;
        n += self
            .dims_used()
            .into_iter()
            .map(rotation_bytes)
            .sum::<u64>();
        n += self
            .tables_used()
            .into_iter()
            .map(|(_, b)| table_bytes(b))
            .sum::<u64>();
        n += self.metadata.as_ref().map_or(0, |m| sh + m.len() as u64);
        for e in &self.entries {
            n += sh + entry_header(e).len() as u64;
            match &e.body {
                Body::Raw(b) => n += sh + b.len() as u64,
                Body::Coded { layers, .. } => {
                    for t in layers {
                        let table = if is_uniform(t) {
                            0
                        } else {
                            plan_table(t).len() as u64
                        };
                        n += 4 * sh + LAYER_FIXED + table;
                    }
                }
            }
        }
        Ok(n)
    }

    /// Checks everything the reader checks of the parts a writer is given,
    /// so that no file is written that its reader refuses.
    fn check(&self) -> Result<()> {
        let bad = |e: &str, why: String| Error::InvalidArgument(format!("entry {e:?}: {why}"));
        if let Some(m) = &self.metadata {
            serde_json::from_str::<serde_json::Value>(m)
                .map_err(|e| Error::InvalidArgument(format!("the metadata is not JSON: {e}")))?;
        }
        let mut names = BTreeSet::new();
        for e in &self.entries {
            read::check_text("name", &e.name, u16::MAX as usize)
                .and_then(|_| read::check_text("dtype", &e.dtype, 255))
                .and_then(|_| read::check_layout(&e.layout, e.shape.len()))
                .map_err(|why| bad(&e.name, why))?;
            if e.dtype.is_empty() || e.shape.len() > 255 {
                return Err(bad(&e.name, "an empty dtype or a rank above 255".into()));
            }
            if !names.insert(e.name.as_str()) {
                return Err(bad(&e.name, "the name is used twice".into()));
            }
            let values = shape_product(&e.shape);
            match &e.body {
                Body::Raw(b) => {
                    if let (Some(size), Some(v)) = (dtype_size(&e.dtype), values)
                        && v.checked_mul(size) != Some(b.len() as u64)
                    {
                        return Err(bad(
                            &e.name,
                            format!("{} bytes of {} for shape {:?}", b.len(), e.dtype, e.shape),
                        ));
                    }
                }
                Body::Coded { layers, .. } => {
                    if layers.is_empty() {
                        return Err(bad(&e.name, "a coded entry without layers".into()));
                    }
                    let mut sum = 0u64;
                    for (l, t) in layers.iter().enumerate() {
                        let bad_l = |why: String| bad(&e.name, format!("layer {l}: {why}"));
                        t.validate().map_err(|e| bad_l(e.to_string()))?;
                        if t.seed != self.seed {
                            return Err(bad_l(format!(
                                "seed {} is not the file's {}",
                                t.seed, self.seed
                            )));
                        }
                        if t.plan.head_dim > MAX_DIM
                            || t.plan.segments.iter().any(|s| s.len() > MAX_SEGMENTS)
                        {
                            return Err(bad_l(format!(
                                "heads of at most {MAX_DIM} channels and {MAX_SEGMENTS} segments are stored"
                            )));
                        }
                        if let Some(u) = t
                            .widths
                            .iter()
                            .zip(&t.scales)
                            .position(|(&w, &s)| exact_f16(s).is_none() || (w == 0 && s != 0.0))
                        {
                            return Err(bad_l(format!(
                                "unit {u}: scale {} is not a finite f16 (or not 0 at width 0)",
                                t.scales[u]
                            )));
                        }
                        if let Some(m) = &t.mean
                            && let Some(c) = m.iter().position(|&x| exact_f16(x).is_none())
                        {
                            return Err(bad_l(format!("mean channel {c} is not a finite f16")));
                        }
                        sum += t.tokens as u64 * t.plan.width() as u64;
                    }
                    if values != Some(sum) {
                        return Err(bad(
                            &e.name,
                            format!("shape {:?} does not hold the layers' {sum} values", e.shape),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The file's bytes. Refuses (before anything is built) entries the
    /// reader would refuse: see docs/FORMAT.md for what is checked.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.check()?;
        let dims = self.dims_used();
        let tables = self.tables_used();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let flags = if self.metadata.is_some() {
            FLAG_METADATA
        } else {
            0
        };
        out.extend_from_slice(&flags.to_le_bytes());
        for n in [dims.len(), tables.len(), self.entries.len()] {
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.resize(HEADER_LEN - 4, 0);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());

        for &d in &dims {
            let r = Rotation::new(RotationKind::default_for(d), d, self.seed)?;
            let mut p = (d as u32).to_le_bytes().to_vec();
            p.push(kind_code(r.kind()));
            p.extend(r.to_bytes());
            put_section(&mut out, b"ROT ", &p);
        }
        for &(d, b) in &tables {
            let mut p = (d as u32).to_le_bytes().to_vec();
            p.push(b);
            let cb = Codebook::get(d, b as u32)?;
            p.extend(cb.centroids_f32().iter().flat_map(|c| c.to_le_bytes()));
            put_section(&mut out, b"CBK ", &p);
        }
        if let Some(m) = &self.metadata {
            put_section(&mut out, b"META", m.as_bytes());
        }
        for e in &self.entries {
            put_section(&mut out, b"ENT ", &entry_header(e));
            match &e.body {
                Body::Raw(b) => put_section(&mut out, b"RAW ", b),
                Body::Coded { layers, .. } => {
                    for t in layers {
                        write_layer(&mut out, t);
                    }
                }
            }
        }
        read::check_channels(&out, self.layers().map(|(_, t)| t.plan.width() as u64))
            .map_err(Error::InvalidArgument)?;
        Ok(out)
    }

    /// Writes the file atomically (or to standard output, as `-`); returns
    /// its length. Nothing is written if the entries are refused.
    pub fn write(&self, path: &Path) -> Result<u64> {
        let bytes = self.to_bytes()?;
        write_atomic(path, |w: &mut dyn Write| {
            w.write_all(&bytes).map_err(|e| Error::io(path, e))
        })
    }

    /// [`KvFile::write`], refusing (before any work) an output that is one
    /// of `inputs` (by file identity) or is not a regular file.
    pub fn write_checked(&self, path: &Path, inputs: &[&Path]) -> Result<u64> {
        check_distinct(path, inputs)?;
        self.write(path)
    }

    /// Reads and fully validates a file, reading only as far as its
    /// headers declare.
    pub fn read(path: &Path) -> Result<KvFile> {
        read::read(path)
    }

    /// Parses and fully validates a file held in memory; `path` only labels
    /// errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<KvFile> {
        read::from_bytes(bytes, path)
    }
}

/// `ENT `'s payload.
fn entry_header(e: &KvEntry) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
    p.extend_from_slice(e.name.as_bytes());
    p.push(e.dtype.len() as u8);
    p.extend_from_slice(e.dtype.as_bytes());
    p.push(e.shape.len() as u8);
    p.extend(e.shape.iter().flat_map(|s| s.to_le_bytes()));
    p.push(e.layout.len() as u8);
    p.extend_from_slice(e.layout.as_bytes());
    match &e.body {
        Body::Raw(_) => p.push(0),
        Body::Coded { role, layers } => {
            p.push(match role {
                Role::Key => 1,
                Role::Value => 2,
            });
            p.extend_from_slice(&(layers.len() as u32).to_le_bytes());
        }
    }
    p
}

/// One coded layer's four sections: `LHD ` (tokens, plan, mean), then the
/// parts that grow with the tokens, `WID `, `SCL `, `COD `.
fn write_layer(out: &mut Vec<u8>, t: &CodedTensor) {
    let uniform = is_uniform(t);
    let mut lhd = (t.tokens as u64).to_le_bytes().to_vec();
    lhd.extend_from_slice(&(t.plan.heads as u32).to_le_bytes());
    lhd.extend_from_slice(&(t.plan.head_dim as u32).to_le_bytes());
    let mut flags = 0;
    if !uniform {
        flags |= LAYER_SEGMENTED;
    }
    if t.mean.is_some() {
        flags |= LAYER_MEAN;
    }
    lhd.push(flags);
    if !uniform {
        lhd.extend(plan_table(t));
    }
    for m in t.mean.iter().flatten() {
        lhd.extend_from_slice(&half::f16::from_f32(*m).to_le_bytes());
    }
    put_section(out, b"LHD ", &lhd);
    let wid: Vec<u8> = t
        .widths
        .chunks(2)
        .map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4))
        .collect();
    put_section(out, b"WID ", &wid);
    let scl: Vec<u8> = t
        .widths
        .iter()
        .zip(&t.scales)
        .filter(|(w, _)| **w > 0)
        .flat_map(|(_, s)| half::f16::from_f32(*s).to_le_bytes())
        .collect();
    put_section(out, b"SCL ", &scl);
    put_section(out, b"COD ", &t.codes);
}

/// The rotations stored in a file, by dimension, checked by the reader.
type Stored = BTreeMap<usize, Arc<Rotation>>;
