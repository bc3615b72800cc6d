//! SLAB vision transformers (ICML 2024: simplified linear attention + progressive
//! re-parameterised BatchNorm) and their PRepBN baselines, loaded from the official PyTorch
//! checkpoints with every RepBN folded away at load time.

pub mod attention;
pub mod classify;
pub mod config;
pub mod convert;
pub mod cswin;
pub mod deit;
pub mod fold;
pub mod infer;
pub mod layers;
pub mod pvt;
pub mod repbn;
pub mod swin;
pub mod synthetic;
pub mod windows;

use std::path::Path;
use std::sync::Arc;

use kestrel::Quant;
use kestrel::weights::WeightSource;
use kestrel::weights::kestrel_file::KestrelFile;
use kestrel::{Context, Recorder, Tensor};

use crate::error::{ModelError, Result};
use crate::params::{HostParams, ParamSource};
use config::{Family, SlabConfig};
use fold::FoldMode;

/// Metadata key under which a converted Kestrel file stores the [`SlabConfig`].
pub const CONFIG_KEY: &str = "slab_config";

/// A SLAB-family model on the GPU.
pub struct SlabModel {
    ctx: Arc<Context>,
    net: Net,
}

/// The network of one family.
enum Net {
    Deit(deit::Deit),
    Swin(swin::Swin),
    Pvt(pvt::Pvt),
    Cswin(cswin::Cswin),
}

/// Reads a checkpoint into parameters with every RepBN folded (or kept, see [`FoldMode`]).
pub fn fold_checkpoint(src: &dyn WeightSource, cfg: &SlabConfig, mode: FoldMode) -> Result<HostParams> {
    cfg.validate()?;
    match cfg.family {
        Family::Deit => deit::fold(src, cfg, mode),
        Family::Swin => swin::fold(src, cfg, mode),
        Family::Pvt => pvt::fold(src, cfg, mode),
        Family::Cswin => cswin::fold(src, cfg, mode),
    }
}

impl SlabModel {
    /// Uploads a model from folded parameters (from [`fold_checkpoint`] or a converted file).
    pub fn load(ctx: &Arc<Context>, cfg: &SlabConfig, params: &dyn ParamSource, quant: Quant) -> Result<SlabModel> {
        cfg.validate()?;
        let net = match cfg.family {
            Family::Deit => Net::Deit(deit::Deit::load(ctx, cfg, params, quant)?),
            Family::Swin => Net::Swin(swin::Swin::load(ctx, cfg, params, quant)?),
            Family::Pvt => Net::Pvt(pvt::Pvt::load(ctx, cfg, params, quant)?),
            Family::Cswin => Net::Cswin(cswin::Cswin::load(ctx, cfg, params, quant)?),
        };
        Ok(SlabModel { ctx: ctx.clone(), net })
    }

    /// Opens a checkpoint (`.pth` or any supported weight file) or a converted Kestrel file.
    /// `arch` names the architecture; without it, a Kestrel file's stored config is used, or
    /// the architecture is inferred from the checkpoint's tensors. A checkpoint is folded at
    /// load and stored as `quant` asks; a Kestrel file keeps the storage it was converted with.
    pub fn open(ctx: &Arc<Context>, path: &Path, arch: Option<&str>, quant: Quant) -> Result<SlabModel> {
        let src = kestrel::weights::open(path)?;
        if src.format() == "kestrel" {
            let file = KestrelFile::open(path)?;
            let cfg = match arch {
                Some(a) => config::lookup(a)?,
                None => stored_config(&file)?,
            };
            return SlabModel::load(ctx, &cfg, &file, file.quant());
        }
        let cfg = match arch {
            Some(a) => config::lookup(a)?,
            None => infer::infer_config(src.as_ref())?,
        };
        let params = fold_checkpoint(src.as_ref(), &cfg, FoldMode::Fold)?;
        SlabModel::load(ctx, &cfg, &params, quant)
    }

    /// The configuration.
    pub fn config(&self) -> &SlabConfig {
        match &self.net {
            Net::Deit(m) => m.config(),
            Net::Swin(m) => m.config(),
            Net::Pvt(m) => m.config(),
            Net::Cswin(m) => m.config(),
        }
    }

    /// The context the model lives in.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Records the forward pass of one image `[1, 3, H, W]` (f32, normalised), giving logits
    /// `[1, classes]`.
    pub fn forward(&self, rec: &mut Recorder, image: &Tensor) -> Result<Tensor> {
        let c = self.config();
        let want = [1, c.in_chans, c.img_size, c.img_size];
        if image.shape() != want {
            return Err(ModelError::Input(format!("{} needs an input of shape {want:?}, got {:?}", c.arch, image.shape())));
        }
        match &self.net {
            Net::Deit(m) => m.forward(rec, image),
            Net::Swin(m) => m.forward(rec, image),
            Net::Pvt(m) => m.forward(rec, image),
            Net::Cswin(m) => m.forward(rec, image),
        }
    }
}

/// The [`SlabConfig`] stored in a converted Kestrel file's metadata.
pub fn stored_config(file: &KestrelFile) -> Result<SlabConfig> {
    let meta = file.header().config.get(CONFIG_KEY).cloned();
    let Some(v) = meta else {
        return Err(ModelError::Checkpoint {
            file: file.path().display().to_string(),
            detail: "no SLAB config in the file's metadata; pass the architecture".into(),
        });
    };
    serde_json::from_value(v)
        .map_err(|e| ModelError::Checkpoint { file: file.path().display().to_string(), detail: format!("bad SLAB config: {e}") })
}
