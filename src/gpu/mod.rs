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
//! - [`attention`]: attention over a coded key/value cache, from the codes;
//! - [`context`]: the device; [`engine`]: GPU or CPU per job;
//! - `buffers`, `pipeline`, `scope`: buffer, pipeline and error-scope
//!   helpers shared with the renderer.
//!
//! A host with its own device records encodes into its own command encoder
//! (no features or limits beyond WebGPU's defaults are required, and no
//! error handler is installed):
//!
//! ```no_run
//! use std::sync::Arc;
//! use turboquant3d::gpu::{DataFormat, EncodeBuffers, GpuCodec, GpuContext};
//! use turboquant3d::{Quantizer, QuantizerConfig, wgpu};
//!
//! fn encode_on_my_device(
//!     device: wgpu::Device,
//!     queue: wgpu::Queue,
//!     vectors: &wgpu::Buffer, // 1000 × 45 f32
//!     codes: &wgpu::Buffer,   // ceil(1000·45·3 / 32) u32 words
//!     scales: &wgpu::Buffer,  // 1000 f32
//! ) -> turboquant3d::Result<()> {
//!     let codec = Arc::new(GpuCodec::new(GpuContext::from_device(device.clone(), queue.clone())));
//!     let gq = codec.prepare(&Quantizer::new(&QuantizerConfig::new(45, 3))?)?;
//!     let mut encoder = device.create_command_encoder(&Default::default());
//!     gq.record_encode(
//!         &mut encoder,
//!         &EncodeBuffers {
//!             input: vectors,
//!             input_offset: 0,
//!             input_stride: 45,
//!             input_format: DataFormat::F32,
//!             count: 1000,
//!             codes,
//!             codes_offset: 0,
//!             scales,
//!             scales_offset: 0,
//!         },
//!     )?;
//!     queue.submit([encoder.finish()]);
//!     Ok(())
//! }
//! ```

pub mod attention;
pub(crate) mod buffers;
pub mod context;
pub mod engine;
mod host;
mod kernel;
pub(crate) mod pipeline;
mod quantizer;
pub(crate) mod scope;

pub use attention::{AttentionKernels, GpuAttention};
pub use context::{AdapterPolicy, GpuContext};
pub use engine::{DeviceChoice, Engine, Ran};
pub use kernel::{
    DENSE_MAX_D, DENSE_WG, DataFormat, Element, Family, KernelConfig, KernelParams, TIE_EPS,
    TIE_REL, coordinate_error_bound,
};
pub use quantizer::{DecodeBuffers, EncodeBuffers, GpuCodec, GpuQuantizer};
