//! Buffer helpers shared by the codec and the renderer: creation without
//! panics, readback, and error scopes that leave a host's device untouched.

use crate::gpu::GpuContext;
use crate::{Error, Result};

/// A buffer created mapped and filled (zero-padded to a multiple of 4
/// bytes, at least 4), with a map failure (a lost or invalid device)
/// returned as an error rather than a panic.
pub(crate) fn init_buffer(
    device: &wgpu::Device,
    label: &str,
    contents: &[u8],
    usage: wgpu::BufferUsages,
) -> Result<wgpu::Buffer> {
    let size = (contents.len().max(4) as u64).div_ceil(4) * 4;
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage,
        mapped_at_creation: true,
    });
    {
        let mut view = buffer
            .get_mapped_range_mut(..)
            .map_err(|e| Error::Gpu(format!("creating {label}: {e}")))?;
        view.slice(..contents.len()).copy_from_slice(contents);
    }
    buffer.unmap();
    Ok(buffer)
}

/// An unmapped buffer of at least `size` bytes, rounded up to 4.
pub(crate) fn buffer(
    device: &wgpu::Device,
    label: &str,
    size: usize,
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (size.max(4) as u64).div_ceil(4) * 4,
        usage,
        mapped_at_creation: false,
    })
}

/// Maps a buffer after the submitted work, copies its first `len` bytes
/// out, and unmaps it.
pub(crate) async fn read_buffer(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    len: u64,
) -> Result<Vec<u8>> {
    let slice = buffer.slice(..len);
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
    match rx.receive().await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(Error::Gpu(format!("reading back: {e}"))),
        None => {
            return Err(Error::Gpu(
                "reading back: the device dropped the request".into(),
            ));
        }
    }
    let bytes = slice
        .get_mapped_range()
        .map_err(|e| Error::Gpu(format!("reading back: {e}")))?
        .to_vec();
    buffer.unmap();
    Ok(bytes)
}

/// Validation, out-of-memory and internal error scopes, pushed together
/// and popped in reverse order. They catch what a failed allocation or a
/// lost device reports, for the duration of one call, without touching the
/// device's uncaptured-error handler.
pub(crate) struct Scopes {
    validation: wgpu::ErrorScopeGuard,
    memory: wgpu::ErrorScopeGuard,
    internal: wgpu::ErrorScopeGuard,
}

impl Scopes {
    pub(crate) fn push(device: &wgpu::Device) -> Scopes {
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        Scopes {
            validation,
            memory,
            internal,
        }
    }

    /// The first error caught, out-of-memory first.
    pub(crate) async fn pop(self) -> Option<String> {
        let internal = self.internal.pop().await;
        let memory = self.memory.pop().await;
        let validation = self.validation.pop().await;
        [memory, internal, validation]
            .into_iter()
            .flatten()
            .next()
            .map(|e| e.to_string())
    }
}
