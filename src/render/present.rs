//! The present stage: the renderer's float target composited over the
//! background and written into a host's colour target (a window's surface
//! texture), with an optional overlay, in one fullscreen-triangle pass
//! (shaders/render_present.wgsl). [`GpuRenderer::draw`] records it after the
//! raster stage; [`GpuRenderer::render`] reads the float target back and
//! applies [`composite`] on the CPU instead.
//!
//! | step | WGSL (`fs_main`) | Rust reference |
//! |---|---|---|
//! | background | `composite`: C + (1 − A)·background | [`composite`] |
//! | overlay | `overlay`: 0 keeps, 1 shades (×[`SHADE_KEEP`]), 2 inks white | [`overlay`] |
//! | bytes | `present`: round(clamp(v, 0, 1)·255)/255 | [`present`] = [`to_u8`] |
//! | sRGB target | `srgb_to_linear` of those bytes, re-encoded by the hardware | [`srgb_to_linear`] |
//!
//! So the target holds, byte for byte, what [`to_u8`] makes of the headless
//! render ([`GpuRenderer::render`]) of the same camera: on 8-bit unorm
//! formats directly, on sRGB formats (`*Srgb`) because the hardware's sRGB
//! encode inverts the decode the shader applies (a host that is offered both
//! should still pick the unorm format, which involves no transfer function
//! at all). Wider formats receive the same 8-bit-quantised values.
//!
//! [`GpuRenderer::draw`]: crate::render::gpu::GpuRenderer::draw
//! [`GpuRenderer::render`]: crate::render::gpu::GpuRenderer::render
//! [`to_u8`]: crate::render::image::to_u8

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::gpu::buffers::buffer;
use crate::gpu::scope::scoped;
use crate::render::image::to_u8;
use crate::{Error, Result};

/// The present stage's WGSL (self-contained).
pub const PRESENT_WGSL: &str = include_str!("../../shaders/render_present.wgsl");

/// What a shaded overlay texel keeps of the scene behind it (`SHADE_KEEP`
/// in render_present.wgsl).
pub const SHADE_KEEP: f32 = 0.35;

/// The present stage's uniform: `PresentUniform` in render_present.wgsl,
/// member for member.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PresentUniform {
    /// Background colour (w unused).
    pub background: [f32; 4],
    /// Overlay size in pixels (0 × 0: none).
    pub overlay_w: u32,
    pub overlay_h: u32,
    /// 1 when the target format is sRGB.
    pub srgb_target: u32,
    pub pad: u32,
}

/// C + (1 − A)·background for one pixel of the float target (premultiplied
/// C and A = 1 − T): `composite` in render_present.wgsl, and the CPU
/// composite of [`GpuRenderer::render`](crate::render::gpu::GpuRenderer::render).
pub fn composite(px: [f32; 4], background: [f32; 3]) -> [f32; 3] {
    let t = 1.0 - px[3];
    [
        px[0] + t * background[0],
        px[1] + t * background[1],
        px[2] + t * background[2],
    ]
}

/// The overlay texel `m` over `rgb` ([`Overlay::NONE`], [`Overlay::SHADE`],
/// [`Overlay::INK`]; other values keep `rgb`): `overlay` in
/// render_present.wgsl.
pub fn overlay(rgb: [f32; 3], m: u8) -> [f32; 3] {
    match m {
        Overlay::SHADE => rgb.map(|v| v * SHADE_KEEP),
        Overlay::INK => [1.0; 3],
        _ => rgb,
    }
}

/// The bytes a colour is shown as: [`to_u8`] per channel. `present` in
/// render_present.wgsl returns them as unorm values (byte/255).
pub fn present(rgb: [f32; 3]) -> [u8; 3] {
    rgb.map(to_u8)
}

/// The sRGB decode (IEC 61966-2-1) of a value in [0, 1]:
/// `srgb_to_linear` in render_present.wgsl.
pub fn srgb_to_linear(c: f32) -> f32 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// A host's layer over the frame: one texel per pixel from the top-left
/// corner, [`Overlay::NONE`], [`Overlay::SHADE`] (the scene darkened behind
/// text) or [`Overlay::INK`] (white). The viewer draws its stats line into
/// one (`tq3d view`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    pub width: u32,
    pub height: u32,
    /// Row-major, `width·height` texels.
    pub texels: Vec<u8>,
}

