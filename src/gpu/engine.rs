//! Where the codec runs: the GPU when there is a usable one, the CPU
//! otherwise, with the same calls either way.

use std::sync::Arc;

use crate::gpu::{AdapterPolicy, GpuCodec, GpuContext};
use crate::{Encoded, Error, Quantizer, Result};

/// The `--device` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A hardware GPU if there is one, else the CPU. Software adapters
    /// (lavapipe) are never chosen: the native CPU path beats them. GPU
    /// failures fall back to the CPU with a warning.
    Auto,
    /// The GPU, strictly: any adapter, software ones included; no adapter
    /// or a GPU failure is an error.
    Gpu,
    /// The CPU.
    Cpu,
}

/// What actually ran a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// The CPU path.
    Cpu,
    /// The GPU, named.
    Gpu(String),
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ran::Cpu => write!(f, "CPU"),
            Ran::Gpu(name) => write!(f, "GPU {name}"),
        }
    }
}

/// Runs encode and decode on the chosen device, falling back to the CPU
/// where the choice allows.
#[derive(Debug, Clone)]
pub struct Engine {
    gpu: Option<Arc<GpuCodec>>,
    strict: bool,
}

impl Engine {
    /// Opens the device for a choice.
    pub fn new(choice: DeviceChoice) -> Result<Engine> {
        let gpu = match choice {
            DeviceChoice::Cpu => None,
            DeviceChoice::Gpu => Some(GpuContext::request(AdapterPolicy::AllowSoftware)?),
            DeviceChoice::Auto => match GpuContext::request(AdapterPolicy::HardwareOnly) {
                Ok(ctx) => Some(ctx),
                Err(e) => {
                    log::info!("{e}; using the CPU");
                    None
                }
            },
        };
        Ok(Engine {
            gpu: gpu.map(|ctx| Arc::new(GpuCodec::new(ctx))),
            strict: choice == DeviceChoice::Gpu,
        })
    }

    /// An engine on a GPU codec the caller built (a borrowed device).
    pub fn with_gpu(codec: Arc<GpuCodec>, strict: bool) -> Engine {
        Engine {
            gpu: Some(codec),
            strict,
        }
    }

    /// Whether jobs try a GPU first.
    pub fn has_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// The device jobs will try first.
    pub fn describe(&self) -> String {
        match &self.gpu {
            Some(g) => format!("GPU {}", g.context().describe()),
            None => "CPU".into(),
        }
    }

    fn fallback<T>(&self, what: &str, e: Error) -> Result<Option<T>> {
        match e {
            Error::Gpu(_) | Error::GpuUnsupported(_) if !self.strict => {
                log::warn!("{what} on the GPU failed ({e}); falling back to the CPU");
                Ok(None)
            }
            e => Err(e),
        }
    }

    /// Encodes contiguous rows.
    pub fn encode(&self, q: &Quantizer, data: &[f32]) -> Result<(Encoded, Ran)> {
        if let Some(codec) = &self.gpu {
            let attempt = codec.prepare(q).and_then(|g| g.encode(data));
            match attempt {
                Ok(e) => return Ok((e, Ran::Gpu(codec.context().describe()))),
                Err(e @ (Error::Gpu(_) | Error::GpuUnsupported(_))) => {
                    self.fallback::<()>("encoding", e)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok((q.encode(data)?, Ran::Cpu))
    }

    /// Encodes contiguous rows with exactly the CPU's bytes (see
    /// [`GpuQuantizer::encode_exact`](crate::gpu::GpuQuantizer::encode_exact)):
    /// on the GPU where the kernel supports it, on the CPU otherwise. Also
    /// returns how many vectors the GPU left to the CPU as near-ties.
    pub fn encode_exact(&self, q: &Quantizer, data: &[f32]) -> Result<(Encoded, Ran, usize)> {
        if let Some(codec) = &self.gpu {
            match codec.prepare(q).and_then(|g| g.encode_exact(data)) {
                Ok((e, ties)) => return Ok((e, Ran::Gpu(codec.context().describe()), ties)),
                Err(e @ (Error::Gpu(_) | Error::GpuUnsupported(_))) => {
                    self.fallback::<()>("exact encoding", e)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok((q.encode(data)?, Ran::Cpu, 0))
    }

    /// Decodes into contiguous rows.
    pub fn decode(&self, q: &Quantizer, enc: &Encoded) -> Result<(Vec<f32>, Ran)> {
        if let Some(codec) = &self.gpu {
            match codec.prepare(q).and_then(|g| g.decode(enc)) {
                Ok(v) => return Ok((v, Ran::Gpu(codec.context().describe()))),
                Err(e @ (Error::Gpu(_) | Error::GpuUnsupported(_))) => {
                    self.fallback::<()>("decoding", e)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok((q.decode(enc)?, Ran::Cpu))
    }
}
