//! Per-dispatch timing data, the raw material of the latency profiler.

use serde::Serialize;

/// Where the timings came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingSource {
    /// GPU timestamp queries around every dispatch.
    GpuTimestamps,
    /// The device has no timestamps: only the whole pass's CPU wall time is known.
    CpuWall,
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
