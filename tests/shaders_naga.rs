//! CPU-only: every WGSL kernel family parses and validates with naga, both
//! as written and after specialisation with exactly the override constants
//! the host selects, for a spread of (d, b, scale) and device limits; the
//! renderer's modules likewise, and the layouts and constants they share
//! with the Rust host.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use turboquant3d::gpu::{DataFormat, Family, KernelConfig, KernelParams};
use turboquant3d::render::Splat2D;
use turboquant3d::render::sh_decode::SH_DECODE_WGSL;
use turboquant3d::render::shaders::{
    ATTR_STRIDE, COMMON_WGSL, CameraUniform, PREPROCESS_WGSL, PREPROCESS_WORKGROUP, RASTER_WGSL,
    preprocess_source, raster_source,
};
use turboquant3d::splat::rest_dim;
use turboquant3d::wgpu;
use turboquant3d::{Quantizer, QuantizerConfig, RotationKind, ScaleFormat, ScaleMode};

/// naga's validator with the capabilities a device has: none, subgroups,
/// f16, or both.
fn validator(subgroups: bool, f16: bool) -> Validator {
    let mut caps = Capabilities::default();
    if subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    if f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    let mut v = Validator::new(ValidationFlags::all(), caps);
    if subgroups {
        v.subgroup_stages(naga::valid::ShaderStages::COMPUTE);
        v.subgroup_operations(naga::valid::SubgroupOperationSet::all());
    }
    v
}

fn parse(
    family: Family,
    subgroups: bool,
    io: DataFormat,
) -> (naga::Module, naga::valid::ModuleInfo) {
    let src = family.source(subgroups, io);
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{family:?}: {}", e.emit_to_string(&src)));
    let info = validator(subgroups, io == DataFormat::F16)
        .validate(&module)
        .unwrap_or_else(|e| {
            panic!(
                "{family:?} subgroups={subgroups}: {}",
                e.emit_to_string(&src)
            )
        });
    (module, info)
}

#[test]
fn every_family_validates_as_written_for_each_feature_set() {
    for family in [Family::Dense, Family::Hadamard] {
        let (module, _) = parse(family, false, DataFormat::F32);
        parse(family, false, DataFormat::F16);
        let entries: Vec<&str> = module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(entries, ["encode", "decode"], "{family:?}");
    }
    let (module, _) = parse(Family::Hadamard, true, DataFormat::F32);
    parse(Family::Hadamard, true, DataFormat::F16);
    let entries: Vec<&str> = module
        .entry_points
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        entries,
        ["encode", "decode", "encode_subgroup", "decode_subgroup"]
    );
    // The subgroup module really needs the capability: a device without
    // SUBGROUP must never be handed it.
    let src = Family::Hadamard.source(true, DataFormat::F32);
    let module = naga::front::wgsl::parse_str(&src).unwrap();
    assert!(validator(false, false).validate(&module).is_err());
    // Likewise the f16 I/O module needs SHADER_F16.
    let src = Family::Dense.source(false, DataFormat::F16);
    let module = naga::front::wgsl::parse_str(&src).unwrap();
    assert!(validator(false, false).validate(&module).is_err());
}

