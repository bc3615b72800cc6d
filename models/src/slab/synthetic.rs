//! Seeded synthetic weights for the full-size SLAB golden checks, generator
//! `kestrel-slab-synth-v1` (specified in `tools/slab_reference/README.md`, implemented
//! identically by `tools/slab_reference/make_fixtures.py`, which wrote the reference logits
//! `models/tests/fixtures/slab/<arch>_full.logits.npy`).
//!
//! Entry `i` of a model's state dict (0-based, in official checkpoint order, every entry counted,
//! integer buffers included) is filled from a SplitMix64 stream keyed by the model seed and `i`:
//! `key = mix64(seed·γ + i)`, element `j` gets `u = (mix64(key + (j+1)·γ) >> 11) · 2⁻⁵³` and the
//! value `f32(lo + (hi − lo)·u)` computed in f64, with `[lo, hi)` chosen by [`rule`] from the
//! entry's name and shape. No torch is needed to rebuild the weights.

/// SplitMix64's increment γ (the 64-bit golden ratio).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Seed of the synthetic input image (tensor index 0, values in `[-2, 2)`).
pub const INPUT_SEED: u64 = 7;

/// SplitMix64's output function.
pub fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The uniform draws in `[0, 1)` for entry `index` of a model generated with `seed` (an endless
/// stream; take as many as the tensor has elements).
pub fn uniform01(seed: u64, index: u64) -> impl Iterator<Item = f64> {
    let key = mix64(seed.wrapping_mul(GOLDEN_GAMMA).wrapping_add(index));
    (1u64..).map(move |j| (mix64(key.wrapping_add(j.wrapping_mul(GOLDEN_GAMMA))) >> 11) as f64 * (1.0 / (1u64 << 53) as f64))
}

/// How the generator fills one state-dict entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SynthRule {
    /// Float values uniform in `[lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Integer zeros (`warm`, `iter`, `num_batches_tracked`; all dead at inference).
    IntZero,
    /// The architecture's own value, not drawn: `total_step` (the official LinearNorm step),
    /// `relative_position_index` and Swin's `attn_mask` (computed from the geometry).
    Architecture,
}

/// The rule for the entry `key` of shape `shape`; the first matching line wins. `None` for an
/// entry no SLAB model has.
pub fn rule(key: &str, shape: &[usize]) -> Option<SynthRule> {
    let last = key.rsplit('.').next().unwrap_or(key);
    let u = |lo, hi| Some(SynthRule::Uniform { lo, hi });
    match last {
        "warm" | "iter" | "num_batches_tracked" => return Some(SynthRule::IntZero),
        "total_step" | "relative_position_index" | "attn_mask" => return Some(SynthRule::Architecture),
        "running_var" => return u(0.5, 2.0),
        "running_mean" => return u(-0.5, 0.5),
        "alpha" => return u(0.5, 1.5),
        _ => {}
    }
    if last == "weight" && shape.len() == 1 {
        return u(0.5, 1.5); // BatchNorm or (dead) LayerNorm scale
    }
    if key.ends_with(".bn.bias") || key.ends_with("norm1.bias") {
        return u(-0.2, 0.2);
    }
    if last == "relative_position_bias_table" {
        return u(-0.5, 0.5);
    }
    if last.starts_with("pos_embed") || matches!(last, "positional_encoding" | "cls_token" | "scale") {
        return u(-0.5, 0.5);
    }
    if key == "head.weight" {
        return u(-0.1, 0.1);
    }
    if last == "weight" && shape.len() == 4 && shape[1] == 1 {
        return u(-0.2, 0.2); // depthwise convs
    }
    match last {
        "weight" => u(-0.035, 0.035),
        "bias" => u(-0.1, 0.1),
        _ => None,
    }
}

/// The `len` values of a [`SynthRule::Uniform`] entry `index` of a model generated with `seed`.
pub fn uniform_values(seed: u64, index: u64, lo: f64, hi: f64, len: usize) -> Vec<f32> {
    uniform01(seed, index).take(len).map(|u| (lo + (hi - lo) * u) as f32).collect()
}

/// The synthetic input, `1 × 3 × side × side` row-major, values in `[-2, 2)`.
pub fn input_image(side: usize) -> Vec<f32> {
    uniform_values(INPUT_SEED, 0, -2.0, 2.0, 3 * side * side)
}

