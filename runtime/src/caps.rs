//! What the chosen device can do; kernel selection reads this.

use serde::Serialize;

/// Device capabilities that decide which kernel variants run.
///
/// Values are the device's *effective* capabilities: a feature the caller disabled through
/// [`crate::ContextOptions`] reads as absent, so the fallback kernels are exercised.
#[derive(Clone, Debug, Serialize)]
pub struct Capabilities {
    /// The adapter is a CPU implementation (lavapipe, llvmpipe, WARP, SwiftShader): kernels
    /// prefer fewer, longer-running invocations there.
    pub cpu: bool,
    /// `SHADER_F16`: WGSL `f16` arithmetic and storage. Without it f16 tensors are still
    /// supported, read as packed `u32` pairs and unpacked in the shader.
    pub f16: bool,
    /// `SUBGROUP`: subgroup reductions (`subgroupAdd`, …).
    pub subgroups: bool,
    /// Smallest subgroup size the adapter may use.
    pub subgroup_min_size: u32,
    /// Largest subgroup size the adapter may use.
    pub subgroup_max_size: u32,
    /// `TIMESTAMP_QUERY`: timestamps at compute pass boundaries.
    pub timestamp: bool,
    /// `TIMESTAMP_QUERY_INSIDE_PASSES`: timestamps inside a compute pass.
    pub timestamp_inside_passes: bool,
    /// `PIPELINE_CACHE`: driver pipeline caches can be persisted across runs.
    pub pipeline_cache: bool,
    /// Largest byte range one storage binding may cover.
    pub max_storage_binding: u64,
    /// Largest single buffer, in bytes.
    pub max_buffer_size: u64,
    /// Alignment of a storage binding's byte offset.
    pub storage_offset_alignment: u32,
    /// Alignment of a uniform binding's byte offset.
    pub uniform_offset_alignment: u32,
    /// Maximum workgroups in one dispatch dimension.
    pub max_workgroups_per_dim: u32,
    /// Maximum invocations in one workgroup.
    pub max_invocations_per_workgroup: u32,
    /// Bytes of workgroup (shared) memory.
    pub max_workgroup_storage: u32,
    /// Storage buffers one shader stage may bind.
    pub max_storage_buffers_per_stage: u32,
    /// Largest width or height of a 2-D texture.
    pub max_texture_dimension_2d: u32,
    /// Quantised weights are stored in textures ([`crate::texture`]) rather than storage
    /// buffers: by default on CPU adapters, where texture fetches are the faster read path;
    /// chosen with [`crate::ContextOptions::weight_textures`].
    pub texture_weights: bool,
}

impl Capabilities {
    /// Whether kernels should read f16 storage as WGSL `f16` (true) or as packed `u32` words
    /// unpacked with `unpack2x16float` (false). Native reads need `SHADER_F16`; CPU adapters
    /// (lavapipe) load every vector component separately, so there two halves per 32-bit word
    /// read packed cost half as much as native 16-bit reads.
    pub fn read_f16_natively(&self) -> bool {
        self.f16 && !self.cpu
    }

    /// Derives capabilities from the device's features and limits and the adapter's info.
    pub(crate) fn new(features: wgpu::Features, limits: &wgpu::Limits, info: &wgpu::AdapterInfo) -> Self {
        let subgroups = features.contains(wgpu::Features::SUBGROUP);
        Capabilities {
            cpu: info.device_type == wgpu::DeviceType::Cpu,
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups,
            subgroup_min_size: if subgroups { info.subgroup_min_size } else { 0 },
            subgroup_max_size: if subgroups { info.subgroup_max_size } else { 0 },
            timestamp: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamp_inside_passes: features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            pipeline_cache: features.contains(wgpu::Features::PIPELINE_CACHE),
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            storage_offset_alignment: limits.min_storage_buffer_offset_alignment,
            uniform_offset_alignment: limits.min_uniform_buffer_offset_alignment,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            max_texture_dimension_2d: limits.max_texture_dimension_2d,
            texture_weights: info.device_type == wgpu::DeviceType::Cpu,
        }
    }
}