#[test]
fn every_selected_specialisation_validates() {
    let mut checked = 0;
    let mut with_subgroups = 0;
    let small = wgpu::Limits {
        max_compute_workgroup_storage_size: 8192,
        ..wgpu::Limits::default()
    };
    let feature_sets = [
        (wgpu::Features::empty(), 0),
        (wgpu::Features::SUBGROUP, 8),
        (wgpu::Features::SUBGROUP, 32),
    ];
    for limits in [
        wgpu::Limits::default(),
        wgpu::Limits::downlevel_defaults(),
        small,
    ] {
        for (features, sg) in feature_sets {
            for (d, kind) in [
                (45, RotationKind::Dense),
                (7, RotationKind::Dense),
                (128, RotationKind::Dense),
                (16, RotationKind::Hadamard),
                (32, RotationKind::Hadamard),
                (64, RotationKind::Hadamard),
                (1024, RotationKind::Hadamard),
                (2048, RotationKind::Hadamard),
            ] {
                for bits in [1, 3, 4, 8] {
                    for (mode, format) in [
                        (ScaleMode::Norm, ScaleFormat::F32),
                        (ScaleMode::LeastSquares, ScaleFormat::F16),
                    ] {
                        let q = Quantizer::new(&QuantizerConfig {
                            dim: d,
                            bits,
                            rotation: kind,
                            seed: 1,
                            scale_mode: mode,
                            scale_format: format,
                        })
                        .unwrap();
                        let Ok(k) = KernelConfig::select(&q, &limits, features, sg) else {
                            continue;
                        };
                        for io in [DataFormat::F32, DataFormat::F16] {
                            let (module, info) = parse(k.family, k.subgroups, io);
                            let constants: naga::back::PipelineConstants = k
                                .constants
                                .iter()
                                .map(|(n, v)| (n.to_string(), *v))
                                .collect();
                            let entries: &[&str] = if k.subgroups {
                                &["encode_subgroup", "decode_subgroup"]
                            } else {
                                &["encode", "decode"]
                            };
                            for entry in entries {
                                naga::back::pipeline_constants::process_overrides(
                                    &module,
                                    &info,
                                    Some((naga::ShaderStage::Compute, entry)),
                                    &constants,
                                )
                                .unwrap_or_else(|e| {
                                    panic!("d={d} b={bits} {kind:?} {:?} {entry}: {e:?}", k.family)
                                });
                            }
                        }
                        checked += 1;
                        with_subgroups += k.subgroups as usize;
                    }
                }
            }
        }
    }
    assert!(
        checked >= 300,
        "only {checked} specialisations were selectable"
    );
    assert!(
        with_subgroups >= 20,
        "only {with_subgroups} subgroup specialisations"
    );
}

#[test]
fn selection_matches_the_documented_rules() {
    let limits = wgpu::Limits::default();
    let none = wgpu::Features::empty();
    let q = |d, kind| {
        Quantizer::new(&QuantizerConfig {
            dim: d,
            bits: 3,
            rotation: kind,
            seed: 0,
            scale_mode: ScaleMode::LeastSquares,
            scale_format: ScaleFormat::F32,
        })
        .unwrap()
    };
    assert_eq!(
        KernelConfig::select(&q(45, RotationKind::Dense), &limits, none, 0)
            .unwrap()
            .family,
        Family::Dense
    );
    assert_eq!(
        KernelConfig::select(&q(1024, RotationKind::Hadamard), &limits, none, 0)
            .unwrap()
            .family,
        Family::Hadamard
    );
    // Small Hadamard runs as its dense matrix; big dense has no kernel.
    assert_eq!(
        KernelConfig::select(&q(16, RotationKind::Hadamard), &limits, none, 0)
            .unwrap()
            .family,
        Family::Dense
    );
    assert!(KernelConfig::select(&q(200, RotationKind::Dense), &limits, none, 0).is_err());
    // d = 4096 needs 16 KiB of exchange memory plus reductions: more than the default limit.
    assert!(KernelConfig::select(&q(4096, RotationKind::Hadamard), &limits, none, 0).is_err());
    // Subgroups are used only when the feature is enabled and one subgroup
    // holds the workgroup (d = 1024: 32 threads).
    let sg = wgpu::Features::SUBGROUP;
    assert!(
        KernelConfig::select(&q(1024, RotationKind::Hadamard), &limits, sg, 32)
            .unwrap()
            .subgroups
    );
    assert!(
        !KernelConfig::select(&q(1024, RotationKind::Hadamard), &limits, sg, 8)
            .unwrap()
            .subgroups
    );
    assert!(
        !KernelConfig::select(&q(1024, RotationKind::Hadamard), &limits, none, 32)
            .unwrap()
            .subgroups
    );
    assert!(
        KernelConfig::select(&q(256, RotationKind::Hadamard), &limits, sg, 8)
            .unwrap()
            .subgroups
    );
}

