//! `kestrel`: the command-line front end of the Kestrel runtime.

mod bench;
mod bench_load;
mod chat;
mod classify;
mod clip;
mod convert;
mod generate;
mod info;
mod inspect;
mod profile;
mod profile_vlm;
#[cfg(feature = "video")]
mod video;
mod vlm_input;

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
    /// Classify an image with a SLAB model (official checkpoint or Kestrel file).
    Classify(classify::ClassifyArgs),
    /// CLIP image and text embeddings and image-text logits (Hugging Face CLIP directory).
    Clip(clip::ClipArgs),
    /// Profile a SLAB model: per-op GPU times, end-to-end latency, a Chrome/Perfetto trace.
    Profile(profile::ProfileArgs),
    /// Generate text with a LLaMA-family model (GGUF, Hugging Face directory or Kestrel file).
    Generate(generate::GenerateArgs),
    /// Chat with a LLaMA-family chat model (interactive; the KV cache keeps the conversation).
    Chat(chat::ChatArgs),
    /// Answer a question about a video (Free Video-LLM: CLIP picks frames and regions, LLaVA
    /// answers); `kestrel video plan` shows which frames a spec takes.
    #[cfg(feature = "video")]
    Video(video::VideoArgs),
}

fn main() -> ExitCode {
    // wgpu probes the GL backend while enumerating adapters; where no GL driver loads it logs
    // an EGL error that is harmless (Vulkan or another backend is used), so that module is quiet.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,wgpu_hal::gles=off")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::BenchLoad(args) => bench_load::run(&args),
        Command::Profile(args) => profile::run(&args),
        Command::Classify(args) => classify::run(&args),
        Command::Clip(args) => clip::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Chat(args) => chat::run(&args),
        #[cfg(feature = "video")]
        Command::Video(args) => video::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kestrel: {e}");
            ExitCode::FAILURE
        }
    }
}
