//! Recording a forward pass: every dispatch goes into one command encoder, submitted once.
//!
//! Ops append [`Dispatch`]es to a [`Recorder`]; nothing touches the GPU queue until
//! [`Recorder::submit`]. Kernel parameters of the whole pass are packed into one uniform buffer.
//! Binding 0 of every kernel is its parameter struct; storage (and texture) bindings follow from 1.
//!
//! **Liveness.** The recorder keeps one reference to every buffer the pass binds. Once no
//! tensor refers to such a buffer any more, its last use in the pass has been recorded, and
//! [`Recorder::output`] hands it to a later op of the same pass as a new output: the pass needs
//! weights plus its largest live set, not the sum of its intermediates. This is safe because the
//! dispatches of one submission run in order with the barriers wgpu inserts between a buffer's
//! read and its next write, and because such a buffer never reaches the context's pool (where a
//! host upload, which runs before the whole submission, could take it) until the pass is
//! submitted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::context::Context;
use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::pipeline::{Kernel, KernelKey};
use crate::pool::{BufferKind, PooledBuffer, size_class};
use crate::profile::{DispatchTiming, Profile, TimingSource};
use crate::shader::Defines;
use crate::tensor::{Tensor, padded_bytes};
use crate::texture::WordTexture;

/// One binding of a kernel: a byte window of a buffer (a storage binding) or a texture.
#[derive(Clone, Debug)]
pub struct Binding {
    resource: Resource,
}

#[derive(Clone, Debug)]
enum Resource {
    Buffer { buf: Arc<PooledBuffer>, offset: u64, size: u64 },
    Texture(Arc<wgpu::TextureView>),
}

impl Binding {
    /// The whole buffer of a tensor.
    pub fn whole(t: &Tensor) -> Binding {
        let size = t.byte_size().div_ceil(16).max(1) * 16;
        Binding { resource: Resource::Buffer { buf: t.pooled().clone(), offset: 0, size: size.min(t.pooled().size()) } }
    }

    /// `size` bytes of a tensor's buffer from byte `offset` (aligned by the caller).
    pub fn window(t: &Tensor, offset: u64, size: u64) -> Binding {
        let size = size.div_ceil(4).max(1) * 4;
        let size = size.min(t.pooled().size().saturating_sub(offset));
        Binding { resource: Resource::Buffer { buf: t.pooled().clone(), offset, size } }
    }

    /// A texture of words (bound as `texture_2d<u32>`).
    pub fn texture(t: &WordTexture) -> Binding {
        Binding { resource: Resource::Texture(t.view().clone()) }
    }
}

/// One kernel launch.
#[derive(Debug)]
pub struct Dispatch {
    /// The compiled kernel.
    pub kernel: Arc<Kernel>,
    /// Storage bindings 1..=n.
    pub bindings: Vec<Binding>,
    /// Bytes of the parameter struct (binding 0).
    pub params: Vec<u8>,
    /// Workgroup counts.
    pub workgroups: [u32; 3],
    /// Op name for profiles (e.g. `matmul`).
    pub op: &'static str,
    /// Human-readable shape summary for profiles.
    pub shape: String,
    /// Floating-point operations done (for GFLOP/s).
    pub flops: u64,
    /// Bytes read and written (for GB/s).
    pub bytes: u64,
}

/// A binding as recorded: the buffer itself (the pass's reference is in [`Recorder::held`]).
enum Bound {
    Buffer { buffer: wgpu::Buffer, offset: u64, size: u64 },
    Texture(Arc<wgpu::TextureView>),
}

struct Recorded {
    /// The dispatch, its `bindings` moved into `bound`.
    dispatch: Dispatch,
    bound: Vec<Bound>,
    param_offset: u64,
    param_size: u64,
}

/// Collects the dispatches of one forward pass.
pub struct Recorder {
    ctx: Arc<Context>,
    cmds: Vec<Recorded>,
    params: Vec<u8>,
    profile: bool,
    /// One reference to every buffer the pass has bound and no later op has taken over.
    held: Vec<Arc<PooledBuffer>>,
    /// Identities (addresses) of the buffers in `held`.
    held_ids: HashSet<usize>,
    /// Buffers of this pass that no tensor uses any more, by size class: outputs of later ops.
    spare: HashMap<u64, Vec<Arc<PooledBuffer>>>,
    /// Outputs served from `spare`.
    reused: usize,
}

