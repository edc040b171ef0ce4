//! What the codec and the renderer build their pipelines from: one
//! bind-group-layout entry helper and one compute-pipeline cache that keeps
//! only pipelines that compiled cleanly.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::Result;
use crate::gpu::scope::scoped;

/// A read-only storage buffer.
pub(crate) const RO: wgpu::BufferBindingType = wgpu::BufferBindingType::Storage { read_only: true };
/// A read-write storage buffer.
pub(crate) const RW: wgpu::BufferBindingType = wgpu::BufferBindingType::Storage { read_only: false };
/// A uniform buffer.
pub(crate) const UNIFORM: wgpu::BufferBindingType = wgpu::BufferBindingType::Uniform;

/// A buffer binding of the whole buffer, without dynamic offsets.
pub(crate) fn buffer_entry(
    binding: u32,
    visibility: wgpu::ShaderStages,
    ty: wgpu::BufferBindingType,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// A bind-group entry for all of `buffer`.
pub(crate) fn whole(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

/// Compute pipelines by key. A pipeline is created inside error scopes and
/// cached only when they caught nothing, so a configuration that failed
/// fails again on the next request instead of returning a broken pipeline.
pub(crate) struct PipelineCache<K> {
    map: Mutex<HashMap<K, Arc<wgpu::ComputePipeline>>>,
}

impl<K> Default for PipelineCache<K> {
    fn default() -> Self {
        PipelineCache {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> PipelineCache<K> {
    /// The cached pipeline for `key`, or the one `create` makes, kept only
    /// if no device error was caught while making it (`what` names it in
    /// the error).
    pub(crate) fn get_or_create(
        &self,
        device: &wgpu::Device,
        key: K,
        what: &str,
        create: impl FnOnce() -> wgpu::ComputePipeline,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.lock().get(&key) {
            return Ok(p.clone());
        }
        let pipeline = scoped(device, what, || Ok(create()))?;
        Ok(self
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(pipeline))
            .clone())
    }

    /// How many pipelines are cached.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<wgpu::ComputePipeline>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
