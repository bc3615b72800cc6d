//! Tensor names of the two checkpoint layouts the decoder reads: llama.cpp's GGUF names and
//! Hugging Face's `LlamaForCausalLM` state-dict names.
//!
//! PanGu-π's extra tensors have no established names in either layout; Kestrel defines them:
//! HF `model.layers.N.mlp.gate2_proj`, `model.layers.N.self_attn.aug_fc1` / `aug_fc2`, GGUF
//! `blk.N.ffn_gate2`, `blk.N.attn_aug_fc1` / `attn_aug_fc2`. Eve's official checkpoints name
//! them `mlp.gate_proj2` and `attn_linear.0` / `attn_linear.2` ([`Naming::layer_in`] reads
//! either), and put an EVF layer's FFNs under `mlp.deepspeed_moe.experts.deepspeed_experts.E.`
//! and `mlp.mlp.` ([`FfnSite`]).

/// A tensor of one decoder layer (its name prefix, before `.weight` / `.bias`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Norm before attention.
    AttnNorm,
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// Norm before the MLP.
    FfnNorm,
    /// MLP gate (SiLU branch).
    Gate,
    /// PanGu-π's second gate (QuickGELU branch).
    Gate2,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
    /// Augmented shortcut, first linear (d → r).
    AugFc1,
    /// Augmented shortcut, second linear (r → d).
    AugFc2,
}

/// Which naming scheme a checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// llama.cpp: `token_embd`, `blk.N.attn_q`, …, `output_norm`, `output`.
    Gguf,
    /// Hugging Face: `model.embed_tokens`, `model.layers.N.self_attn.q_proj`, …, `model.norm`,
    /// `lm_head`.
    Hf,
}

impl Naming {
    /// The scheme of a checkpoint holding `has("…")` tensors: GGUF names when it has
    /// `token_embd.weight`, else Hugging Face names.
    pub fn detect(has: impl Fn(&str) -> bool) -> Naming {
        if has("token_embd.weight") { Naming::Gguf } else { Naming::Hf }
    }

    /// The embedding table's weight.
    pub fn embed(self) -> &'static str {
        match self {
            Naming::Gguf => "token_embd.weight",
            Naming::Hf => "model.embed_tokens.weight",
        }
    }

    /// The head's weight (absent when tied to the embeddings).
    pub fn head(self) -> &'static str {
        match self {
            Naming::Gguf => "output.weight",
            Naming::Hf => "lm_head.weight",
        }
    }

    /// The final norm's prefix.
    pub fn final_norm(self) -> &'static str {
        match self {
            Naming::Gguf => "output_norm",
            Naming::Hf => "model.norm",
        }
    }

    /// The prefix of `part` in layer `layer` as the checkpoint spells it: the Kestrel name, or
    /// the official Eve name where only that one's `.weight` is present.
    pub fn layer_in(self, layer: usize, part: Part, has: impl Fn(&str) -> bool) -> String {
        let name = self.layer(layer, part);
        let alias = match (self, part) {
            (Naming::Hf, Part::Gate2) => "mlp.gate_proj2",
            (Naming::Hf, Part::AugFc1) => "attn_linear.0",
            (Naming::Hf, Part::AugFc2) => "attn_linear.2",
            _ => return name,
        };
        let alias = format!("model.layers.{layer}.{alias}");
        if !has(&format!("{name}.weight")) && has(&format!("{alias}.weight")) { alias } else { name }
    }

    /// The prefix of `part` in layer `layer`.
    pub fn layer(self, layer: usize, part: Part) -> String {
        match self {
            Naming::Gguf => {
                let name = match part {
                    Part::AttnNorm => "attn_norm",
                    Part::Q => "attn_q",
                    Part::K => "attn_k",
                    Part::V => "attn_v",
                    Part::O => "attn_output",
                    Part::FfnNorm => "ffn_norm",
                    Part::Gate => "ffn_gate",
                    Part::Gate2 => "ffn_gate2",
                    Part::Up => "ffn_up",
                    Part::Down => "ffn_down",
                    Part::AugFc1 => "attn_aug_fc1",
                    Part::AugFc2 => "attn_aug_fc2",
                };
                format!("blk.{layer}.{name}")
            }
            Naming::Hf => {
                let name = match part {
                    Part::AttnNorm => "input_layernorm",
                    Part::Q => "self_attn.q_proj",
                    Part::K => "self_attn.k_proj",
                    Part::V => "self_attn.v_proj",
                    Part::O => "self_attn.o_proj",
                    Part::FfnNorm => "post_attention_layernorm",
                    Part::Gate => "mlp.gate_proj",
                    Part::Gate2 => "mlp.gate2_proj",
                    Part::Up => "mlp.up_proj",
                    Part::Down => "mlp.down_proj",
                    Part::AugFc1 => "self_attn.aug_fc1",
                    Part::AugFc2 => "self_attn.aug_fc2",
                };
                format!("model.layers.{layer}.{name}")
            }
        }
    }
}

/// Where one FFN of a layer lives: the layer's own, or one of an EVF (mixture-of-experts) layer's
/// (Hugging Face names only: `mlp.X` becomes `mlp.deepspeed_moe.experts.deepspeed_experts.E.X`
/// or `mlp.mlp.X`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnSite {
    /// The layer's FFN.
    Plain,
    /// Expert `E` of a mixture.
    Expert(usize),
    /// The mixture's residual FFN.
    Residual,
}

impl FfnSite {
    /// `name` (a layer's FFN tensor prefix, `….mlp.X`) moved to this site.
    pub fn place(self, name: &str) -> String {
        let inner = match self {
            FfnSite::Plain => return name.to_string(),
            FfnSite::Expert(e) => format!(".mlp.deepspeed_moe.experts.deepspeed_experts.{e}."),
            FfnSite::Residual => ".mlp.mlp.".to_string(),
        };
        name.replacen(".mlp.", &inner, 1)
    }
}

/// The prefix of an EVF layer's router (`[experts, d]`, no bias).
pub fn moe_router(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.deepspeed_moe.gate.wg")
}

/// The prefix of an EVF layer's mixing coefficients (`[2, d]` with a bias).
pub fn moe_coefficient(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.coefficient")
}
