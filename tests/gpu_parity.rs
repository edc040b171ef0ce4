//! GPU against CPU on lavapipe (CI) or any adapter: codes, scales and
//! decoded vectors for every kernel family, d, b and scale format, f16 I/O
//! and the subgroup variant; chunked work; a host-owned device driving the
//! recording API; a lost device; a pipeline that fails to compile; and whole
//! scene files, byte for byte.
//!
//! What costs time on lavapipe is compiling pipelines (one per kernel
//! configuration and entry point, seconds each), not the vectors. So each
//! configuration is compiled once per binary, on one shared device per
//! feature set, and N is the few hundred vectors that byte parity needs.
//!
//! Locally, a machine with no adapter prints a skip message; under CI (or
//! with REQUIRE_GPU=1) a missing adapter fails. A variant the device cannot
//! run is reported with `common::gpu::skipped`, and
//! `variants_on_this_device` states which variants really ran.

mod common;

use std::sync::{Arc, OnceLock};

use common::data::gaussian;
use common::gpu::{context, note, ran, skipped};
use turboquant3d::gpu::{
    DataFormat, DecodeBuffers, EncodeBuffers, Engine, Family, GpuCodec, GpuContext, GpuQuantizer,
    KernelConfig, Ran,
};
use turboquant3d::packing::unpack;
use turboquant3d::{
    Encoded, Error, Quantizer, QuantizerConfig, RotationKind, ScaleFormat, ScaleMode, wgpu,
};

/// A coordinate within this distance of a boundary may round either way.
const TIE_TOLERANCE: f64 = 2e-5;

/// The codec on the library's own device (no features): the one device
/// most tests share.
fn codec() -> Option<Arc<GpuCodec>> {
    static CODEC: OnceLock<Option<Arc<GpuCodec>>> = OnceLock::new();
    CODEC
        .get_or_init(|| context().map(|ctx| Arc::new(GpuCodec::new(ctx))))
        .clone()
}

/// The adapter tests create host devices from.
fn adapter() -> wgpu::Adapter {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("adapter")
}

/// A device created the way a host creates one, with `features` and
/// `limits`.
fn host_device(
    adapter: &wgpu::Adapter,
    label: &str,
    features: wgpu::Features,
    limits: wgpu::Limits,
) -> (wgpu::Device, wgpu::Queue) {
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some(label),
        required_features: features,
        required_limits: limits,
        ..Default::default()
    }))
    .expect("device")
}

/// A codec on a host device with the `required` features and those of
/// `optional` the adapter has, one per feature set and binary, or the
/// reason the adapter cannot give one.
fn featured(required: wgpu::Features, optional: wgpu::Features) -> Result<Arc<GpuCodec>, String> {
    type Codecs = std::sync::Mutex<Vec<(wgpu::Features, Result<Arc<GpuCodec>, String>)>>;
    static CODECS: OnceLock<Codecs> = OnceLock::new();
    let mut codecs = CODECS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = required | optional;
    if let Some((_, c)) = codecs.iter().find(|(f, _)| *f == key) {
        return c.clone();
    }
    let adapter = adapter();
    let info = adapter.get_info();
    let made = if !adapter.features().contains(required) {
        Err(format!("{} lacks {required:?}", info.name))
    } else if required.contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size < 8 {
        // d = 64 takes the subgroup variant when subgroups hold 2 threads;
        // d = 256 needs 8.
        Err(format!(
            "{} has subgroups of {} (the tests need 8)",
            info.name, info.subgroup_min_size
        ))
    } else {
        let features = required | (optional & adapter.features());
        let (device, queue) = host_device(
            &adapter,
            "host with features",
            features,
            wgpu::Limits::default(),
        );
        Ok(Arc::new(GpuCodec::new(GpuContext::from_device(
            device, queue,
        ))))
    };
    codecs.push((key, made.clone()));
    made
}

/// The codec the sweeps run on: a host device with `SHADER_F16` where the
/// adapter has it, so that one compile of each configuration serves both
/// f32 and f16 I/O (the feature changes no kernel selection).
fn sweep_codec() -> Option<Arc<GpuCodec>> {
    codec()?;
    Some(featured(wgpu::Features::empty(), wgpu::Features::SHADER_F16).unwrap())
}

