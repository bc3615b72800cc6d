//! `kestrel clip`: CLIP image and text embeddings of a Hugging Face CLIP directory and the
//! image–text logits, as transformers' `CLIPModel` gives them.

use std::path::{Path, PathBuf};

use kestrel::{Context, ContextOptions};
use kestrel_models::clip::{ClipModel, TextBatch};
use kestrel_models::npy::{read_npy_f32, read_npy_u32};
use kestrel_models::vision::{DecodeLimits, preprocess_file};
use serde_json::json;

use crate::convert::parse_quant;

/// Arguments of `kestrel clip`.
#[derive(clap::Args)]
pub struct ClipArgs {
    /// Hugging Face CLIP directory: config.json, model.safetensors (or shards / pytorch_model.bin),
    /// tokenizer.json and preprocessor_config.json when present.
    #[arg(long)]
    model: PathBuf,
    /// An image (PNG, JPEG, WebP, BMP); repeat for several.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A text; repeat for several. Longer than 77 tokens: truncated with a warning.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// `[B, 3, S, S]` f32 `.npy` pixel values, instead of loading and preprocessing images.
    #[arg(long, conflicts_with = "images")]
    pixel_values: Option<PathBuf>,
    /// `[B, L]` integer `.npy` token ids (0-padded), instead of tokenizing texts.
    #[arg(long, conflicts_with = "texts")]
    text_ids: Option<PathBuf>,
    /// Weight storage: f32, f16, w8 or w4.
    #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(["f32", "f16", "w8", "w4"]))]
    quant: String,
    /// Print one JSON object `{"image_embeds", "text_embeds", "logits_per_image"}`.
    #[arg(long)]
    json: bool,
}

/// Pixel values from `--pixel-values`: `[B, C, H, W]`, every value finite.
fn read_pixel_values(path: &Path) -> Result<(Vec<usize>, Vec<f32>), Box<dyn std::error::Error>> {
    let (shape, data) = read_npy_f32(path)?;
    if shape.len() != 4 || shape[0] == 0 {
        return Err(format!("{}: shape {shape:?}; --pixel-values takes [batch, 3, size, size]", path.display()).into());
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(format!("{}: element {i} is {}; pixel values must be finite", path.display(), data[i]).into());
    }
    Ok((shape, data))
}

/// Token ids from `--text-ids`: `[B, L]`.
fn read_text_ids(path: &Path) -> Result<TextBatch, Box<dyn std::error::Error>> {
    let (shape, ids) = read_npy_u32(path)?;
    match shape[..] {
        [b, l] => Ok(TextBatch::new(ids, b, l).map_err(|e| format!("{}: {e}", path.display()))?),
        _ => Err(format!("{}: shape {shape:?}; --text-ids takes [batch, length]", path.display()).into()),
    }
}

/// Runs `kestrel clip`.
pub fn run(args: &ClipArgs) -> Result<(), Box<dyn std::error::Error>> {
    let quant = parse_quant(&args.quant)?;
    // Inputs are checked before the (slow) model load.
    let pixel_values = args.pixel_values.as_deref().map(read_pixel_values).transpose()?;
    let text_ids = args.text_ids.as_deref().map(read_text_ids).transpose()?;
    for path in &args.images {
        std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let has_images = pixel_values.is_some() || !args.images.is_empty();
    let has_texts = text_ids.is_some() || !args.texts.is_empty();
    if !has_images && !has_texts {
        return Err("give images (--image or --pixel-values) and/or texts (--text or --text-ids)".into());
    }
    let ctx = Context::new(&ContextOptions::from_env())?;
    let model = ClipModel::load(&ctx, &args.model, quant)?;
    let pixels = match pixel_values {
        Some((shape, data)) => {
            let tower = model.vision().ok_or("this CLIP model has no vision tower (it cannot take images)")?;
            let cfg = tower.config();
            let want = [shape[0], cfg.channels, cfg.image_size, cfg.image_size];
            if shape != want {
                return Err(format!("--pixel-values has shape {shape:?}; this model takes {want:?}").into());
            }
            Some((data, shape[0]))
        }
        None if !args.images.is_empty() => {
            let cfg = model.preprocess_config().ok_or("this CLIP model has no vision tower (it cannot take images)")?;
            let mut data = Vec::new();
            for path in &args.images {
                data.extend(preprocess_file(path, cfg, &DecodeLimits::default())?.data);
            }
            Some((data, args.images.len()))
        }
        None => None,
    };
    let ids = match text_ids {
        Some(ids) => Some(ids),
        None if !args.texts.is_empty() => Some(model.tokenize(&args.texts)?),
        None => None,
    };
    let out = model.run(pixels.as_ref().map(|(d, b)| (d.as_slice(), *b)), ids.as_ref())?;
    ctx.save_pipeline_cache();
    if args.json {
        println!("{}", json!({"image_embeds": out.image_embeds, "text_embeds": out.text_embeds, "logits_per_image": out.logits_per_image}));
        return Ok(());
    }
    let name = |i: usize, what: &str| match what {
        "image" => args.images.get(i).map_or_else(|| format!("image {i}"), |p| p.display().to_string()),
        _ => args.texts.get(i).map_or_else(|| format!("text {i}"), |t| format!("{t:?}")),
    };
    for (i, row) in out.logits_per_image.iter().enumerate() {
        if row.is_empty() {
            continue;
        }
        println!("{}:", name(i, "image"));
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|&l| (l - max).exp()).sum();
        for (j, &l) in row.iter().enumerate() {
            println!("  {:>6.2}%  logit {l:>8.3}  {}", (l - max).exp() / sum * 100.0, name(j, "text"));
        }
    }
    let dims = |e: &Vec<Vec<f32>>| e.first().map_or(0, Vec::len);
    println!(
        "{} image embeds, {} text embeds of {} values (L2-normalised)",
        out.image_embeds.len(),
        out.text_embeds.len(),
        dims(&out.image_embeds).max(dims(&out.text_embeds))
    );
    Ok(())
}
