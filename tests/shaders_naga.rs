//! CPU-only: every WGSL kernel family parses and validates with naga, both
//! as written and after specialisation with exactly the override constants
//! the host selects, for a spread of (d, b, scale) and device limits.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use turboquant3d::gpu::{DataFormat, Family, KernelConfig};
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