/// The codec with subgroups (and `SHADER_F16` where the adapter has it).
fn subgroup_codec() -> Result<Arc<GpuCodec>, String> {
    featured(wgpu::Features::SUBGROUP, wgpu::Features::SHADER_F16)
}

fn quantizer(
    d: usize,
    bits: u32,
    kind: RotationKind,
    mode: ScaleMode,
    format: ScaleFormat,
) -> Quantizer {
    Quantizer::new(&QuantizerConfig {
        dim: d,
        bits,
        rotation: kind,
        seed: 5,
        scale_mode: mode,
        scale_format: format,
    })
    .unwrap()
}

/// The rotated, normalised coordinates of each row, in f64 from Π.
fn reference_y(q: &Quantizer, x: &[f32]) -> Vec<f64> {
    let d = q.dim();
    let pi = q.rotation().dense_matrix();
    x.chunks(d)
        .flat_map(|row| {
            let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            (0..d)
                .map(|j| {
                    (0..d)
                        .map(|k| pi[j * d + k] as f64 * row[k] as f64)
                        .sum::<f64>()
                        / norm
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every scale convention and storage.
const ALL_SCALES: [(ScaleMode, ScaleFormat); 4] = [
    (ScaleMode::LeastSquares, ScaleFormat::F32),
    (ScaleMode::Norm, ScaleFormat::F16),
    (ScaleMode::LeastSquares, ScaleFormat::F16),
    (ScaleMode::Norm, ScaleFormat::F32),
];

/// Both storage formats, each with one convention.
const BOTH_FORMATS: [(ScaleMode, ScaleFormat); 2] = [
    (ScaleMode::LeastSquares, ScaleFormat::F16),
    (ScaleMode::Norm, ScaleFormat::F32),
];

/// Compares GPU and CPU encodings: every differing code must sit within
/// TIE_TOLERANCE of a boundary; scales agree to float rounding on rows
/// without ties. Returns the number of ties.
fn compare_encodings(q: &Quantizer, x: &[f32], gpu: &Encoded, cpu: &Encoded, what: &str) -> usize {
    let (d, n) = (q.dim(), cpu.len());
    let gc = unpack(gpu.codes(), q.bits(), n * d).unwrap();
    let cc = unpack(cpu.codes(), q.bits(), n * d).unwrap();
    assert_eq!(
        gpu.codes().len(),
        cpu.codes().len(),
        "{what}: code stream length"
    );
    let y = reference_y(q, x);
    let mut ties = 0;
    for i in 0..n {
        let mut row_tie = false;
        for j in 0..d {
            let k = i * d + j;
            if gc[k] != cc[k] {
                let gap = q
                    .boundaries()
                    .iter()
                    .map(|&t| (t as f64 - y[k]).abs())
                    .fold(f64::MAX, f64::min);
                assert!(
                    gap < TIE_TOLERANCE,
                    "{what}: row {i} coord {j}: GPU code {} vs CPU {} with y = {} (gap {gap:e})",
                    gc[k],
                    cc[k],
                    y[k]
                );
                ties += 1;
                row_tie = true;
            }
        }
        let (gs, cs) = (gpu.scales().get(i) as f64, cpu.scales().get(i) as f64);
        // The GPU sums in another order (per-thread partials, then a
        // reduction), so f32 sums of d terms differ by about √d·ε.
        let tol = match q.scale_format() {
            ScaleFormat::F32 => (d as f64).sqrt() * 1e-6,
            ScaleFormat::F16 => 1.0 / 1024.0, // one f16 step when the f32 values straddle a rounding point
        };
        if !row_tie || q.scale_mode() == ScaleMode::Norm {
            assert!(
                (gs - cs).abs() <= tol * cs.abs() + 1e-30,
                "{what}: row {i} scale GPU {gs} vs CPU {cs}"
            );
        }
    }
    assert!(
        ties * 1000 <= n * d,
        "{what}: {ties} ties in {} coordinates",
        n * d
    );
    ties
}

fn max_relative_row_error(a: &[f32], b: &[f32], d: usize) -> f64 {
    a.chunks(d)
        .zip(b.chunks(d))
        .map(|(p, q)| {
            let norm = p
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-30);
            p.iter()
                .zip(q)
                .map(|(&u, &v)| (u as f64 - v as f64).abs())
                .fold(0.0, f64::max)
                / norm
        })
        .fold(0.0, f64::max)
}

/// f32 encode and decode parity of one prepared configuration on `n`
/// Gaussian vectors with a zero vector among them; returns the ties.
fn check_f32(q: &Quantizer, g: &GpuQuantizer, n: usize, what: &str) -> usize {
    let d = q.dim();
    let mut x = gaussian(n, d, q.bits() as u64 * 31 + d as u64);
    x[3 * d..4 * d].fill(0.0); // a zero vector
    let cpu = q.encode(&x).unwrap();
    let gpu = g.encode(&x).unwrap();
    let ties = compare_encodings(q, &x, &gpu, &cpu, what);
    assert_eq!(gpu.scales().get(3), 0.0, "{what}: zero vector scale");
    // Decode parity on the same codes, and cross-decoding.
    let cpu_of_gpu = q.decode(&gpu).unwrap();
    let gpu_of_gpu = g.decode(&gpu).unwrap();
    let gpu_of_cpu = g.decode(&cpu).unwrap();
    let cpu_of_cpu = q.decode(&cpu).unwrap();
    assert!(
        max_relative_row_error(&cpu_of_gpu, &gpu_of_gpu, d) < 1e-5,
        "{what}: decode of GPU codes"
    );
    assert!(
        max_relative_row_error(&cpu_of_cpu, &gpu_of_cpu, d) < 1e-5,
        "{what}: GPU decode of CPU codes"
    );
    assert!(
        gpu_of_gpu[3 * d..4 * d].iter().all(|&v| v == 0.0),
        "{what}: zero vector decodes to zeros"
    );
    ties
}

/// f16 vectors in and out: the codes are the CPU's codes of the widened
/// values (up to ties), and the decoded f16 values are the CPU's f32 decode
/// rounded to f16.
fn check_f16(q: &Quantizer, g: &GpuQuantizer, n: usize, what: &str) {
    let d = q.dim();
    let x16: Vec<half::f16> = gaussian(n, d, 40 + d as u64)
        .iter()
        .map(|&v| half::f16::from_f32(v))
        .collect();
    let x: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
    let gpu = g.encode_f16(&x16).unwrap();
    let cpu = q.encode(&x).unwrap();
    compare_encodings(q, &x, &gpu, &cpu, what);
    let y16 = g.decode_f16(&gpu).unwrap();
    let y = q.decode(&gpu).unwrap();
    // f16 rounding of each value, on top of the 1e-5·‖x‖ the f32 paths
    // agree to (their sums run in different orders).
    for (i, (a, b)) in y16.iter().zip(&y).enumerate() {
        let row = &y[i / d * d..(i / d + 1) * d];
        let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        let (a, b) = (a.to_f32() as f64, *b as f64);
        assert!(
            (a - b).abs() <= b.abs() / 1024.0 + 1e-5 * norm + 6e-8,
            "{what}: value {i}: f16 {a} vs f32 {b}"
        );
    }
}

/// Every b with every scale convention and storage.
fn cross(scales: &[(ScaleMode, ScaleFormat)]) -> Vec<(u32, ScaleMode, ScaleFormat)> {
    (1..=4)
        .flat_map(|b| scales.iter().map(move |&(m, f)| (b, m, f)))
        .collect()
}

/// One sweep at one d: f32 parity on `n` vectors for each (b, scale
/// mode, scale format) in `configs`, and f16 I/O parity on `n16` vectors
/// for those whose scales are in `f16_io`, when the device has
/// `SHADER_F16` (reported as skipped otherwise). Returns the ties.
#[allow(clippy::too_many_arguments)]
fn sweep(
    codec: &Arc<GpuCodec>,
    d: usize,
    kind: RotationKind,
    family: Family,
    subgroups: bool,
    n: usize,
    configs: &[(u32, ScaleMode, ScaleFormat)],
    (f16_io, n16): (&[(ScaleMode, ScaleFormat)], usize),
) -> usize {
    let has_f16 = codec
        .context()
        .device
        .features()
        .contains(wgpu::Features::SHADER_F16);
    if !f16_io.is_empty() && !has_f16 {
        skipped(
            &format!("{family:?} d={d} f16 I/O"),
            "the device lacks SHADER_F16",
        );
    }
    let mut ties = 0;
    for &(bits, mode, format) in configs {
        let what = format!("d={d} {kind:?} b={bits} {mode:?} {format:?}");
        let q = quantizer(d, bits, kind, mode, format);
        let g = codec.prepare(&q).unwrap();
        assert_eq!(g.family(), family, "{what}");
        assert_eq!(g.uses_subgroups(), subgroups, "{what}: subgroup variant");
        ties += check_f32(&q, &g, n, &what);
        if has_f16 && f16_io.contains(&(mode, format)) {
            check_f16(&q, &g, n16, &format!("f16 data {what}"));
        }
    }
    ties
}

#[test]
fn dense_kernels_match_the_cpu() {
    let Some(codec) = sweep_codec() else { return };
    let (dense, family) = (RotationKind::Dense, Family::Dense);
    let all = cross(&ALL_SCALES);
    let t45 = sweep(
        &codec,
        45,
        dense,
        family,
        false,
        200,
        &all,
        (&BOTH_FORMATS, 150),
    );
    let t7 = sweep(&codec, 7, dense, family, false, 100, &all, (&[], 0));
    note(&format!("dense: {t45} ties at d = 45, {t7} at d = 7"));
}

/// The Hadamard kernel at d = 64 (2 threads of E = 32 values) with every b
/// and every scale convention and storage.
#[test]
fn hadamard_kernels_match_the_cpu_at_d_64() {
    let Some(codec) = sweep_codec() else { return };
    let all = cross(&ALL_SCALES);
    let (kind, family) = (RotationKind::Hadamard, Family::Hadamard);
    let t = sweep(&codec, 64, kind, family, false, 100, &all, (&[], 0));
    note(&format!("hadamard: {t} ties at d = 64"));
}

/// The Hadamard kernel at d = 1024 (32 threads of E = 32 values) with every
/// b and both scale storages (each with one convention; d = 64 above runs
/// the same shader with all four), f32 and f16 I/O. Lavapipe compiles each
/// Hadamard pipeline for seconds whatever d, so N and the configurations
/// are few: parity is byte equality per vector, and 40 vectors are 40 960
/// coordinates per configuration.
#[test]
fn hadamard_kernels_match_the_cpu_at_d_1024() {
    let Some(codec) = sweep_codec() else { return };
    let (kind, family) = (RotationKind::Hadamard, Family::Hadamard);
    let all = cross(&BOTH_FORMATS);
    let t = sweep(
        &codec,
        1024,
        kind,
        family,
        false,
        40,
        &all,
        (&BOTH_FORMATS, 20),
    );
    note(&format!("hadamard: {t} ties at d = 1024"));
}

/// The subgroup variant (shuffles instead of workgroup exchanges) on a
/// device that enables Features::SUBGROUP, as a host may. Lavapipe has
/// subgroups of 8, so d = 64 (2 threads) and d = 256 (8 threads) take it.
#[test]
fn subgroup_variant_matches_the_cpu() {
    if codec().is_none() {
        return;
    }
    let codec = match subgroup_codec() {
        Ok(c) => c,
        Err(why) => return skipped("Hadamard subgroup variant", &why),
    };
    let (kind, family) = (RotationKind::Hadamard, Family::Hadamard);
    let both = cross(&BOTH_FORMATS);
    let t64 = sweep(&codec, 64, kind, family, true, 60, &both, (&[], 0));
    let t256 = sweep(&codec, 256, kind, family, true, 40, &both, (&[], 0));
    note(&format!(
        "subgroup variant: {t64} ties at d = 64, {t256} at d = 256"
    ));
}

/// A device without `SHADER_F16` refuses f16 data with an unsupported
/// error (the engine's cue to fall back), not a panic.
#[test]
fn f16_data_is_refused_without_the_feature() {
    let Some(codec) = codec() else { return };
    assert!(
        !codec
            .context()
            .device
            .features()
            .contains(wgpu::Features::SHADER_F16)
    );
    let q = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    let x16 = vec![half::f16::from_f32(0.5); 45 * 4];
    let refused = codec.prepare(&q).unwrap().encode_f16(&x16);
    assert!(
        matches!(refused, Err(Error::GpuUnsupported(_))),
        "{refused:?}"
    );
}

/// Every kernel variant (family × subgroups × I/O format), run once here on
/// a small configuration with full parity checks, or reported as skipped
/// with the reason: the log states what this device really exercised.
#[test]
fn variants_on_this_device() {
    if codec().is_none() {
        return;
    }
    let sweep_codec = sweep_codec().unwrap();
    let (ls, f16) = (ScaleMode::LeastSquares, ScaleFormat::F16);
    let variants = [
        ("Dense", RotationKind::Dense, 45, false),
        ("Hadamard", RotationKind::Hadamard, 64, false),
        ("Hadamard subgroup", RotationKind::Hadamard, 64, true),
    ];
    for (name, kind, d, subgroups) in variants {
        let codec = if subgroups {
            match subgroup_codec() {
                Ok(c) => c,
                Err(why) => {
                    skipped(&format!("{name} f32 I/O"), &why);
                    skipped(&format!("{name} f16 I/O"), &why);
                    continue;
                }
            }
        } else {
            sweep_codec.clone()
        };
        let q = quantizer(d, 3, kind, ls, f16);
        let g = codec.prepare(&q).unwrap();
        assert_eq!(g.uses_subgroups(), subgroups, "{name}");
        let what = format!("{name} d={d}");
        check_f32(&q, &g, 100, &what);
        ran(&format!(
            "{name} f32 I/O ({d}-d, on {})",
            codec.context().describe()
        ));
        if codec
            .context()
            .device
            .features()
            .contains(wgpu::Features::SHADER_F16)
        {
            check_f16(&q, &g, 100, &format!("f16 data {what}"));
            ran(&format!("{name} f16 I/O ({d}-d)"));
        } else {
            skipped(&format!("{name} f16 I/O"), "the device lacks SHADER_F16");
        }
    }
}

#[test]
fn chunked_work_equals_one_dispatch() {
    let Some(shared) = codec() else { return };
    for (d, kind, n) in [
        (45, RotationKind::Dense, 1000),
        (64, RotationKind::Hadamard, 700),
    ] {
        let q = quantizer(d, 3, kind, ScaleMode::LeastSquares, ScaleFormat::F16);
        let x = gaussian(n, d, 77);
        let whole = shared.prepare(&q).unwrap();
        let mut chunked = shared.prepare(&q).unwrap();
        chunked.set_max_binding_size(16 * 1024);
        assert!(
            chunked.chunk_vectors(d as u64) < n,
            "the test must span several chunks"
        );
        let a = whole.encode(&x).unwrap();
        let b = chunked.encode(&x).unwrap();
        assert_eq!(a, b, "d={d}: chunked encode differs");
        assert_eq!(
            whole.decode(&a).unwrap(),
            chunked.decode(&a).unwrap(),
            "d={d}: chunked decode differs"
        );
        compare_encodings(&q, &x, &b, &q.encode(&x).unwrap(), "chunked");
    }
}

#[test]
fn bad_input_is_refused_before_the_gpu() {
    let Some(codec) = codec() else { return };
    let q = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    let g = codec.prepare(&q).unwrap();
    let mut x = gaussian(50, 45, 1);
    x[17 * 45 + 4] = f32::NAN;
    assert!(matches!(
        g.encode(&x),
        Err(Error::NonFinite {
            row: 17,
            col: 4,
            ..
        })
    ));
    assert!(matches!(g.encode(&[]), Err(Error::EmptyInput { .. })));
}

/// A context built from a host's device knows the adapter the device came
/// from.
#[test]
fn a_borrowed_context_knows_its_adapter() {
    if codec().is_none() {
        return;
    }
    let adapter = adapter();
    let (device, queue) = host_device(
        &adapter,
        "host renderer",
        wgpu::Features::empty(),
        wgpu::Limits::default(),
    );
    let ctx = GpuContext::from_device(device, queue);
    assert_eq!(ctx.adapter_info.as_ref(), Some(&adapter.get_info()));
    assert_ne!(ctx.describe(), "host-provided device");
}

/// A pipeline that fails to compile is not cached. On a device that allows
/// 4 storage buffers per stage the codec's layout (6) is invalid, so the
/// selected kernel's pipelines fail to compile, and every `prepare` says so,
/// the second as well as the first (a cached pipeline would make the second
/// succeed and fail later, at submission). No error reaches the device's
/// uncaptured-error handler (by default it panics).
#[test]
fn a_pipeline_that_fails_to_compile_fails_every_prepare() {
    if codec().is_none() {
        return;
    }
    let limits = wgpu::Limits {
        max_storage_buffers_per_shader_stage: 4,
        ..wgpu::Limits::default()
    };
    let (device, queue) = host_device(&adapter(), "small host", wgpu::Features::empty(), limits);
    let codec = Arc::new(GpuCodec::new(GpuContext::from_device(
        device.clone(),
        queue,
    )));
    let q = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    let kernel = KernelConfig::select(
        &q,
        &device.limits(),
        device.features(),
        device.adapter_info().subgroup_min_size,
    )
    .unwrap();
    assert_eq!(kernel.family, Family::Dense);
    for attempt in ["first", "second"] {
        match codec.prepare(&q) {
            Err(Error::Gpu(msg)) => {
                assert!(msg.contains("compiling"), "{attempt} prepare: {msg}");
                note(&format!("{attempt} prepare on a small device: {msg}"));
            }
            other => panic!(
                "the {attempt} prepare must fail, got {:?}",
                other.map(|g| g.family())
            ),
        }
    }
}

/// A lost device: the engine falls back to the CPU (same bytes as the CPU
/// path) unless the GPU was asked for strictly, and nothing panics.
#[test]
fn a_lost_device_falls_back_to_the_cpu_unless_strict() {
    if codec().is_none() {
        return;
    }
    let (device, queue) = host_device(
        &adapter(),
        "host renderer",
        wgpu::Features::empty(),
        wgpu::Limits::default(),
    );
    let codec = Arc::new(GpuCodec::new(GpuContext::from_device(
        device.clone(),
        queue,
    )));
    let q = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    let x = gaussian(100, 45, 3);
    device.destroy();
    let (enc, ran) = Engine::with_gpu(codec.clone(), false)
        .encode(&q, &x)
        .unwrap();
    assert_eq!(ran, Ran::Cpu);
    assert_eq!(enc, q.encode(&x).unwrap());
    let (dec, ran) = Engine::with_gpu(codec.clone(), false)
        .decode(&q, &enc)
        .unwrap();
    assert_eq!(ran, Ran::Cpu);
    assert_eq!(dec, q.decode(&enc).unwrap());
    match Engine::with_gpu(codec, true).encode(&q, &x) {
        Err(Error::Gpu(msg)) => note(&format!("strict engine on a lost device: {msg}")),
        other => panic!("a strict engine on a lost device must fail, got {other:?}"),
    }
}

/// A host renderer's view: its own device (default limits, no features), its
/// own buffers, encode then decode recorded into its own encoder, into a
/// strided region of a wider buffer.
#[test]
fn a_host_device_records_encode_and_decode_into_its_own_encoder() {
    if codec().is_none() {
        return;
    }
    let (device, queue) = host_device(
        &adapter(),
        "host renderer",
        wgpu::Features::empty(),
        wgpu::Limits::default(),
    );
    let codec = Arc::new(GpuCodec::new(GpuContext::from_device(
        device.clone(),
        queue.clone(),
    )));

    let (d, n, stride, offset) = (45usize, 300usize, 62usize, 14usize);
    let q = quantizer(
        d,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    let g = codec.prepare(&q).unwrap();
    let records = gaussian(n, stride, 9);
    use wgpu::util::DeviceExt;
    let storage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let input = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("splats"),
        contents: bytemuck::cast_slice(&records),
        usage: storage,
    });
    let words = (n * d * 3).div_ceil(32);
    let codes = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("sh codes"),
        size: 4 * (words as u64 + 8),
        usage: storage,
        mapped_at_creation: false,
    });
    let scales = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("sh scales"),
        size: 4 * n as u64 + 64,
        usage: storage,
        mapped_at_creation: false,
    });
    let sentinel = vec![7.0f32; n * stride];
    let output = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("decoded"),
        contents: bytemuck::cast_slice(&sentinel),
        usage: storage,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: (4 * n * stride) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("host frame"),
    });
    g.record_encode(
        &mut encoder,
        &EncodeBuffers {
            input: &input,
            input_offset: offset as u64,
            input_stride: stride as u64,
            input_format: DataFormat::F32,
            count: n,
            codes: &codes,
            codes_offset: 3,
            scales: &scales,
            scales_offset: 5,
        },
    )
    .unwrap();
    g.record_decode(
        &mut encoder,
        &DecodeBuffers {
            codes: &codes,
            codes_offset: 3,
            scales: &scales,
            scales_offset: 5,
            count: n,
            output: &output,
            output_offset: offset as u64,
            output_stride: stride as u64,
            output_format: DataFormat::F32,
        },
    )
    .unwrap();
    encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, (4 * n * stride) as u64);
    queue.submit([encoder.finish()]);
    readback
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let out: Vec<f32> =
        bytemuck::cast_slice(&readback.slice(..).get_mapped_range().unwrap()).to_vec();

    let contiguous: Vec<f32> = (0..n)
        .flat_map(|i| records[i * stride + offset..i * stride + offset + d].to_vec())
        .collect();
    let want = q.decode(&q.encode(&contiguous).unwrap()).unwrap();
    let got: Vec<f32> = (0..n)
        .flat_map(|i| out[i * stride + offset..i * stride + offset + d].to_vec())
        .collect();
    // Ties may flip a code on the GPU; everything else agrees to rounding.
    let rows_off = want
        .chunks(d)
        .zip(got.chunks(d))
        .filter(|(a, b)| max_relative_row_error(a, b, d) > 1e-5)
        .count();
    assert!(
        rows_off <= n / 100,
        "{rows_off} of {n} rows differ beyond rounding"
    );
    for i in 0..n {
        assert!(
            out[i * stride..i * stride + offset]
                .iter()
                .chain(&out[i * stride + offset + d..(i + 1) * stride])
                .all(|&v| v == 7.0),
            "row {i}: bytes outside the SH range were written"
        );
    }
}

