//! Free Video-LLM end to end on tiny random CLIP + LLaVA-1.5 models of the real geometry
//! (336 px, patch 14; fixtures/video/make_pipeline_fixture.py) and a synthetic H.264 clip of 60
//! frames: the frames sampled, the slow / middle choices, the 11x21 boxes, 2 648 visual tokens
//! (their first rows within 1e-3 of PyTorch's, f32 both sides), the prompt's ids and the greedy
//! ids, all against the official pipeline re-written in PyTorch on the ffmpeg tool's frames.
#![cfg(feature = "video")]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use kestrel::Quant;
use kestrel::{Context, ContextOptions, DType};
use kestrel_models::clip::ClipModel;
use kestrel_models::llava::LlavaModel;
use kestrel_models::llm::decoder::DecoderOptions;
use kestrel_models::llm::generate::{GenerateOptions, generate_segments};
use kestrel_models::llm::weights::LoadOptions;
use kestrel_models::video::decode::decode;
use kestrel_models::video::{RoiGrid, Spec, encode_video, encode_video_with, prompt_text, seq_frames};
use serde_json::Value;

fn ctx() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| Context::new(&ContextOptions::from_env()).expect("GPU context (is lavapipe installed?)")).clone()
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video")
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("int") as usize).collect()
}

#[test]
fn pipeline_matches_pytorch() {
    let want: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("pipeline.json")).expect("pipeline.json")).expect("json");
    let clip = ClipModel::load(&ctx(), &dir().join("clip"), Quant::F32).expect("CLIP");
    let opts = LoadOptions { quant: Quant::F32, ..LoadOptions::default() };
    let dec = DecoderOptions { context: Some(3072), kv_dtype: Some(DType::F32) };
    let mut llava = LlavaModel::load(&ctx(), &dir().join("llava"), &opts, &dec, &mut |_, _| {}).expect("LLaVA");
    let video_path = dir().join("clip_60f.mp4");
    let n = want["n_frames"].as_u64().expect("n") as usize;
    let idx = seq_frames(n, 50);
    assert_eq!(idx, usizes(&want["frames"]));
    let video = decode(&video_path, Some(&idx)).expect("decode");
    assert_eq!(video.info.n_frames, n);
    let question = want["question"].as_str().expect("question");
    let (tokens, sel, timings) = encode_video(&llava, &clip, &video.frames, question, &Spec::default()).expect("encode video");
    eprintln!("timings {timings:?}");
    assert_eq!(sel.slow, usizes(&want["slow"]));
    assert_eq!(sel.middle, usizes(&want["middle"]));
    assert_eq!(sel.fast.len(), want["fast_count"].as_u64().expect("fast") as usize);
    let roi: Vec<[usize; 5]> = sel.roi.iter().map(|r| [r.frame, r.top, r.left, r.height, r.width]).collect();
    let want_roi: Vec<[usize; 5]> = want["roi"]
        .as_array()
        .expect("roi")
        .iter()
        .map(|r| ["frame", "top", "left", "height", "width"].map(|k| r[k].as_u64().expect("box") as usize))
        .collect();
    assert_eq!(roi, want_roi);
    assert_eq!(sel.visual_tokens, 2648);
    assert_eq!(tokens.shape()[0], 2648);
    let hidden = tokens.shape()[1];
    let got = tokens.to_vec_f32().expect("readback");
    let head: Vec<f32> = want["visual_head"]
        .as_array()
        .expect("head")
        .iter()
        .flat_map(|r| r.as_array().expect("row").iter().map(|v| v.as_f64().expect("f") as f32))
        .collect();
    let worst = got[..4 * hidden].iter().zip(&head).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-3, "first visual rows differ by {worst}");
    let sum: f64 = got.iter().map(|&v| f64::from(v)).sum();
    let want_sum = want["visual_sum"].as_f64().expect("sum");
    assert!((sum - want_sum).abs() <= 1e-3 * want_sum.abs().max(1.0), "visual sum {sum} vs {want_sum}");

    let ids = llava.encode_prompt(&prompt_text(question)).expect("prompt ids");
    let want_ids: Vec<i64> = want["prompt_ids"].as_array().expect("ids").iter().map(|v| v.as_i64().expect("id")).collect();
    let image_token = llava.config().image_token;
    let ours: Vec<i64> = ids.iter().map(|&i| if i == image_token { -200 } else { i64::from(i) }).collect();
    assert_eq!(ours, want_ids);
    let segments = llava.segments(&ids, std::slice::from_ref(&tokens)).expect("segments");
    let want_gen = usizes(&want["generated"]);
    let opts = GenerateOptions { max_tokens: want_gen.len().max(1), ..GenerateOptions::default() };
    let (dec, tok) = llava.decoder_and_tokenizer();
    let g = generate_segments(dec, tok, &segments, &opts, &mut |_| {}).expect("generate");
    assert_eq!(g.tokens.iter().map(|&t| t as usize).collect::<Vec<_>>(), want_gen);
}

/// The spatial RoI reading (beyond the official code) on the same clip: 21x11 boxes inside the
/// 24x12 pooled map, the same frames, 2 648 tokens; prints how the boxes differ from the
/// official reading's.
#[test]
fn spatial_roi_reading() {
    let clip = ClipModel::load(&ctx(), &dir().join("clip"), Quant::F32).expect("CLIP");
    let llava =
        LlavaModel::load(&ctx(), &dir().join("llava"), &LoadOptions::default(), &DecoderOptions::default(), &mut |_, _| {}).expect("LLaVA");
    let video = decode(&dir().join("clip_60f.mp4"), Some(&seq_frames(60, 50))).expect("decode");
    let q = "what is on the sky?";
    let (_, official, _) = encode_video(&llava, &clip, &video.frames, q, &Spec::default()).expect("official");
    let (tokens, spatial, _) = encode_video_with(&llava, &clip, &video.frames, q, &Spec::default(), RoiGrid::Spatial).expect("spatial");
    assert_eq!((spatial.slow.clone(), spatial.middle.clone()), (official.slow.clone(), official.middle.clone()));
    assert_eq!((spatial.visual_tokens, tokens.shape()[0]), (2648, 2648));
    for r in &spatial.roi {
        assert_eq!((r.height, r.width), (21, 11));
        assert!(r.top + r.height <= 24 && r.left + r.width <= 12, "{r:?}");
    }
    eprintln!("official boxes {:?}", official.roi.iter().map(|r| (r.frame, r.top, r.left)).collect::<Vec<_>>());
    eprintln!("spatial boxes  {:?}", spatial.roi.iter().map(|r| (r.frame, r.top, r.left)).collect::<Vec<_>>());
}

/// A question longer than CLIP's 77 positions is truncated as transformers' `truncation=True`
/// does (with a warning), not an error or a panic; the official code would fail there.
#[test]
fn long_question_is_truncated_for_clip() {
    let clip = ClipModel::load(&ctx(), &dir().join("clip"), Quant::F32).expect("CLIP");
    let long = "a photo of a cat on the sky ".repeat(30);
    let ids = clip.tokenize(&[long]).expect("tokenize");
    assert_eq!(ids.len(), 77);
    let eot = clip.tokenizer().and_then(|t| t.token_id("<|endoftext|>")).expect("eot");
    assert_eq!(ids.row(0)[76], eot);
}