/// Splits `groups` workgroups into an `[x, y, 1]` grid within the per-dimension limit.
/// Kernels recover the linear index as `wg.y * num_workgroups.x + wg.x` and bound-check it.
pub fn grid(groups: u64, max_per_dim: u32) -> Result<[u32; 3]> {
    let max = u64::from(max_per_dim.max(1));
    if groups <= max {
        return Ok([groups.max(1) as u32, 1, 1]);
    }
    let y = groups.div_ceil(max);
    if y > max {
        return Err(KestrelError::InvalidArgument { op: "dispatch", detail: format!("{groups} workgroups exceed the grid") });
    }
    Ok([groups.div_ceil(y) as u32, y as u32, 1])
}

impl Recorder {
    /// A recorder without profiling.
    pub fn new(ctx: &Arc<Context>) -> Recorder {
        Recorder {
            ctx: ctx.clone(),
            cmds: Vec::new(),
            params: Vec::new(),
            profile: false,
            held: Vec::new(),
            held_ids: HashSet::new(),
            spare: HashMap::new(),
            reused: 0,
        }
    }

    /// A recorder that times every dispatch: GPU timestamps inside one compute pass, or one
    /// compute pass per dispatch, or only the CPU wall time, as the device's timestamp
    /// capabilities allow ([`TimingSource::for_caps`]).
    pub fn with_profiling(ctx: &Arc<Context>) -> Recorder {
        Recorder { profile: true, ..Recorder::new(ctx) }
    }

    /// The context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Number of dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Outputs of this pass that took over the buffer of an intermediate no longer in use.
    pub fn reused_buffers(&self) -> usize {
        self.reused
    }

    /// A new uninitialised tensor for an op's output: the buffer of an intermediate of this pass
    /// that no tensor refers to any more (see the [module docs](self)), else one from the pool.
    pub fn output(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let class = size_class(padded_bytes(&self.ctx, shape, dtype)?);
        self.retire_unused();
        match self.spare.get_mut(&class).and_then(Vec::pop) {
            Some(buf) => {
                self.reused += 1;
                Ok(Tensor::from_pooled(&self.ctx, shape, dtype, buf))
            }
            None => Tensor::empty(&self.ctx, shape, dtype),
        }
    }

    /// Moves the buffers that only this recorder still refers to into `spare`.
    fn retire_unused(&mut self) {
        let mut i = 0;
        while i < self.held.len() {
            if Arc::strong_count(&self.held[i]) == 1 {
                let buf = self.held.swap_remove(i);
                self.held_ids.remove(&(Arc::as_ptr(&buf) as usize));
                self.spare.entry(buf.size()).or_default().push(buf);
            } else {
                i += 1;
            }
        }
    }

    /// Fetches (compiling once) a kernel variant.
    pub fn kernel(&self, family: &'static str, entry: &'static str, defines: Defines) -> Result<Arc<Kernel>> {
        self.ctx.pipelines().get(self.ctx.device(), &KernelKey { family, entry, defines })
    }

    /// Records one dispatch.
    pub fn dispatch(&mut self, mut d: Dispatch) -> Result<()> {
        let caps = self.ctx.caps();
        for b in &d.bindings {
            let Resource::Buffer { offset, size, .. } = b.resource else { continue };
            if offset % u64::from(caps.storage_offset_alignment) != 0 || size > self.ctx.limits().max_storage_buffer_binding_size {
                return Err(KestrelError::InvalidArgument {
                    op: d.op,
                    detail: format!("binding window offset {offset} size {size} violates device limits"),
                });
            }
        }
        if d.workgroups.iter().any(|&w| w > caps.max_workgroups_per_dim) {
            return Err(KestrelError::InvalidArgument { op: d.op, detail: format!("grid {:?} too large", d.workgroups) });
        }
        let align = u64::from(caps.uniform_offset_alignment.max(16));
        let param_offset = (self.params.len() as u64).div_ceil(align) * align;
        let param_size = (d.params.len() as u64).div_ceil(16).max(1) * 16;
        self.params.resize(param_offset as usize, 0);
        self.params.extend_from_slice(&d.params);
        self.params.resize((param_offset + param_size) as usize, 0);
        let bound = std::mem::take(&mut d.bindings).into_iter().map(|b| self.bind(b)).collect();
        self.cmds.push(Recorded { dispatch: d, bound, param_offset, param_size });
        Ok(())
    }

