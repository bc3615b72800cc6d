//! Vulkan: naga's SPIR-V writer with the options and capability list wgpu-hal's Vulkan back end
//! passes for the device's features.

use naga::back::spv::{self, Capability};

use crate::target::Unit;

/// Writes SPIR-V for the unit's entry point, at the lowest SPIR-V version a device that selects
/// it may take: 1.0 (Vulkan 1.0), or 1.3 where the variant uses subgroups (wgpu offers SUBGROUP
/// from Vulkan 1.1 on).
pub fn write(unit: &Unit) -> Result<(), String> {
    // What every Vulkan device declares, then what the variant's features add.
    let mut capabilities = vec![
        Capability::Shader,
        Capability::Matrix,
        Capability::Sampled1D,
        Capability::Image1D,
        Capability::ImageQuery,
        Capability::DerivativeControl,
        Capability::StorageImageExtendedFormats,
    ];
    if unit.needs.subgroups {
        capabilities.extend([
            Capability::GroupNonUniform,
            Capability::GroupNonUniformVote,
            Capability::GroupNonUniformArithmetic,
            Capability::GroupNonUniformBallot,
            Capability::GroupNonUniformShuffle,
            Capability::GroupNonUniformShuffleRelative,
            Capability::GroupNonUniformQuad,
        ]);
    }
    if unit.needs.f16 {
        capabilities.push(Capability::Float16);
    }
    // Descriptor bindings as wgpu's set layouts number them: densely, in binding order.
    let mut binding_map = spv::BindingMap::default();
    let mut next = std::collections::HashMap::new();
    for (binding, _) in unit.bindings()? {
        let slot = next.entry(binding.group).or_insert(0u32);
        binding_map.insert(binding, spv::BindingInfo { descriptor_set: binding.group, binding: *slot, binding_array_size: None });
        *slot += 1;
    }
    let checks = naga::proc::BoundsCheckPolicy::Restrict;
    let options = spv::Options {
        lang_version: if unit.needs.subgroups { (1, 3) } else { (1, 0) },
        flags: spv::WriterFlags::LABEL_VARYINGS | spv::WriterFlags::FORCE_POINT_SIZE,
        capabilities: Some(capabilities.into_iter().collect()),
        // Without robustBufferAccess2 wgpu restricts buffer indices itself: the stricter case.
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: checks,
            buffer: checks,
            image_load: checks,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        // Kestrel's pipelines ask for no workgroup-memory zeroing.
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: true,
        use_storage_input_output_16: false,
        fake_missing_bindings: false,
        binding_map,
        emit_int_div_checks: true,
        ..Default::default()
    };
    let pipeline = spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: unit.entry().to_string() };
    spv::write_vec(unit.module, unit.info, &options, Some(&pipeline)).map_err(|e| format!("SPIR-V: {e}"))?;
    Ok(())
}
