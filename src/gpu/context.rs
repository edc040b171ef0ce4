//! The device the GPU codec runs on: borrowed from a host renderer, or
//! found by the library.

use crate::{Error, Result};

/// Which adapters [`GpuContext::request`] may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterPolicy {
    /// Hardware GPUs only (discrete, integrated or virtual), preferring
    /// discrete. Software rasterisers such as lavapipe are never chosen: on a
    /// machine without a GPU the native CPU path is faster. This is what
    /// `--device auto` and `--device gpu` use.
    HardwareOnly,
    /// Any adapter, software ones included (lavapipe in tests and CI).
    AllowSoftware,
}

/// A device and queue, plus what is known about the adapter.
///
/// A context built with [`GpuContext::from_device`] borrows a host's device:
/// the library then requires no features or limits of it, reads what it
/// has, and installs no error handler on it.
#[derive(Debug, Clone)]
pub struct GpuContext {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter the device was created from (`None` only in a context
    /// built by hand).
    pub adapter_info: Option<wgpu::AdapterInfo>,
}

impl GpuContext {
    /// Wraps a host's device and queue; the adapter is read from the device.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> GpuContext {
        let adapter_info = Some(device.adapter_info());
        GpuContext {
            device,
            queue,
            adapter_info,
        }
    }

    /// Finds an adapter and creates a device with no features and default
    /// limits. Backends follow `WGPU_BACKEND` when it is set; otherwise a
    /// hardware-only search asks wgpu's primary backends (Vulkan, Metal,
    /// DX12), where every GPU the codec can use is found, and skips the GL
    /// backend, whose start-up alone (EGL, Mesa) was most of the 35 ms an
    /// automatic probe cost on a machine without a GPU.
    pub fn request(policy: AdapterPolicy) -> Result<GpuContext> {
        pollster::block_on(Self::request_async(policy))
    }

    /// The async form of [`GpuContext::request`].
    pub async fn request_async(policy: AdapterPolicy) -> Result<GpuContext> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        if policy == AdapterPolicy::HardwareOnly {
            desc.backends = wgpu::Backends::PRIMARY;
        }
        let instance = wgpu::Instance::new(desc.with_env());
        Self::open(&instance, policy, None)
            .await
            .map(|(ctx, _)| ctx)
    }

    /// Like [`GpuContext::request`], for a window: the adapter is picked
    /// among those of `instance` that can present to `surface`, by the same
    /// policy and ranking, and the device is created the same way (no
    /// features, default limits). Make `instance` as `request` does, with
    /// the display handle of the host's event loop:
    /// `wgpu::InstanceDescriptor::new_with_display_handle_from_env(…)`.
    /// Returns the adapter too, for `surface.get_capabilities`.
    pub fn request_for_surface(
        instance: &wgpu::Instance,
        surface: &wgpu::Surface<'_>,
        policy: AdapterPolicy,
    ) -> Result<(GpuContext, wgpu::Adapter)> {
        pollster::block_on(Self::open(instance, policy, Some(surface)))
    }

    /// The best adapter of `instance` under `policy` (that can present to
    /// `surface`, when given), opened.
    async fn open(
        instance: &wgpu::Instance,
        policy: AdapterPolicy,
        surface: Option<&wgpu::Surface<'_>>,
    ) -> Result<(GpuContext, wgpu::Adapter)> {
        let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        if let Some(surface) = surface {
            let all = adapters.len();
            adapters.retain(|a| a.is_surface_supported(surface));
            if adapters.is_empty() && all > 0 {
                return Err(Error::Gpu(format!(
                    "none of the {all} GPU adapters can present to this window"
                )));
            }
        }
        let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => Some(0),
            wgpu::DeviceType::IntegratedGpu => Some(1),
            wgpu::DeviceType::VirtualGpu => Some(2),
            wgpu::DeviceType::Other => Some(3),
            wgpu::DeviceType::Cpu => (policy == AdapterPolicy::AllowSoftware).then_some(4),
        };
        let found: Vec<String> = adapters
            .iter()
            .map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().device_type))
            .collect();
        let adapter = adapters
            .into_iter()
            .filter_map(|a| rank(&a).map(|r| (r, a)))
            .min_by_key(|(r, _)| *r)
            .map(|(_, a)| a)
            .ok_or_else(|| {
                Error::Gpu(if found.is_empty() {
                    "no GPU adapter found".to_string()
                } else {
                    format!("no hardware GPU adapter among: {}", found.join(", "))
                })
            })?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("turboquant3d"),
                required_features: wgpu::Features::empty(),
                required_limits: wgpu::Limits::default(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("cannot open {}: {e}", info.name)))?;
        log::info!(
            "GPU: {} ({:?}, {:?})",
            info.name,
            info.device_type,
            info.backend
        );
        Ok((
            GpuContext {
                device,
                queue,
                adapter_info: Some(info),
            },
            adapter,
        ))
    }

    /// A short description of the device for logs and reports.
    pub fn describe(&self) -> String {
        match &self.adapter_info {
            Some(i) => format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend),
            None => "host-provided device".to_string(),
        }
    }
}
