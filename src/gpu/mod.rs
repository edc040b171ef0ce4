//! The GPU mirror of the codec on wgpu: a device (borrowed or owned), one
//! WGSL file per kernel family, and a host layer that records into the
//! caller's command encoder or runs whole jobs with readback. The CPU path
//! ([`crate::Quantizer`]) is the reference it is tested against.

pub(crate) mod buffers;
pub mod codec;
pub mod context;
pub mod engine;
pub(crate) mod pipeline;
pub(crate) mod scope;

pub use codec::{
    DataFormat, DecodeBuffers, Element, EncodeBuffers, Family, GpuCodec, GpuQuantizer,
    KernelConfig, TIE_EPS, TIE_REL,
};
pub use context::{AdapterPolicy, GpuContext};
pub use engine::{DeviceChoice, Engine, Ran};
