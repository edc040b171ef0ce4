//! The KV-cache commands: `kv compress`, `kv decompress`, `kv info` and
//! `kv eval` on key/value caches (safetensors or .npy) and `.tq3k` files.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use turboquant3d::Error;
use turboquant3d::format::check_distinct;
use turboquant3d::kv::KvFile;
use turboquant3d::kv::basis::{Basis, fit};
use turboquant3d::kv::cache::{Bits, CacheOptions, compress, decompress};
use turboquant3d::kv::codec::{KvConfig, Mode, Weighting};
use turboquant3d::kv::eval::evaluate;
use turboquant3d::kv::file::{Body, Role};
use turboquant3d::kv::tensors::{FileKind, Layout, RoleGlobs, TensorFile};

use crate::common::{
    human, json_f64, kv_bits, kv_count, kv_heads, kv_queries, kv_split, kv_topk, output_to,
    print_json, report, spinner,
};

#[derive(Subcommand)]
pub enum KvCommand {
    /// Compress a KV cache (.safetensors or .npy) into a .tq3k file.
    Compress(CompressArgs),
    /// Decompress a .tq3k file to the input's names, shapes and dtypes
    /// (.safetensors or .npy by extension). Queries were never stored.
    Decompress {
        /// The .tq3k file.
        input: PathBuf,
        /// Output .safetensors or .npy (one tensor), by extension; `-` for
        /// standard output as safetensors.
        #[arg(short, long)]
        output: PathBuf,
        /// The per-model basis the keys were coded in, if any.
        #[arg(long)]
        basis: Option<PathBuf>,
    },
    /// Describe a .tq3k file: entries, layers, plans, widths, bits, ratios.
    Info {
        /// The .tq3k file.
        input: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compress a cache in memory at several budgets and report NMSE
    /// against theory and attention errors beside KIVI at the same bits.
    Eval(EvalArgs),
    /// Compute a per-model key basis (each layer's and head's principal
    /// directions) from calibration caches of one model, for
    /// `compress --basis`.
    Basis(BasisArgs),
}

#[derive(clap::Args)]
pub struct BasisArgs {
    /// Calibration caches (.safetensors or .npy) of the same model.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output basis (.safetensors).
    #[arg(short, long)]
    output: PathBuf,
    /// Leading directions per head coded as their own vector.
    #[arg(long, value_parser = kv_split, default_value_t = 8)]
    split: usize,
    /// As in `compress`.
    #[arg(long, value_parser = kv_heads)]
    heads: Option<usize>,
    /// As in `compress`.
    #[arg(long)]
    layout: Option<String>,
    /// As in `compress`.
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// One vector per head (d = head_dim): attention can run on the codes.
    PerHead,
    /// One vector over the whole width per token.
    Whole,
}

#[derive(Clone, Copy, ValueEnum)]
enum WeightArg {
    /// The first-order attention-output error: the file's queries where
    /// present, else energy with sink protection.
    Attention,
    /// Energy only (every element's squared error alike).
    Energy,
    /// Every vector's relative error alike (uniform widths).
    Flat,
}

/// What to read and how to code it, shared by `compress` and `eval`.
#[derive(clap::Args)]
pub struct CodecArgs {
    /// Heads to split a whole-width axis into (tensors of [tokens, width]
    /// or [layers, tokens, width] need it for per-head coding).
    #[arg(long, value_parser = kv_heads)]
    heads: Option<usize>,
    /// Axis letters of every key/value/query tensor: l (leading, layers or
    /// batch; any number), t (tokens), h (heads), d (head dim), c (whole
    /// width). Default by rank: tc, thd, lthd. Hugging Face caches are
    /// lhtd ([batch, heads, tokens, head_dim]).
    #[arg(long)]
    layout: Option<String>,
    /// Globs naming key tensors (override the name rules: a last part k,
    /// key, keys, k_cache or key_cache).
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
    /// Globs naming value tensors (name rules: v, value, values, v_cache,
    /// value_cache).
    #[arg(long, value_delimiter = ',')]
    values: Vec<String>,
    /// Globs naming query tensors, used as weights only and never stored
    /// (name rules: q, query, queries).
    #[arg(long, value_delimiter = ',')]
    queries: Vec<String>,
    /// How rows are cut into vectors.
    #[arg(long, value_enum, default_value_t = ModeArg::PerHead)]
    mode: ModeArg,
    /// Do not subtract the per-channel mean of the keys.
    #[arg(long)]
    no_centre: bool,
    /// Channels per vector split off as an outlier segment (0: none;
    /// else 2..=d−2).
    #[arg(long, value_parser = kv_count, default_value_t = 0)]
    outliers: usize,
    /// How vectors are weighted for the bit allocation.
    #[arg(long, value_enum, default_value_t = WeightArg::Attention)]
    weights: WeightArg,
    /// Without queries: tokens per head that look like attention sinks,
    /// coded at the widest width.
    #[arg(long, value_parser = kv_count, default_value_t = 4)]
    sinks: usize,
    /// Queries per layer that weight the allocation, at most (evenly
    /// spaced); more cost time in proportion (64: 2.3 s, 256: 9 s for 24
    /// layers of 1536 tokens × 1024 on 2 cores) for a little less error.
    #[arg(long, value_parser = kv_queries, default_value_t = 64)]
    weight_queries: usize,
    /// Seed of the rotations (stored in the file).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Leave query tensors out of the allocation (they are never stored;
    /// `eval` still judges attention with them).
    #[arg(long)]
    blind: bool,
    /// A per-model key basis (`tq3d kv basis`): keys are coded in it, their
    /// leading directions split off. The file records its digest, and
    /// decompressing needs the same basis.
    #[arg(long)]
    basis: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct CompressArgs {
    /// Input cache: .safetensors or .npy.
    input: PathBuf,
    /// Output .tq3k (`-` for standard output; never the input).
    #[arg(short, long)]
    output: PathBuf,
    /// Bits per element, keys and values together, counting every byte of
    /// the file but tensors carried raw (codes, scales, widths, means,
    /// headers, rotations, codebooks). 4.25 is 7.5× smaller than f32.
    #[arg(long, value_parser = kv_bits, conflicts_with_all = ["k_bits", "v_bits"])]
    bits: Option<f64>,
    /// Bits per key element (with --v-bits): keys and values budgeted apart.
    #[arg(long, value_parser = kv_bits, requires = "v_bits")]
    k_bits: Option<f64>,
    /// Bits per value element (with --k-bits).
    #[arg(long, value_parser = kv_bits, requires = "k_bits")]
    v_bits: Option<f64>,
    #[command(flatten)]
    codec: CodecArgs,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Input cache: .safetensors or .npy.
    input: PathBuf,
    /// Budgets in bits per element, comma-separated (default: KIVI's 2-,
    /// 3- and 4-bit sizes with groups of 128).
    #[arg(long, value_delimiter = ',', value_parser = kv_bits, default_value = "2.25,3.25,4.25")]
    bits: Vec<f64>,
    /// Queries per layer for the attention figures (evenly spaced among
    /// the file's, or random ones when it has none).
    #[arg(long, value_parser = kv_queries, default_value_t = 64)]
    eval_queries: usize,
    /// k of the top-k agreement.
    #[arg(long, value_parser = kv_topk, default_value_t = 8)]
    topk: usize,
    #[command(flatten)]
    codec: CodecArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: KvCommand) -> Result<(), Error> {
    match cmd {
        KvCommand::Compress(a) => compress_cmd(a),
        KvCommand::Decompress {
            input,
            output,
            basis,
        } => decompress_cmd(input, output, basis),
        KvCommand::Basis(a) => basis_cmd(a),
        KvCommand::Info { input, json } => info_cmd(input, json),
        KvCommand::Eval(a) => eval_cmd(a),
    }
}

fn globs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn options(c: &CodecArgs, bits: Bits) -> Result<CacheOptions, Error> {
    Ok(CacheOptions {
        config: KvConfig {
            mode: match c.mode {
                ModeArg::PerHead => Mode::PerHead,
                ModeArg::Whole => Mode::Whole,
            },
            centre_keys: !c.no_centre,
            outliers: c.outliers,
            weighting: match c.weights {
                WeightArg::Attention => Weighting::Attention,
                WeightArg::Energy => Weighting::Uniform,
                WeightArg::Flat => Weighting::Flat,
            },
            sinks: c.sinks,
            weight_queries: c.weight_queries,
            seed: c.seed,
            ..KvConfig::default()
        },
        bits,
        heads: c.heads,
        layout: c.layout.as_deref().map(Layout::parse).transpose()?,
        globs: RoleGlobs::new(&globs(&c.keys), &globs(&c.values), &globs(&c.queries))?,
        use_queries: !c.blind,
        basis: c.basis.as_deref().map(Basis::read).transpose()?,
    })
}

fn compress_cmd(a: CompressArgs) -> Result<(), Error> {
    let t0 = Instant::now();
    output_to(&a.output);
    check_distinct(&a.output, &[&a.input])?;
    let bits = match (a.bits, a.k_bits, a.v_bits) {
        (Some(b), _, _) => Bits::Joint(b),
        (None, Some(k), Some(v)) => Bits::Split { keys: k, values: v },
        _ => {
            return Err(Error::InvalidArgument(
                "give --bits B, or --k-bits B and --v-bits B".into(),
            ));
        }
    };
    let opts = options(&a.codec, bits)?;
    let input = TensorFile::read(&a.input)?;
    let read_s = t0.elapsed().as_secs_f64();
    let bar = spinner(format!("compressing {}", a.input.display()), a.json);
    let t1 = Instant::now();
    let result = compress(&input, &opts, &|done, total| {
        bar.set_message(format!("compressing layer {done} of {total}"));
    });
    bar.finish_and_clear();
    let (file, rep) = result.map_err(|e| e.in_file(&a.input))?;
    let encode_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let bytes = file.write_checked(&a.output, &[&a.input])?;
    let write_s = t2.elapsed().as_secs_f64();
    let ratio32 = 4.0 * rep.elements as f64 / rep.coded_bytes() as f64;
    if a.json {
        print_json(&json!({
            "input": a.input.display().to_string(),
            "output": a.output.display().to_string(),
            "bytes": bytes,
            "coded_bytes": rep.coded_bytes(),
            "overhead_bytes": rep.overhead,
            "elements": rep.elements,
            "bits_per_element": json_f64(rep.bits_per_element(), "bits per element")?,
            "ratio_f32": json_f64(ratio32, "ratio")?,
            "ratio_f16": json_f64(ratio32 / 2.0, "ratio")?,
            "tensors": rep.tensors.iter().map(|(n, key, layers, elements, payload)| json!({
                "name": n, "role": if *key { "key" } else { "value" }, "layers": layers,
                "elements": elements, "payload_bytes": payload,
            })).collect::<Vec<_>>(),
            "raw": rep.raw.iter().map(|(n, b)| json!({"name": n, "bytes": b})).collect::<Vec<_>>(),
            "queries": rep.queries,
            "seconds": {"read": read_s, "encode": encode_s, "write": write_s, "total": t0.elapsed().as_secs_f64()},
        }));
        return Ok(());
    }
    report!(
        "{} -> {}: {} key/value elements -> {} ({:.3} bits per element, {:.2}x smaller than f32, {:.2}x than f16)",
        a.input.display(),
        a.output.display(),
        rep.elements,
        human(rep.coded_bytes()),
        rep.bits_per_element(),
        ratio32,
        ratio32 / 2.0
    );
    for (n, key, layers, elements, payload) in &rep.tensors {
        report!(
            "  {} {n:?}: {layers} layers, {elements} elements, {} ({:.3} bits per element before overhead)",
            if *key { "keys  " } else { "values" },
            human(*payload),
            8.0 * *payload as f64 / *elements as f64
        );
    }
    if !rep.queries.is_empty() {
        report!(
            "  queries used as weights, not stored: {}",
            rep.queries.join(", ")
        );
    }
    for (n, b) in &rep.raw {
        report!("  carried raw: {n:?} ({})", human(*b));
    }
    report!(
        "  file {} (overhead {}); read {:.2} s, encode {:.2} s, write {:.2} s",
        human(bytes),
        human(rep.overhead),
        read_s,
        encode_s,
        write_s
    );
    Ok(())
}

fn decompress_cmd(input: PathBuf, output: PathBuf, basis: Option<PathBuf>) -> Result<(), Error> {
    output_to(&output);
    check_distinct(&output, &[&input])?;
    let basis = basis.as_deref().map(Basis::read).transpose()?;
    let file = KvFile::read(&input)?;
    let tensors = decompress(&file, basis.as_ref()).map_err(|e| e.in_file(&input))?;
    // Standard output takes safetensors (it holds any number of tensors).
    let bytes = if turboquant3d::format::output::is_stdout(&output) {
        tensors.write_as(&output, FileKind::Safetensors)?
    } else {
        tensors.write(&output)?
    };
    report!(
        "{} -> {}: {} tensors, {}",
        input.display(),
        output.display(),
        tensors.tensors.len(),
        human(bytes)
    );
    Ok(())
}

fn basis_cmd(a: BasisArgs) -> Result<(), Error> {
    output_to(&a.output);
    let inputs: Vec<&std::path::Path> = a.inputs.iter().map(PathBuf::as_path).collect();
    check_distinct(&a.output, &inputs)?;
    let caches = a
        .inputs
        .iter()
        .map(|p| TensorFile::read(p))
        .collect::<Result<Vec<_>, Error>>()?;
    let layout = a.layout.as_deref().map(Layout::parse).transpose()?;
    let globs = RoleGlobs::new(&globs(&a.keys), &[], &[])?;
    let bar = spinner(format!("fitting a basis to {} caches", caches.len()), false);
    let b = fit(&caches, &globs, layout.as_ref(), a.heads, a.split);
    bar.finish_and_clear();
    let b = b?;
    let bytes = b.to_file()?.write(&a.output)?;
    report!(
        "{} caches -> {}: a basis for {} key tensors ({}), {} leading directions split, digest {}; {}",
        caches.len(),
        a.output.display(),
        b.tensors.len(),
        b.tensors
            .iter()
            .map(|(n, (l, h, d, _))| format!("{n}: {l} × {h} × {d}²"))
            .collect::<Vec<_>>()
            .join(", "),
        b.split,
        b.digest(),
        human(bytes)
    );
    Ok(())
}

fn info_cmd(input: PathBuf, json_out: bool) -> Result<(), Error> {
    let file = KvFile::read(&input)?;
    let size = file.to_bytes()?.len() as u64;
    let mut entries = Vec::new();
    let (mut elements, mut raw) = (0u64, 0u64);
    for e in &file.entries {
        match &e.body {
            Body::Raw(b) => {
                raw += b.len() as u64;
                entries.push(json!({"name": e.name, "dtype": e.dtype, "shape": e.shape, "raw_bytes": b.len()}));
            }
            Body::Coded { role, layers } => {
                let mut hist = [0u64; 9];
                let (mut payload, mut n) = (0u64, 0u64);
                for t in layers {
                    for &w in &t.widths {
                        hist[w as usize] += 1;
                    }
                    payload += t.payload_bytes();
                    n += (t.tokens * t.plan.width()) as u64;
                }
                elements += n;
                let first = layers.first();
                entries.push(json!({
                    "name": e.name, "dtype": e.dtype, "shape": e.shape, "layout": e.layout,
                    "role": match role { Role::Key => "key", Role::Value => "value" },
                    "layers": layers.len(),
                    "tokens": first.map_or(0, |t| t.tokens),
                    "coding_heads": first.map_or(0, |t| t.plan.heads),
                    "vector_dims": first.map_or(vec![], |t| t.plan.dims()),
                    "centred": first.is_some_and(|t| t.mean.is_some()),
                    "width_histogram": hist,
                    "payload_bytes": payload,
                    "bits_per_element": json_f64(8.0 * payload as f64 / n.max(1) as f64, "bits")?,
                }));
            }
        }
    }
    let coded = size - raw;
    let bpe = 8.0 * coded as f64 / elements.max(1) as f64;
    let v = json!({
        "file": input.display().to_string(),
        "bytes": size,
        "seed": file.seed,
        "rotations": file.dims_used().into_iter().collect::<Vec<_>>(),
        "codebooks": file.tables_used().into_iter().collect::<Vec<_>>(),
        "coded_elements": elements,
        "bits_per_element": json_f64(bpe, "bits")?,
        "ratio_f32": json_f64(32.0 / bpe, "ratio")?,
        "ratio_f16": json_f64(16.0 / bpe, "ratio")?,
        "metadata": file.metadata.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
        "entries": entries,
    });
    if json_out {
        print_json(&v);
        return Ok(());
    }
    report!(
        "{}: .tq3k, {} entries, {}; seed {}, rotations for d = {:?}",
        input.display(),
        file.entries.len(),
        human(size),
        file.seed,
        file.dims_used()
    );
    report!(
        "  {} key/value elements at {:.3} bits per element, all in: {:.2}x smaller than f32, {:.2}x than f16",
        elements,
        bpe,
        32.0 / bpe,
        16.0 / bpe
    );
    if let Some(m) = &file.metadata {
        report!("  encoder settings: {m}");
    }
    for e in v["entries"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("");
        if let Some(raw) = e["raw_bytes"].as_u64() {
            report!(
                "  {name:?}: carried raw, {} {}, {}",
                e["dtype"].as_str().unwrap_or(""),
                e["shape"],
                human(raw)
            );
            continue;
        }
        let hist: Vec<String> = e["width_histogram"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(b, n)| format!("{b}:{n}"))
            .collect();
        report!(
            "  {name:?}: {}, {} {} ({}), {} layers × {} tokens, {} coding heads of d = {}{}; {:.3} bits per element; widths {}",
            e["role"].as_str().unwrap_or(""),
            e["dtype"].as_str().unwrap_or(""),
            e["shape"],
            e["layout"].as_str().unwrap_or(""),
            e["layers"],
            e["tokens"],
            e["coding_heads"],
            e["vector_dims"],
            if e["centred"].as_bool() == Some(true) {
                ", centred"
            } else {
                ""
            },
            e["bits_per_element"].as_f64().unwrap_or(0.0),
            hist.join(" ")
        );
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> Result<(), Error> {
    let input = TensorFile::read(&a.input)?;
    let mut out = Vec::new();
    for &b in &a.bits {
        let opts = options(&a.codec, Bits::Joint(b))?;
        let bar = spinner(format!("evaluating at {b} bits per element"), a.json);
        let ev = evaluate(&input, &opts, a.eval_queries, a.topk);
        bar.finish_and_clear();
        out.push(ev.map_err(|e| e.in_file(&a.input))?);
    }
    if a.json {
        let v: Vec<serde_json::Value> = out
            .iter()
            .map(|ev| {
                json!({
                    "bits_asked": ev.bits_asked, "bits": ev.bits, "bytes": ev.bytes,
                    "ratio_f32": ev.f32_bytes as f64 / ev.bytes as f64,
                    "ratio_f16": ev.f16_bytes as f64 / ev.bytes as f64,
                    "layers": ev.rows.iter().map(|r| json!({
                        "keys": r.keys, "values": r.values, "layer": r.layer,
                        "queries": if r.own_queries { "file" } else { "random" },
                        "theory_nmse": [r.theory.0, r.theory.1],
                        "ours": figures(&r.ours),
                        "kivi": {"bits": r.kivi.0.0, "group": r.kivi.0.1, "figures": figures(&r.kivi.1)},
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!({"input": a.input.display().to_string(), "evaluations": v}));
        return Ok(());
    }
    for ev in &out {
        report!(
            "{} at {} bits per element: {} ({:.3} bits all in), {:.2}x smaller than f32, {:.2}x than f16",
            a.input.display(),
            ev.bits_asked,
            human(ev.bytes),
            ev.bits,
            ev.f32_bytes as f64 / ev.bytes as f64,
            ev.f16_bytes as f64 / ev.bytes as f64
        );
        report!(
            "  {:<28} {:>5} {:>7}  {:>21}  {:>21}  {:>23}  {:>15}",
            "keys / values, layer",
            "q",
            "bits",
            "NMSE K (theory)",
            "NMSE V (theory)",
            "attn out / logit",
            "top-k"
        );
        let mut sums = [0.0f64; 6];
        for r in &ev.rows {
            let ((kb, kg), k) = (r.kivi.0, &r.kivi.1);
            report!(
                "  {:<28} {:>5} {:>7.3}  {:>9.2e} ({:>9.2e})  {:>9.2e} ({:>9.2e})  {:>11.4} / {:>9.4}  {:>15.3}",
                format!("{} / {}, {}", r.keys, r.values, r.layer),
                if r.own_queries { "file" } else { "rand" },
                r.ours.bits,
                r.ours.nmse.0,
                r.theory.0,
                r.ours.nmse.1,
                r.theory.1,
                r.ours.output_rel,
                r.ours.logit_rel,
                r.ours.topk
            );
            report!(
                "  {:<28} {:>5} {:>7.3}  {:>9.2e} {:>11}  {:>9.2e} {:>11}  {:>11.4} / {:>9.4}  {:>15.3}",
                format!("  KIVI {kb}-bit, groups of {kg}"),
                "",
                k.bits,
                k.nmse.0,
                "",
                k.nmse.1,
                "",
                k.output_rel,
                k.logit_rel,
                k.topk
            );
            for (s, v) in sums.iter_mut().zip([
                r.ours.output_rel,
                r.ours.logit_rel,
                r.ours.topk,
                k.output_rel,
                k.logit_rel,
                k.topk,
            ]) {
                *s += v;
            }
        }
        if ev.rows.is_empty() {
            report!(
                "  no key/value pairs (a key and a value of the same prefix): no attention figures; `kv compress` and `kv info` give the size"
            );
            continue;
        }
        let n = ev.rows.len() as f64;
        report!(
            "  mean over {} layers: ours attention output {:.4}, logit {:.4}, top-k {:.3}; KIVI {:.4}, {:.4}, {:.3}",
            ev.rows.len(),
            sums[0] / n,
            sums[1] / n,
            sums[2] / n,
            sums[3] / n,
            sums[4] / n,
            sums[5] / n
        );
    }
    Ok(())
}

fn figures(f: &turboquant3d::kv::eval::Figures) -> serde_json::Value {
    json!({
        "bits": f.bits, "nmse": [f.nmse.0, f.nmse.1], "attention_output": f.output_rel,
        "logit": f.logit_rel, "topk": f.topk,
    })
}
