//! The GPU context: adapter choice, device creation, and the shared caches.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::caps::Capabilities;
use crate::error::{KestrelError, Result};
use crate::memory::MemoryMeter;
use crate::pipeline::PipelineCache;
use crate::pool::BufferPool;

/// How to choose and configure the device.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Backends to search; `None`: all.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring of the adapter name; `None` (or empty): the best adapter.
    pub adapter_filter: Option<String>,
    /// Pretend the device has no `SHADER_F16` (tests the packed-u32 fallback).
    pub disable_f16: bool,
    /// Pretend the device has no subgroups (tests the workgroup-reduction fallback).
    pub disable_subgroups: bool,
    /// Pretend the device has no timestamps inside compute passes, as on Apple GPUs (the
    /// profiler then times one compute pass per dispatch).
    pub disable_timestamps_inside_passes: bool,
    /// Pretend the device has no timestamps at all (the profiler then reports CPU wall time).
    pub disable_timestamps: bool,
    /// Select the kernels meant for real GPUs even on a CPU adapter (tests them on lavapipe).
    pub gpu_kernels: bool,
    /// Use a smaller storage-binding limit than the device's (tests tensor chunking cheaply).
    pub max_binding_override: Option<u64>,
    /// Use a smaller largest-buffer limit than the device's, as on many phones (tests the paths
    /// that avoid one big buffer); the binding limit shrinks with it.
    pub max_buffer_override: Option<u64>,
    /// Store quantised weights in textures (`Some(true)`) or storage buffers (`Some(false)`);
    /// `None`: textures exactly when the CPU kernel set runs (see
    /// [`Capabilities::texture_weights`]).
    pub weight_textures: Option<bool>,
    /// Where the driver pipeline cache is persisted; `None`: nowhere (pipelines are compiled
    /// once per process). [`ContextOptions::from_env`] fills it for the CLI.
    pub cache_dir: Option<PathBuf>,
    /// Kernel tests only: make the kernels behave as on a device with another subgroup layout
    /// (see [`SubgroupLayoutTest`]).
    pub subgroup_layout_test: Option<SubgroupLayoutTest>,
}

/// Subgroup layouts a kernel test can imitate on any device, through a define that every
/// kernel is compiled with. The subgroup reductions must be correct under each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubgroupLayoutTest {
    /// `PERMUTE_LID`: kernels that read their local invocation index through
    /// `shaders/include/subgroup_ids.wgsl` see it bit-reversed within the workgroup, which is
    /// what a device whose subgroups are not contiguous blocks of local indices looks like
    /// (the Vulkan spec relates the two in no way): a reduction that takes `lid / sg_size` for
    /// a subgroup's id or `lid % LANES` for a lane then sums the wrong invocations.
    PermutedLocalIndex,
    /// `UNTILED`: the subgroup reductions take their path for subgroups that do not tile the
    /// workgroup (partial subgroups, or subgroups wider than a GEMV row group), which no known
    /// device takes.
    Untiled,
}

impl SubgroupLayoutTest {
    /// The define this layout is imitated with.
    pub fn define(self) -> &'static str {
        match self {
            SubgroupLayoutTest::PermutedLocalIndex => "PERMUTE_LID",
            SubgroupLayoutTest::Untiled => "UNTILED",
        }
    }
}

impl ContextOptions {
    /// Options from the environment, for the CLI and tests (the library itself reads no
    /// environment variable: [`ContextOptions::default`] and every other constructor take only
    /// what they are given): `WGPU_BACKEND` (e.g. `vulkan`, `gl`), `KESTREL_ADAPTER`,
    /// `KESTREL_NO_F16=1` / `KESTREL_NO_SUBGROUPS=1` to force the fallback kernels,
    /// `KESTREL_NO_TIMESTAMPS_INSIDE_PASSES=1` / `KESTREL_NO_TIMESTAMPS=1` to force the
    /// profiler's fallbacks, `KESTREL_GPU_KERNELS=1` to use the GPU kernels on a CPU adapter,
    /// `KESTREL_WEIGHT_TEXTURES=1|0` for the weight storage, and the pipeline cache in
    /// `KESTREL_CACHE_DIR`, else `$XDG_CACHE_HOME/kestrel`, else `$HOME/.cache/kestrel`.
    pub fn from_env() -> Self {
        let flag = |name: &str| std::env::var(name).map(|v| v == "1" || v.eq_ignore_ascii_case("true")).unwrap_or(false);
        ContextOptions {
            backends: wgpu::Backends::from_env(),
            adapter_filter: std::env::var("KESTREL_ADAPTER").ok(),
            disable_f16: flag("KESTREL_NO_F16"),
            disable_subgroups: flag("KESTREL_NO_SUBGROUPS"),
            disable_timestamps_inside_passes: flag("KESTREL_NO_TIMESTAMPS_INSIDE_PASSES"),
            disable_timestamps: flag("KESTREL_NO_TIMESTAMPS"),
            gpu_kernels: flag("KESTREL_GPU_KERNELS"),
            weight_textures: match std::env::var("KESTREL_WEIGHT_TEXTURES").as_deref() {
                Ok("1" | "true") => Some(true),
                Ok("0" | "false") => Some(false),
                _ => None,
            },
            cache_dir: cache_dir_from_env(
                std::env::var_os("KESTREL_CACHE_DIR"),
                std::env::var_os("XDG_CACHE_HOME"),
                std::env::var_os("HOME"),
            ),
            ..Default::default()
        }
    }

