//! RepBN (`BN(x) + α·x`, SLAB's re-parameterisable BatchNorm) as stored in the official
//! checkpoints, read into the per-channel affine that the load-time fold removes.
//!
//! Two key schemes exist: PRepBN's `LinearNorm` nests it (`{p}.norm2.alpha`,
//! `{p}.norm2.bn.*`, beside a dead LayerNorm `{p}.norm1.*` and the counters `warm`, `iter`,
//! `total_step`); plain RepBN stores it directly (`{p}.alpha`, `{p}.bn.*`).

use kestrel::weights::WeightSource;
use kestrel::weights::fold::{BatchNorm, ChannelAffine};

use crate::error::{ModelError, Result};
use crate::params::read_checked;

/// BatchNorm ε of RepBN (PyTorch's `nn.BatchNorm1d` default, used by the official models).
pub const BN_EPS: f64 = 1e-5;

/// Reads the RepBN at `prefix` (either key scheme) over `channels` channels as the affine
/// `a = γ/√(σ²+ε) + α`, `c = β − γ·μ/√(σ²+ε)`.
pub fn read_repbn(src: &dyn WeightSource, prefix: &str, channels: usize) -> Result<ChannelAffine> {
    let nested = format!("{prefix}.norm2");
    let base = if src.info(&format!("{nested}.alpha")).is_some() { nested } else { prefix.to_string() };
    let alpha = read_checked(src, &format!("{base}.alpha"), &[1])?[0];
    let bn_prefix = format!("{base}.bn");
    for stat in ["running_mean", "running_var", "weight", "bias"] {
        read_checked(src, &format!("{bn_prefix}.{stat}"), &[channels])?;
    }
    let bn = BatchNorm::from_source(src, &bn_prefix, BN_EPS)?;
    bn.rep_affine(f64::from(alpha))
        .map_err(|e| ModelError::Checkpoint { file: src.path().display().to_string(), detail: format!("`{bn_prefix}`: {e}") })
}
