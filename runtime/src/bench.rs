//! Kernel micro-benchmarks: warm-up, then the median of synchronised runs. Every record is
//! measured in the same process on the same adapter, so ratios between records are meaningful
//! even on a noisy machine.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::context::Context;
use crate::dtype::DType;
use crate::error::Result;
use crate::exec::Recorder;
use crate::ops::copy::copy;
use crate::ops::gemv::{self, GemvVariant};
use crate::ops::matmul::{MatmulOptions, matmul, matmul_baseline};
use crate::ops::qmatmul::{qgemv, qmatmul};
use crate::quant::{QuantScheme, QuantTensor};
use crate::tensor::Tensor;

/// One benchmark result (one JSON line of `kestrel bench --json`).
#[derive(Clone, Debug, Serialize)]
pub struct BenchRecord {
    /// `matmul`, `matmul_baseline`, `gemv` or `copy`.
    pub op: &'static str,
    /// Storage type of the operands (`f32`, `f16`), or the weight quantisation scheme of a
    /// quantised product (`w8`, `w4`, `q4_0`, `q4_1`, `q8_0`; activations f32).
    pub dtype: &'static str,
    /// Kernel variant where an op has several (`rows`, `subgroup`, `workgroup`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'static str>,
    /// Rows of A (1 for GEMV; elements for copy).
    pub m: usize,
    /// Columns of B.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Median milliseconds per op.
    pub ms_median: f64,
    /// Achieved GFLOP/s (0 for copy).
    pub gflops: f64,
    /// Achieved GB/s: matmul counts A+B+C, GEMV the weight bytes (quantised: values and
    /// scales), copy bytes read + written.
    pub gbps: f64,
    /// Adapter the record was measured on.
    pub adapter: String,
}

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Only ops whose name equals this.
    pub op: Option<String>,
    /// Timed runs per case (at least 5).
    pub runs: usize,
    /// Scale the case list down for a quick check (smaller shapes only).
    pub quick: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { op: None, runs: 7, quick: false }
    }
}

/// Names the benchmark knows.
pub const OPS: &[&str] = &["copy", "gemv", "matmul", "matmul_baseline"];

struct Case {
    op: &'static str,
    dtype: DType,
    /// Quantised weights (B of matmul, W of GEMV) instead of `dtype` ones.
    quant: Option<QuantScheme>,
    variant: Option<GemvVariant>,
    m: usize,
    n: usize,
    k: usize,
}

fn cases(ctx: &Context, quick: bool) -> Vec<Case> {
    let cubes: &[usize] = if quick { &[256] } else { &[256, 512, 1024] };
    let mut v = Vec::new();
    for &s in cubes {
        for dtype in [DType::F32, DType::F16] {
            v.push(Case { op: "matmul", dtype, quant: None, variant: None, m: s, n: s, k: s });
        }
        if s == 512 {
            for quant in [QuantScheme::W8, QuantScheme::W4] {
                v.push(Case { op: "matmul", dtype: DType::F32, quant: Some(quant), variant: None, m: s, n: s, k: s });
            }
        }
        v.push(Case { op: "matmul_baseline", dtype: DType::F32, quant: None, variant: None, m: s, n: s, k: s });
    }
    let mut gemv_variants = vec![GemvVariant::Workgroup];
    if gemv::subgroup_ok(ctx.caps()) {
        gemv_variants.insert(0, GemvVariant::Subgroup);
    }
    if ctx.caps().cpu {
        gemv_variants.insert(0, GemvVariant::Rows);
    }
    for &(n, k) in &[(2048usize, 2048usize), (1536, 576)] {
        for dtype in [DType::F32, DType::F16] {
            for &variant in &gemv_variants {
                v.push(Case { op: "gemv", dtype, quant: None, variant: Some(variant), m: 1, n, k });
            }
        }
        for quant in [QuantScheme::W8, QuantScheme::W4, QuantScheme::Q4_0, QuantScheme::Q4_1, QuantScheme::Q8_0] {
            for &variant in &gemv_variants {
                v.push(Case { op: "gemv", dtype: DType::F32, quant: Some(quant), variant: Some(variant), m: 1, n, k });
            }
        }
    }
    // The SmolLM2-135M tied head ([49152, 576] Q8_0), the largest GEMV of its decode step.
    if !quick {
        for &variant in &gemv_variants {
            v.push(Case { op: "gemv", dtype: DType::F32, quant: Some(QuantScheme::Q8_0), variant: Some(variant), m: 1, n: 49152, k: 576 });
        }
    }
    // Same bytes as the f32 2048×2048 GEMV weight.
    v.push(Case { op: "copy", dtype: DType::F32, quant: None, variant: None, m: 2048 * 2048, n: 1, k: 1 });
    v
}

