//! Whole caches: named tensors in ([`TensorFile`]), a [`KvFile`] out, and
//! back. Keys and values are coded layer by layer under one budget of bits
//! per element that counts every byte of the file except the tensors
//! carried raw; queries weight the allocation and are not stored.

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::kv::attention::Heads;
use crate::kv::basis::Basis;
use crate::kv::codec::{Budget, KvConfig, LayerIn, Mode, Weighting, compress_layer, plan};
use crate::kv::coded::CodedTensor;
use crate::kv::file::{self, Body, KvEntry, KvFile};
use crate::kv::tensors::{
    Axis, Canonical, Dtype, Layout, NamedTensor, Role, RoleGlobs, TensorFile, assign,
    from_canonical, to_canonical,
};
use crate::{Error, Result};

/// How many bits the coded tensors may spend, per element, counting every
/// byte of the file but raw tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bits {
    /// Keys and values share the budget; the allocator moves bits between
    /// them.
    Joint(f64),
    /// Keys and values each have their own.
    Split {
        /// Bits per key element.
        keys: f64,
        /// Bits per value element.
        values: f64,
    },
}

/// Everything `compress` needs besides the tensors.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// The codec's settings.
    pub config: KvConfig,
    /// The budget.
    pub bits: Bits,
    /// Heads to split a `c` (whole-width) axis into; required for per-head
    /// coding of tensors without an `h` axis.
    pub heads: Option<usize>,
    /// The axis layout of every key, value and query tensor (default: by
    /// rank, see [`Layout::default_for_rank`]).
    pub layout: Option<Layout>,
    /// Role overrides.
    pub globs: RoleGlobs,
    /// Weight the allocation by the queries found (else they are only
    /// left out of the file).
    pub use_queries: bool,
    /// A per-model key basis ([`crate::kv::basis`]): every key tensor it
    /// names is coded in it, with its leading directions split off.
    pub basis: Option<Basis>,
}

/// What `compress` did, per coded tensor and overall.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per coded tensor: name, key?, layers, elements, payload bytes.
    pub tensors: Vec<(String, bool, usize, u64, u64)>,
    /// Tensors carried raw (name, bytes).
    pub raw: Vec<(String, u64)>,
    /// Query tensors used as weights (not stored).
    pub queries: Vec<String>,
    /// File bytes beyond the payloads and raw tensors.
    pub overhead: u64,
    /// Key and value elements coded.
    pub elements: u64,
    /// The file's size.
    pub file_bytes: u64,
}

impl Report {
    /// Bytes spent on the coded tensors, overhead included.
    pub fn coded_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.4).sum::<u64>() + self.overhead
    }

    /// Bits per coded element, all in (raw tensors excluded).
    pub fn bits_per_element(&self) -> f64 {
        8.0 * self.coded_bytes() as f64 / self.elements.max(1) as f64
    }
}

/// One key or value tensor, canonical, and where its queries are.
struct Coded {
    index: usize,
    key: bool,
    canon: Canonical,
    queries: Option<usize>,
}

fn heads_of(c: &Canonical) -> Heads {
    Heads {
        heads: c.heads,
        head_dim: c.head_dim,
    }
}