    /// Keeps the pass's reference to a binding's buffer and returns what the encoder needs.
    fn bind(&mut self, b: Binding) -> Bound {
        match b.resource {
            Resource::Buffer { buf, offset, size } => {
                let buffer = buf.buffer().clone();
                if self.held_ids.insert(Arc::as_ptr(&buf) as usize) {
                    self.held.push(buf);
                }
                Bound::Buffer { buffer, offset, size }
            }
            Resource::Texture(view) => Bound::Texture(view),
        }
    }

    /// Encodes everything into one command encoder and submits it; returns without waiting.
    pub fn submit(self) -> Result<()> {
        self.encode_and_submit().map(|_| ())
    }

    /// Submits and waits; returns the timings when profiling was requested.
    pub fn finish(self) -> Result<Option<Profile>> {
        let profile = self.profile;
        let start = Instant::now();
        let submitted = self.encode_and_submit()?;
        let ctx = submitted.ctx;
        ctx.sync()?;
        let wall_ns = start.elapsed().as_nanos() as u64;
        if !profile {
            return Ok(None);
        }
        let gpu = match submitted.queries {
            Some(q) => Some(q.read(&ctx)?),
            None => None,
        };
        let source = submitted.source;
        let dispatches = submitted
            .meta
            .into_iter()
            .enumerate()
            .map(|(i, d)| DispatchTiming {
                op: d.op,
                kernel: d.kernel_name,
                shape: d.shape,
                flops: d.flops,
                bytes: d.bytes,
                gpu_ns: gpu.as_ref().and_then(|g| g.get(i)).map(|t| t.1),
                gpu_start_ns: gpu.as_ref().and_then(|g| g.get(i)).map(|t| t.0),
            })
            .collect();
        Ok(Some(Profile { dispatches, wall_ns, source }))
    }

    fn encode_and_submit(self) -> Result<Submitted> {
        let ctx = self.ctx.clone();
        let device = ctx.device();
        let mut meta = Vec::with_capacity(self.cmds.len());
        if self.cmds.is_empty() {
            return Ok(Submitted { ctx, meta, queries: None, source: TimingSource::CpuWall });
        }
        let params = ctx.pool().get(device, self.params.len() as u64, BufferKind::Uniform);
        ctx.queue().write_buffer(params.buffer(), 0, &self.params);
        let bind_groups: Vec<wgpu::BindGroup> = self
            .cmds
            .iter()
            .map(|c| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: params.buffer(),
                        offset: c.param_offset,
                        size: wgpu::BufferSize::new(c.param_size),
                    }),
                }];
                for (i, b) in c.bound.iter().enumerate() {
                    let resource = match b {
                        Bound::Buffer { buffer, offset, size } => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer,
                            offset: *offset,
                            size: wgpu::BufferSize::new(*size),
                        }),
                        Bound::Texture(view) => wgpu::BindingResource::TextureView(view),
                    };
                    entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource });
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &c.dispatch.kernel.layout, entries: &entries })
            })
            .collect();

        let source = if self.profile { TimingSource::for_caps(ctx.caps()) } else { TimingSource::CpuWall };
        let queries = (source != TimingSource::CpuWall).then(|| Queries::new(&ctx, self.cmds.len()));
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("kestrel-pass") });
        match &queries {
            Some(q) if source == TimingSource::GpuTimestampsInPass => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("kestrel"), timestamp_writes: None });
                for (i, (c, bg)) in self.cmds.iter().zip(&bind_groups).enumerate() {
                    let (set, idx) = q.slot(i);
                    pass.write_timestamp(set, idx);
                    record(&mut pass, c, bg);
                    pass.write_timestamp(set, idx + 1);
                }
                drop(pass);
                q.resolve(&mut enc);
            }
            Some(q) => {
                for (i, (c, bg)) in self.cmds.iter().zip(&bind_groups).enumerate() {
                    let (set, idx) = q.slot(i);
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(c.dispatch.op),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: set,
                            beginning_of_pass_write_index: Some(idx),
                            end_of_pass_write_index: Some(idx + 1),
                        }),
                    });
                    record(&mut pass, c, bg);
                }
                q.resolve(&mut enc);
            }
            None => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("kestrel"), timestamp_writes: None });
                for (c, bg) in self.cmds.iter().zip(&bind_groups) {
                    record(&mut pass, c, bg);
                }
            }
        }
        ctx.queue().submit([enc.finish()]);
        for c in self.cmds {
            let d = c.dispatch;
            meta.push(Meta { op: d.op, kernel_name: d.kernel.name.clone(), shape: d.shape, flops: d.flops, bytes: d.bytes });
        }
        drop(params);
        Ok(Submitted { ctx, meta, queries, source })
    }
}

