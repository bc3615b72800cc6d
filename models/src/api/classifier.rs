//! [`ImageClassifier`]: ImageNet-style classification with a SLAB model, from plain pixels.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kestrel::Quant;
use kestrel::{Context, Recorder, Tensor};
use serde::Serialize;

use super::generator::CancelFlag;
use super::image::ImageView;
use super::profile::{ProfileReport, ProfileRequest, measure};
use crate::error::{ModelError, Result};
use crate::slab::SlabModel;
use crate::slab::classify::top_k;
use crate::slab::config::{SlabConfig, lookup};
use crate::vision::{ImageTensor, PreprocessConfig, imagenet_label, preprocess};

/// How to open an [`ImageClassifier`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierOptions {
    /// The architecture: a built-in name (`slab-deit-t`, `slab_swin_small`, …) or a whole
    /// [`SlabConfig`]; default: a Kestrel file's stored config, or inferred from the
    /// checkpoint's tensors.
    pub arch: Option<Arch>,
    /// Weight storage of a checkpoint (a Kestrel file keeps its own).
    pub quant: Quant,
    /// Classes [`ImageClassifier::classify`] lists.
    pub top: usize,
}

impl Default for ClassifierOptions {
    /// Inferred architecture, f32, top 5 (as `kestrel classify`).
    fn default() -> Self {
        ClassifierOptions { arch: None, quant: Quant::F32, top: 5 }
    }
}

/// An architecture given by name or in full.
#[derive(Clone, Debug, PartialEq)]
pub enum Arch {
    /// A built-in architecture name.
    Name(String),
    /// A full configuration (a checkpoint of an architecture that is not built in).
    Config(SlabConfig),
}

/// One class of a [`Classification`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    /// Class index.
    pub index: usize,
    /// The ImageNet-1k name for 1000-class models, else `class N`.
    pub label: String,
    /// Softmax probability.
    pub prob: f32,
}

/// What [`ImageClassifier::classify`] gives; serialises to `kestrel classify --json`'s
/// `{"top": [{"index", "label", "prob"}], "ms"}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    /// The most probable classes, most probable first.
    pub top: Vec<ClassScore>,
    /// Milliseconds of the forward pass (upload, one submission, readback).
    pub ms: f64,
}

/// A SLAB classifier on the GPU with its input transform (timm's eval transform: shorter side
/// resized bicubically, centre crop, ImageNet mean/std).
///
/// ```no_run
/// use kestrel_models::api::{ClassifierOptions, ImageClassifier, ImageView, PixelFormat, RuntimeOptions};
///
/// # fn main() -> kestrel_models::Result<()> {
/// let ctx = RuntimeOptions::default().open()?;
/// let model = ImageClassifier::open(&ctx, "slab_deit_tiny.pth".as_ref(), &ClassifierOptions::default())?;
/// let pixels = vec![128u8; 640 * 480 * 4]; // a camera frame, RGBA
/// let result = model.classify(&ImageView::packed(&pixels, 640, 480, PixelFormat::Rgba8))?;
/// println!("{} ({:.1}%)", result.top[0].label, result.top[0].prob * 100.0);
/// println!("{}", serde_json::to_string(&result).unwrap()); // {"top":[{"index":…,"label":…,"prob":…}],"ms":…}
/// # Ok(())
/// # }
/// ```
pub struct ImageClassifier {
    model: SlabModel,
    preprocess: PreprocessConfig,
    top: usize,
    cancel: CancelFlag,
}

impl ImageClassifier {
    /// Opens a checkpoint (`.pth`, safetensors) or a converted Kestrel file, as `kestrel
    /// classify --model` does.
    pub fn open(ctx: &Arc<Context>, path: &Path, opts: &ClassifierOptions) -> Result<ImageClassifier> {
        let model = match &opts.arch {
            None => SlabModel::open(ctx, path, None, opts.quant)?,
            Some(Arch::Name(name)) => SlabModel::open(ctx, path, Some(name), opts.quant)?,
            Some(Arch::Config(cfg)) => {
                let src = kestrel::weights::open(path)?;
                let params = crate::slab::fold_checkpoint(src.as_ref(), cfg, crate::slab::fold::FoldMode::Fold)?;
                SlabModel::load(ctx, cfg, &params, opts.quant)?
            }
        };
        Ok(ImageClassifier::new(model, opts.top))
    }

    /// Wraps a loaded model; [`classify`](Self::classify) lists `top` classes.
    pub fn new(model: SlabModel, top: usize) -> ImageClassifier {
        let preprocess = PreprocessConfig { crop_size: model.config().img_size, ..PreprocessConfig::imagenet_default() };
        ImageClassifier { model, preprocess, top, cancel: CancelFlag::default() }
    }

    /// The model's configuration.
    pub fn config(&self) -> &SlabConfig {
        self.model.config()
    }

    /// Classifies one image: preprocessing on the host, one forward pass on the GPU, softmax
    /// top-k. Errors: a malformed [`ImageView`] ([`ModelError::Input`]), GPU failures.
    pub fn classify(&self, image: &ImageView) -> Result<Classification> {
        let input = self.input(image)?;
        let start = Instant::now();
        let logits = self.model.logits(&input.data)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let classes = self.model.config().num_classes;
        let label = |i: usize| match imagenet_label(i) {
            Some(l) if classes == 1000 => l.to_string(),
            _ => format!("class {i}"),
        };
        let top =
            top_k(&logits, self.top).into_iter().map(|r| ClassScore { index: r.index, label: label(r.index), prob: r.prob }).collect();
        Ok(Classification { top, ms })
    }

    /// The normalised `[1, 3, S, S]` input of an image.
    pub fn input(&self, image: &ImageView) -> Result<ImageTensor> {
        preprocess(&image.to_rgb()?, &self.preprocess)
    }

    /// The flag that cancels a running [`profile`](Self::profile) from another thread.
    pub fn cancel_flag(&self) -> CancelFlag {
        self.cancel.clone()
    }

    /// Profiles the forward pass on a fixed input (latency does not depend on the pixels).
    /// Errors: [`ModelError::Cancelled`] when the [`CancelFlag`] was raised.
    pub fn profile(&self, req: &ProfileRequest) -> Result<ProfileReport> {
        self.cancel.reset();
        let ctx = self.model.context();
        let c = self.model.config();
        let shape = [1, c.in_chans, c.img_size, c.img_size];
        let n: usize = shape.iter().product();
        let pixels: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let image = Tensor::from_f32(ctx, &shape, &pixels)?;
        let run = |profiled: bool| {
            let mut rec = if profiled { Recorder::with_profiling(ctx) } else { Recorder::new(ctx) };
            let logits = self.model.forward(&mut rec, &image)?;
            let profile = rec.finish()?;
            logits.to_vec_f32()?;
            Ok(profile)
        };
        measure(ctx, c.arch.clone(), req, run, &|| self.cancel.check())
    }
}

/// The architecture of a JSON option: a name (string) or a whole configuration (object).
pub(crate) fn arch_from_json(v: &serde_json::Value) -> Result<Arch> {
    match v {
        serde_json::Value::String(name) => {
            lookup(name)?;
            Ok(Arch::Name(name.clone()))
        }
        serde_json::Value::Object(_) => {
            let cfg: SlabConfig = serde_json::from_value(v.clone()).map_err(|e| ModelError::Input(format!("arch: {e}")))?;
            cfg.validate()?;
            Ok(Arch::Config(cfg))
        }
        _ => Err(ModelError::Input("arch: expected a name or a configuration object".into())),
    }
}