impl Overlay {
    /// Leaves the scene as it is.
    pub const NONE: u8 = 0;
    /// Darkens the scene to [`SHADE_KEEP`] of its value.
    pub const SHADE: u8 = 1;
    /// Draws white.
    pub const INK: u8 = 2;

    /// An empty (all [`Overlay::NONE`]) overlay.
    pub fn new(width: u32, height: u32) -> Overlay {
        Overlay {
            width,
            height,
            texels: vec![Overlay::NONE; width as usize * height as usize],
        }
    }

    /// Sets texel (x, y); outside the overlay, nothing.
    pub fn set(&mut self, x: u32, y: u32, m: u8) {
        if x < self.width && y < self.height {
            let i = y as usize * self.width as usize + x as usize;
            if let Some(t) = self.texels.get_mut(i) {
                *t = m;
            }
        }
    }

    /// Texel (x, y) ([`Overlay::NONE`] outside).
    pub fn get(&self, x: u32, y: u32) -> u8 {
        if x < self.width && y < self.height {
            let i = y as usize * self.width as usize + x as usize;
            self.texels.get(i).copied().unwrap_or(Overlay::NONE)
        } else {
            Overlay::NONE
        }
    }
}

/// The present pipelines (one per target format) and their layout, built
/// once per renderer.
#[derive(Debug)]
pub(crate) struct Presenter {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    pipelines: Mutex<HashMap<wgpu::TextureFormat, Arc<wgpu::RenderPipeline>>>,
}

/// Per-scene present resources, reused across frames: the uniform and the
/// overlay texture (1 × 1 while no overlay was given).
#[derive(Debug)]
pub(crate) struct PresentFrame {
    uniform: wgpu::Buffer,
    overlay: wgpu::Texture,
}