    fn resolved_backends(&self) -> wgpu::Backends {
        self.backends.unwrap_or(wgpu::Backends::all())
    }

    fn resolved_filter(&self) -> Option<String> {
        self.adapter_filter.clone().filter(|s| !s.is_empty())
    }
}

/// The pipeline cache directory from the values of `KESTREL_CACHE_DIR`, `XDG_CACHE_HOME` and
/// `HOME`, first usable one wins. An empty value counts as unset (the XDG convention), and so
/// does a relative `XDG_CACHE_HOME` or `HOME` (the XDG base-directory spec calls those
/// invalid): neither may put the cache in the current directory.
fn cache_dir_from_env(kestrel: Option<OsString>, xdg: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(kestrel) {
        return Some(dir);
    }
    let absolute = |v: Option<OsString>| set(v).filter(|p| p.is_absolute());
    if let Some(dir) = absolute(xdg) {
        return Some(dir.join("kestrel"));
    }
    absolute(home).map(|h| h.join(".cache").join("kestrel"))
}

/// A description of one adapter, as reported by the driver.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterSummary {
    /// Adapter name (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Backend (`vulkan`, `gl`, `metal`, `dx12`).
    pub backend: String,
    /// Device type (`DiscreteGpu`, `IntegratedGpu`, `Cpu`, …).
    pub device_type: String,
    /// Driver name.
    pub driver: String,
    /// Driver version / description.
    pub driver_info: String,
    /// PCI vendor id.
    pub vendor: u32,
    /// PCI device id.
    pub device: u32,
}

impl AdapterSummary {
    fn from_info(info: &wgpu::AdapterInfo) -> Self {
        AdapterSummary {
            name: info.name.clone(),
            backend: info.backend.to_str().to_string(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            vendor: info.vendor,
            device: info.device,
        }
    }
}

/// Lists every adapter on the given backends (`None`: those of [`ContextOptions::from_env`],
/// i.e. `WGPU_BACKEND`, else all; `kestrel info` lists what the other commands choose from).
pub fn list_adapters(backends: Option<wgpu::Backends>) -> Vec<AdapterSummary> {
    let backends = backends.or_else(wgpu::Backends::from_env).unwrap_or(wgpu::Backends::all());
    let instance = make_instance(backends);
    pollster::block_on(instance.enumerate_adapters(backends)).iter().map(|a| AdapterSummary::from_info(&a.get_info())).collect()
}

fn make_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    desc.flags = wgpu::InstanceFlags::default().with_env();
    wgpu::Instance::new(desc)
}

/// Preference order: real GPUs first, then native backends before GL.
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (ty, backend)
}

/// Features Kestrel asks for when the adapter offers them.
fn wanted_features(opts: &ContextOptions, info: &wgpu::AdapterInfo) -> wgpu::Features {
    let mut f = wgpu::Features::PIPELINE_CACHE;
    if !opts.disable_timestamps {
        f |= wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        if !opts.disable_timestamps_inside_passes {
            f |= wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        }
    }
    if !opts.disable_f16 {
        f |= wgpu::Features::SHADER_F16;
    }
    if !opts.disable_subgroups {
        f |= wgpu::Features::SUBGROUP;
    }
    // A CPU adapter's "device memory" is host memory: mappable storage buffers let uploads
    // write tensors in place rather than through a staging buffer and a device copy.
    if info.device_type == wgpu::DeviceType::Cpu {
        f |= wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
    }
    f
}

/// The GPU device and everything shared by all sessions on it.
pub struct Context {
    adapter_info: wgpu::AdapterInfo,
    device: wgpu::Device,
    queue: wgpu::Queue,
    caps: Capabilities,
    limits: wgpu::Limits,
    pipelines: PipelineCache,
    pool: BufferPool,
    memory: Arc<MemoryMeter>,
    gpu_errors: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("adapter", &self.adapter_info.name).field("caps", &self.caps).finish()
    }
}