/// What remains of a recorder once its pass is submitted: enough to build the profile.
struct Submitted {
    ctx: Arc<Context>,
    meta: Vec<Meta>,
    queries: Option<Queries>,
    source: TimingSource,
}

/// Profile fields of one submitted dispatch.
struct Meta {
    op: &'static str,
    kernel_name: String,
    shape: String,
    flops: u64,
    bytes: u64,
}

fn record(pass: &mut wgpu::ComputePass<'_>, c: &Recorded, bg: &wgpu::BindGroup) {
    pass.set_pipeline(&c.dispatch.kernel.pipeline);
    pass.set_bind_group(0, bg, &[]);
    let [x, y, z] = c.dispatch.workgroups;
    pass.dispatch_workgroups(x, y, z);
}

/// Timestamp query sets for one profiled pass (two queries per dispatch).
struct Queries {
    sets: Vec<wgpu::QuerySet>,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    count: usize,
}

/// Queries per query set (wgpu's maximum is 4096).
const QUERIES_PER_SET: usize = 4096;

impl Queries {
    fn new(ctx: &Context, dispatches: usize) -> Queries {
        let total = dispatches * 2;
        let sets = (0..total.div_ceil(QUERIES_PER_SET))
            .map(|s| {
                let n = (total - s * QUERIES_PER_SET).min(QUERIES_PER_SET);
                ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kestrel-timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: n as u32,
                })
            })
            .collect();
        let bytes = (total * 8) as u64;
        let resolve = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("kestrel-timestamps-resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("kestrel-timestamps-staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Queries { sets, resolve, staging, count: total }
    }

    fn slot(&self, dispatch: usize) -> (&wgpu::QuerySet, u32) {
        let q = dispatch * 2;
        (&self.sets[q / QUERIES_PER_SET], (q % QUERIES_PER_SET) as u32)
    }

    fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        for (s, set) in self.sets.iter().enumerate() {
            let n = (self.count - s * QUERIES_PER_SET).min(QUERIES_PER_SET);
            enc.resolve_query_set(set, 0..n as u32, &self.resolve, (s * QUERIES_PER_SET * 8) as u64);
        }
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, (self.count * 8) as u64);
    }

    /// Reads back per-dispatch (start, duration) in nanoseconds, starts relative to the first
    /// dispatch's start (after the work completed).
    fn read(&self, ctx: &Context) -> Result<Vec<(u64, u64)>> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        ctx.sync()?;
        rx.recv().map_err(|e| KestrelError::Readback(e.to_string()))?.map_err(|e| KestrelError::Readback(e.to_string()))?;
        let view = self.staging.get_mapped_range(..).map_err(|e| KestrelError::Readback(e.to_string()))?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&view);
        drop(view);
        self.staging.unmap();
        let period = f64::from(ctx.queue().get_timestamp_period());
        let origin = ticks.first().copied().unwrap_or(0);
        let ns = |t: u64| (t as f64 * period) as u64;
        Ok(ticks.chunks_exact(2).map(|p| (ns(p[0].saturating_sub(origin)), ns(p[1].saturating_sub(p[0])))).collect())
    }
}