/// Whole scenes: the SH-rest encoded on the GPU with the near-tie repair
/// gives the CPU's file byte for byte, for every SH degree and b = 1..4.
#[test]
fn scene_files_are_identical_on_gpu_and_cpu() {
    use turboquant3d::splat::synth;
    use turboquant3d::splat::{self, CompressOptions};
    let Some(codec) = codec() else { return };
    let engine = Engine::with_gpu(codec, true);
    for (degree, count) in [(3u8, 60_000usize), (2, 20_000), (1, 20_000)] {
        let scene = synth::generate(&synth::SynthConfig {
            count,
            sh_degree: degree,
            seed: 21,
        });
        for bits in 1..=4 {
            let opts = CompressOptions {
                sh_bits: bits,
                ..Default::default()
            };
            let cpu = splat::compress(&scene, &opts).unwrap().to_bytes().unwrap();
            let gpu = splat::compress_on(&scene, &opts, &engine).unwrap();
            assert!(matches!(gpu.sh_run.ran, Ran::Gpu(_)), "{:?}", gpu.sh_run);
            let ties = gpu.sh_run.ties;
            note(&format!(
                "degree {degree}, b = {bits}: {ties} of {count} vectors re-encoded on the CPU as near-ties"
            ));
            // The margins of TIE_EPS and TIE_REL flag 15–25 %; all
            // Gaussians with zero SH (about 5 %) are flagged too.
            assert!(ties < count / 4, "{ties} near-ties of {count}");
            assert!(
                gpu.to_bytes().unwrap() == cpu,
                "degree {degree}, b = {bits}: files differ"
            );
        }
    }
}