/// Parses and validates a renderer module (no capabilities).
fn validate(src: &str, what: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
    let info = validator(false, false)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
    (module, info)
}

/// Specialises `entry` with `constants`, as the renderer's pipelines are.
fn specialise(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    stage: naga::ShaderStage,
    entry: &str,
    constants: &[(&str, f64)],
) {
    let c: naga::back::PipelineConstants =
        constants.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    naga::back::pipeline_constants::process_overrides(module, info, Some((stage, entry)), &c)
        .unwrap_or_else(|e| panic!("{entry} {constants:?}: {e:?}"));
}

#[test]
fn renderer_wgsl_validates_with_naga() {
    // The decoder alone (a library module: overrides, bindings, functions).
    let (module, _) = validate(SH_DECODE_WGSL, "sh_decode.wgsl");
    assert!(module.entry_points.is_empty());
    let names: Vec<_> = module
        .overrides
        .iter()
        .filter_map(|(_, o)| o.name.clone())
        .collect();
    assert_eq!(names, ["TQ_D", "TQ_BITS", "TQ_FLIP"]);
    // As a host would use it: its own shader calling tq_sh_decode.
    let host = format!(
        "{SH_DECODE_WGSL}\n@group(0) @binding(0) var<storage, read_write> out: array<f32>;\n\
         @compute @workgroup_size(64) fn host(@builtin(global_invocation_id) id: vec3<u32>) {{\n\
           var rest: array<f32, 45>;\n  tq_sh_decode(id.x, &rest);\n  out[id.x] = rest[0];\n}}\n"
    );
    let (module, info) = validate(&host, "host shader with sh_decode.wgsl");
    // TQ_BITS = 0: per-Gaussian widths.
    for (d, b) in [
        (9, 1),
        (24, 3),
        (45, 3),
        (45, 4),
        (45, 8),
        (9, 0),
        (24, 0),
        (45, 0),
    ] {
        for flip in [0.0, 1.0] {
            specialise(
                &module,
                &info,
                naga::ShaderStage::Compute,
                "host",
                &[("TQ_D", d as f64), ("TQ_BITS", b as f64), ("TQ_FLIP", flip)],
            );
        }
    }

    // The shared declarations alone.
    validate(COMMON_WGSL, "render_common.wgsl");

    // The preprocess module, both entry points, every degree.
    assert!(preprocess_source().contains(PREPROCESS_WGSL));
    assert!(preprocess_source().contains(COMMON_WGSL));
    let (module, info) = validate(&preprocess_source(), "render_preprocess.wgsl");
    let entries: Vec<_> = module
        .entry_points
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(entries, ["preprocess", "preprocess_compressed"]);
    for degree in 0..=3u8 {
        let d = rest_dim(degree).max(1) as f64;
        for entry in ["preprocess", "preprocess_compressed"] {
            for bits in [3.0, 0.0] {
                specialise(
                    &module,
                    &info,
                    naga::ShaderStage::Compute,
                    entry,
                    &[
                        ("SH_DEGREE", degree as f64),
                        ("TQ_D", d),
                        ("TQ_BITS", bits),
                        ("TQ_FLIP", 1.0),
                    ],
                );
            }
        }
    }

    // The raster module.
    assert!(raster_source().contains(RASTER_WGSL));
    assert!(raster_source().contains(COMMON_WGSL));
    let (module, info) = validate(&raster_source(), "render_raster.wgsl");
    let entries: Vec<_> = module
        .entry_points
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(entries, ["vs_main", "fs_main"]);
    specialise(&module, &info, naga::ShaderStage::Vertex, "vs_main", &[]);
    specialise(&module, &info, naga::ShaderStage::Fragment, "fs_main", &[]);
}

