//! `kestrel bench`: kernel micro-benchmarks on the chosen adapter.

use kestrel::bench::{BenchOptions, BenchRecord, OPS};
use kestrel::{Context, ContextOptions};

/// Arguments of `kestrel bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Only this op (copy, gemv, matmul, matmul_baseline).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(OPS))]
    op: Option<String>,
    /// Timed runs per case (median reported; at least 5).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Smallest shapes only (a fast smoke run).
    #[arg(long)]
    quick: bool,
}

/// Runs `kestrel bench`.
pub fn run(args: &BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new(&ContextOptions::from_env())?;
    let a = ctx.adapter();
    if !args.json {
        println!("Adapter: {} ({}, {})", a.name, a.backend, a.device_type);
        println!(
            "{:<16} {:<5} {:<10} {:>6} {:>6} {:>6} {:>10} {:>9} {:>8}",
            "op", "dtype", "variant", "m", "n", "k", "ms", "GFLOP/s", "GB/s"
        );
    }
    let opts = BenchOptions { op: args.op.clone(), runs: args.runs.max(5), quick: args.quick };
    let json = args.json;
    let mut failed = None;
    kestrel::bench::run(&ctx, &opts, |r: &BenchRecord| {
        if json {
            match serde_json::to_string(r) {
                Ok(s) => println!("{s}"),
                Err(e) => failed = Some(e),
            }
        } else {
            println!(
                "{:<16} {:<5} {:<10} {:>6} {:>6} {:>6} {:>10.3} {:>9.2} {:>8.2}",
                r.op,
                r.dtype,
                r.variant.unwrap_or("-"),
                r.m,
                r.n,
                r.k,
                r.ms_median,
                r.gflops,
                r.gbps
            );
        }
    })?;
    ctx.save_pipeline_cache();
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(())
}
