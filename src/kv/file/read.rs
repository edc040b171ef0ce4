//! Reading a `.tq3k` file: every length is checked against the bytes that
//! are there before anything of that length is allocated, every section's
//! CRC-32 before its payload is parsed, and the stored rotations and
//! centroid tables against those the seed and the codebook give.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use super::{
    Body, FLAG_METADATA, HEADER_LEN, KvEntry, KvFile, LAYER_MEAN, LAYER_SEGMENTED, MAGIC,
    MAX_CHANNELS_PER_BYTE, Role, SECTION_HEADER_LEN, Stored, VERSION, dtype_size, kind_code,
    shape_product,
};
use crate::codec::codebook::MAX_DIM;
use crate::codec::packing::packed_len;
use crate::format::input::{Extent, add_len, read_declared};
use crate::kv::coded::{CodedTensor, Plan};
use crate::{Codebook, Error, Result, Rotation, RotationKind};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(std::array::from_fn(|k| b[at + k]))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|k| b[at + k]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(std::array::from_fn(|k| b[at + k]))
}

/// A name or dtype: at most `max` bytes, no control characters (an error
/// message quoting it stays one line).
pub(super) fn check_text(what: &str, s: &str, max: usize) -> std::result::Result<(), String> {
    if s.len() > max {
        return Err(format!("the {what} is {} bytes (at most {max})", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("the {what} {s:?} holds a control character"));
    }
    Ok(())
}

/// A layout: empty, or one distinct ASCII letter per axis.
pub(super) fn check_layout(layout: &str, rank: usize) -> std::result::Result<(), String> {
    let letters: BTreeSet<u8> = layout.bytes().collect();
    if !layout.is_empty()
        && (layout.len() != rank
            || letters.len() != rank
            || !layout.bytes().all(|c| c.is_ascii_alphabetic()))
    {
        return Err(format!(
            "the layout {layout:?} is not {rank} distinct ASCII letters (one per axis)"
        ));
    }
    Ok(())
}

/// The plans' channel budget (see [`MAX_CHANNELS_PER_BYTE`]).
pub(super) fn check_channels(
    file: &[u8],
    widths: impl Iterator<Item = u64>,
) -> std::result::Result<(), String> {
    let limit = (file.len() as u64).saturating_mul(MAX_CHANNELS_PER_BYTE);
    let sum = widths.fold(0u64, u64::saturating_add);
    if sum > limit {
        return Err(format!(
            "the plans declare {sum} channels in a file of {} bytes (at most {MAX_CHANNELS_PER_BYTE} a byte)",
            file.len()
        ));
    }
    Ok(())
}

/// The header's fields.
struct Header {
    rotations: u32,
    tables: u32,
    entries: u32,
    metadata: bool,
    seed: u64,
}

fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let bad = |field: &str, why: String| Error::format(path, field, why);
    if bytes.len() < 8 || bytes[..8] != MAGIC {
        return Err(bad(
            "magic",
            "not a turboquant3d KV-cache (.tq3k) file: the first 8 bytes are not \"TQ3D-KVC\""
                .into(),
        ));
    }
    if bytes.len() < HEADER_LEN {
        return Err(bad(
            "header",
            format!(
                "truncated: {} bytes, the header alone is {HEADER_LEN}",
                bytes.len()
            ),
        ));
    }
    let (stored, computed) = (u32_at(bytes, 60), crc32fast::hash(&bytes[..60]));
    if stored != computed {
        return Err(Error::Checksum {
            path: path.into(),
            section: "header".into(),
            stored,
            computed,
        });
    }
    let version = u16_at(bytes, 8);
    if version != VERSION {
        return Err(bad(
            "version",
            format!("{version}; this build reads version {VERSION}"),
        ));
    }
    let flags = u16_at(bytes, 10);
    if flags & !FLAG_METADATA != 0 {
        return Err(bad("flags", format!("unknown flag bits {flags:#06x}")));
    }
    if bytes[32..60].iter().any(|&b| b != 0) {
        return Err(bad("reserved bytes", "bytes 32..60 must be zero".into()));
    }
    Ok(Header {
        rotations: u32_at(bytes, 12),
        tables: u32_at(bytes, 16),
        entries: u32_at(bytes, 20),
        metadata: flags & FLAG_METADATA != 0,
        seed: u64_at(bytes, 24),
    })
}

