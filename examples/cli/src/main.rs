//! `kestrel`: the command-line front end of the Kestrel runtime.

mod bench;
mod bench_load;
mod convert;
mod info;
mod inspect;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kestrel: vision and vision-language transformers on phone and laptop GPUs.
#[derive(Parser)]
#[command(name = "kestrel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show every GPU adapter, the one Kestrel picks, its limits and features.
    Info(info::InfoArgs),
    /// Benchmark the core kernels (matmul, GEMV, copy) on the chosen adapter.
    Bench(bench::BenchArgs),
    /// List a weight file's format, metadata and tensors (safetensors, PyTorch, GGUF, Kestrel).
    Inspect(inspect::InspectArgs),
    /// Convert a weight file into a Kestrel model file (f32, f16, w8 or w4; GPU-ready).
    Convert(convert::ConvertArgs),
    /// Time converting a checkpoint against loading the converted Kestrel file onto the GPU.
    BenchLoad(bench_load::BenchLoadArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::BenchLoad(args) => bench_load::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kestrel: {e}");
            ExitCode::FAILURE
        }
    }
}
