//! `kestrel classify`: ImageNet classification of one image with a SLAB model (an official
//! checkpoint, folded at load, or a converted Kestrel file).

use std::path::{Path, PathBuf};
use std::time::Instant;

use kestrel::{Context, ContextOptions};
use kestrel_models::npy::{read_npy_f32, write_npy_f32};
use kestrel_models::slab::SlabModel;
use kestrel_models::slab::classify::top_k;
use kestrel_models::vision::{DecodeLimits, PreprocessConfig, imagenet_label, preprocess_file};
use serde_json::json;

use crate::convert::parse_quant;

/// Arguments of `kestrel classify`.
#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// Checkpoint (`.pth`, safetensors) or converted Kestrel file.
    #[arg(long)]
    model: PathBuf,
    /// The image (PNG, JPEG, WebP, BMP); not needed with `--input-npy`.
    image: Option<PathBuf>,
    /// Architecture (default: the Kestrel file's, or inferred from the checkpoint).
    #[arg(long)]
    arch: Option<String>,
    /// Weight storage for a checkpoint: f32, f16, w8 or w4.
    #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(["f32", "f16", "w8", "w4"]))]
    quant: String,
    /// Classes to list.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Write the `1 × classes` f32 logits here as `.npy`.
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    /// Feed this `1 × 3 × S × S` f32 `.npy` tensor instead of an image.
    #[arg(long)]
    input_npy: Option<PathBuf>,
}

/// Runs `kestrel classify`.
pub fn run(args: &ClassifyArgs) -> Result<(), Box<dyn std::error::Error>> {
    let quant = parse_quant(&args.quant)?;
    // Inputs are checked before the (slow) model load.
    let source = match (&args.input_npy, &args.image) {
        (Some(path), _) => Input::Npy(path, read_finite_npy(path)?),
        (None, Some(path)) => {
            std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Input::Image(path)
        }
        (None, None) => return Err("give an image or --input-npy".into()),
    };
    let ctx = Context::new(&ContextOptions::from_env())?;
    let model = SlabModel::open(&ctx, &args.model, args.arch.as_deref(), quant)?;
    let cfg = model.config().clone();
    let input = match source {
        Input::Npy(path, (shape, data)) => {
            let want = [1, cfg.in_chans, cfg.img_size, cfg.img_size];
            if shape != want {
                return Err(format!("{}: shape {shape:?}, {} needs {want:?}", path.display(), cfg.arch).into());
            }
            data
        }
        Input::Image(path) => {
            let pre = PreprocessConfig { crop_size: cfg.img_size, ..PreprocessConfig::imagenet_default() };
            preprocess_file(path, &pre, &DecodeLimits::default())?.data
        }
    };
    // The first pass compiles (or loads from the cache) every pipeline; time the second.
    model.logits(&input)?;
    let start = Instant::now();
    let logits = model.logits(&input)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    ctx.save_pipeline_cache();
    if let Some(path) = &args.dump_logits {
        write_npy_f32(path, &[1, logits.len()], &logits)?;
    }
    let label = |i: usize| if cfg.num_classes == 1000 { imagenet_label(i).unwrap_or("?").to_string() } else { format!("class {i}") };
    let top = top_k(&logits, args.top);
    if args.json {
        let items: Vec<_> = top.iter().map(|r| json!({"index": r.index, "label": label(r.index), "prob": r.prob})).collect();
        println!("{}", json!({"top": items, "ms": ms}));
    } else {
        for r in &top {
            println!("{:>6.2}%  {:>4}  {}", r.prob * 100.0, r.index, label(r.index));
        }
        println!("{} ({}) in {ms:.1} ms", cfg.arch, quant.name());
    }
    Ok(())
}

/// What is classified: a read `.npy` tensor (shape, values) or an image still to decode.
enum Input<'a> {
    Npy(&'a Path, (Vec<usize>, Vec<f32>)),
    Image(&'a Path),
}

/// An f32 `.npy` tensor whose values are all finite (a NaN input would give NaN probabilities).
fn read_finite_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), Box<dyn std::error::Error>> {
    let (shape, data) = read_npy_f32(path)?;
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(format!("{}: element {i} is {}; the input must be finite", path.display(), data[i]).into());
    }
    Ok((shape, data))
}