/// Compresses every key and value tensor of `input` into a [`KvFile`];
/// other tensors are carried raw, queries only weight the allocation.
/// `progress(done, total)` is called as layers finish.
pub fn compress(
    input: &TensorFile,
    opts: &CacheOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(KvFile, Report)> {
    let tensors = &input.tensors;
    let assignment = assign(tensors, &opts.globs)?;
    let layout = opts.layout.as_ref();
    // Canonical keys, values and queries.
    let mut coded: Vec<Coded> = Vec::new();
    let mut queries: Vec<(usize, Canonical)> = Vec::new();
    for g in &assignment.groups {
        if let Some(q) = g.query {
            queries.push((q, to_canonical(&tensors[q], layout, opts.heads)?));
        }
        for (slot, key) in [(g.key, true), (g.value, false)] {
            if let Some(i) = slot {
                coded.push(Coded {
                    index: i,
                    key,
                    canon: to_canonical(&tensors[i], layout, opts.heads)?,
                    queries: g.query.map(|_| queries.len() - 1),
                });
            }
        }
    }
    for c in &coded {
        if let Some(qi) = c.queries {
            let (q, qc) = &queries[qi];
            if qc.layers != c.canon.layers || qc.width() != c.canon.width() {
                return Err(Error::Shape(format!(
                    "queries {:?} are {} layers of width {}, keys {:?} {} layers of width {}",
                    tensors[*q].name,
                    qc.layers,
                    qc.width(),
                    tensors[c.index].name,
                    c.canon.layers,
                    c.canon.width()
                )));
            }
        }
        if opts.config.mode == Mode::PerHead && c.canon.heads == 1 && opts.heads.is_none() {
            return Err(Error::InvalidArgument(format!(
                "tensor {:?} has no heads axis: give --heads (or --mode whole)",
                tensors[c.index].name
            )));
        }
    }
    // Keys (and their queries) into the basis.
    if let Some(b) = &opts.basis {
        for c in coded.iter_mut().filter(|c| c.key) {
            let name = &tensors[c.index].name;
            if !b.tensors.contains_key(name) {
                return Err(Error::InvalidArgument(format!(
                    "the basis has no matrices for keys {name:?} (it has {:?})",
                    b.tensors.keys().collect::<Vec<_>>()
                )));
            }
            let t = c.canon.tokens;
            b.apply(name, &mut c.canon.data, t, true)?;
            if let Some(qi) = c.queries {
                let q = &mut queries[qi].1;
                let n = q.tokens;
                b.apply(name, &mut q.data, n, true)?;
            }
        }
    }
    let elements: u64 = coded.iter().map(|c| c.canon.data.len() as u64).sum();
    let (n_k, n_v) = coded.iter().fold((0u64, 0u64), |(k, v), c| {
        let n = c.canon.data.len() as u64;
        if c.key { (k + n, v) } else { (k, v + n) }
    });
    let split = opts.basis.as_ref().map(|b| b.split);
    let config = KvConfig {
        key_split: split.or(opts.config.key_split),
        ..opts.config.clone()
    };
    // Price the file with every width 0 and every codebook table.
    let metadata = metadata(opts, opts.use_queries && !queries.is_empty());
    let skeleton = build(
        input,
        &assignment.roles,
        &coded,
        opts,
        |c, layer| {
            let x = layer_of(&c.canon, layer);
            let mean = (c.key && opts.config.centre_keys).then(|| vec![0.0; c.canon.width()]);
            let split = match (c.key, split) {
                (true, Some(s)) => s,
                _ => opts.config.outliers,
            };
            let p = plan(
                x,
                c.canon.tokens,
                heads_of(&c.canon),
                opts.config.mode,
                split,
                None,
            )?;
            let units = c.canon.tokens * p.units_per_token();
            CodedTensor::encode(x, c.canon.tokens, p, mean, vec![0; units], opts.config.seed)
        },
        metadata.clone(),
    )?;
    let raw: u64 = raw_bytes(&skeleton);
    let tables: u64 =
        skeleton.dims_used().len() as u64 * (1..=8).map(file::table_bytes).sum::<u64>();
    let overhead = skeleton.overhead_bytes()? - raw + tables;
    let total = |bpe: f64, n: u64| (bpe * n as f64).floor() as u64;
    let share = |n: u64| (8 * overhead) as f64 * n as f64 / elements.max(1) as f64;
    let (budget_k, budget_v) = match opts.bits {
        Bits::Joint(b) => {
            let all = total(b, elements);
            (all, 0)
        }
        Bits::Split { keys, values } => (total(keys, n_k), total(values, n_v)),
    };
    let fits = |have: u64, need: f64| -> Result<u64> {
        let left = have as f64 - need;
        if left <= 0.0 {
            return Err(Error::InvalidArgument(format!(
                "the budget ({have} bits) does not cover the file's fixed {} bytes (headers, rotations, codebooks)",
                overhead
            )));
        }
        Ok(left as u64)
    };
    let (pay_k, pay_v) = match opts.bits {
        Bits::Joint(_) => (fits(budget_k, share(elements))?, 0),
        Bits::Split { .. } => (
            if n_k > 0 {
                fits(budget_k, share(n_k))?
            } else {
                0
            },
            if n_v > 0 {
                fits(budget_v, share(n_v))?
            } else {
                0
            },
        ),
    };
    // Layers: a key and its value in the same group and layer share a budget.
    let mut jobs: Vec<(usize, Option<usize>, usize)> = Vec::new(); // (key or lone, value partner, layer)
    let mut paired = vec![false; coded.len()];
    for (i, c) in coded.iter().enumerate() {
        if paired[i] {
            continue;
        }
        let partner = if c.key {
            coded
                .iter()
                .enumerate()
                .skip(i + 1)
                .find(|(_, o)| {
                    !o.key && o.queries == c.queries && same_group(&assignment, c.index, o.index)
                })
                .map(|(j, _)| j)
        } else {
            None
        };
        if let Some(j) = partner {
            paired[j] = true;
        }
        for l in 0..c.canon.layers {
            jobs.push((i, partner, l));
        }
    }
    let code_all = |pay_k: u64, pay_v: u64| -> Result<(KvFile, Vec<Vec<Option<CodedTensor>>>)> {
        let done = AtomicUsize::new(0);
        let n_jobs = jobs.len();
        // (tensor, partner, layer, coded keys, coded values) per job.
        type Done = (
            usize,
            Option<usize>,
            usize,
            Option<CodedTensor>,
            Option<CodedTensor>,
        );
        let results: Vec<Result<Done>> = jobs
            .par_iter()
            .map(|&(i, partner, l)| {
                let c = &coded[i];
                let p = partner.map(|j| &coded[j]);
                let x = layer_of(&c.canon, l);
                let q = c
                    .queries
                    .filter(|_| opts.use_queries)
                    .map(|qi| layer_of(&queries[qi].1, l))
                    .filter(|q| !q.is_empty());
                let input = LayerIn {
                    k: if c.key { Some(x) } else { None },
                    v: if c.key {
                        p.map(|p| layer_of(&p.canon, l))
                    } else {
                        Some(x)
                    },
                    q,
                    tokens: c.canon.tokens,
                    heads: heads_of(&c.canon),
                };
                let per = |payload: u64, n_of: u64, n: u64| {
                    (payload as f64 * n as f64 / n_of.max(1) as f64).floor() as u64
                };
                let layer_n = x.len() as u64;
                let budget = match (opts.bits, p) {
                    (Bits::Joint(_), Some(_)) => Budget::Joint(per(pay_k, elements, 2 * layer_n)),
                    (Bits::Joint(_), None) => Budget::Joint(per(pay_k, elements, layer_n)),
                    (Bits::Split { .. }, _) => Budget::Split {
                        keys: per(pay_k, n_k, layer_n),
                        values: per(pay_v, n_v, layer_n),
                    },
                };
                let out = compress_layer(&input, &config, budget).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "tensor {:?}, layer {l}: {e}",
                        tensors[c.index].name
                    ))
                })?;
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, n_jobs);
                Ok((i, partner, l, out.k, out.v))
            })
            .collect();
        // Each coded tensor's layers, in order.
        let mut layers: Vec<Vec<Option<CodedTensor>>> =
            coded.iter().map(|c| vec![None; c.canon.layers]).collect();
        for r in results {
            let (i, partner, l, k, v) = r?;
            if coded[i].key {
                layers[i][l] = k;
                if let Some(j) = partner {
                    layers[j][l] = v;
                }
            } else {
                layers[i][l] = v;
            }
        }
        let file = build(
            input,
            &assignment.roles,
            &coded,
            opts,
            |c, l| {
                let i = coded.iter().position(|o| o.index == c.index).unwrap_or(0);
                layers[i][l].clone().ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "layer {l} of {:?} was not coded",
                        tensors[c.index].name
                    ))
                })
            },
            metadata.clone(),
        )?;
        Ok((file, layers))
    };
    let (mut file, mut layers) = code_all(pay_k, pay_v)?;
    // The overhead was priced with every codebook table; a joint budget
    // gets back what the tables not used left unspent, when it is worth a
    // second pass (small caches), and keeps the first if the second
    // overshoots.
    if let Bits::Joint(_) = opts.bits {
        // Bits of the file less its raw tensors.
        let spent_by = |f: &KvFile, l: &[Vec<Option<CodedTensor>>]| -> Result<u64> {
            let payload: u64 = l
                .iter()
                .flatten()
                .flatten()
                .map(CodedTensor::payload_bytes)
                .sum();
            Ok(8 * (f.overhead_bytes()? - raw_bytes(f) + payload))
        };
        let spent = spent_by(&file, &layers)?;
        let mut slack = budget_k.saturating_sub(spent);
        // A second or third pass may use a width the first did not, and so
        // a codebook table more: take back any overshoot and try again.
        for _ in 0..3 {
            if slack <= budget_k / 200 {
                break;
            }
            let (f2, l2) = code_all(pay_k + slack, 0)?;
            let spent2 = spent_by(&f2, &l2)?;
            if spent2 <= budget_k {
                (file, layers) = (f2, l2);
                break;
            }
            slack = slack.saturating_sub(spent2 - budget_k + 64);
        }
    }
    let mut report = Report {
        tensors: coded
            .iter()
            .zip(&layers)
            .map(|(c, ls)| {
                (
                    tensors[c.index].name.clone(),
                    c.key,
                    c.canon.layers,
                    c.canon.data.len() as u64,
                    ls.iter().flatten().map(CodedTensor::payload_bytes).sum(),
                )
            })
            .collect(),
        raw: file
            .entries
            .iter()
            .filter_map(|e| match &e.body {
                Body::Raw(b) => Some((e.name.clone(), b.len() as u64)),
                _ => None,
            })
            .collect(),
        queries: queries
            .iter()
            .map(|(q, _)| tensors[*q].name.clone())
            .collect(),
        overhead: 0,
        elements,
        file_bytes: 0,
    };
    report.overhead = file.overhead_bytes()? - raw_bytes(&file);
    report.file_bytes = report.coded_bytes() + raw_bytes(&file);
    Ok((file, report))
}