/// How many sections follow an `ENT ` payload (1 for raw, 4 per layer), or
/// `None` when it is malformed (the parser then says how).
fn sections_after(ent: &[u8]) -> Option<u64> {
    let mut f = Fields(ent);
    let name = f.u16().ok()? as usize;
    f.take(name).ok()?;
    let dtype = f.u8().ok()? as usize;
    f.take(dtype).ok()?;
    let rank = f.u8().ok()? as usize;
    f.take(8 * rank).ok()?;
    let layout = f.u8().ok()? as usize;
    f.take(layout).ok()?;
    match f.u8().ok()? {
        0 => Some(1),
        _ => Some(4 * f.u32().ok()? as u64),
    }
}

/// Walks the section headers as [`read_declared`] brings bytes in, keeping
/// its place between calls (a file has 4 sections a layer).
struct Walk {
    at: u64,
    started: bool,
    plain: u64,
    entries: u64,
}

impl Walk {
    fn step(&mut self, bytes: &[u8], path: &Path) -> Result<Extent> {
        if bytes.len() < HEADER_LEN {
            return Ok(Extent::Need(HEADER_LEN as u64));
        }
        if !self.started {
            let h = parse_header(bytes, path)?;
            self.started = true;
            self.at = HEADER_LEN as u64;
            self.plain = h.rotations as u64 + h.tables as u64 + h.metadata as u64;
            self.entries = h.entries as u64;
        }
        loop {
            if self.plain == 0 && self.entries == 0 {
                return Ok(Extent::Total(self.at));
            }
            let start = add_len(self.at, SECTION_HEADER_LEN as u64, path, "section length")?;
            if (bytes.len() as u64) < start {
                return Ok(Extent::Need(start));
            }
            let end = add_len(
                start,
                u64_at(bytes, self.at as usize + 4),
                path,
                "section length",
            )?;
            if self.plain > 0 {
                self.plain -= 1;
            } else {
                // An entry header: its payload says what follows.
                if (bytes.len() as u64) < end {
                    return Ok(Extent::Need(end));
                }
                self.entries -= 1;
                match sections_after(&bytes[start as usize..end as usize]) {
                    Some(n) => self.plain = n,
                    None => return Ok(Extent::Total(end)),
                }
            }
            self.at = end;
        }
    }
}

/// Reads a file's bytes as far as its headers declare, then parses them.
pub(super) fn read(path: &Path) -> Result<KvFile> {
    let mut walk = Walk {
        at: 0,
        started: false,
        plain: 0,
        entries: 0,
    };
    let bytes = read_declared(path, |b| walk.step(b, path))?;
    from_bytes(&bytes, path)
}

/// Fields of a payload, read front to back; `Err` says what was cut short.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!(
                "{n} bytes are needed where {} remain: truncated",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16_at(self.take(2)?, 0))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32_at(self.take(4)?, 0))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64_at(self.take(8)?, 0))
    }
    fn text(&mut self, n: usize, what: &str) -> std::result::Result<&'a str, String> {
        std::str::from_utf8(self.take(n)?).map_err(|_| format!("the {what} is not UTF-8"))
    }
    fn end(&self) -> std::result::Result<(), String> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the last field")),
        }
    }
}

