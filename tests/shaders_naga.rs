//! CPU-only: every WGSL kernel family parses and validates with naga, both
//! as written and after specialisation with exactly the override constants
//! the host selects, for a spread of (d, b, scale) and device limits.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use turboquant3d::gpu::{Family, KernelConfig};
use turboquant3d::wgpu;
use turboquant3d::{Quantizer, QuantizerConfig, RotationKind, ScaleFormat, ScaleMode};

fn parse(family: Family) -> (naga::Module, naga::valid::ModuleInfo) {
    let src = family.source();
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{family:?}: {}", e.emit_to_string(&src)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{family:?}: {}", e.emit_to_string(&src)));
    (module, info)
}

#[test]
fn every_family_validates_as_written() {
    for family in [Family::Dense, Family::Hadamard] {
        let (module, _) = parse(family);
        let entries: Vec<&str> = module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(entries, ["encode", "decode"], "{family:?}");
    }
}

#[test]
fn every_selected_specialisation_validates() {
    let mut checked = 0;
    let small = wgpu::Limits {
        max_compute_workgroup_storage_size: 8192,
        ..wgpu::Limits::default()
    };
    for limits in [
        wgpu::Limits::default(),
        wgpu::Limits::downlevel_defaults(),
        small,
    ] {
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
                    let Ok(k) = KernelConfig::select(&q, &limits) else {
                        continue;
                    };
                    let (module, info) = parse(k.family);
                    let constants: naga::back::PipelineConstants = k
                        .constants
                        .iter()
                        .map(|(n, v)| (n.to_string(), *v))
                        .collect();
                    for entry in ["encode", "decode"] {
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
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 100,
        "only {checked} specialisations were selectable"
    );
}

#[test]
fn selection_matches_the_documented_rules() {
    let limits = wgpu::Limits::default();
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
        KernelConfig::select(&q(45, RotationKind::Dense), &limits)
            .unwrap()
            .family,
        Family::Dense
    );
    assert_eq!(
        KernelConfig::select(&q(1024, RotationKind::Hadamard), &limits)
            .unwrap()
            .family,
        Family::Hadamard
    );
    // Small Hadamard runs as its dense matrix; big dense has no kernel.
    assert_eq!(
        KernelConfig::select(&q(16, RotationKind::Hadamard), &limits)
            .unwrap()
            .family,
        Family::Dense
    );
    assert!(KernelConfig::select(&q(200, RotationKind::Dense), &limits).is_err());
    // d = 4096 needs 16 KiB of exchange memory plus reductions: more than the default limit.
    assert!(KernelConfig::select(&q(4096, RotationKind::Hadamard), &limits).is_err());
}
