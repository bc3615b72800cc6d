//! Finding a decoder's config, weights and tokenizer from one path:
//!
//! - a **GGUF** file: config and tokenizer from its metadata, llama.cpp tensor names;
//! - a **Hugging Face directory** (or a `.safetensors` / PyTorch file inside one):
//!   `config.json`, `model.safetensors` (else shards through `model.safetensors.index.json`,
//!   else `pytorch_model.bin` or its shards), `tokenizer.json` and `tokenizer_config.json`
//!   when present;
//! - a **Kestrel model file** (`kestrel convert` output): the config recorded in its metadata
//!   (a converted GGUF's own metadata, or an HF `config.json` object given to `kestrel convert
//!   --config`), tensor names of either layout; the tokenizer from the recorded GGUF
//!   vocabulary when there is one, else `tokenizer.json` beside the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kestrel::Context;
use kestrel::ops::attention::RopeLayout;
use kestrel::weights::kestrel_file::KestrelFile;
use serde_json::Value;

use super::config::LlmConfig;
use super::tokenizer::Tokenizer;
use super::weights::{DecoderWeights, LoadOptions, Naming, Store, load_weights, refine_config};
use crate::error::{ModelError, Result};

/// A loaded decoder and its tokenizer.
pub struct LoadedModel {
    /// The configuration, refined from the checkpoint's tensors.
    pub config: LlmConfig,
    /// The weights on the GPU.
    pub weights: DecoderWeights,
    /// The tokenizer (`None` for a checkpoint that comes without one).
    pub tokenizer: Option<Tokenizer>,
    /// `gguf`, `hf` or `kestrel`.
    pub format: &'static str,
}

/// What a path resolves to before any weights are read.
struct Resolved {
    store: Store,
    config: LlmConfig,
    tokenizer: Option<Tokenizer>,
    format: &'static str,
}

/// Loads the decoder at `path` (see the [module docs](self)), calling `progress(done, total)`
/// while the weights upload.
pub fn load(ctx: &Arc<Context>, path: &Path, opts: &LoadOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<LoadedModel> {
    let Resolved { store, mut config, tokenizer, format } = resolve(path)?;
    let naming = Naming::detect(|n| store.has(n));
    refine_config(&mut config, &store, naming)?;
    let layout = match naming {
        Naming::Gguf => config.gguf_rope_layout(),
        Naming::Hf => RopeLayout::RotateHalf,
    };
    let weights = load_weights(ctx, &store, &config, naming, layout, opts, progress)?;
    Ok(LoadedModel { config, weights, tokenizer, format })
}

/// Reads a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.display().to_string(), source })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}

/// `tokenizer.json` (with `tokenizer_config.json` when present) in `dir`, if there is one.
pub(crate) fn dir_tokenizer(dir: &Path) -> Result<Option<Tokenizer>> {
    let json = dir.join("tokenizer.json");
    if !json.is_file() {
        return Ok(None);
    }
    let config = dir.join("tokenizer_config.json");
    Tokenizer::from_file(&json, config.is_file().then_some(config.as_path())).map(Some)
}

/// The directory holding `path`.
fn parent(path: &Path) -> PathBuf {
    path.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The model directory of `path`: itself, or the directory of a file in it.
pub(crate) fn model_dir(path: &Path) -> Result<PathBuf> {
    let dir = if path.is_file() { parent(path) } else { path.to_path_buf() };
    if !dir.is_dir() {
        return Err(ModelError::Config(format!("{}: not a model directory", dir.display())));
    }
    Ok(dir)
}

/// A Hugging Face model directory of a vision or vision-language model: its `config.json` and
/// weight file.
pub(crate) struct HfDir {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: Value,
    /// The first of [`WEIGHT_FILES`] present.
    pub weights: PathBuf,
}

/// The [`HfDir`] of `path` (the directory, or a file in it). Errors: not a directory, no
/// `config.json`, none of [`WEIGHT_FILES`].
pub(crate) fn hf_dir(path: &Path) -> Result<HfDir> {
    let dir = model_dir(path)?;
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ModelError::Config(format!("{}: no config.json", dir.display())));
    }
    let config = read_json(&config_path)?;
    let weights = WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| ModelError::Config(format!("{}: none of {} is there", dir.display(), WEIGHT_FILES.join(", "))))?;
    Ok(HfDir { dir, config, weights })
}

/// The weight files of a Hugging Face directory, in order of preference (sharded checkpoints
/// through their index).
pub(crate) const WEIGHT_FILES: [&str; 4] =
    ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"];

fn resolve(path: &Path) -> Result<Resolved> {
    if path.is_dir() {
        let weights = WEIGHT_FILES
            .iter()
            .map(|f| path.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| ModelError::Config(format!("{}: none of {} is there", path.display(), WEIGHT_FILES.join(", "))))?;
        return resolve_hf(path, kestrel::weights::open(&weights)?);
    }
    let src = kestrel::weights::open(path)?;
    match src.format() {
        "gguf" => {
            let meta = src.metadata();
            let config = LlmConfig::from_gguf_metadata(&meta)?;
            let tokenizer = Tokenizer::from_gguf_metadata(&meta)?;
            Ok(Resolved { store: Store::Plain(src), config, tokenizer: Some(tokenizer), format: "gguf" })
        }
        "kestrel" => {
            drop(src);
            let file = KestrelFile::open(path)?;
            let header = file.header();
            if header.config.as_object().is_none_or(serde_json::Map::is_empty) {
                return Err(ModelError::Config(format!(
                    "{}: the Kestrel file records no model config (convert with --config \"$(cat config.json)\")",
                    path.display()
                )));
            }
            let config = LlmConfig::from_json(&header.config)?;
            let tokenizer = match header.config.get("tokenizer.ggml.model") {
                Some(_) => Some(Tokenizer::from_gguf_metadata(&header.config)?),
                None => dir_tokenizer(&parent(path))?,
            };
            Ok(Resolved { store: Store::Kestrel(Box::new(file)), config, tokenizer, format: "kestrel" })
        }
        _ => resolve_hf(&parent(path), src),
    }
}

/// A Hugging Face checkpoint whose `config.json` (and tokenizer) are in `dir`.
fn resolve_hf(dir: &Path, src: Box<dyn kestrel::weights::WeightSource>) -> Result<Resolved> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ModelError::Config(format!("{}: no config.json beside the weights", dir.display())));
    }
    let config = LlmConfig::from_hf_config(&read_json(&config_path)?)?;
    Ok(Resolved { store: Store::Plain(src), config, tokenizer: dir_tokenizer(dir)?, format: "hf" })
}