/// The sections of a file, in order, each CRC-checked before it is seen.
struct Sections<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Sections<'a> {
    fn next(&mut self, tag: &[u8; 4], label: &str) -> Result<&'a [u8]> {
        let bad = |why: String| Error::format(self.path, label, why);
        let name = String::from_utf8_lossy(tag).trim_end().to_string();
        let head = self
            .bytes
            .get(self.at..self.at + SECTION_HEADER_LEN)
            .ok_or_else(|| {
                bad(format!(
                    "truncated: the file ends at byte {} before the {name} section header",
                    self.bytes.len()
                ))
            })?;
        if head[..4] != *tag {
            return Err(bad(format!(
                "found tag {:?} where {name} belongs",
                String::from_utf8_lossy(&head[..4])
            )));
        }
        let len = u64_at(head, 4);
        let start = self.at + SECTION_HEADER_LEN;
        let payload = usize::try_from(len)
            .ok()
            .and_then(|l| self.bytes.get(start..start.checked_add(l)?))
            .ok_or_else(|| {
                bad(format!(
                    "declares {len} bytes, the file has {} after its header: truncated",
                    self.bytes.len() - start
                ))
            })?;
        let (stored, computed) = (u32_at(head, 12), crc32fast::hash(payload));
        if stored != computed {
            return Err(Error::Checksum {
                path: self.path.into(),
                section: label.into(),
                stored,
                computed,
            });
        }
        self.at = start + payload.len();
        Ok(payload)
    }
}