/// The members (name, offset, size) and size of the struct `name` in
/// `module`.
fn wgsl_struct(module: &naga::Module, name: &str) -> (Vec<(String, usize, usize)>, usize) {
    module
        .types
        .iter()
        .find_map(|(_, t)| match (&t.name, &t.inner) {
            (Some(n), naga::TypeInner::Struct { members, span }) if n == name => Some((
                members
                    .iter()
                    .map(|m| {
                        let size = module.types[m.ty].inner.size(module.to_ctx()) as usize;
                        (m.name.clone().unwrap_or_default(), m.offset as usize, size)
                    })
                    .collect(),
                *span as usize,
            )),
            _ => None,
        })
        .unwrap_or_else(|| panic!("struct {name}"))
}

/// The size of the field `field` picks out.
fn size_of_field<T, F>(_field: impl Fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

/// The value of the u32 constant `name` in `module`.
fn wgsl_u32(module: &naga::Module, name: &str) -> u32 {
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("const {name}"));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref e => panic!("const {name} = {e:?}"),
    }
}

/// `Params` is declared once in WGSL (codec_common.wgsl, included by every
/// codec kernel) and once in Rust ([`KernelParams`]): the members must have
/// the Rust fields' names, offsets and sizes, in every family's source, so
/// that reordering, retyping or renaming a field on one side fails here.
#[test]
fn codec_params_match_the_rust_type() {
    use std::mem::{offset_of, size_of};
    type P = KernelParams;
    let rust = [
        ("n", offset_of!(P, n), size_of_field(|p: &P| &p.n)),
        (
            "data_offset",
            offset_of!(P, data_offset),
            size_of_field(|p: &P| &p.data_offset),
        ),
        (
            "data_stride",
            offset_of!(P, data_stride),
            size_of_field(|p: &P| &p.data_stride),
        ),
        (
            "code_offset",
            offset_of!(P, code_offset),
            size_of_field(|p: &P| &p.code_offset),
        ),
        (
            "scale_offset",
            offset_of!(P, scale_offset),
            size_of_field(|p: &P| &p.scale_offset),
        ),
        (
            "groups_x",
            offset_of!(P, groups_x),
            size_of_field(|p: &P| &p.groups_x),
        ),
        ("pad0", offset_of!(P, pad0), size_of_field(|p: &P| &p.pad0)),
        ("pad1", offset_of!(P, pad1), size_of_field(|p: &P| &p.pad1)),
    ];
    for family in [Family::Dense, Family::Hadamard] {
        for io in [DataFormat::F32, DataFormat::F16] {
            let src = family.source(false, io);
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{family:?} {io:?}: {}", e.emit_to_string(&src)));
            let (members, span) = wgsl_struct(&module, "Params");
            let rust: Vec<(String, usize, usize)> = rust
                .iter()
                .map(|&(n, o, s)| (n.to_string(), o, s))
                .collect();
            assert_eq!(members, rust, "{family:?} {io:?}: Params members");
            assert_eq!(span, size_of::<P>(), "{family:?} {io:?}: Params size");
        }
    }
}

