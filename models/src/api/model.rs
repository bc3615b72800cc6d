//! [`Model`]: any model an app loads by path, its kind found from the file (what
//! `kestrel_model_load` opens).

use std::path::Path;
use std::sync::Arc;

use kestrel::Context;
use kestrel::Quant;
use kestrel::weights::kestrel_file::KestrelFile;
use serde::Deserialize;

use super::classifier::{ClassifierOptions, ImageClassifier, arch_from_json};
use super::generator::{CancelFlag, GeneratorOptions, TextGenerator};
use super::profile::{ProfileReport, ProfileRequest};
use crate::error::{ModelError, Result};

/// What a model does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Found from the path: a directory, a GGUF file, a Kestrel file without a SLAB config or
    /// a weight file beside a `config.json` is a generator; any other file a classifier.
    #[default]
    Auto,
    /// An [`ImageClassifier`].
    Classifier,
    /// A [`TextGenerator`].
    Generator,
}

/// Options of [`Model::open`]: the union of both kinds' options, each used by its kind. The
/// JSON form (`kestrel_model_load`) uses the same keys.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOptions {
    /// What the model does (default: found from the path).
    pub kind: ModelKind,
    /// Weight storage: `f32`, `f16`, `w8`, `w4`, or (generators) `native`; default `f32`
    /// for classifiers, `native` for generators.
    pub quant: Option<String>,
    /// Classifier: a built-in architecture name or a whole SLAB configuration object.
    pub arch: Option<serde_json::Value>,
    /// Classifier: classes listed per result (default 5).
    pub top: Option<usize>,
    /// Generator: KV cache positions.
    pub context: Option<usize>,
    /// Generator: keep q/k/v and gate/up separate.
    pub separate_projections: bool,
}

impl ModelOptions {
    /// Parses the JSON form; `None` or `""` give the defaults. Errors: malformed JSON, an
    /// unknown key or a wrongly typed value ([`ModelError::Input`]).
    pub fn from_json(json: Option<&str>) -> Result<ModelOptions> {
        super::runtime::parse_json(json, "model options")
    }

    fn classifier(&self) -> Result<ClassifierOptions> {
        let quant = match self.quant.as_deref() {
            None => Quant::F32,
            Some(q) => Quant::storage_from_name(q).ok_or_else(|| ModelError::Input(format!("quant `{q}`: expected f32, f16, w8 or w4")))?,
        };
        let arch = self.arch.as_ref().map(arch_from_json).transpose()?;
        Ok(ClassifierOptions { arch, quant, top: self.top.unwrap_or(5) })
    }

    fn generator(&self) -> Result<GeneratorOptions> {
        let quant = match self.quant.as_deref() {
            None => Quant::Native,
            Some(q) => Quant::from_name(q).ok_or_else(|| ModelError::Input(format!("quant `{q}`: expected native, f32, f16, w8 or w4")))?,
        };
        Ok(GeneratorOptions { quant, context: self.context, separate_projections: self.separate_projections })
    }
}

/// A loaded model of either kind (boxed: both are large and of different sizes).
pub enum Model {
    /// An image classifier.
    Classifier(Box<ImageClassifier>),
    /// A text generator.
    Generator(Box<TextGenerator>),
}

impl Model {
    /// Opens the model at `path`. Errors: a missing path ([`ModelError::Io`]), options that do
    /// not fit the kind, and the kinds' own loading errors.
    pub fn open(ctx: &Arc<Context>, path: &Path, opts: &ModelOptions) -> Result<Model> {
        std::fs::metadata(path).map_err(|source| ModelError::Io { path: path.display().to_string(), source })?;
        let kind = match opts.kind {
            ModelKind::Auto => detect(path)?,
            k => k,
        };
        if kind == ModelKind::Classifier {
            Ok(Model::Classifier(Box::new(ImageClassifier::open(ctx, path, &opts.classifier()?)?)))
        } else {
            Ok(Model::Generator(Box::new(TextGenerator::open(ctx, path, &opts.generator()?)?)))
        }
    }

    /// Profiles the model (a classifier's forward pass, a generator's decode step).
    pub fn profile(&mut self, req: &ProfileRequest) -> Result<ProfileReport> {
        match self {
            Model::Classifier(m) => m.profile(req),
            Model::Generator(m) => m.profile(req),
        }
    }

    /// The flag that cancels the model's running call from another thread.
    pub fn cancel_flag(&self) -> CancelFlag {
        match self {
            Model::Classifier(m) => m.cancel_flag(),
            Model::Generator(m) => m.cancel_flag(),
        }
    }
}

/// The kind of the model at `path` (see [`ModelKind::Auto`]).
fn detect(path: &Path) -> Result<ModelKind> {
    if path.is_dir() {
        return Ok(ModelKind::Generator);
    }
    let src = kestrel::weights::open(path)?;
    let generator = match src.format() {
        "gguf" => true,
        "kestrel" => KestrelFile::open(path)?.header().config.get(crate::slab::CONFIG_KEY).is_none(),
        _ => path.parent().is_some_and(|d| d.join("config.json").is_file()),
    };
    Ok(if generator { ModelKind::Generator } else { ModelKind::Classifier })
}
