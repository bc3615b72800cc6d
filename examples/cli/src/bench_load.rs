//! `kestrel bench-load`: in one process, the time to convert a source checkpoint into a Kestrel
//! file against the time to load that file onto the GPU.
//!
//! *convert*: open the source, dequantise/convert every tensor, quantise, write the file.
//! *load*: open (and validate) the Kestrel file, upload every tensor — [`QuantTensor`]s for
//! packed weights, `Tensor`s for the rest — and wait for the uploads. The buffer pool is trimmed
//! after each load so every run allocates its buffers afresh. Medians of `--runs` runs each;
//! one JSON line `{"op":"load",…,"convert_ms","load_ms","ratio"}`.
//!
//! The converted file lives in a private temporary directory that is removed afterwards; no
//! existing path is ever written or deleted. `--out FILE` (or `--keep`, for
//! `<src>.<quant>.kestrel`) keeps a copy by hard-linking it there, which fails if the path
//! exists.
//!
//! [`QuantTensor`]: kestrel::quant::QuantTensor

use std::path::{Path, PathBuf};
use std::time::Instant;

use kestrel::weights::convert::{ConvertOptions, ConvertSummary, convert};
use kestrel::weights::kestrel_file::KestrelFile;
use kestrel::{Context, ContextOptions};
use serde_json::json;

use crate::convert::parse_quant;

/// Arguments of `kestrel bench-load`.
#[derive(clap::Args)]
pub struct BenchLoadArgs {
    /// The source weight file (safetensors, PyTorch checkpoint or GGUF).
    src: PathBuf,
    /// Storage choice of the converted file.
    #[arg(long, default_value = "w4", value_parser = clap::builder::PossibleValuesParser::new(["f32", "f16", "w8", "w4"]))]
    quant: String,
    /// Keep the converted file at this path, which must not exist yet.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the converted file at `<src>.<quant>.kestrel`, which must not exist yet.
    #[arg(long)]
    keep: bool,
    /// Timed runs of each phase (median reported; at least 3).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// The median of some durations in milliseconds.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `kestrel bench-load`.
pub fn run(args: &BenchLoadArgs) -> Result<(), Box<dyn std::error::Error>> {
    let quant = parse_quant(&args.quant)?;
    let keep = match (&args.out, args.keep) {
        (Some(out), _) => Some(out.clone()),
        (None, true) => {
            let mut s = args.src.as_os_str().to_owned();
            s.push(format!(".{}.kestrel", quant.name()));
            Some(PathBuf::from(s))
        }
        (None, false) => None,
    };
    if let Some(k) = &keep
        && std::fs::symlink_metadata(k).is_ok()
    {
        return Err(format!("{}: already exists; bench-load keeps its file only at a new path", k.display()).into());
    }
    // The private directory sits beside the kept file (a hard link cannot cross file systems) or
    // the source.
    let parent = |p: &Path| p.parent().filter(|d| !d.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = tempfile::Builder::new()
        .prefix(".kestrel-bench-load.")
        .tempdir_in(parent(keep.as_deref().unwrap_or(&args.src)))
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let out = dir.path().join("converted.kestrel");
    let ctx = Context::new(&ContextOptions::from_env())?;
    let opts = ConvertOptions { quant, architecture: None, config: None };
    let runs = args.runs.max(3);
    let mut convert_ms = Vec::new();
    let mut summary = ConvertSummary { tensors: 0, quantised: 0, bytes: 0 };
    for _ in 0..runs {
        let t = Instant::now();
        let src = kestrel::weights::open(&args.src)?;
        summary = convert(src.as_ref(), &out, &opts, |_, _| {})?;
        convert_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut load_ms = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let file = KestrelFile::open(&out)?;
        let uploaded = file.upload_all(&ctx)?;
        ctx.sync()?;
        load_ms.push(t.elapsed().as_secs_f64() * 1e3);
        drop(uploaded);
        ctx.pool().trim();
    }
    if let Some(k) = &keep {
        // A hard link is created only where nothing exists: an existing path is never replaced.
        std::fs::hard_link(&out, k).map_err(|e| format!("cannot keep the converted file at {}: {e}", k.display()))?;
    }
    let (c, l) = (median(convert_ms), median(load_ms));
    let a = ctx.adapter();
    let line = json!({
        "op": "load",
        "source": args.src.file_name().map(|f| f.to_string_lossy().into_owned()),
        "quant": quant.name(),
        "adapter": a.name,
        "backend": a.backend,
        "tensors": summary.tensors,
        "quantised": summary.quantised,
        "file_bytes": summary.bytes,
        "runs": runs,
        "convert_ms": c,
        "load_ms": l,
        "ratio": c / l,
    });
    println!("{line}");
    Ok(())
}
