//! The on-device latency profiler for apps: end-to-end latency percentiles, a per-op table
//! from GPU timestamps, peak GPU memory and a Chrome/Perfetto trace — what `kestrel profile
//! --json` prints, for a model an app has loaded.

use std::sync::Arc;

use kestrel::profile::{OpRow, chrome_trace, op_table};
use kestrel::{Context, Profile, TimingSource};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What to profile. The JSON form (`kestrel_model_profile`) uses the same names.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileRequest {
    /// Timed end-to-end runs after one warm-up (at least 1); at most 3 further runs are
    /// timed dispatch by dispatch for the op table.
    pub iters: usize,
    /// Include the Chrome trace events of one profiled run.
    pub trace: bool,
}

impl Default for ProfileRequest {
    /// 5 iterations, with the trace.
    fn default() -> Self {
        ProfileRequest { iters: 5, trace: true }
    }
}

impl ProfileRequest {
    /// Parses the JSON form; `None` or `""` give the defaults. Errors: malformed JSON, an
    /// unknown key or a wrongly typed value ([`crate::ModelError::Input`]).
    pub fn from_json(json: Option<&str>) -> Result<ProfileRequest> {
        super::runtime::parse_json(json, "profile request")
    }
}

/// End-to-end latency percentiles, milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
}

/// One model's profile (serialises to the keys of `kestrel profile --json`, plus `trace`).
#[derive(Clone, Debug, Serialize)]
pub struct ProfileReport {
    /// What ran: the SLAB architecture, or `decode step` for a text generator.
    pub model: String,
    /// The adapter's name.
    pub adapter: String,
    /// The backend (`vulkan`, `metal`, …).
    pub backend: String,
    /// Timed runs.
    pub iters: usize,
    /// Dispatches per run.
    pub dispatches: usize,
    /// GFLOP per run.
    pub gflop: f64,
    /// Wall-clock latency of one run (submission to readback).
    pub latency_ms: Latency,
    /// GPU time of one run (sum of its dispatches), when the device can time them.
    pub gpu_ms: f64,
    /// How the per-dispatch times were measured (`None`: no profiled run).
    pub timing: Option<TimingSource>,
    /// Most GPU memory the context held since the model was opened (weights, caches and the
    /// largest live set; every model of the context counts).
    pub peak_gpu_bytes: u64,
    /// The per-op table, largest total first.
    pub ops: Vec<OpRow>,
    /// Chrome/Perfetto trace events of one profiled run (open in ui.perfetto.dev), when asked.
    pub trace: Option<serde_json::Value>,
}

/// Runs `run(profiled)` once to warm up, `iters` times for latency (unprofiled) and up to 3
/// times profiled, calling `cancelled` between runs; builds the report.
pub(crate) fn measure(
    ctx: &Arc<Context>,
    model: String,
    req: &ProfileRequest,
    mut run: impl FnMut(bool) -> Result<Option<Profile>>,
    cancelled: &dyn Fn() -> Result<()>,
) -> Result<ProfileReport> {
    let iters = req.iters.max(1);
    run(false)?;
    let mut latencies = Vec::with_capacity(iters);
    for _ in 0..iters {
        cancelled()?;
        let start = std::time::Instant::now();
        run(false)?;
        latencies.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let mut profiles = Vec::new();
    for _ in 0..iters.min(3) {
        cancelled()?;
        profiles.extend(run(true)?);
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let first = profiles.first();
    let gpu_ms = profiles.iter().filter_map(Profile::gpu_total_ns).map(|v| v as f64 / 1e6).sum::<f64>() / profiles.len().max(1) as f64;
    let adapter = ctx.adapter();
    Ok(ProfileReport {
        model,
        adapter: adapter.name,
        backend: adapter.backend,
        iters,
        dispatches: first.map_or(0, |p| p.dispatches.len()),
        gflop: first.map_or(0, |p| p.dispatches.iter().map(|d| d.flops).sum::<u64>()) as f64 / 1e9,
        latency_ms: Latency { p50: pick(0.5), p90: pick(0.9) },
        gpu_ms,
        timing: first.map(|p| p.source),
        peak_gpu_bytes: ctx.peak_gpu_bytes(),
        ops: op_table(&profiles),
        trace: if req.trace { first.map(chrome_trace) } else { None },
    })
}
