//! Kernel selection, which needs no device: the WGSL sources of each kernel
//! family, the host-side types that name a variant ([`Family`],
//! [`DataFormat`], [`Element`]), the near-tie margins of exact encoding, and
//! [`KernelConfig::select`], which picks the family and override constants
//! for a quantizer and a device's limits. tests/shaders_naga.rs validates
//! exactly what `select` returns.

use crate::codec::rotation::HADAMARD_ROUNDS;
use crate::{Error, Quantizer, Result, Rotation, ScaleFormat, ScaleMode};

pub(crate) const COMMON_WGSL: &str = include_str!("../../shaders/codec_common.wgsl");
const IO_F32_WGSL: &str = include_str!("../../shaders/io_f32.wgsl");
const IO_F16_WGSL: &str = include_str!("../../shaders/io_f16.wgsl");
const DENSE_WGSL: &str = include_str!("../../shaders/dense.wgsl");
const HADAMARD_WGSL: &str = include_str!("../../shaders/hadamard.wgsl");
const HADAMARD_SUBGROUP_WGSL: &str = include_str!("../../shaders/hadamard_subgroup.wgsl");

/// Vectors per workgroup of the dense kernel (one thread each). 32 makes
/// every workgroup's codes whole 32-bit words for any d and b.
pub const DENSE_WG: u32 = 32;
/// Largest d of the dense kernel (per-thread arrays).
pub const DENSE_MAX_D: usize = 128;

/// The kernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// shaders/dense.wgsl: thread per vector, any rotation as a matrix.
    Dense,
    /// shaders/hadamard.wgsl: workgroup per vector, in-register FWHT.
    Hadamard,
}

impl Family {
    /// The WGSL source: the shared prelude, then the family's kernels, and
    /// with `subgroups` the family's subgroup entry points (a module that
    /// only devices with `Features::SUBGROUP` can compile).
    ///
    /// The I/O variant comes first: io_f16.wgsl opens with `enable f16;`,
    /// which must precede every declaration.
    pub fn source(self, subgroups: bool, io: DataFormat) -> String {
        let io = match io {
            DataFormat::F32 => IO_F32_WGSL,
            DataFormat::F16 => IO_F16_WGSL,
        };
        match (self, subgroups) {
            (Family::Dense, _) => format!("{io}\n{COMMON_WGSL}\n{DENSE_WGSL}"),
            (Family::Hadamard, false) => format!("{io}\n{COMMON_WGSL}\n{HADAMARD_WGSL}"),
            (Family::Hadamard, true) => {
                format!("{io}\n{COMMON_WGSL}\n{HADAMARD_WGSL}\n{HADAMARD_SUBGROUP_WGSL}")
            }
        }
    }
}

/// How vectors are stored in the buffers the kernels read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataFormat {
    /// f32, on every device.
    F32,
    /// f16, half the bytes, on devices with `Features::SHADER_F16` enabled.
    F16,
}

impl DataFormat {
    /// Bytes per value.
    pub fn bytes(self) -> u64 {
        match self {
            DataFormat::F32 => 4,
            DataFormat::F16 => 2,
        }
    }
}