impl Context {
    /// Chooses an adapter and creates the device, asking for the adapter's own limits.
    pub fn new(opts: &ContextOptions) -> Result<Arc<Context>> {
        let backends = opts.resolved_backends();
        let filter = opts.resolved_filter();
        let instance = make_instance(backends);
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let available = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({})", i.name, i.backend.to_str())
            })
            .collect::<Vec<_>>()
            .join(", ");
        let adapter = adapters
            .into_iter()
            .filter(|a| filter.as_ref().is_none_or(|f| a.get_info().name.to_lowercase().contains(&f.to_lowercase())))
            .min_by_key(|a| adapter_rank(&a.get_info()))
            .ok_or_else(|| KestrelError::NoAdapter {
                backends: format!("{backends:?}"),
                filter: filter.clone(),
                available: if available.is_empty() { "none".into() } else { available },
            })?;
        let adapter_info = adapter.get_info();
        let features = adapter.features() & wanted_features(opts, &adapter_info);
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kestrel"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| KestrelError::RequestDevice(e.to_string()))?;

        let gpu_errors = Arc::new(Mutex::new(Vec::new()));
        let sink = gpu_errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("wgpu: {e}");
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));

        let mut caps = Capabilities::new(device.features(), &device.limits(), &adapter_info);
        if opts.gpu_kernels {
            caps.cpu = false;
        }
        caps.texture_weights = opts.weight_textures.unwrap_or(caps.cpu);
        if let Some(over) = opts.max_buffer_override {
            caps.max_buffer_size = caps.max_buffer_size.min(over.max(caps.storage_offset_alignment as u64 * 4));
            caps.max_storage_binding = caps.max_storage_binding.min(caps.max_buffer_size);
        }
        if let Some(over) = opts.max_binding_override {
            caps.max_storage_binding = caps.max_storage_binding.min(over.max(caps.storage_offset_alignment as u64 * 4));
        }
        let cache_file = opts.cache_dir.clone().and_then(|dir| wgpu::util::pipeline_cache_key(&adapter_info).map(|key| dir.join(key)));
        let extra = opts.subgroup_layout_test.map(|t| vec![t.define()]).unwrap_or_default();
        let pipelines = PipelineCache::new(&device, &caps, cache_file, extra);
        log::info!(
            "kestrel: adapter {} ({}, {:?}), f16={} subgroups={} timestamps={}",
            adapter_info.name,
            adapter_info.backend.to_str(),
            adapter_info.device_type,
            caps.f16,
            caps.subgroups,
            caps.timestamp
        );
        let memory = Arc::new(MemoryMeter::default());
        Ok(Arc::new(Context {
            adapter_info,
            device,
            queue,
            caps,
            limits,
            pipelines,
            pool: BufferPool::new(features.contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS), memory.clone()),
            memory,
            gpu_errors,
        }))
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Effective capabilities (after any forced fallbacks).
    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// The device limits as granted (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Names of the device features that were granted (e.g. `SHADER_F16`, `SUBGROUP`).
    pub fn feature_names(&self) -> Vec<String> {
        self.device.features().iter_names().map(|(name, _)| name.to_string()).collect()
    }

    /// The chosen adapter.
    pub fn adapter(&self) -> AdapterSummary {
        AdapterSummary::from_info(&self.adapter_info)
    }

    /// The pipeline cache.
    pub fn pipelines(&self) -> &PipelineCache {
        &self.pipelines
    }

    /// The buffer pool.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// GPU memory Kestrel holds on this device: pooled buffers and weight textures.
    pub fn memory(&self) -> &Arc<MemoryMeter> {
        &self.memory
    }

    /// The most GPU memory (buffers + textures) held at once since the context was made or the
    /// peak was last reset ([`MemoryMeter::reset_peak`]).
    pub fn peak_gpu_bytes(&self) -> u64 {
        self.memory.peak()
    }

    /// Frees every pooled buffer no tensor is using (call it on a memory warning). Weights and
    /// live tensors are kept; later passes allocate their intermediates afresh.
    pub fn trim(&self) {
        self.pool.trim();
    }

    /// Persists the driver pipeline cache (where supported) so the next run compiles faster.
    pub fn save_pipeline_cache(&self) {
        self.pipelines.save();
    }

    /// Blocks until all submitted work is done, then reports any GPU error raised meanwhile.
    pub fn sync(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| KestrelError::Gpu(e.to_string()))?;
        self.take_gpu_error()
    }

    /// Returns the first GPU error recorded since the last call, if any.
    pub fn take_gpu_error(&self) -> Result<()> {
        let mut errs = match self.gpu_errors.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if errs.is_empty() {
            return Ok(());
        }
        let msg = errs.join("; ");
        errs.clear();
        Err(KestrelError::Gpu(msg))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        self.pipelines.save();
    }
}

#[cfg(test)]
mod tests {
    use super::cache_dir_from_env;
    use std::ffi::OsString;
    use std::path::PathBuf;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn empty_or_relative_cache_variables_count_as_unset() {
        let home = Some(PathBuf::from("/home/u/.cache/kestrel"));
        assert_eq!(cache_dir_from_env(os(""), os(""), os("/home/u")), home);
        assert_eq!(cache_dir_from_env(None, os("rel"), os("/home/u")), home);
        assert_eq!(cache_dir_from_env(os(""), os(""), os("")), None);
        assert_eq!(cache_dir_from_env(None, None, os("relative")), None);
        assert_eq!(cache_dir_from_env(None, os("/x"), os("/home/u")), Some(PathBuf::from("/x/kestrel")));
        assert_eq!(cache_dir_from_env(os("k"), os("/x"), None), Some(PathBuf::from("k")));
    }
}