/// Parses and fully validates a file held in memory.
pub(super) fn from_bytes(bytes: &[u8], path: &Path) -> Result<KvFile> {
    let h = parse_header(bytes, path)?;
    let mut s = Sections {
        bytes,
        at: HEADER_LEN,
        path,
    };
    let bad = |field: &str, why: String| Error::format(path, field, why);

    let mut rotations: Stored = BTreeMap::new();
    let mut rotation_bytes: BTreeMap<usize, &[u8]> = BTreeMap::new();
    for i in 0..h.rotations {
        let label = format!("ROT section {i}");
        let mut f = Fields(s.next(b"ROT ", &label)?);
        let (d, kind) = f
            .u32()
            .and_then(|d| Ok((d as usize, f.u8()?)))
            .map_err(|why| bad(&label, why))?;
        if rotations.keys().next_back().is_some_and(|&p| p >= d) {
            return Err(bad(
                &label,
                format!("d = {d} is not above the previous ROT's"),
            ));
        }
        let want = RotationKind::default_for(d);
        if kind != kind_code(want) {
            return Err(bad(
                &label,
                format!(
                    "d = {d} has kind {kind}; the codec uses {} ({})",
                    kind_code(want),
                    want.name()
                ),
            ));
        }
        let r = Rotation::from_bytes(want, d, f.0)
            .map_err(|why| bad(&label, format!("d = {d}: {why}")))?;
        rotations.insert(d, Arc::new(r));
        rotation_bytes.insert(d, f.0);
    }

    let mut tables: BTreeMap<(usize, u8), &[u8]> = BTreeMap::new();
    for i in 0..h.tables {
        let label = format!("CBK section {i}");
        let mut f = Fields(s.next(b"CBK ", &label)?);
        let (d, b) = f
            .u32()
            .and_then(|d| Ok((d as usize, f.u8()?)))
            .map_err(|why| bad(&label, why))?;
        if !(1..=8).contains(&b) || !rotations.contains_key(&d) {
            return Err(bad(
                &label,
                format!("(d = {d}, b = {b}): b is not in 1..=8 or d has no ROT section"),
            ));
        }
        if tables.keys().next_back().is_some_and(|&p| p >= (d, b)) {
            return Err(bad(
                &label,
                format!("(d = {d}, b = {b}) is not above the previous CBK's"),
            ));
        }
        if f.0.len() != 4 << b {
            return Err(bad(
                &label,
                format!(
                    "(d = {d}, b = {b}) holds {} bytes, 2^b centroids are {}",
                    f.0.len(),
                    4 << b
                ),
            ));
        }
        tables.insert((d, b), f.0);
    }

    let metadata = if h.metadata {
        let p = s.next(b"META", "META section")?;
        let text = std::str::from_utf8(p).map_err(|_| bad("META section", "not UTF-8".into()))?;
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| bad("META section", format!("not JSON: {e}")))?;
        Some(text.to_string())
    } else {
        None
    };

    let mut entries: Vec<KvEntry> = Vec::new();
    let mut names = BTreeSet::new();
    let mut channels = 0u64;
    for i in 0..h.entries {
        let label = format!("entry {i}");
        let (mut e, layers) = parse_entry(s.next(b"ENT ", &format!("{label} ENT section"))?)
            .map_err(|why| bad(&format!("{label} ENT section"), why))?;
        let label = format!("entry {i} ({:?})", e.name);
        if !names.insert(e.name.clone()) {
            return Err(bad(&label, "the name is used by an earlier entry".into()));
        }
        let values = shape_product(&e.shape);
        match (&mut e.body, layers) {
            (Body::Raw(raw), _) => {
                let p = s.next(b"RAW ", &format!("{label} RAW section"))?;
                if let (Some(size), Some(v)) = (dtype_size(&e.dtype), values)
                    && v.checked_mul(size) != Some(p.len() as u64)
                {
                    return Err(bad(
                        &format!("{label} RAW section"),
                        format!("{} bytes of {} for shape {:?}", p.len(), e.dtype, e.shape),
                    ));
                }
                *raw = p.to_vec();
            }
            (Body::Coded { layers: out, .. }, count) => {
                let mut sum = 0u64;
                for l in 0..count {
                    let t = parse_layer(
                        &mut s,
                        bytes,
                        &mut channels,
                        h.seed,
                        &format!("{label} layer {l}"),
                    )?;
                    sum =
                        sum.saturating_add((t.tokens as u64).saturating_mul(t.plan.width() as u64));
                    out.push(t);
                }
                if values != Some(sum) {
                    return Err(bad(
                        &label,
                        format!("shape {:?} does not hold the layers' {sum} values", e.shape),
                    ));
                }
            }
        }
        entries.push(e);
    }
    if s.at != bytes.len() {
        return Err(bad(
            "file",
            format!("{} bytes after the last section", bytes.len() - s.at),
        ));
    }

    let file = KvFile {
        seed: h.seed,
        entries,
        metadata,
        stored: None,
    };
    // The stored parameters are exactly those used, and those the seed and
    // the codebook give: a decoder never silently uses anything else.
    let dims = file.dims_used();
    let have: BTreeSet<usize> = rotations.keys().copied().collect();
    if let Some(d) = dims.symmetric_difference(&have).next() {
        return Err(bad(
            "ROT sections",
            format!("d = {d} is used by a plan xor has a ROT section"),
        ));
    }
    let used = file.tables_used();
    let have: BTreeSet<(usize, u8)> = tables.keys().copied().collect();
    if let Some((d, b)) = used.symmetric_difference(&have).next() {
        return Err(bad(
            "CBK sections",
            format!("(d = {d}, b = {b}) is used by a unit xor has a CBK section"),
        ));
    }
    for (&d, stored) in &rotation_bytes {
        let want = Rotation::new(RotationKind::default_for(d), d, h.seed)
            .map_err(|e| e.in_file(path))?
            .to_bytes();
        if want != *stored {
            return Err(bad(
                &format!("ROT section d = {d}"),
                format!("differs from the rotation of seed {}", h.seed),
            ));
        }
    }
    for (&(d, b), stored) in &tables {
        let want = Codebook::get(d, b as u32)
            .map_err(|e| e.in_file(path))?
            .centroids_f32();
        if want
            .iter()
            .flat_map(|c| c.to_le_bytes())
            .ne(stored.iter().copied())
        {
            return Err(bad(
                &format!("CBK section d = {d}, b = {b}"),
                "differs from the codebook of (d, b)".into(),
            ));
        }
    }
    Ok(KvFile {
        stored: Some(rotations.into_iter().collect()),
        ..file
    })
}

