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
    /// limits. Backends follow `WGPU_BACKEND` when it is set.
    pub fn request(policy: AdapterPolicy) -> Result<GpuContext> {
        pollster::block_on(Self::request_async(policy))
    }

    /// The async form of [`GpuContext::request`].
    pub async fn request_async(policy: AdapterPolicy) -> Result<GpuContext> {
        let adapters = enumerate_headless().await;
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
        Ok(GpuContext {
            device,
            queue,
            adapter_info: Some(info),
        })
    }

    /// A short description of the device for logs and reports.
    pub fn describe(&self) -> String {
        match &self.adapter_info {
            Some(i) => format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend),
            None => "host-provided device".to_string(),
        }
    }
}

/// The window-system instance extensions wgpu-hal asks Vulkan for on
/// desktop Unix. A compute-only instance needs none of them, and enabling
/// them makes Mesa's device-select layer connect to the Wayland and X
/// servers while listing devices (printing `error: XDG_RUNTIME_DIR is
/// invalid or not set` where there is none).
const WSI_EXTENSIONS: [&std::ffi::CStr; 3] = [
    c"VK_KHR_wayland_surface",
    c"VK_KHR_xcb_surface",
    c"VK_KHR_xlib_surface",
];

/// Every adapter of the backends `WGPU_BACKEND` allows (all by default),
/// with Vulkan's from an instance created without window-system
/// extensions (the library never presents to a window).
async fn enumerate_headless() -> Vec<wgpu::Adapter> {
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let mut backends = desc.backends;
    let mut adapters = Vec::new();
    if backends.contains(wgpu::Backends::VULKAN)
        && let Some(vk) = headless_vulkan(&desc)
    {
        adapters.extend(vk.enumerate_adapters(wgpu::Backends::VULKAN).await);
        backends.remove(wgpu::Backends::VULKAN);
    }
    if !backends.is_empty() {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor { backends, ..desc });
        adapters.extend(instance.enumerate_adapters(backends).await);
    }
    adapters
}

/// A Vulkan instance without [`WSI_EXTENSIONS`], or `None` where Vulkan
/// cannot start (the caller then lets wgpu try it the ordinary way).
#[cfg(all(unix, not(target_os = "macos"), not(target_os = "android")))]
fn headless_vulkan(desc: &wgpu::InstanceDescriptor) -> Option<wgpu::Instance> {
    use wgpu::hal;
    let hal_desc = hal::InstanceDescriptor {
        name: "turboquant3d",
        flags: desc.flags,
        memory_budget_thresholds: desc.memory_budget_thresholds,
        backend_options: desc.backend_options.clone(),
        telemetry: None,
        display: None,
    };
    let drop_wsi: Box<hal::vulkan::CreateInstanceCallback> = Box::new(|args| {
        args.extensions.retain(|e| !WSI_EXTENSIONS.contains(e));
    });
    // SAFETY: wgpu-hal 30 reads the instance's window-system extensions in
    // one place only, surface creation, which checks the enabled list first
    // and returns an error without them; this instance never creates a
    // surface. Nothing else is removed or changed.
    let instance = unsafe { hal::vulkan::Instance::init_with_callback(&hal_desc, Some(drop_wsi)) };
    match instance {
        // SAFETY: a valid Vulkan instance, handed over whole to wgpu.
        Ok(i) => Some(unsafe { wgpu::Instance::from_hal::<hal::api::Vulkan>(i) }),
        Err(e) => {
            log::debug!("headless Vulkan instance: {e}");
            None
        }
    }
}

/// Elsewhere the window-system extensions are not the desktop ones: wgpu
/// creates the Vulkan instance as usual.
#[cfg(not(all(unix, not(target_os = "macos"), not(target_os = "android"))))]
fn headless_vulkan(_desc: &wgpu::InstanceDescriptor) -> Option<wgpu::Instance> {
    None
}