/// Weight seed of the architectures that have full-size golden logits.
pub fn weight_seed(arch: &str) -> Option<u64> {
    match arch {
        "slab_deit_tiny" => Some(1),
        "slab_swin_tiny" => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // SplitMix64 seeded with 0: first output 0xe220a8397b1dcdaf.
        assert_eq!(mix64(GOLDEN_GAMMA), 0xe220_a839_7b1d_cdaf);
        // Key of (seed 1, entry 0) is that value; its first three draws:
        let key = 0xe220_a839_7b1d_cdafu64;
        let want = [0xa706_dd2f_4d19_7e6fu64, 0xb382_a305_f441_4f5e, 0x631a_9154_fbab_f717];
        for (j, w) in want.iter().enumerate() {
            assert_eq!(mix64(key.wrapping_add((j as u64 + 1).wrapping_mul(GOLDEN_GAMMA))), *w);
        }
        let u: Vec<f64> = uniform01(1, 0).take(3).collect();
        assert_eq!(u, vec![0.6524484863740322, 0.7012121095215252, 0.3871241409757855]);
    }

    #[test]
    fn input_matches_the_python_generator() {
        let x = input_image(224);
        assert_eq!(x.len(), 3 * 224 * 224);
        assert_eq!(&x[..4], &[-0.33483362f32, -0.2002957, 0.8751888, 1.368888]);
        let sum: f64 = x.iter().map(|&v| v as f64).sum();
        assert!((sum - 232.1111005633138).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn deit_tiny_entries_match_the_python_generator() {
        // slab_deit_tiny: entry 0 `cls_token`, 1 `pos_embed`, 411 `head.weight` (see
        // slab_deit_tiny_full.json, tensor_checks).
        let seed = weight_seed("slab_deit_tiny").unwrap();
        assert_eq!(rule("cls_token", &[1, 1, 192]), Some(SynthRule::Uniform { lo: -0.5, hi: 0.5 }));
        assert_eq!(uniform_values(seed, 0, -0.5, 0.5, 1)[0], 0.15244849f32);
        assert_eq!(uniform_values(seed, 1, -0.5, 0.5, 1)[0], -0.13181049f32);
        assert_eq!(rule("head.weight", &[1000, 192]), Some(SynthRule::Uniform { lo: -0.1, hi: 0.1 }));
        let head = uniform_values(seed, 411, -0.1, 0.1, 1000 * 192);
        assert_eq!(head[0], 0.09356909f32);
        let sum: f64 = head.iter().map(|&v| v as f64).sum();
        assert!((sum - -30.861398849854496).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn rules_cover_every_kind_of_entry() {
        let u = |lo, hi| Some(SynthRule::Uniform { lo, hi });
        assert_eq!(rule("blocks.0.norm1.warm", &[]), Some(SynthRule::IntZero));
        assert_eq!(rule("blocks.0.norm1.total_step", &[]), Some(SynthRule::Architecture));
        assert_eq!(rule("layers.2.blocks.1.attn_mask", &[4, 49, 49]), Some(SynthRule::Architecture));
        assert_eq!(rule("blocks.0.norm1.norm2.bn.running_var", &[192]), u(0.5, 2.0));
        assert_eq!(rule("blocks.0.norm1.norm2.bn.running_mean", &[192]), u(-0.5, 0.5));
        assert_eq!(rule("blocks.0.norm1.norm2.alpha", &[1]), u(0.5, 1.5));
        assert_eq!(rule("blocks.0.norm1.norm1.weight", &[192]), u(0.5, 1.5));
        assert_eq!(rule("blocks.0.norm1.norm1.bias", &[192]), u(-0.2, 0.2));
        assert_eq!(rule("blocks.0.norm1.norm2.bn.bias", &[192]), u(-0.2, 0.2));
        assert_eq!(rule("layers.2.blocks.0.attn.relative_position_bias_table", &[169, 12]), u(-0.5, 0.5));
        assert_eq!(rule("blocks.0.attn.positional_encoding", &[1, 196, 192]), u(-0.5, 0.5));
        assert_eq!(rule("blocks.0.attn.dwc.weight", &[64, 1, 5, 5]), u(-0.2, 0.2));
        assert_eq!(rule("patch_embed.proj.weight", &[192, 3, 16, 16]), u(-0.035, 0.035));
        assert_eq!(rule("blocks.0.attn.qkv.weight", &[576, 192]), u(-0.035, 0.035));
        assert_eq!(rule("blocks.0.attn.qkv.bias", &[576]), u(-0.1, 0.1));
        assert_eq!(rule("layers.0.downsample.reduction.weight", &[192, 384]), u(-0.035, 0.035));
        assert_eq!(rule("something.else", &[3]), None);
    }
}