/// An `ENT ` payload: the entry (coded entries with no layers yet) and its
/// layer count.
fn parse_entry(p: &[u8]) -> std::result::Result<(KvEntry, u32), String> {
    let mut f = Fields(p);
    let n = f.u16()? as usize;
    let name = f.text(n, "name")?.to_string();
    check_text("name", &name, u16::MAX as usize)?;
    let n = f.u8()? as usize;
    let dtype = f.text(n, "dtype")?.to_string();
    check_text("dtype", &dtype, 255)?;
    if dtype.is_empty() {
        return Err("the dtype is empty".into());
    }
    let rank = f.u8()? as usize;
    let shape: Vec<u64> = f
        .take(8 * rank)?
        .chunks_exact(8)
        .map(|c| u64_at(c, 0))
        .collect();
    let n = f.u8()? as usize;
    let layout = f.text(n, "layout")?.to_string();
    check_layout(&layout, rank)?;
    let (body, layers) = match f.u8()? {
        0 => (Body::Raw(Vec::new()), 0),
        k @ (1 | 2) => {
            let role = if k == 1 { Role::Key } else { Role::Value };
            let layers = f.u32()?;
            if layers == 0 {
                return Err("a coded entry of 0 layers".into());
            }
            (
                Body::Coded {
                    role,
                    layers: Vec::new(),
                },
                layers,
            )
        }
        k => return Err(format!("kind {k} is none of 0 (raw), 1 (key), 2 (value)")),
    };
    f.end()?;
    Ok((
        KvEntry {
            name,
            dtype,
            shape,
            layout,
            body,
        },
        layers,
    ))
}

/// f16 values, each finite.
fn f16s(b: &[u8], what: &str) -> std::result::Result<Vec<f32>, String> {
    b.chunks_exact(2)
        .enumerate()
        .map(|(i, c)| {
            let h = half::f16::from_le_bytes([c[0], c[1]]);
            if h.is_finite() {
                Ok(h.to_f32())
            } else {
                Err(format!("{what} {i} is not finite"))
            }
        })
        .collect()
}

