//! `kestrel profile`: the on-device latency profiler. Runs a real SLAB architecture (seeded
//! random weights when only a name is given — latency does not depend on weight values),
//! prints a per-op table from GPU timestamps and the end-to-end latency, and writes a
//! Chrome/Perfetto trace.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kestrel::Quant;
use kestrel::bench::{BenchOptions, BenchRecord};
use kestrel::profile::{Profile, chrome_trace, op_table};
use kestrel::{Context, ContextOptions, Recorder, Tensor};
use kestrel_models::params::RandomParams;
use kestrel_models::slab::SlabModel;
use kestrel_models::slab::config::lookup;
use serde_json::json;

use crate::convert::parse_quant;
use crate::profile_vlm::{self, VlmProfileArgs};

/// Arguments of `kestrel profile`.
#[derive(clap::Args)]
pub struct ProfileArgs {
    /// Architecture names (e.g. `slab-swin-t`, `slab_deit_tiny`) or checkpoint / Kestrel files.
    /// Several models are timed interleaved in one process (fair ratios on a noisy machine).
    /// Vision-language architectures (`clip-vit-l-14-336`, `llava-1.5-7b`, `eve-1.8b`; not
    /// mixed with others) report vision encode, prefill and decode instead.
    #[arg(required = true)]
    models: Vec<String>,
    /// Weight storage: f32, f16, w8 or w4 (a Kestrel file keeps its own).
    #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(["f32", "f16", "w8", "w4"]))]
    quant: String,
    /// Architecture of checkpoint files (default: inferred).
    #[arg(long)]
    arch: Option<String>,
    /// Timed end-to-end iterations per model (after one warm-up); at most 3 further iterations
    /// run with per-dispatch timestamps for the op table.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Print one JSON object per model instead of the tables.
    #[arg(long)]
    json: bool,
    /// Write a Chrome / Perfetto trace of one profiled pass of the first model here.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Also benchmark f32/f16 matmul in the same process and report each model's GFLOP/s as a
    /// fraction of the best.
    #[arg(long)]
    vs_matmul: bool,
    /// Vision-language architectures: decode steps timed after the prefill.
    #[arg(long, default_value_t = 16)]
    decode_tokens: usize,
    /// Vision-language architectures: skip the vision encode and the image's prefill (prefill
    /// one token, then decode): a large model's decode bandwidth without minutes of prefill on
    /// a CPU adapter.
    #[arg(long)]
    decode_only: bool,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// One model under measurement.
struct Subject {
    model: SlabModel,
    image: Tensor,
    latencies: Vec<f64>,
    profiles: Vec<Profile>,
}

impl Subject {
    fn new(ctx: &Arc<Context>, name: &str, arch: Option<&str>, quant: Quant) -> Result<Subject, Box<dyn std::error::Error>> {
        let model = if Path::new(name).is_file() {
            SlabModel::open(ctx, Path::new(name), arch, quant)?
        } else {
            SlabModel::load(ctx, &lookup(name)?, &RandomParams::new(0), quant)?
        };
        let c = model.config();
        let n = c.in_chans * c.img_size * c.img_size;
        let pixels: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let image = Tensor::from_f32(ctx, &[1, c.in_chans, c.img_size, c.img_size], &pixels)?;
        Ok(Subject { model, image, latencies: Vec::new(), profiles: Vec::new() })
    }

    /// One forward pass, submitted and read back: (wall ms, profile when `profiled`).
    fn pass(&self, profiled: bool) -> Result<(f64, Option<Profile>), Box<dyn std::error::Error>> {
        let ctx = self.model.context();
        let start = Instant::now();
        let mut rec = if profiled { Recorder::with_profiling(ctx) } else { Recorder::new(ctx) };
        let logits = self.model.forward(&mut rec, &self.image)?;
        let profile = rec.finish()?;
        logits.to_vec_f32()?;
        Ok((start.elapsed().as_secs_f64() * 1e3, profile))
    }
}

/// Fails early, before any profiling, when the trace cannot be written at `path`: its folder
/// does not exist or the path is a directory.
fn check_trace_path(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!("--trace {}: the folder {} does not exist", path.display(), dir.display()).into());
    }
    if path.is_dir() {
        return Err(format!("--trace {}: is a directory", path.display()).into());
    }
    Ok(())
}

