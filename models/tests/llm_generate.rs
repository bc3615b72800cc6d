//! The generation loop and the sampler's GPU paths on a tiny random model, and bad input:
//! empty prompts, prompts longer than the context, ids outside the vocabulary, unknown
//! architectures, bad sampling parameters — typed errors, never a panic.

mod llm_common;

use kestrel::DType;
use kestrel::Quant;
use kestrel_models::ModelError;
use kestrel_models::llm::config::LlmConfig;
use kestrel_models::llm::generate::{FinishReason, GenerateOptions, generate};
use kestrel_models::llm::load::load;
use kestrel_models::llm::sampler::{Sampler, SamplerConfig};
use kestrel_models::llm::tokenizer::Tokenizer;
use kestrel_models::llm::weights::LoadOptions;
use llm_common::{ctx, fixture, reference, tiny_decoder};
use serde_json::json;

/// A tokenizer whose ids cover the tiny models' vocabulary of 100 (helper fixture of the
/// tokenizer tests); its EOS is id 2.
fn tokenizer() -> Tokenizer {
    let path = fixture("../spm_tiny.gguf");
    let src = kestrel::weights::open(&path).expect("open spm_tiny.gguf");
    Tokenizer::from_gguf_metadata(&src.metadata()).expect("tokenizer")
}

/// Sampling that never draws the EOS id 2 of [`tokenizer`] as long as other tokens are likely.
fn sampled(seed: u64) -> SamplerConfig {
    SamplerConfig { temperature: 1.0, top_k: 20, top_p: 0.9, min_p: 0.0, seed, ..SamplerConfig::default() }
}

#[test]
fn empty_prompt_is_an_input_error() {
    let mut dec = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 16);
    assert!(matches!(dec.prefill(&[]), Err(ModelError::Input(_))));
    let r = generate(&mut dec, &tokenizer(), &[], &GenerateOptions::default(), &mut |_| {});
    assert!(matches!(r, Err(ModelError::Input(_))), "{:?}", r.map(|g| g.tokens));
}

#[test]
fn prompt_longer_than_the_context_is_refused() {
    let ids = reference("llama_gqa").ids;
    let mut dec = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 8);
    match dec.prefill(&ids[..9]) {
        Err(ModelError::ContextFull { needed: 9, context: 8 }) => {}
        other => panic!("expected ContextFull, got {:?}", other.map(|l| l.vocab())),
    }
    assert_eq!(dec.position(), 0, "a refused prefill changes nothing");
    dec.prefill(&ids[..8]).expect("a prompt of exactly the context fits");
    assert!(matches!(dec.decode_step(ids[8]), Err(ModelError::ContextFull { needed: 9, context: 8 })));
    dec.reset();
    let r = generate(&mut dec, &tokenizer(), &ids[..9], &GenerateOptions::default(), &mut |_| {});
    assert!(matches!(r, Err(ModelError::ContextFull { .. })));
}

#[test]
fn generation_stops_when_the_context_is_full() {
    let ids = reference("llama_gqa").ids;
    let mut dec = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 8);
    let opts = GenerateOptions { max_tokens: 10, sampler: sampled(7), ..Default::default() };
    let g = generate(&mut dec, &tokenizer(), &ids[..6], &opts, &mut |_| {}).expect("generate");
    assert_eq!((g.finish, g.tokens.len(), dec.position()), (FinishReason::ContextFull, 3, 8), "{:?}", g.tokens);
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused() {
    let mut dec = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 8);
    assert!(matches!(dec.prefill(&[3, 100]), Err(ModelError::Input(_))));
    assert_eq!(dec.position(), 0);
}

#[test]
fn unknown_gguf_architecture_is_a_config_error() {
    let err = load(&ctx(), &fixture("unknown_arch.gguf"), &LoadOptions::default(), &mut |_, _| {}).err().expect("must fail");
    assert!(matches!(&err, ModelError::Config(m) if m.contains("mamba")), "{err}");
    let err = LlmConfig::from_hf_config(&json!({"model_type": "gpt2", "hidden_size": 8})).expect_err("must fail");
    assert!(matches!(&err, ModelError::Config(m) if m.contains("gpt2")), "{err}");
}

#[test]
fn bad_sampling_parameters_are_refused() {
    for c in [
        SamplerConfig { temperature: -1.0, ..SamplerConfig::default() },
        SamplerConfig { top_p: 0.0, ..SamplerConfig::default() },
        SamplerConfig { min_p: 1.5, ..SamplerConfig::default() },
        SamplerConfig { repeat_penalty: 0.0, ..SamplerConfig::default() },
        SamplerConfig { temperature: f32::NAN, ..SamplerConfig::default() },
    ] {
        assert!(matches!(Sampler::new(c), Err(ModelError::Input(_))), "{c:?}");
    }
}

#[test]
fn same_seed_same_tokens_and_streamed_text_is_the_text() {
    let ids = reference("llama_gqa").ids;
    let tok = tokenizer();
    let run = |seed: u64| {
        let mut dec = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 32);
        let mut streamed = String::new();
        let opts = GenerateOptions { max_tokens: 10, sampler: sampled(seed), ..Default::default() };
        let g = generate(&mut dec, &tok, &ids[..4], &opts, &mut |s| streamed.push_str(s)).expect("generate");
        assert_eq!(streamed, g.text);
        g.tokens
    };
    let a = run(42);
    assert_eq!(a, run(42), "same seed, same tokens");
    assert!((1..6).any(|s| run(s) != a), "other seeds should give other tokens");
}

#[test]
fn gpu_sampling_paths_equal_the_cpu_path() {
    let ids = reference("llama_gqa").ids;
    let mut dec = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 32);
    let logits = dec.prefill(&ids[..6]).expect("prefill");
    let row = logits.to_vec().expect("readback");
    for config in [SamplerConfig::default(), sampled(3), sampled(11)] {
        for _ in 0..4 {
            let mut gpu = Sampler::new(config).expect("sampler");
            let mut cpu = Sampler::new(config).expect("sampler");
            assert_eq!(gpu.sample(&logits).expect("sample"), cpu.pick_from_row(&row).expect("pick"), "{config:?}");
        }
    }
}

#[test]
fn stop_strings_end_generation_and_are_cut() {
    let ids = reference("llama_gqa").ids;
    let tok = tokenizer();
    let mut dec = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 32);
    let opts = GenerateOptions { max_tokens: 12, ..Default::default() };
    let full = generate(&mut dec, &tok, &ids[..4], &opts, &mut |_| {}).expect("generate");
    // Stop at a piece of the greedy text that starts after its first character.
    let Some((cut, _)) = full.text.char_indices().nth(2) else { panic!("greedy text too short: {:?}", full.text) };
    let stop = full.text[cut..].chars().take(2).collect::<String>();
    let at = full.text.find(&stop).expect("stop string in the text");
    dec.reset();
    let mut streamed = String::new();
    let opts = GenerateOptions { stop: vec![stop.clone()], ..opts };
    let g = generate(&mut dec, &tok, &ids[..4], &opts, &mut |s| streamed.push_str(s)).expect("generate");
    assert_eq!((g.finish, g.text.as_str(), streamed.as_str()), (FinishReason::Stop, &full.text[..at], &full.text[..at]), "stop {stop:?}");
}
