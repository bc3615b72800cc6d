//! Decoder configs from GGUF metadata and Hugging Face config.json files (no GPU).

use kestrel::ops::attention::{RopeLayout, RopeScaling};
use kestrel_models::ModelError;
use kestrel_models::llm::config::LlmConfig;
use serde_json::json;

#[test]
fn gguf_metadata() {
    let meta = json!({
        "general.architecture": "llama",
        "llama.block_count": 30, "llama.context_length": 8192, "llama.embedding_length": 576,
        "llama.feed_forward_length": 1536, "llama.attention.head_count": 9,
        "llama.attention.head_count_kv": 3, "llama.rope.freq_base": 100000.0,
        "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.vocab_size": 49152,
        "llama.rope.dimension_count": 64,
    });
    let c = LlmConfig::from_gguf_metadata(&meta).expect("config");
    assert_eq!((c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.ffn, c.vocab), (576, 30, 9, 3, 64, 1536, 49152));
    assert_eq!((c.rope.theta, c.rope.rotary_dim, c.rope.scaling, c.context_length), (100000.0, 64, RopeScaling::None, 8192));
    assert_eq!(c.gguf_rope_layout(), RopeLayout::Interleaved);
    let mut qwen = meta.clone();
    let obj = qwen.as_object_mut().expect("object");
    let renamed: Vec<(String, serde_json::Value)> = obj.iter().map(|(k, v)| (k.replace("llama.", "qwen2."), v.clone())).collect();
    obj.clear();
    obj.extend(renamed);
    obj.insert("general.architecture".into(), json!("qwen2"));
    obj.insert("qwen2.rope.scaling.type".into(), json!("linear"));
    obj.insert("qwen2.rope.scaling.factor".into(), json!(4.0));
    let q = LlmConfig::from_gguf_metadata(&qwen).expect("qwen2");
    assert_eq!((q.gguf_rope_layout(), q.rope.scaling), (RopeLayout::RotateHalf, RopeScaling::Linear { factor: 4.0 }));
}

#[test]
fn hf_config_transformers_4_and_5() {
    let v4 = json!({
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "rms_norm_eps": 1e-6,
        "rope_theta": 500000.0, "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "max_position_embeddings": 4096, "tie_word_embeddings": true,
    });
    let c = LlmConfig::from_hf_config(&v4).expect("v4");
    assert_eq!(c.rope.scaling, RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 4096 });
    assert_eq!((c.rope.theta, c.head_dim, c.tie_embeddings, c.qkv_bias), (500000.0, 16, true, false));
    let v5 = json!({
        "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "vocab_size": 100, "head_dim": 32,
        "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
    });
    let q = LlmConfig::from_hf_config(&v5).expect("v5");
    assert_eq!((q.rope.theta, q.rope.scaling, q.kv_heads, q.head_dim), (1000.0, RopeScaling::Linear { factor: 2.0 }, 4, 32));
    assert!(q.qkv_bias && !q.o_bias, "Qwen2 has q/k/v biases only");
}

#[test]
fn mistral_sliding_window_caps_the_context() {
    let cfg = json!({
        "model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
        "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 32768, "sliding_window": 4096,
    });
    assert_eq!(LlmConfig::from_hf_config(&cfg).expect("mistral").context_length, 4096);
}

#[test]
fn invalid_configs_are_config_errors() {
    let base = json!({
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 3, "intermediate_size": 128, "vocab_size": 100,
    });
    let cases = [
        ("num_key_value_heads", json!(3)),
        ("hidden_size", json!("wide")),
        ("rope_scaling", json!({"type": "yarn", "factor": 4.0})),
        ("num_hidden_layers", json!(0)),
        ("model_type", json!("bert")),
    ];
    for (key, value) in cases {
        let mut c = base.clone();
        c[key] = value;
        if key != "num_key_value_heads" {
            c["num_key_value_heads"] = json!(2);
        }
        assert!(matches!(LlmConfig::from_hf_config(&c), Err(ModelError::Config(_))), "{key}");
    }
    assert!(matches!(LlmConfig::from_gguf_metadata(&json!({})), Err(ModelError::Config(_))));
    assert!(matches!(LlmConfig::from_json(&json!({"hidden": 1})), Err(ModelError::Config(_))));
}

/// A GGUF file holding only metadata: `(key, type, value bytes)` entries (no tensors).
fn gguf_with(entries: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut f = b"GGUF".to_vec();
    f.extend_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (key, ty, value) in entries {
        f.extend_from_slice(&(key.len() as u64).to_le_bytes());
        f.extend_from_slice(key.as_bytes());
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(value);
    }
    f
}

/// SmolLM2-like llama metadata with `key` set to the f32 `value`.
fn llama_gguf_with_f32(key: &str, value: f32) -> Vec<u8> {
    let s = |v: &str| [(v.len() as u64).to_le_bytes().to_vec(), v.as_bytes().to_vec()].concat();
    let u = |v: u32| v.to_le_bytes().to_vec();
    gguf_with(&[
        ("general.architecture", 8, s("llama")),
        ("llama.block_count", 4, u(2)),
        ("llama.context_length", 4, u(64)),
        ("llama.embedding_length", 4, u(64)),
        ("llama.feed_forward_length", 4, u(128)),
        ("llama.attention.head_count", 4, u(4)),
        ("llama.vocab_size", 4, u(100)),
        (key, 6, value.to_le_bytes().to_vec()),
    ])
}

#[test]
fn non_finite_gguf_settings_are_refused_by_name() {
    for key in ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"] {
        let ok = kestrel::weights::open_bytes(llama_gguf_with_f32(key, 0.5)).expect("gguf");
        if let Err(e) = LlmConfig::from_gguf_metadata(&ok.metadata()) {
            panic!("{key} = 0.5: {e}");
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let src = kestrel::weights::open_bytes(llama_gguf_with_f32(key, bad)).expect("gguf");
            match LlmConfig::from_gguf_metadata(&src.metadata()) {
                Err(ModelError::Config(msg)) => assert!(msg.contains(key), "{key} = {bad}: {msg}"),
                other => panic!("{key} = {bad}: expected a config error, got {other:?}"),
            }
        }
    }
}