/// One coded layer: `LHD `, `WID `, `SCL `, `COD `.
fn parse_layer(
    s: &mut Sections,
    file: &[u8],
    channels: &mut u64,
    seed: u64,
    label: &str,
) -> Result<CodedTensor> {
    let path = s.path;
    let bad = |sec: &str, why: String| Error::format(path, format!("{label} {sec} section"), why);
    let mut f = Fields(s.next(b"LHD ", &format!("{label} LHD section"))?);
    let (tokens, heads, head_dim, flags) =
        (|| Ok::<_, String>((f.u64()?, f.u32()?, f.u32()?, f.u8()?)))()
            .map_err(|why| bad("LHD", why))?;
    let (heads, head_dim) = (heads as usize, head_dim as usize);
    if heads == 0
        || !(2..=MAX_DIM).contains(&head_dim)
        || flags & !(LAYER_SEGMENTED | LAYER_MEAN) != 0
    {
        return Err(bad(
            "LHD",
            format!(
                "{heads} heads of {head_dim} channels, flags {flags:#04x}: need ≥ 1 head of 2..={MAX_DIM}, flags in 0..=3"
            ),
        ));
    }
    let width = heads as u64 * head_dim as u64;
    *channels = channels.saturating_add(width);
    check_channels(file, std::iter::once(*channels)).map_err(|why| bad("LHD", why))?;
    let plan = if flags & LAYER_SEGMENTED != 0 {
        let mut segments = Vec::new();
        for h in 0..heads {
            let count = f.u8().map_err(|why| bad("LHD", why))? as usize;
            if count == 0 {
                return Err(bad("LHD", format!("head {h} has no segments")));
            }
            if count == 1 {
                segments.push(vec![(0..head_dim as u32).collect()]);
                continue;
            }
            let ids = f.take(head_dim).map_err(|why| bad("LHD", why))?;
            let mut segs = vec![Vec::new(); count];
            for (c, &k) in ids.iter().enumerate() {
                segs.get_mut(k as usize)
                    .ok_or_else(|| {
                        bad(
                            "LHD",
                            format!("head {h} channel {c}: segment {k} of {count}"),
                        )
                    })?
                    .push(c as u32);
            }
            segments.push(segs);
        }
        if segments.iter().all(|s| s.len() == 1) {
            return Err(bad("LHD", "a segmented plan of one segment a head".into()));
        }
        Plan::new(heads, head_dim, segments)
    } else {
        Plan::uniform(heads, head_dim)
    }
    .map_err(|e| bad("LHD", e.to_string()))?;
    let mean = if flags & LAYER_MEAN != 0 {
        let b = f.take(2 * width as usize).map_err(|why| bad("LHD", why))?;
        Some(f16s(b, "mean channel").map_err(|why| bad("LHD", why))?)
    } else {
        None
    };
    f.end().map_err(|why| bad("LHD", why))?;

    let wid = s.next(b"WID ", &format!("{label} WID section"))?;
    let per = plan.units_per_token() as u64;
    let units = (tokens as u128 * per as u128).min(u64::MAX as u128) as u64;
    if wid.len() as u64 != units.div_ceil(2) {
        return Err(bad(
            "WID",
            format!("{} bytes for {tokens} tokens of {per} units", wid.len()),
        ));
    }
    let units = units as usize;
    let widths: Vec<u8> = (0..units)
        .map(|u| (wid[u / 2] >> (4 * (u % 2))) & 15)
        .collect();
    if let Some(u) = widths.iter().position(|&w| w > 8) {
        return Err(bad(
            "WID",
            format!("unit {u} has width {} (at most 8)", widths[u]),
        ));
    }
    if units % 2 == 1 && wid[units / 2] >> 4 != 0 {
        return Err(bad(
            "WID",
            "the unused nibble of the last byte must be zero".into(),
        ));
    }
    let scl = s.next(b"SCL ", &format!("{label} SCL section"))?;
    let coded = widths.iter().filter(|&&w| w > 0).count();
    if scl.len() != 2 * coded {
        return Err(bad(
            "SCL",
            format!("{} bytes for {coded} coded units", scl.len()),
        ));
    }
    let mut stored = f16s(scl, "scale")
        .map_err(|why| bad("SCL", why))?
        .into_iter();
    let scales: Vec<f32> = widths
        .iter()
        .map(|&w| {
            if w > 0 {
                stored.next().unwrap_or(0.0)
            } else {
                0.0
            }
        })
        .collect();
    let cod = s.next(b"COD ", &format!("{label} COD section"))?;
    let dims: Vec<u64> = plan.units().iter().map(|(_, c)| c.len() as u64).collect();
    let bits: u64 = widths
        .iter()
        .enumerate()
        .map(|(u, &w)| dims[u % dims.len()] * w as u64)
        .sum();
    let used = (bits % 8) as u32;
    if cod.len() as u64 != bits.div_ceil(8)
        || (used != 0 && cod.last().is_some_and(|&l| l >> used != 0))
    {
        return Err(bad(
            "COD",
            format!(
                "{} bytes, the widths need {} (unused high bits zero)",
                cod.len(),
                packed_len(bits as usize, 1)
            ),
        ));
    }
    let t = CodedTensor {
        plan,
        tokens: tokens as usize,
        seed,
        mean,
        widths,
        scales,
        codes: cod.to_vec(),
    };
    t.validate().map_err(|e| bad("LHD", e.to_string()))?;
    Ok(t)
}