/// `CameraUniform` and `Splat2D` are declared once in WGSL
/// (render_common.wgsl, included by both stages) and once in Rust: in each
/// module the WGSL members must have the Rust fields' names, offsets and
/// sizes (`Splat2D`'s `conic` and `color` arrays are three scalars each in
/// WGSL), and the structs the same size, so that reordering, retyping or
/// renaming a field on one side fails here.
#[test]
fn renderer_structs_match_the_rust_types() {
    use std::mem::{offset_of, size_of};
    type C = CameraUniform;
    let camera = [
        ("rot0", offset_of!(C, rot0), size_of_field(|c: &C| &c.rot0)),
        ("rot1", offset_of!(C, rot1), size_of_field(|c: &C| &c.rot1)),
        ("rot2", offset_of!(C, rot2), size_of_field(|c: &C| &c.rot2)),
        (
            "translation",
            offset_of!(C, translation),
            size_of_field(|c: &C| &c.translation),
        ),
        (
            "campos",
            offset_of!(C, campos),
            size_of_field(|c: &C| &c.campos),
        ),
        (
            "intrinsics",
            offset_of!(C, intrinsics),
            size_of_field(|c: &C| &c.intrinsics),
        ),
        (
            "width",
            offset_of!(C, width),
            size_of_field(|c: &C| &c.width),
        ),
        (
            "height",
            offset_of!(C, height),
            size_of_field(|c: &C| &c.height),
        ),
        (
            "count",
            offset_of!(C, count),
            size_of_field(|c: &C| &c.count),
        ),
        (
            "groups_x",
            offset_of!(C, groups_x),
            size_of_field(|c: &C| &c.groups_x),
        ),
    ];
    type S = Splat2D;
    let conic = offset_of!(S, conic);
    let color = offset_of!(S, color);
    let splat = [
        ("mean", offset_of!(S, mean), size_of_field(|s: &S| &s.mean)),
        (
            "depth",
            offset_of!(S, depth),
            size_of_field(|s: &S| &s.depth),
        ),
        (
            "radius",
            offset_of!(S, radius),
            size_of_field(|s: &S| &s.radius),
        ),
        ("conic_a", conic, 4),
        ("conic_b", conic + 4, 4),
        ("conic_c", conic + 8, 4),
        (
            "opacity",
            offset_of!(S, opacity),
            size_of_field(|s: &S| &s.opacity),
        ),
        ("color_r", color, 4),
        ("color_g", color + 4, 4),
        ("color_b", color + 8, 4),
        ("pad", offset_of!(S, _pad), size_of_field(|s: &S| &s._pad)),
    ];
    assert_eq!(size_of_field(|s: &S| &s.conic), 12);
    assert_eq!(size_of_field(|s: &S| &s.color), 12);
    for (what, src) in [
        ("render_common.wgsl", COMMON_WGSL.to_string()),
        ("render_preprocess.wgsl", preprocess_source()),
        ("render_raster.wgsl", raster_source()),
    ] {
        let module = naga::front::wgsl::parse_str(&src).expect(what);
        for (name, rust, size) in [
            ("CameraUniform", &camera[..], size_of::<C>()),
            ("Splat2D", &splat[..], size_of::<S>()),
        ] {
            let (members, span) = wgsl_struct(&module, name);
            let rust: Vec<(String, usize, usize)> = rust
                .iter()
                .map(|&(n, o, s)| (n.to_string(), o, s))
                .collect();
            assert_eq!(members, rust, "{what}: {name} members (name, offset, size)");
            assert_eq!(span, size, "{what}: size of {name}");
        }
    }
    assert_eq!(size_of::<C>(), 112);
    assert_eq!(size_of::<S>(), 48);
}

/// The preprocess stage's constants equal the Rust ones the host
/// dispatches and packs with: `WG` is the workgroup size of both entry
/// points and the host's `PREPROCESS_WORKGROUP`, `ATTR_STRIDE` the floats
/// per Gaussian of the attribute buffer.
#[test]
fn preprocess_constants_match_the_host() {
    let module = naga::front::wgsl::parse_str(&preprocess_source()).expect("parses");
    assert_eq!(wgsl_u32(&module, "ATTR_STRIDE") as usize, ATTR_STRIDE);
    assert_eq!(wgsl_u32(&module, "WG"), PREPROCESS_WORKGROUP);
    let sizes: Vec<(&str, [u32; 3])> = module
        .entry_points
        .iter()
        .map(|e| (e.name.as_str(), e.workgroup_size))
        .collect();
    assert_eq!(
        sizes,
        [
            ("preprocess", [PREPROCESS_WORKGROUP, 1, 1]),
            ("preprocess_compressed", [PREPROCESS_WORKGROUP, 1, 1]),
        ]
    );
}
