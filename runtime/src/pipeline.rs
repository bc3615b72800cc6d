//! Compiled compute pipelines, cached by (family, entry point, defines) and persisted with the
//! driver's pipeline cache where the backend supports it (Vulkan).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::caps::Capabilities;
use crate::error::{KestrelError, Result};
use crate::output::PendingFile;
use crate::shader::{self, Defines};

/// A compiled kernel: the pipeline and its bind-group layout.
#[derive(Debug)]
pub struct Kernel {
    /// The wgpu pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Layout of bind group 0 (derived from the shader).
    pub layout: wgpu::BindGroupLayout,
    /// `family:entry[defines]`, for labels and profiles.
    pub name: String,
}

/// Identifies one kernel variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    /// Kernel family (file in `shaders/`).
    pub family: &'static str,
    /// Entry point.
    pub entry: &'static str,
    /// Preprocessor defines.
    pub defines: Defines,
}

/// Cache of compiled kernels.
pub struct PipelineCache {
    kernels: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
    driver_cache: Option<wgpu::PipelineCache>,
    cache_file: Option<PathBuf>,
    /// Flags set in every kernel's defines (kernel tests: [`crate::SubgroupLayoutTest`]).
    extra: Vec<&'static str>,
}

impl PipelineCache {
    pub(crate) fn new(device: &wgpu::Device, caps: &Capabilities, cache_file: Option<PathBuf>, extra: Vec<&'static str>) -> Self {
        let driver_cache = if caps.pipeline_cache {
            let data = cache_file.as_ref().and_then(|p| std::fs::read(p).ok());
            // SAFETY: the data was written by `PipelineCache::get_data` for an adapter with the
            // same cache key (the file name is `pipeline_cache_key(adapter_info)`); with
            // `fallback: true` the driver validates the header and ignores data it rejects.
            Some(unsafe {
                device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("kestrel"),
                    data: data.as_deref(),
                    fallback: true,
                })
            })
        } else {
            None
        };
        PipelineCache { kernels: Mutex::new(HashMap::new()), driver_cache, cache_file, extra }
    }

    /// Returns the kernel for `key`, compiling it on first use.
    pub fn get(&self, device: &wgpu::Device, key: &KernelKey) -> Result<Arc<Kernel>> {
        if let Some(k) = self.lock().get(key) {
            return Ok(k.clone());
        }
        let kernel = Arc::new(self.compile(device, key)?);
        self.lock().insert(key.clone(), kernel.clone());
        Ok(kernel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KernelKey, Arc<Kernel>>> {
        match self.kernels.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Number of kernels compiled so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no kernel was compiled yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn compile(&self, device: &wgpu::Device, key: &KernelKey) -> Result<Kernel> {
        let src = shader::source(key.family)?;
        let defines = self.extra.iter().fold(key.defines.clone(), |d, name| d.flag(name, true));
        let wgsl = shader::preprocess(key.family, &src, &defines)?;
        let name = format!("{}:{}[{}]", key.family, key.entry, key.defines.key());
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module =
            device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(&name), source: wgpu::ShaderSource::Wgsl(wgsl.into()) });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&name),
            layout: None,
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &[], zero_initialize_workgroup_memory: false },
            cache: self.driver_cache.as_ref(),
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(KestrelError::Shader { family: key.family.to_string(), variant: key.defines.key(), message: e.to_string() });
        }
        let layout = pipeline.get_bind_group_layout(0);
        Ok(Kernel { pipeline, layout, name })
    }

    /// Writes the driver cache to disk (no-op where unsupported).
    pub fn save(&self) {
        let (Some(cache), Some(path)) = (&self.driver_cache, &self.cache_file) else { return };
        let Some(data) = cache.get_data() else { return };
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            log::warn!("pipeline cache: cannot create {}: {e}", dir.display());
            return;
        }
        // A fresh temporary file renamed into place: a crash never leaves a torn cache file,
        // and no existing path other than the cache file itself is written.
        let written = PendingFile::create(path).map_err(|e| e.to_string()).and_then(|mut f| {
            f.file().write_all(&data).map_err(|e| format!("cannot write: {e}"))?;
            f.commit().map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            log::warn!("pipeline cache {}: {e}", path.display());
        }
    }

    /// Where the driver cache is persisted, if anywhere.
    pub fn cache_file(&self) -> Option<&std::path::Path> {
        self.driver_cache.as_ref().and(self.cache_file.as_deref())
    }
}
