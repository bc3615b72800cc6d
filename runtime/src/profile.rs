//! Per-dispatch timing data, the raw material of the latency profiler.

use serde::Serialize;

use crate::caps::Capabilities;

/// Where the timings came from: how a profiled pass is recorded, chosen by the device's
/// timestamp capabilities ([`TimingSource::for_caps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingSource {
    /// GPU timestamps written inside the pass's one compute pass, before and after every
    /// dispatch (`TIMESTAMP_QUERY_INSIDE_PASSES`): the work is encoded as it is unprofiled.
    GpuTimestampsInPass,
    /// GPU timestamps at compute-pass boundaries, with one compute pass per dispatch
    /// (`TIMESTAMP_QUERY` only — Apple GPUs, for one, cannot sample inside a compute pass).
    GpuTimestampsPerPass,
    /// The device has no timestamps: only the whole pass's CPU wall time is known.
    CpuWall,
}

impl TimingSource {
    /// The best timing a device with these capabilities offers.
    pub fn for_caps(caps: &Capabilities) -> TimingSource {
        match (caps.timestamp, caps.timestamp_inside_passes) {
            (true, true) => TimingSource::GpuTimestampsInPass,
            (true, false) => TimingSource::GpuTimestampsPerPass,
            (false, _) => TimingSource::CpuWall,
        }
    }
}

/// The timing of one dispatch.
#[derive(Clone, Debug, Serialize)]
pub struct DispatchTiming {
    /// Op name (e.g. `matmul`).
    pub op: &'static str,
    /// Kernel variant that ran.
    pub kernel: String,
    /// Shape summary.
    pub shape: String,
    /// Floating-point operations.
    pub flops: u64,
    /// Bytes read and written.
    pub bytes: u64,
    /// GPU time in nanoseconds; `None` when only wall time is available.
    pub gpu_ns: Option<u64>,
    /// GPU start time in nanoseconds after the pass's first dispatch started; `None` when
    /// only wall time is available.
    pub gpu_start_ns: Option<u64>,
}

/// Timings of one submitted pass.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    /// Every dispatch in recording order.
    pub dispatches: Vec<DispatchTiming>,
    /// CPU wall time from encoding to completion, in nanoseconds.
    pub wall_ns: u64,
    /// How the per-dispatch numbers were measured.
    pub source: TimingSource,
}

impl Profile {
    /// Sum of the per-dispatch GPU times, when measured.
    pub fn gpu_total_ns(&self) -> Option<u64> {
        self.dispatches.iter().map(|d| d.gpu_ns).sum()
    }
}

/// One row of a per-op table: every dispatch of one op at one shape, over all profiled passes.
#[derive(Clone, Debug, Serialize)]
pub struct OpRow {
    /// Op name.
    pub op: &'static str,
    /// Shape summary.
    pub shape: String,
    /// Dispatches per pass.
    pub calls: usize,
    /// GPU milliseconds per pass (mean over passes of the summed dispatch times).
    pub total_ms: f64,
    /// GPU milliseconds per dispatch.
    pub mean_ms: f64,
    /// Share of the pass's summed GPU time, 0..1.
    pub share: f64,
    /// Achieved GFLOP/s (0 for ops without arithmetic).
    pub gflops: f64,
}

/// Aggregates passes of the same recorded graph (same dispatches in the same order) into a
/// per-op table sorted by total time, largest first. Dispatches without GPU times count as 0.
pub fn op_table(passes: &[Profile]) -> Vec<OpRow> {
    let Some(first) = passes.first() else {
        return Vec::new();
    };
    let mut rows: Vec<OpRow> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut ns: Vec<f64> = Vec::new();
    let mut flops: Vec<u64> = Vec::new();
    for (i, d) in first.dispatches.iter().enumerate() {
        let key = (d.op, d.shape.clone());
        let r = *index.entry(key).or_insert_with(|| {
            rows.push(OpRow { op: d.op, shape: d.shape.clone(), calls: 0, total_ms: 0.0, mean_ms: 0.0, share: 0.0, gflops: 0.0 });
            ns.push(0.0);
            flops.push(0);
            rows.len() - 1
        });
        rows[r].calls += 1;
        flops[r] += d.flops;
        for p in passes {
            ns[r] += p.dispatches.get(i).and_then(|d| d.gpu_ns).unwrap_or(0) as f64;
        }
    }
    let n = passes.len() as f64;
    let total: f64 = ns.iter().sum::<f64>() / n;
    for (r, row) in rows.iter_mut().enumerate() {
        let per_pass = ns[r] / n;
        row.total_ms = per_pass / 1e6;
        row.mean_ms = row.total_ms / row.calls as f64;
        row.share = if total > 0.0 { per_pass / total } else { 0.0 };
        row.gflops = if per_pass > 0.0 { flops[r] as f64 / per_pass } else { 0.0 };
    }
    rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    rows
}

/// A Chrome / Perfetto trace (the JSON "trace event" format) of one pass: one complete event
/// per dispatch on a "GPU" track, with its op, kernel, shape, FLOPs and bytes as arguments.
/// Without GPU timestamps the dispatches are laid end to end with equal shares of the wall time.
pub fn chrome_trace(p: &Profile) -> serde_json::Value {
    let n = p.dispatches.len().max(1) as u64;
    let events: Vec<serde_json::Value> = p
        .dispatches
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (start, dur) = match (d.gpu_start_ns, d.gpu_ns) {
                (Some(s), Some(t)) => (s, t),
                _ => (p.wall_ns / n * i as u64, p.wall_ns / n),
            };
            serde_json::json!({
                "name": d.op,
                "cat": "gpu",
                "ph": "X",
                "pid": 1,
                "tid": 1,
                "ts": start as f64 / 1e3,
                "dur": dur as f64 / 1e3,
                "args": {"kernel": d.kernel, "shape": d.shape, "flops": d.flops, "bytes": d.bytes},
            })
        })
        .collect();
    serde_json::json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"timing": p.source, "wall_ms": p.wall_ns as f64 / 1e6},
    })
}
