//! SLAB-LLaMA's PRepBN norms as stored in its checkpoints (`modeling_llama.py` of the SLAB
//! repository): each norm is a `LinearNorm` whose `norm1` (RMSNorm, `{p}.norm1.weight`) only
//! runs during the training warm-up, and whose `norm2` is RepBN, `BN(x) + α·x`
//! (`{p}.norm2.alpha`, `{p}.norm2.bn.{weight,bias,running_mean,running_var}`), with the BN's
//! eps equal to `rms_norm_eps`. At inference only `norm2` runs: a per-channel affine.

use kestrel::weights::fold::{BatchNorm, ChannelAffine};

use super::store::Store;
use crate::error::Result;

/// The inference-time affine `a = γ/√(σ²+ε) + α`, `c = β − γ·μ/√(σ²+ε)` of the PRepBN
/// `LinearNorm` at `prefix` over `channels` channels.
pub fn read_prepbn(store: &Store, prefix: &str, channels: usize, eps: f32) -> Result<ChannelAffine> {
    let alpha = store.f32(&format!("{prefix}.norm2.alpha"), &[1])?[0];
    let bn_prefix = format!("{prefix}.norm2.bn");
    for stat in ["weight", "bias", "running_mean", "running_var"] {
        store.check_shape(&format!("{bn_prefix}.{stat}"), &[channels])?;
    }
    let bn = BatchNorm::from_source(store.source(), &bn_prefix, f64::from(eps))?;
    bn.rep_affine(f64::from(alpha)).map_err(|e| store.error(format!("`{bn_prefix}`: {e}")))
}

/// Whether the norm at `prefix` is stored as a PRepBN `LinearNorm`.
pub fn is_prepbn(store: &Store, prefix: &str) -> bool {
    store.has(&format!("{prefix}.norm2.alpha"))
}