fn same_group(a: &crate::kv::tensors::Assignment, i: usize, j: usize) -> bool {
    a.groups.iter().any(|g| {
        (g.key == Some(i) || g.value == Some(i)) && (g.key == Some(j) || g.value == Some(j))
    })
}

fn layer_of(c: &Canonical, l: usize) -> &[f32] {
    let n = c.tokens * c.width();
    &c.data[l * n..(l + 1) * n]
}

fn raw_bytes(f: &KvFile) -> u64 {
    f.entries
        .iter()
        .map(|e| match &e.body {
            Body::Raw(b) => b.len() as u64,
            _ => 0,
        })
        .sum()
}

/// The file: every tensor but the queries, in input order.
fn build(
    input: &TensorFile,
    roles: &[Role],
    coded: &[Coded],
    opts: &CacheOptions,
    layer: impl Fn(&Coded, usize) -> Result<CodedTensor>,
    metadata: String,
) -> Result<KvFile> {
    let mut entries = Vec::new();
    for (i, (t, role)) in input.tensors.iter().zip(roles).enumerate() {
        let body = match role {
            Role::Query => continue,
            Role::Other => Body::Raw(t.bytes().to_vec()),
            Role::Key | Role::Value => {
                let c = coded.iter().find(|c| c.index == i).ok_or_else(|| {
                    Error::InvalidArgument(format!("tensor {:?} was not read", t.name))
                })?;
                Body::Coded {
                    role: if c.key {
                        file::Role::Key
                    } else {
                        file::Role::Value
                    },
                    layers: (0..c.canon.layers)
                        .map(|l| layer(c, l))
                        .collect::<Result<Vec<_>>>()?,
                }
            }
        };
        let layout = match (role, &opts.layout) {
            (Role::Key | Role::Value, Some(l)) => l.to_string(),
            (Role::Key | Role::Value, None) => Layout::default_for_rank(t.shape.len())
                .map(|l| l.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        entries.push(KvEntry {
            name: t.name.clone(),
            dtype: t.dtype.name().to_string(),
            shape: t.shape.iter().map(|&s| s as u64).collect(),
            layout,
            body,
        });
    }
    Ok(KvFile::new(opts.config.seed, entries, Some(metadata)))
}

fn metadata(opts: &CacheOptions, queries: bool) -> String {
    let c = &opts.config;
    let bits = match opts.bits {
        Bits::Joint(b) => serde_json::json!({ "joint": b }),
        Bits::Split { keys, values } => serde_json::json!({ "keys": keys, "values": values }),
    };
    serde_json::json!({
        "encoder": concat!("turboquant3d ", env!("CARGO_PKG_VERSION")),
        "bits_per_element": bits,
        "mode": match c.mode { Mode::PerHead => "per-head", Mode::Whole => "whole" },
        "centre_keys": c.centre_keys,
        "outliers": c.outliers,
        "weighting": match c.weighting {
            Weighting::Attention => "attention",
            Weighting::Uniform => "energy",
            Weighting::Flat => "flat",
        },
        "sinks": c.sinks,
        "queries_used": queries,
        "basis": opts.basis.as_ref().map(|b| serde_json::json!({
            "digest": b.digest(),
            "split": b.split,
            "keys": b.tensors.keys().collect::<Vec<_>>(),
        })),
    })
    .to_string()
}

/// The basis digest and key names a file was coded with, from its metadata.
pub fn basis_of(f: &KvFile) -> Option<(String, Vec<String>)> {
    let m: serde_json::Value = serde_json::from_str(f.metadata.as_deref()?).ok()?;
    let b = m.get("basis")?;
    let digest = b.get("digest")?.as_str()?.to_string();
    let keys = b
        .get("keys")?
        .as_array()?
        .iter()
        .filter_map(|k| k.as_str().map(String::from))
        .collect();
    Some((digest, keys))
}

/// Checks that `basis` is the one `f` was coded in (or that neither has
/// one), and returns the key names to rotate back.
pub fn check_basis(f: &KvFile, basis: Option<&Basis>) -> Result<Vec<String>> {
    match (basis_of(f), basis) {
        (None, None) => Ok(Vec::new()),
        (Some((digest, _)), None) => Err(Error::InvalidArgument(format!(
            "the keys were coded in a per-model basis (digest {digest}): give the basis file (--basis)"
        ))),
        (None, Some(_)) => Err(Error::InvalidArgument(
            "the file was not coded in a basis, but one was given".into(),
        )),
        (Some((digest, keys)), Some(b)) => {
            if b.digest() != digest {
                return Err(Error::InvalidArgument(format!(
                    "the keys were coded in basis {digest}, the basis given is {}",
                    b.digest()
                )));
            }
            Ok(keys)
        }
    }
}

/// The tensors of a [`KvFile`]: every entry with its name, dtype, shape and
/// axis order (queries were never stored). A file coded in a per-model
/// basis needs that basis.
pub fn decompress(f: &KvFile, basis: Option<&Basis>) -> Result<TensorFile> {
    let rotate = check_basis(f, basis)?;
    let mut out = Vec::with_capacity(f.entries.len());
    for i in 0..f.entries.len() {
        let mut d = f.decode_entry(i)?;
        if let (Some(b), file::EntryData::Values(v)) = (basis, &mut d.data)
            && rotate.iter().any(|k| k == d.name)
        {
            let tokens = match &f.entries[i].body {
                Body::Coded { layers, .. } => layers.first().map_or(0, |t| t.tokens),
                Body::Raw(_) => 0,
            };
            b.apply(d.name, v, tokens, false)?;
        }
        let dtype = Dtype::from_name(d.dtype)?;
        let shape: Vec<usize> = d.shape.iter().map(|&s| s as usize).collect();
        let t = match d.data {
            file::EntryData::Raw(b) => NamedTensor::new(d.name, dtype, shape, b.to_vec())?,
            file::EntryData::Values(values) => {
                let layout = Layout::parse(d.layout)?;
                let e = &f.entries[i];
                let (layers, tokens, width) = match &e.body {
                    Body::Coded { layers, .. } => (
                        layers.len(),
                        layers.first().map_or(0, |t| t.tokens),
                        layers.first().map_or(0, |t| t.plan.width()),
                    ),
                    Body::Raw(_) => (0, 0, 0),
                };
                let heads = layout
                    .axes()
                    .iter()
                    .position(|a| *a == Axis::Head)
                    .and_then(|p| shape.get(p).copied())
                    .unwrap_or(1)
                    .max(1);
                let c = Canonical {
                    layers,
                    tokens,
                    heads,
                    head_dim: width / heads,
                    data: values,
                };
                from_canonical(&c, d.name, dtype, &shape, Some(&layout))?
            }
        };
        out.push(t);
    }
    Ok(TensorFile::new(out))
}
