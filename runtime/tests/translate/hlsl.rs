//! DirectX 12: naga's HLSL writer with the options wgpu-hal's DX12 back end passes.

use naga::back::hlsl;

use crate::target::{Resource, Unit};

/// Writes HLSL for the unit's entry point at the lowest shader model a device that selects it
/// may have: wgpu exposes no DX12 adapter below 6.0 (which has wave ops, SUBGROUP) and asks 6.2
/// for SHADER_F16.
pub fn write(unit: &Unit) -> Result<(), String> {
    // Registers as wgpu's root signature assigns them, all in space 0 (no immediates): uniform
    // buffers in `b`, read-only storage and textures in `t`, writable storage in `u`; then the
    // special-constants buffer (num_workgroups) in the next `b`.
    let mut binding_map = hlsl::BindingMap::default();
    let (mut cbv, mut srv, mut uav) = (0u32, 0u32, 0u32);
    for (binding, resource) in unit.bindings()? {
        let counter = match resource {
            Resource::Uniform => &mut cbv,
            Resource::Storage { writable: false } | Resource::Texture => &mut srv,
            Resource::Storage { writable: true } | Resource::StorageTexture => &mut uav,
        };
        binding_map.insert(binding, hlsl::BindTarget { register: *counter, ..Default::default() });
        *counter += 1;
    }
    let options = hlsl::Options {
        shader_model: if unit.needs.f16 { hlsl::ShaderModel::V6_2 } else { hlsl::ShaderModel::V6_0 },
        binding_map,
        fake_missing_bindings: false,
        special_constants_binding: Some(hlsl::BindTarget { register: cbv, ..Default::default() }),
        // Kestrel's pipelines ask for no workgroup-memory zeroing.
        zero_initialize_workgroup_memory: false,
        restrict_indexing: true,
        force_loop_bounding: true,
        ..Default::default()
    };
    let pipeline = hlsl::PipelineOptions { entry_point: Some((naga::ShaderStage::Compute, unit.entry().to_string())) };
    let mut source = String::new();
    let info = hlsl::Writer::new(&mut source, &options, &pipeline).write(unit.module, unit.info, None).map_err(|e| format!("HLSL: {e}"))?;
    for name in info.entry_point_names {
        name.map_err(|e| format!("HLSL entry point: {e}"))?;
    }
    Ok(())
}
