//! The renderer's per-scene frame buffers and its render targets, with the
//! readback of a target into an [`Image`].

use rayon::prelude::*;

use crate::gpu::buffers::buffer;
use crate::gpu::pipeline::whole;
use crate::render::present::{PresentFrame, composite};
use crate::render::shaders::CameraUniform;
use crate::render::{Image, Splat2D};

/// Per-frame buffers, reused across frames of one scene.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) uniform: wgpu::Buffer,
    pub(crate) splats: wgpu::Buffer,
    pub(crate) depths: wgpu::Buffer,
    pub(crate) depth_readback: wgpu::Buffer,
    pub(crate) order: wgpu::Buffer,
    pub(crate) pre_bind_group: wgpu::BindGroup,
    pub(crate) raster_bind_group: wgpu::BindGroup,
    pub(crate) target: Option<Target>,
    /// The present stage's uniform and overlay, made on the first draw.
    pub(crate) present: Option<PresentFrame>,
}

impl Frame {
    /// The buffers for `n` Gaussians, bound with the scene's attributes and
    /// f32 SH-rest (a placeholder in the compressed mode).
    pub(crate) fn new(
        device: &wgpu::Device,
        n: usize,
        pre_layout: &wgpu::BindGroupLayout,
        raster_layout: &wgpu::BindGroupLayout,
        attrs: &wgpu::Buffer,
        rest: &wgpu::Buffer,
    ) -> Frame {
        use wgpu::BufferUsages as U;
        let uniform = buffer(
            device,
            "turboquant3d camera",
            std::mem::size_of::<CameraUniform>(),
            U::UNIFORM | U::COPY_DST,
        );
        let splats = buffer(
            device,
            "turboquant3d splats",
            std::mem::size_of::<Splat2D>() * n,
            U::STORAGE | U::COPY_SRC,
        );
        let depths = buffer(
            device,
            "turboquant3d depths",
            4 * n,
            U::STORAGE | U::COPY_SRC,
        );
        let depth_readback = buffer(
            device,
            "turboquant3d depth readback",
            4 * n,
            U::MAP_READ | U::COPY_DST,
        );
        let order = buffer(
            device,
            "turboquant3d order",
            4 * n,
            U::STORAGE | U::COPY_DST,
        );
        let pre_bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("turboquant3d preprocess"),
            layout: pre_layout,
            entries: &[
                whole(0, &uniform),
                whole(1, attrs),
                whole(2, rest),
                whole(3, &splats),
                whole(4, &depths),
            ],
        });
        let raster_bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("turboquant3d raster"),
            layout: raster_layout,
            entries: &[whole(0, &uniform), whole(1, &splats), whole(2, &order)],
        });
        Frame {
            uniform,
            splats,
            depths,
            depth_readback,
            order,
            pre_bind_group,
            raster_bind_group,
            target: None,
            present: None,
        }
    }
}

/// A render target and its readback buffer, for one image size.
#[derive(Debug)]
pub(crate) struct Target {
    width: u32,
    height: u32,
    format: wgpu::TextureFormat,
    texture: wgpu::Texture,
    pub(crate) view: wgpu::TextureView,
    readback: wgpu::Buffer,
    row_bytes: u32,
}

impl Target {
    /// The target in `slot` if it is `w`×`h`, else a new one put there.
    pub(crate) fn sized<'a>(
        slot: &'a mut Option<Target>,
        device: &wgpu::Device,
        format: wgpu::TextureFormat,
        w: u32,
        h: u32,
    ) -> &'a Target {
        if slot
            .as_ref()
            .is_none_or(|t| t.width != w || t.height != h || t.format != format)
        {
            *slot = Some(Target::new(device, format, w, h));
        }
        #[allow(clippy::expect_used)] // Set just above when it was not fit.
        slot.as_ref().expect("just made")
    }

    fn new(device: &wgpu::Device, format: wgpu::TextureFormat, w: u32, h: u32) -> Target {
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("turboquant3d target"),
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            // Read back by `render`, read by the present pass of `draw`.
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT
                | wgpu::TextureUsages::COPY_SRC
                | wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        let texel = if format == wgpu::TextureFormat::Rgba32Float {
            16
        } else {
            8
        };
        let row_bytes = (w * texel).div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT)
            * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
        let readback = buffer(
            device,
            "turboquant3d image readback",
            row_bytes as usize * h as usize,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        Target {
            width: w,
            height: h,
            format,
            texture,
            view,
            readback,
            row_bytes,
        }
    }

    /// The readback buffer and how many of its bytes hold the image.
    pub(crate) fn readback(&self) -> (&wgpu::Buffer, u64) {
        (&self.readback, self.row_bytes as u64 * self.height as u64)
    }

    /// Records the copy of the target into its readback buffer.
    pub(crate) fn record_copy(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &self.texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &self.readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(self.row_bytes),
                    rows_per_image: Some(self.height),
                },
            },
            wgpu::Extent3d {
                width: self.width,
                height: self.height,
                depth_or_array_layers: 1,
            },
        );
    }

    /// The image from the read-back target `bytes` (premultiplied C and
    /// A = 1 − T per pixel): C + (1 − A)·background
    /// ([`composite`], which the present pass mirrors).
    pub(crate) fn composite(&self, bytes: &[u8], background: [f32; 3]) -> Image {
        let (w, h) = (self.width, self.height);
        let f32_target = self.format == wgpu::TextureFormat::Rgba32Float;
        let row_bytes = self.row_bytes as usize;
        let mut image = Image::new(w, h);
        image
            .data
            .par_chunks_mut(3 * w as usize)
            .enumerate()
            .for_each(|(y, out)| {
                let row = &bytes[y * row_bytes..];
                for x in 0..w as usize {
                    let px: [f32; 4] = if f32_target {
                        bytemuck::pod_read_unaligned(&row[16 * x..16 * x + 16])
                    } else {
                        let hp: [u16; 4] = bytemuck::pod_read_unaligned(&row[8 * x..8 * x + 8]);
                        hp.map(|v| half::f16::from_bits(v).to_f32())
                    };
                    out[3 * x..3 * x + 3].copy_from_slice(&composite(px, background));
                }
            });
        image
    }
}
