//! What a device that selects a kernel variant grants it, and the translation of one variant to
//! every back end: parse and validate once, as wgpu-core does with the device's features, then
//! hand the module to each back end the way wgpu-hal does.

use std::panic::{AssertUnwindSafe, catch_unwind};

use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{Module, ShaderStage};

use crate::{hlsl, msl, spv};

/// A wgpu back end whose shader translation CI checks without running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Metal (macOS, iOS): naga's MSL writer.
    Metal,
    /// DirectX 12 (Windows): naga's HLSL writer (DXC compiles the result on the device).
    Dx12,
    /// Vulkan (Linux, Android, Windows): naga's SPIR-V writer.
    Vulkan,
}

/// Every back end, in report order.
pub const BACKENDS: [Backend; 3] = [Backend::Metal, Backend::Dx12, Backend::Vulkan];

/// The optional device features a variant needs: a device without them never selects it, so
/// the variant is translated with exactly these granted (a fallback variant that uses f16 by
/// mistake fails validation here).
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// `SHADER_F16`: the variant says `enable f16;`, which WGSL requires for any f16 use.
    pub f16: bool,
    /// `SUBGROUP` (+ `SUBGROUP_BARRIER`): outside comments the variant names a subgroup
    /// builtin (every one of them starts with `subgroup`).
    pub subgroups: bool,
}

impl Needs {
    /// Reads the needs off the preprocessed WGSL of a variant.
    pub fn of(wgsl: &str) -> Needs {
        let code = || wgsl.lines().map(|l| l.split("//").next().unwrap_or(""));
        Needs { f16: code().any(|l| l.trim_start().starts_with("enable f16")), subgroups: code().any(|l| l.contains("subgroup")) }
    }

    /// The wgpu features such a device has enabled.
    pub fn features(self) -> wgpu::Features {
        let mut f = wgpu::Features::empty();
        f.set(wgpu::Features::SHADER_F16, self.f16);
        f.set(wgpu::Features::SUBGROUP | wgpu::Features::SUBGROUP_BARRIER, self.subgroups);
        f
    }
}

/// A parsed and validated variant, ready for the back ends.
pub struct Validated {
    module: Module,
    info: ModuleInfo,
    entry: String,
    needs: Needs,
}

impl Validated {
    /// Parses `wgsl` and validates it with the naga capabilities wgpu-core derives from the
    /// features of a device that selects it (Metal, DX12 and Vulkan devices have every
    /// downlevel capability).
    pub fn new(wgsl: &str, entry: &str) -> Result<Validated, String> {
        let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| e.emit_to_string(wgsl))?;
        let needs = Needs::of(wgsl);
        let caps: Capabilities = wgpu_naga_bridge::features_to_naga_capabilities(needs.features(), wgpu::DownlevelFlags::compliant());
        let info = Validator::new(ValidationFlags::all(), caps).validate(&module).map_err(|e| e.emit_to_string(wgsl))?;
        Ok(Validated { module, info, entry: entry.to_string(), needs })
    }

    /// Translates the variant for one back end; a back-end error or panic becomes `Err`.
    pub fn translate(&self, backend: Backend) -> Result<(), String> {
        // wgpu strips the module down to the pipeline's entry point before translating it.
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &self.module,
            &self.info,
            Some((ShaderStage::Compute, &self.entry)),
            &Default::default(),
        )
        .map_err(|e| format!("pipeline constants: {e}"))?;
        let ep = module
            .entry_points
            .iter()
            .position(|ep| ep.stage == ShaderStage::Compute && ep.name == self.entry)
            .ok_or_else(|| format!("no compute entry point `{}`", self.entry))?;
        let unit = Unit { module: &module, info: &info, ep, needs: self.needs };
        let out = catch_unwind(AssertUnwindSafe(|| match backend {
            Backend::Metal => msl::write(&unit),
            Backend::Dx12 => hlsl::write(&unit),
            Backend::Vulkan => spv::write(&unit),
        }));
        match out {
            Ok(r) => r,
            Err(panic) => Err(format!(
                "back end panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        }
    }
}

/// One entry point of a validated module, as a back end receives it.
pub struct Unit<'a> {
    /// The module, reduced to the entry point.
    pub module: &'a Module,
    /// Its validation info.
    pub info: &'a ModuleInfo,
    /// Index of the entry point in `module.entry_points`.
    pub ep: usize,
    /// Features the device has.
    pub needs: Needs,
}

/// What one resource of the derived bind group layout is, for slot and register assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A uniform buffer.
    Uniform,
    /// A storage buffer, read-only or read-write.
    Storage {
        /// The shader may write it.
        writable: bool,
    },
    /// A sampled texture.
    Texture,
    /// A storage texture.
    StorageTexture,
}

impl Unit<'_> {
    /// The entry point's name.
    pub fn entry(&self) -> &str {
        &self.module.entry_points[self.ep].name
    }

    /// The bindings the entry point uses, in binding order: what wgpu's derived layout holds.
    /// Kernels bind buffers and textures only; anything else is reported, not guessed at.
    pub fn bindings(&self) -> Result<Vec<(naga::ResourceBinding, Resource)>, String> {
        let ep_info = self.info.get_entry_point(self.ep);
        let mut out = Vec::new();
        for (h, var) in self.module.global_variables.iter() {
            let Some(binding) = var.binding.filter(|_| !ep_info[h].is_empty()) else { continue };
            let resource = match (var.space, &self.module.types[var.ty].inner) {
                (naga::AddressSpace::Uniform, _) => Resource::Uniform,
                (naga::AddressSpace::Storage { access }, _) => Resource::Storage { writable: access.contains(naga::StorageAccess::STORE) },
                (_, naga::TypeInner::Image { class: naga::ImageClass::Storage { .. }, .. }) => Resource::StorageTexture,
                (_, naga::TypeInner::Image { .. }) => Resource::Texture,
                (space, ty) => return Err(format!("binding {binding:?}: {space:?} {ty:?} is not modelled by this test")),
            };
            out.push((binding, resource));
        }
        out.sort_by_key(|(b, _)| (b.group, b.binding));
        Ok(out)
    }
}
