//! Metal: naga's MSL writer with the options wgpu-hal's Metal back end passes.

use naga::back::msl;

use crate::target::{Resource, Unit};

/// The Metal Shading Language version translated for: MSL 2.4 is what wgpu uses on macOS 12 and
/// iOS 15, the oldest systems whose Apple-family GPUs all offer simdgroup operations (SUBGROUP).
/// naga gates nothing Kestrel's kernels use on a later version.
const LANG_VERSION: (u8, u8) = (2, 4);

/// Writes MSL for the unit's entry point.
pub fn write(unit: &Unit) -> Result<(), String> {
    // Resource slots as wgpu's pipeline layout assigns them: buffers and textures counted
    // separately in binding order, then the buffer-sizes buffer when any storage buffer is bound
    // (runtime-sized arrays and bounds checks read it).
    let mut resources = msl::BindingMap::default();
    let (mut buffers, mut textures, mut any_storage) = (0u8, 0u8, false);
    for (binding, resource) in unit.bindings()? {
        let mut target = msl::BindTarget::default();
        match resource {
            Resource::Uniform | Resource::Storage { .. } => {
                target.buffer = Some(buffers);
                buffers += 1;
                if let Resource::Storage { writable } = resource {
                    target.mutable = writable;
                    any_storage = true;
                }
            }
            Resource::Texture | Resource::StorageTexture => {
                target.texture = Some(textures);
                target.mutable = resource == Resource::StorageTexture;
                textures += 1;
            }
        }
        resources.insert(binding, target);
    }
    let checks = naga::proc::BoundsCheckPolicy::Restrict;
    let options = msl::Options {
        lang_version: LANG_VERSION,
        per_entry_point_map: msl::EntryPointResourceMap::from([(
            unit.entry().to_string(),
            msl::EntryPointResources { resources, immediates_buffer: None, sizes_buffer: any_storage.then_some(buffers) },
        )]),
        fake_missing_bindings: false,
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: checks,
            buffer: checks,
            image_load: checks,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        // Kestrel's pipelines ask for no workgroup-memory zeroing.
        zero_initialize_workgroup_memory: false,
        force_loop_bounding: true,
        emit_int_div_checks: true,
        ..Default::default()
    };
    let pipeline = msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, unit.entry().to_string())),
        vertex_pulling_transform: true,
        ..Default::default()
    };
    let (_, info) = msl::write_string(unit.module, unit.info, &options, &pipeline).map_err(|e| format!("MSL: {e}"))?;
    for name in info.entry_point_names {
        name.map_err(|e| format!("MSL entry point: {e}"))?;
    }
    Ok(())
}