/// Runs `kestrel profile`.
pub fn run(args: &ProfileArgs) -> Result<(), Box<dyn std::error::Error>> {
    let vlms = args.models.iter().filter(|m| profile_vlm::is_vlm(m)).count();
    if vlms > 0 {
        if vlms < args.models.len() {
            return Err(
                format!("profile the vision-language architectures ({}) apart from other models", profile_vlm::NAMES.join(", ")).into()
            );
        }
        let vargs = VlmProfileArgs {
            models: &args.models,
            quant: &args.quant,
            iters: args.iters,
            decode_tokens: args.decode_tokens,
            decode_only: args.decode_only,
            json: args.json,
        };
        return profile_vlm::run(&vargs);
    }
    let quant = parse_quant(&args.quant)?;
    if let Some(path) = &args.trace {
        check_trace_path(path)?;
    }
    let ctx = Context::new(&ContextOptions::from_env())?;
    let mut subjects = args.models.iter().map(|m| Subject::new(&ctx, m, args.arch.as_deref(), quant)).collect::<Result<Vec<_>, _>>()?;
    // Loading leaves converted and staging buffers in the pool; what the runs need from here
    // on is the weights plus each pass's live set.
    let load_peak = ctx.peak_gpu_bytes();
    ctx.trim();
    ctx.memory().reset_peak();
    let iters = args.iters.max(1);
    for s in &subjects {
        s.pass(false)?;
    }
    for _ in 0..iters {
        for s in &mut subjects {
            let ms = s.pass(false)?.0;
            s.latencies.push(ms);
        }
    }
    for _ in 0..iters.min(3) {
        for s in &mut subjects {
            if let (_, Some(p)) = s.pass(true)? {
                s.profiles.push(p);
            }
        }
    }
    ctx.save_pipeline_cache();
    // Before the matmul benchmark, whose matrices are not the models'.
    let peak = ctx.peak_gpu_bytes();
    let best_matmul = if args.vs_matmul { Some(best_matmul_gflops(&ctx)?) } else { None };
    if let (Some(path), Some(p)) = (&args.trace, subjects.first().and_then(|s| s.profiles.first())) {
        std::fs::write(path, serde_json::to_vec(&chrome_trace(p))?).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for s in &mut subjects {
        s.latencies.sort_by(f64::total_cmp);
        report(&ctx, s, quant, iters, [load_peak, peak], best_matmul, args.json)?;
    }
    if let (Some(path), false) = (&args.trace, args.json) {
        println!("trace written to {}", path.display());
    }
    Ok(())
}

/// Prints one model's table (or JSON object); `[load_peak, peak]` are the process's peak GPU
/// memory while loading and while running (every model of the run).
fn report(
    ctx: &Arc<Context>,
    s: &Subject,
    quant: Quant,
    iters: usize,
    [load_peak, peak]: [u64; 2],
    best_matmul: Option<f64>,
    as_json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = s.model.config();
    let rows = op_table(&s.profiles);
    let flops: u64 = s.profiles.first().map(|p| p.dispatches.iter().map(|d| d.flops).sum()).unwrap_or(0);
    let dispatches = s.profiles.first().map_or(0, |p| p.dispatches.len());
    let gpu_ms = s.profiles.iter().filter_map(Profile::gpu_total_ns).map(|v| v as f64 / 1e6).sum::<f64>() / s.profiles.len().max(1) as f64;
    let (p50, p90) = (percentile(&s.latencies, 0.5), percentile(&s.latencies, 0.9));
    let model_gflops = flops as f64 / (p50 * 1e6);
    let a = ctx.adapter();
    if as_json {
        let out = json!({
            "arch": cfg.arch, "quant": quant.name(), "adapter": a.name, "backend": a.backend,
            "iters": iters, "dispatches": dispatches, "gflop": flops as f64 / 1e9,
            "latency_ms": {"p50": p50, "p90": p90}, "gpu_ms": gpu_ms, "gflops": model_gflops,
            "best_matmul_gflops": best_matmul, "fraction_of_matmul": best_matmul.map(|b| model_gflops / b),
            "timing": s.profiles.first().map(|p| p.source), "peak_gpu_bytes": peak, "load_peak_gpu_bytes": load_peak, "ops": rows,
        });
        println!("{out}");
        return Ok(());
    }
    println!("{} ({}) on {} ({}, {})", cfg.arch, quant.name(), a.name, a.backend, a.device_type);
    println!("{:<18} {:<34} {:>5} {:>10} {:>9} {:>6} {:>9}", "op", "shape", "calls", "total ms", "mean ms", "share", "GFLOP/s");
    for r in &rows {
        let shape: String = r.shape.chars().take(34).collect();
        println!(
            "{:<18} {:<34} {:>5} {:>10.3} {:>9.3} {:>5.1}% {:>9.2}",
            r.op,
            shape,
            r.calls,
            r.total_ms,
            r.mean_ms,
            r.share * 100.0,
            r.gflops
        );
    }
    println!("{dispatches} dispatches, {:.3} GFLOP, GPU sum {gpu_ms:.2} ms", flops as f64 / 1e9);
    println!(
        "peak GPU memory {:.1} MB running, {:.1} MB loading (buffers + textures; every model of this run)",
        peak as f64 / 1e6,
        load_peak as f64 / 1e6
    );
    println!("end-to-end latency over {iters} runs: p50 {p50:.2} ms, p90 {p90:.2} ms ({model_gflops:.2} GFLOP/s)");
    if let Some(b) = best_matmul {
        println!("best matmul in this run: {b:.2} GFLOP/s; model reaches {:.0}% of it", 100.0 * model_gflops / b);
    }
    println!();
    Ok(())
}

/// The best GFLOP/s of the f32/f16 matmul benchmark cases, measured now.
fn best_matmul_gflops(ctx: &Arc<Context>) -> Result<f64, Box<dyn std::error::Error>> {
    let opts = BenchOptions { op: Some("matmul".into()), runs: 5, quick: false };
    let records = kestrel::bench::run(ctx, &opts, |_: &BenchRecord| {})?;
    Ok(records.iter().map(|r| r.gflops).fold(0.0, f64::max))
}