/// Runs the benchmarks, calling `sink` with each record as soon as it is measured.
pub fn run(ctx: &Arc<Context>, opts: &BenchOptions, mut sink: impl FnMut(&BenchRecord)) -> Result<Vec<BenchRecord>> {
    let mut out = Vec::new();
    for case in cases(ctx, opts.quick) {
        if opts.op.as_deref().is_some_and(|o| o != case.op) {
            continue;
        }
        let rec = run_case(ctx, &case, opts.runs.max(5))?;
        sink(&rec);
        out.push(rec);
    }
    Ok(out)
}

fn seeded(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0).collect()
}

/// Records one launch of the benchmarked op on a recorder.
type Launch = Box<dyn Fn(&mut Recorder) -> Result<Tensor>>;

fn run_case(ctx: &Arc<Context>, c: &Case, runs: usize) -> Result<BenchRecord> {
    let (m, n, k) = (c.m, c.n, c.k);
    // Inputs uploaded once; each timed run records `reps` launches into one submission.
    // Bytes of the weight operand (B of matmul, W of GEMV).
    let mut weight_bytes = (k * n * c.dtype.size()) as f64;
    let record: Launch = match (c.op, c.quant) {
        ("matmul", Some(q)) => {
            let a = Tensor::from_f32(ctx, &[m, k], &seeded(m * k, 1))?;
            let w = QuantTensor::quantize(ctx, q, &seeded(n * k, 2), &[n, k])?;
            weight_bytes = w.byte_size() as f64;
            Box::new(move |r| qmatmul(r, &a, &w, None))
        }
        ("gemv", Some(q)) => {
            let x = Tensor::from_f32(ctx, &[1, k], &seeded(k, 1))?;
            let w = QuantTensor::quantize(ctx, q, &seeded(n * k, 2), &[n, k])?;
            weight_bytes = w.byte_size() as f64;
            let variant = c.variant.unwrap_or(GemvVariant::Auto);
            Box::new(move |r| qgemv(r, &x, &w, None, variant))
        }
        ("matmul", None) => {
            let a = Tensor::from_f32_as(ctx, &[m, k], &seeded(m * k, 1), c.dtype)?;
            let b = Tensor::from_f32_as(ctx, &[k, n], &seeded(k * n, 2), c.dtype)?;
            Box::new(move |r| matmul(r, &a, &b, &MatmulOptions::default()))
        }
        ("matmul_baseline", _) => {
            let a = Tensor::from_f32(ctx, &[m, k], &seeded(m * k, 1))?;
            let b = Tensor::from_f32(ctx, &[k, n], &seeded(k * n, 2))?;
            Box::new(move |r| matmul_baseline(r, &a, &b))
        }
        ("gemv", None) => {
            let x = Tensor::from_f32(ctx, &[1, k], &seeded(k, 1))?;
            let w = Tensor::from_f32_as(ctx, &[n, k], &seeded(n * k, 2), c.dtype)?;
            let variant = c.variant.unwrap_or(GemvVariant::Auto);
            Box::new(move |r| gemv::gemv(r, &x, &w, None, variant))
        }
        _ => {
            let x = Tensor::from_f32(ctx, &[m], &seeded(m, 1))?;
            Box::new(move |r| copy(r, &x))
        }
    };
    // Warm-up: compiles the pipeline and sizes the repetition count to ~30 ms per run.
    let time_reps = |reps: usize| -> Result<f64> {
        let mut rec = Recorder::new(ctx);
        let mut keep = Vec::with_capacity(reps);
        for _ in 0..reps {
            keep.push(record(&mut rec)?);
        }
        let t = Instant::now();
        rec.finish()?;
        Ok(t.elapsed().as_secs_f64() * 1e3 / reps as f64)
    };
    time_reps(1)?;
    let once = time_reps(1)?;
    let reps = ((30.0 / once.max(1e-3)).ceil() as usize).clamp(1, 64);
    let mut samples = (0..runs).map(|_| time_reps(reps)).collect::<Result<Vec<f64>>>()?;
    samples.sort_by(f64::total_cmp);
    let ms = samples[samples.len() / 2];
    let es = c.dtype.size() as f64;
    let (flops, bytes) = match c.op {
        "gemv" => (2.0 * (n * k) as f64, weight_bytes),
        "copy" => (0.0, 2.0 * (m * 4) as f64),
        _ => (2.0 * (m * n * k) as f64, (m * k) as f64 * es + weight_bytes + (m * n * 4) as f64),
    };
    Ok(BenchRecord {
        op: c.op,
        dtype: c.quant.map_or(c.dtype.name(), QuantScheme::name),
        variant: c.variant.map(|v| match v {
            GemvVariant::Subgroup => "subgroup",
            GemvVariant::Workgroup => "workgroup",
            GemvVariant::Auto => "auto",
            GemvVariant::Rows => "rows",
        }),
        m,
        n,
        k,
        ms_median: ms,
        gflops: flops / (ms * 1e6),
        gbps: bytes / (ms * 1e6),
        adapter: ctx.adapter().name,
    })
}