/// The near-tie repair on a simulated device that rounds as badly as the
/// error bound allows (every coordinate off by d·2⁻²³, every scale by twice
/// that; a fixed coordinate error of TIE_EPS/2 exceeds what the scale's
/// margin assumes and, at b = 1, could slip past it):
/// with the margins the bytes are still the CPU's; without them they are
/// not, so the repair is what makes them equal.
#[test]
fn exact_encoding_repairs_a_device_that_rounds_differently() {
    use turboquant3d::gpu::{TIE_EPS, TIE_REL, coordinate_error_bound};
    let Some(codec) = codec() else { return };
    for (d, bits) in [(45, 3), (45, 1), (24, 4), (9, 2)] {
        let q = quantizer(
            d,
            bits,
            RotationKind::Dense,
            ScaleMode::LeastSquares,
            ScaleFormat::F16,
        );
        let x = gaussian(20_000, d, 40 + d as u64);
        let cpu = q.encode(&x).unwrap();
        // A device as far off as the bound allows: every coordinate by it,
        // every scale by twice it.
        let sim = coordinate_error_bound(d);
        assert!(sim < TIE_EPS && 2.0 * sim < TIE_REL);
        let g = codec.prepare(&q).unwrap();
        let (repaired, ties) = g.encode_exact_simulating(&x, sim, true).unwrap();
        assert!(
            repaired == cpu,
            "d = {d}, b = {bits}: the repair missed a tie"
        );
        let (raw, none) = g.encode_exact_simulating(&x, sim, false).unwrap();
        assert_eq!(none, 0);
        assert!(
            raw != cpu,
            "d = {d}, b = {bits}: the simulated error changed nothing"
        );
        let (exact, real_ties) = g.encode_exact(&x).unwrap();
        assert!(exact == cpu);
        note(&format!(
            "d = {d}, b = {bits}: {real_ties} near-ties of 20000 ({ties} with the simulated error)"
        ));
    }
}

