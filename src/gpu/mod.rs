//! The GPU mirror of the codec on wgpu: a device (borrowed or owned), one
//! WGSL file per kernel family, and a host layer that records into the
//! caller's command encoder or runs whole jobs with readback. The CPU path
//! ([`crate::Quantizer`]) is the reference it is tested against.
//!
//! - `kernel`: which kernel and override constants a quantizer gets on a
//!   device's limits, and the WGSL sources (no device needed);
//! - `quantizer`: [`GpuCodec`] (modules, layout, pipeline cache) and
//!   [`GpuQuantizer`] with the recording API;
//! - `host`: the convenience API on [`GpuQuantizer`] (staging, readback,
//!   exact encoding);
//! - [`context`]: the device; [`engine`]: GPU or CPU per job;
//! - `buffers`, `pipeline`, `scope`: buffer, pipeline and error-scope
//!   helpers shared with the renderer.

pub(crate) mod buffers;
pub mod context;
pub mod engine;
mod host;
mod kernel;
pub(crate) mod pipeline;
mod quantizer;
pub(crate) mod scope;

pub use context::{AdapterPolicy, GpuContext};
pub use engine::{DeviceChoice, Engine, Ran};
pub use kernel::{
    DENSE_MAX_D, DENSE_WG, DataFormat, Element, Family, KernelConfig, KernelParams, TIE_EPS,
    TIE_REL,
};
pub use quantizer::{DecodeBuffers, EncodeBuffers, GpuCodec, GpuQuantizer};
