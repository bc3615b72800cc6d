//! A LLaMA-family checkpoint of seeded random values, for profiling a full-size architecture
//! without its weights (`kestrel profile llava-1.5-7b`): latency does not depend on the
//! values. Tensors are listed under Hugging Face names and made on demand, one at a time, from
//! [`RandomParams`] (uniform in ±0.05, a function of the seed and the name).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use kestrel::weights::{TensorInfo, WeightDType, WeightSource};

use super::config::{LlmConfig, MlpKind};
use super::weights::{FfnSite, Naming, Part, moe_coefficient, moe_router};
use crate::params::RandomParams;

/// Seeded random weights for a decoder config (SwiGLU or PanGu-π's MLP and augmented shortcut,
/// Eve's mixture-of-experts layers, RMSNorm).
pub struct RandomCheckpoint {
    path: PathBuf,
    tensors: Vec<TensorInfo>,
    params: RandomParams,
}

impl RandomCheckpoint {
    /// Every tensor `config` needs, under Hugging Face names, drawn from `seed`.
    pub fn new(config: &LlmConfig, seed: u64) -> RandomCheckpoint {
        let (d, q, kv, f) = (config.hidden, config.q_dim(), config.kv_heads * config.head_dim, config.ffn);
        let n = Naming::Hf;
        let mut list: Vec<(String, Vec<usize>)> = vec![(n.embed().into(), vec![config.vocab, d])];
        for i in 0..config.layers {
            let mut layer = vec![
                (Part::AttnNorm, vec![d]),
                (Part::Q, vec![q, d]),
                (Part::K, vec![kv, d]),
                (Part::V, vec![kv, d]),
                (Part::O, vec![d, q]),
                (Part::FfnNorm, vec![d]),
            ];
            if let Some(r) = config.layer_aug(i) {
                layer.extend([(Part::AugFc1, vec![r, d]), (Part::AugFc2, vec![d, r])]);
            }
            list.extend(layer.into_iter().map(|(part, shape)| (format!("{}.weight", n.layer(i, part)), shape)));
            if config.qkv_bias {
                list.extend([(Part::Q, q), (Part::K, kv), (Part::V, kv)].map(|(p, s)| (format!("{}.bias", n.layer(i, p)), vec![s])));
            }
            let mut ffn = vec![(Part::Gate, vec![f, d]), (Part::Up, vec![f, d]), (Part::Down, vec![d, f])];
            if config.layer_mlp(i) == MlpKind::PanguVanilla {
                ffn.push((Part::Gate2, vec![f, d]));
            }
            let sites: Vec<FfnSite> = match config.moe.as_ref().filter(|m| m.layers.contains(&i)) {
                Some(m) => {
                    list.push((format!("{}.weight", moe_router(i)), vec![m.experts, d]));
                    list.push((format!("{}.weight", moe_coefficient(i)), vec![2, d]));
                    list.push((format!("{}.bias", moe_coefficient(i)), vec![2]));
                    (0..m.experts).map(FfnSite::Expert).chain([FfnSite::Residual]).collect()
                }
                None => vec![FfnSite::Plain],
            };
            for site in sites {
                list.extend(ffn.iter().map(|(part, shape)| (format!("{}.weight", site.place(&n.layer(i, *part))), shape.clone())));
            }
        }
        list.push((format!("{}.weight", n.final_norm()), vec![d]));
        if !config.tie_embeddings {
            list.push((n.head().into(), vec![config.vocab, d]));
        }
        let tensors = list.into_iter().map(|(name, shape)| TensorInfo { name, dtype: WeightDType::F32, shape }).collect();
        RandomCheckpoint { path: PathBuf::from(format!("<random weights, seed {seed}>")), tensors, params: RandomParams::new(seed) }
    }
}

impl WeightSource for RandomCheckpoint {
    fn format(&self) -> &'static str {
        "random"
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn metadata(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn bytes(&self, name: &str) -> kestrel::Result<Cow<'_, [u8]>> {
        let info = self.info(name).ok_or_else(|| kestrel::KestrelError::Weights {
            file: self.path.display().to_string(),
            tensor: Some(name.to_string()),
            detail: "no such tensor".into(),
        })?;
        let values = self.params.values(name, info.numel());
        Ok(Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()))
    }
}