/// Mixed per-Gaussian widths, b = 0 included: the GPU's file is the CPU's.
#[test]
fn scene_files_with_mixed_widths_are_identical_on_gpu_and_cpu() {
    use turboquant3d::splat::synth;
    use turboquant3d::splat::{self, CompressOptions};
    let Some(codec) = codec() else { return };
    let engine = Engine::with_gpu(codec, true);
    let scene = synth::generate(&synth::SynthConfig {
        count: 30_000,
        sh_degree: 3,
        seed: 22,
    });
    let widths: Vec<u8> = (0..scene.len())
        .map(|i| ((i * 7919 + i / 3) % 9) as u8)
        .collect();
    assert!(widths.contains(&0) && widths.contains(&8));
    let opts = CompressOptions {
        sh_widths: Some(widths),
        ..Default::default()
    };
    let cpu = splat::compress(&scene, &opts).unwrap().to_bytes().unwrap();
    let gpu = splat::compress_on(&scene, &opts, &engine).unwrap();
    assert!(matches!(gpu.sh_run.ran, Ran::Gpu(_)), "{:?}", gpu.sh_run);
    assert!(gpu.to_bytes().unwrap() == cpu, "files differ");
}

/// Deduplicated SH-rest (a palette of 2,000 vectors among 20,000
/// Gaussians): the GPU encodes the distinct vectors to the CPU's file byte
/// for byte, at a uniform width and at per-Gaussian widths.
#[test]
fn deduplicated_scene_files_are_identical_on_gpu_and_cpu() {
    use turboquant3d::splat::synth;
    use turboquant3d::splat::{self, CompressOptions};
    let Some(codec) = codec() else { return };
    let engine = Engine::with_gpu(codec, true);
    let mut scene = synth::generate(&synth::SynthConfig {
        count: 20_000,
        sh_degree: 3,
        seed: 23,
    });
    let d = scene.rest_dim();
    for i in 2000..scene.len() {
        let from = (i * 7919) % 2000;
        let row = scene.sh_rest[from * d..(from + 1) * d].to_vec();
        scene.sh_rest[i * d..(i + 1) * d].copy_from_slice(&row);
    }
    let widths: Vec<u8> = (0..scene.len()).map(|i| (i % 6) as u8).collect();
    for opts in [
        CompressOptions {
            sh_bits: 3,
            ..Default::default()
        },
        CompressOptions {
            sh_widths: Some(widths),
            ..Default::default()
        },
    ] {
        let cpu = splat::compress(&scene, &opts).unwrap().to_bytes().unwrap();
        assert_eq!(cpu[61], splat::container::SH_DEDUP, "deduplicated");
        let gpu = splat::compress_on(&scene, &opts, &engine).unwrap();
        assert!(matches!(gpu.sh_run.ran, Ran::Gpu(_)), "{:?}", gpu.sh_run);
        assert!(gpu.to_bytes().unwrap() == cpu, "files differ");
    }
}