/// Host element types the convenience API moves: f32 and f16.
pub trait Element: bytemuck::Pod + Send + Sync {
    /// The matching buffer format.
    const FORMAT: DataFormat;
    /// Widens to f32 (exact for both).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const FORMAT: DataFormat = DataFormat::F32;
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for half::f16 {
    const FORMAT: DataFormat = DataFormat::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

/// The code tie margin of
/// [`GpuQuantizer::encode_exact`](crate::gpu::GpuQuantizer::encode_exact),
/// absolute on the unit sphere's coordinates. A rotated coordinate y_j = Σ_k Π_jk·u_k summed
/// in any order is within d·2⁻²⁴·Σ_k|Π_jk·u_k| ≤ d·2⁻²⁴ of the exact sum
/// (Cauchy–Schwarz: Σ|Π_jk·u_k| ≤ ‖Π_j‖·‖u‖ = 1), so the GPU and the CPU
/// differ by at most 2·d·2⁻²⁴ = 5.4·10⁻⁶ at d = 45, plus a few ulps from
/// normalising u. In practice the difference is about 10⁻⁷.
pub const TIE_EPS: f32 = 2e-5;

/// How far a device's rotated coordinate may be from the CPU's at
/// dimension d: 2·d·2⁻²⁴ = d·2⁻²³ (see [`TIE_EPS`], which keeps a margin of
/// about 4 over it at d = 45).
pub fn coordinate_error_bound(d: usize) -> f32 {
    d as f32 * f32::EPSILON
}

/// The scale tie margin of
/// [`GpuQuantizer::encode_exact`](crate::gpu::GpuQuantizer::encode_exact),
/// relative, for what the coordinates do not explain (the norm, ‖ĉ‖² and
/// the product, a few ulps each: 2·10⁻⁵ is about twenty times that). The
/// least-squares scale ‖x‖·⟨y, ĉ⟩/‖ĉ‖² also inherits the coordinates' error
/// through ⟨y, ĉ⟩: with coordinates within [`coordinate_error_bound`] of
/// the CPU's, at most that times Σ|ĉ_j|/|⟨y, ĉ⟩| relative, which the kernel
/// adds per vector (at b = 1, d = 45 about 4.5·10⁻⁵ more: a fixed margin
/// missed it, tests/gpu_parity.rs).
pub const TIE_REL: f32 = 2e-5;

/// The kernel family and specialisation constants for a quantizer on a
/// device with the given limits. This is all the variant selection there
/// is: the CPU-only shader test validates exactly these constants.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelConfig {
    /// Whether the subgroup entry points (`encode_subgroup`,
    /// `decode_subgroup`) are used.
    pub subgroups: bool,
    /// The family.
    pub family: Family,
    /// WGSL override constants.
    pub constants: Vec<(&'static str, f64)>,
}

impl KernelConfig {
    /// Picks the kernel for `q` on a device with these limits and enabled
    /// features, whose adapter reports `subgroup_min_size` (0 if unknown),
    /// or says why there is none.
    pub fn select(
        q: &Quantizer,
        limits: &wgpu::Limits,
        features: wgpu::Features,
        subgroup_min_size: u32,
    ) -> Result<KernelConfig> {
        let mut subgroups = false;
        let d = q.dim();
        let b = q.bits();
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        let mut constants: Vec<(&'static str, f64)> = vec![
            ("D", d as f64),
            ("BITS", b as f64),
            ("SCALE_LS", flag(q.scale_mode() == ScaleMode::LeastSquares)),
            ("SCALE_F16", flag(q.scale_format() == ScaleFormat::F16)),
        ];
        let family = match &**q.rotation() {
            Rotation::Hadamard(h) if h.rounds() == HADAMARD_ROUNDS && (32..=4096).contains(&d) => {
                let e = (1usize << (d.trailing_zeros() as usize).div_ceil(2)).max(32);
                let wg = d / e;
                let shared = 4 * (d + wg + 2) as u32;
                if shared > limits.max_compute_workgroup_storage_size
                    || wg as u32 > limits.max_compute_invocations_per_workgroup
                {
                    return Err(Error::GpuUnsupported(format!(
                        "d = {d} Hadamard needs {shared} bytes of workgroup memory; the device allows {}",
                        limits.max_compute_workgroup_storage_size
                    )));
                }
                let scale = (1.0 / (d as f64).sqrt()).powi(HADAMARD_ROUNDS as i32) as f32;
                constants.extend([
                    ("WG", wg as f64),
                    ("E", e as f64),
                    ("LOG_E", e.trailing_zeros() as f64),
                    (
                        "SKIP_B",
                        (2 * e.trailing_zeros() - d.trailing_zeros()) as f64,
                    ),
                    ("SCALE", scale as f64),
                ]);
                // Shuffles replace the exchanges when one subgroup is the
                // whole workgroup. (Only that module declares LOG_WG; a
                // constant a module lacks is an error.)
                subgroups =
                    features.contains(wgpu::Features::SUBGROUP) && wg as u32 <= subgroup_min_size;
                if subgroups {
                    constants.push(("LOG_WG", wg.trailing_zeros() as f64));
                }
                Family::Hadamard
            }
            _ if d <= DENSE_MAX_D => {
                let tile = DENSE_WG as usize * d;
                let words = tile * b as usize / 32;
                let fixed = 4 * (tile + words + DENSE_WG as usize);
                if fixed as u32 > limits.max_compute_workgroup_storage_size {
                    return Err(Error::GpuUnsupported(format!(
                        "d = {d}, b = {b} needs {fixed} bytes of workgroup memory"
                    )));
                }
                let in_wg = (fixed + 4 * d * d) as u32 <= limits.max_compute_workgroup_storage_size;
                constants.extend([
                    ("WG", DENSE_WG as f64),
                    ("MAT_IN_WG", flag(in_wg)),
                    ("MAT_LEN", if in_wg { (d * d) as f64 } else { 1.0 }),
                    ("TILE_LEN", tile as f64),
                    ("CODE_WORDS", words as f64),
                ]);
                Family::Dense
            }
            _ => {
                return Err(Error::GpuUnsupported(format!(
                    "d = {d} with a {} rotation (GPU kernels: dense for d ≤ {DENSE_MAX_D}, Hadamard with {HADAMARD_ROUNDS} rounds for 32 ≤ d ≤ 4096)",
                    q.rotation().kind().name()
                )));
            }
        };
        Ok(KernelConfig {
            family,
            subgroups,
            constants,
        })
    }
}

/// The uniform every codec kernel reads, `Params` in
/// shaders/codec_common.wgsl: one dispatch's vector count and where its
/// data, codes and scales start. tests/shaders_naga.rs checks the
/// WGSL struct member by member against this one.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct KernelParams {
    /// Vectors in this dispatch.
    pub n: u32,
    /// Input (encode) or output (decode) element of vector 0, component 0.
    pub data_offset: u32,
    /// Elements between consecutive vectors in the input or output.
    pub data_stride: u32,
    /// First code word of vector 0.
    pub code_offset: u32,
    /// First scale of vector 0, counted in scales (f16 scales too).
    pub scale_offset: u32,
    /// Workgroups along x in a 2-D dispatch.
    pub groups_x: u32,
    /// Padding to 32 bytes.
    pub pad0: u32,
    /// Padding to 32 bytes.
    pub pad1: u32,
}
