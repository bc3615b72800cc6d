//! `kestrel convert`: writes a Kestrel model file (GPU-ready, optionally quantised) from any
//! weight file Kestrel reads. A SLAB checkpoint (named by `--arch`, or recognised from its
//! tensors) is folded first, so the file holds no BatchNorm and records its architecture.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use kestrel::Quant;
use kestrel::weights::convert::{ConvertOptions, convert};
use kestrel_models::slab;

/// Arguments of `kestrel convert`.
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The source weight file (safetensors, PyTorch checkpoint or GGUF).
    src: PathBuf,
    /// How weights are stored: f32, f16, w8 (int8 per channel) or w4 (int4, groups of 32).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["f32", "f16", "w8", "w4"]))]
    quant: String,
    /// The Kestrel file to write.
    #[arg(long)]
    out: PathBuf,
    /// Architecture name to record (default: the source's `general.architecture`, or `unknown`).
    #[arg(long)]
    arch: Option<String>,
    /// Model configuration to record, a JSON object (default: a GGUF source's whole metadata —
    /// hyper-parameters, vocabulary, chat template — otherwise `{}`).
    #[arg(long)]
    config: Option<String>,
}

/// The parsed `--quant` value.
pub fn parse_quant(s: &str) -> Result<Quant, Box<dyn std::error::Error>> {
    Quant::storage_from_name(s).ok_or_else(|| format!("unknown quant `{s}` (expected f32, f16, w8 or w4)").into())
}

/// Runs `kestrel convert`.
pub fn run(args: &ConvertArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = match &args.config {
        Some(c) => Some(serde_json::from_str(c).map_err(|e| format!("--config is not JSON: {e}"))?),
        None => None,
    };
    let opts = ConvertOptions { quant: parse_quant(&args.quant)?, architecture: args.arch.clone(), config };
    let src = kestrel::weights::open(&args.src)?;
    let bar = ProgressBar::new(src.tensors().len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} tensors")
            .map_err(|e| format!("progress bar: {e}"))?
            .progress_chars("=> "),
    );
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let slab = match &args.arch {
        Some(a) => slab::config::lookup(a).ok(),
        None if src.format() == "pytorch" => slab::infer::infer_config(src.as_ref()).ok(),
        None => None,
    };
    let summary = match slab {
        Some(cfg) => slab::convert::convert_checkpoint(src.as_ref(), &cfg, opts.quant, &args.out, progress)
            .map_err(Box::<dyn std::error::Error>::from),
        None => convert(src.as_ref(), &args.out, &opts, progress).map_err(Box::<dyn std::error::Error>::from),
    };
    bar.finish_and_clear();
    let s = summary?;
    println!("{}: {} tensors ({} quantised {}), {} bytes", args.out.display(), s.tensors, s.quantised, opts.quant.name(), s.bytes);
    Ok(())
}