impl Presenter {
    /// Compiles the module and the layout (call inside error scopes).
    pub(crate) fn new(device: &wgpu::Device) -> Presenter {
        let fs = wgpu::ShaderStages::FRAGMENT;
        let texture = |binding, sample_type| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: fs,
            ty: wgpu::BindingType::Texture {
                sample_type,
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("turboquant3d present"),
            entries: &[
                crate::gpu::pipeline::buffer_entry(0, fs, crate::gpu::pipeline::UNIFORM),
                texture(1, wgpu::TextureSampleType::Float { filterable: false }),
                texture(2, wgpu::TextureSampleType::Uint),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("turboquant3d present"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("turboquant3d render_present.wgsl"),
            source: wgpu::ShaderSource::Wgsl(PRESENT_WGSL.into()),
        });
        Presenter {
            layout,
            pipeline_layout,
            module,
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    /// The pipeline writing `format`, built once (kept only if no device
    /// error was caught while building it).
    fn pipeline(
        &self,
        device: &wgpu::Device,
        format: wgpu::TextureFormat,
    ) -> Result<Arc<wgpu::RenderPipeline>> {
        let lock = || self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = lock().get(&format) {
            return Ok(p.clone());
        }
        let what = format!("building the present pipeline for {format:?}");
        let pipeline = scoped(device, &what, || {
            Ok(
                device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                    label: Some("turboquant3d present"),
                    layout: Some(&self.pipeline_layout),
                    vertex: wgpu::VertexState {
                        module: &self.module,
                        entry_point: Some("vs_main"),
                        compilation_options: Default::default(),
                        buffers: &[],
                    },
                    primitive: wgpu::PrimitiveState::default(),
                    depth_stencil: None,
                    multisample: wgpu::MultisampleState::default(),
                    fragment: Some(wgpu::FragmentState {
                        module: &self.module,
                        entry_point: Some("fs_main"),
                        compilation_options: Default::default(),
                        targets: &[Some(wgpu::ColorTargetState {
                            format,
                            blend: None,
                            write_mask: wgpu::ColorWrites::ALL,
                        })],
                    }),
                    multiview_mask: None,
                    cache: None,
                }),
            )
        })?;
        Ok(lock()
            .entry(format)
            .or_insert_with(|| Arc::new(pipeline))
            .clone())
    }

    /// Writes the uniform and the overlay, and records the present pass from
    /// `frame_view` (the float target) into `view` (a `format` target of the
    /// target's size).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        resources: &mut Option<PresentFrame>,
        encoder: &mut wgpu::CommandEncoder,
        frame_view: &wgpu::TextureView,
        background: [f32; 3],
        overlay: Option<&Overlay>,
        view: &wgpu::TextureView,
        format: wgpu::TextureFormat,
    ) -> Result<()> {
        let pipeline = self.pipeline(device, format)?;
        let res = match resources {
            Some(r) => r,
            None => resources.insert(PresentFrame {
                uniform: buffer(
                    device,
                    "turboquant3d present",
                    std::mem::size_of::<PresentUniform>(),
                    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                ),
                overlay: overlay_texture(device, 1, 1),
            }),
        };
        let (ow, oh) = match overlay {
            Some(o) if o.width > 0 && o.height > 0 => {
                if o.texels.len() != o.width as usize * o.height as usize {
                    return Err(Error::Shape(format!(
                        "a {}×{} overlay holds {} texels",
                        o.width,
                        o.height,
                        o.texels.len()
                    )));
                }
                let max = device.limits().max_texture_dimension_2d;
                if o.width > max || o.height > max {
                    return Err(Error::GpuUnsupported(format!(
                        "a {}×{} overlay (the device's textures are at most {max}×{max})",
                        o.width, o.height
                    )));
                }
                if res.overlay.width() != o.width || res.overlay.height() != o.height {
                    res.overlay = overlay_texture(device, o.width, o.height);
                }
                queue.write_texture(
                    wgpu::TexelCopyTextureInfo {
                        texture: &res.overlay,
                        mip_level: 0,
                        origin: wgpu::Origin3d::ZERO,
                        aspect: wgpu::TextureAspect::All,
                    },
                    &o.texels,
                    wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(o.width),
                        rows_per_image: Some(o.height),
                    },
                    res.overlay.size(),
                );
                (o.width, o.height)
            }
            _ => (0, 0),
        };
        let u = PresentUniform {
            background: [background[0], background[1], background[2], 0.0],
            overlay_w: ow,
            overlay_h: oh,
            srgb_target: u32::from(format.is_srgb()),
            pad: 0,
        };
        queue.write_buffer(&res.uniform, 0, bytemuck::bytes_of(&u));
        let overlay_view = res.overlay.create_view(&Default::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("turboquant3d present"),
            layout: &self.layout,
            entries: &[
                crate::gpu::pipeline::whole(0, &res.uniform),
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(frame_view),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&overlay_view),
                },
            ],
        });
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("turboquant3d present"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                    store: wgpu::StoreOp::Store,
                },
            })],
            ..Default::default()
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.draw(0..3, 0..1);
        Ok(())
    }
}

fn overlay_texture(device: &wgpu::Device, w: u32, h: u32) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some("turboquant3d overlay"),
        size: wgpu::Extent3d {
            width: w,
            height: h,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::R8Uint,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hardware's sRGB encode (IEC 61966-2-1), in f64.
    fn srgb_encode(l: f64) -> f64 {
        if l <= 0.0031308 {
            12.92 * l
        } else {
            1.055 * l.powf(1.0 / 2.4) - 0.055
        }
    }

    #[test]
    fn srgb_decode_of_every_byte_encodes_back_to_it() {
        for k in 0..=255u8 {
            let l = srgb_to_linear(f32::from(k) / 255.0);
            let back = srgb_encode(f64::from(l)) * 255.0;
            // Far from the rounding boundary: any encode within 0.4 of a
            // step gives k back.
            assert!((back - f64::from(k)).abs() < 1e-3, "{k}: {back}");
        }
    }

    #[test]
    fn composite_and_overlay_follow_their_formulas() {
        assert_eq!(
            composite([0.25, 0.5, 0.0, 0.5], [1.0, 0.0, 0.5]),
            [0.75, 0.5, 0.25]
        );
        assert_eq!(overlay([0.5, 1.0, 0.0], Overlay::NONE), [0.5, 1.0, 0.0]);
        assert_eq!(overlay([0.5, 1.0, 0.0], Overlay::INK), [1.0; 3]);
        assert_eq!(overlay([1.0, 1.0, 0.0], Overlay::SHADE), [0.35, 0.35, 0.0]);
        assert_eq!(present([-1.0, 0.5, 2.0]), [0, 128, 255]);
    }
}
