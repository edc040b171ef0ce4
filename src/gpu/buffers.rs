//! Buffer helpers shared by the codec and the renderer: creation without
//! panics, and readback.

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
