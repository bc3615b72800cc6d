//! The embedding API (`kestrel_models::api`): the generator on the real SmolLM2 GGUF (skipped
//! with a note when absent; scripts/fetch-test-weights.sh) — streamed pieces equal the text, a
//! callback that breaks, a cancel from another thread, bad requests, a profile — and the
//! classifier on the committed SLAB-DeiT fixture: one image as strided RGBA and as packed RGB
//! gives the same result.

mod llm_common;

use std::ops::ControlFlow;

use kestrel_models::ModelError;
use kestrel_models::api::{
    Arch, ClassifierOptions, GenerateRequest, GeneratorOptions, ImageClassifier, ImageView, PixelFormat, ProfileRequest, TextGenerator,
};
use kestrel_models::slab::config::lookup;
use llm_common::{ctx, serial, smollm2};

#[test]
fn generator_streams_breaks_cancels_and_profiles() {
    let Some(path) = smollm2() else {
        eprintln!("skipped: SmolLM2 GGUF not found (scripts/fetch-test-weights.sh)");
        return;
    };
    let _guard = serial();
    let mut g = TextGenerator::open(&ctx(), &path, &GeneratorOptions { context: Some(128), ..Default::default() }).expect("open");

    let mut streamed = String::new();
    let r = g
        .generate(&GenerateRequest::greedy("The capital of France is", 6), &mut |p| {
            streamed.push_str(p);
            ControlFlow::Continue(())
        })
        .expect("generate");
    assert!(r.text.contains("Paris") && r.text == streamed, "{r:?} vs {streamed:?}");
    assert_eq!((r.finish, r.tokens.len(), r.prompt_tokens), ("length", 6, 5));

    let (mut pieces, mut streamed) = (0, String::new());
    let r = g
        .generate(&GenerateRequest::greedy("The capital of France is", 32), &mut |p| {
            pieces += 1;
            streamed.push_str(p);
            if pieces == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
        .expect("generate");
    assert_eq!((r.finish, pieces, r.text.as_str()), ("cancelled", 2, streamed.as_str()));

    let flag = g.cancel_flag();
    let r = g.generate(&GenerateRequest::greedy("The capital of France is", 32), &mut |_| {
        flag.cancel();
        ControlFlow::Continue(())
    });
    assert!(matches!(r, Err(ModelError::Cancelled)), "{r:?}");

    for bad in [r#"{"prompt": ""}"#, r#"{"prompt": "x", "stop": [""]}"#, r#"{"prompt": "x", "temperature": -1}"#] {
        let req = GenerateRequest::from_json(bad).expect("parses");
        let r = g.generate(&req, &mut |_| ControlFlow::Continue(()));
        assert!(matches!(r, Err(ModelError::Input(_))), "{bad}: {r:?}");
    }
    assert!(matches!(GenerateRequest::from_json(r#"{"prompt": "x", "max_token": 3}"#), Err(ModelError::Input(_))));

    let p = g.profile(&ProfileRequest { iters: 2, trace: true }).expect("profile");
    assert!(p.dispatches > 0 && !p.ops.is_empty() && p.latency_ms.p50 > 0.0 && p.trace.is_some(), "{p:?}");
}

#[test]
fn strided_rgba_and_packed_rgb_classify_alike() {
    let mut arch = lookup("slab_deit_tiny").unwrap();
    (arch.embed_dims, arch.depths, arch.img_size, arch.patch_size, arch.num_classes) = (vec![36], vec![2], 48, 8, 10);
    let opts = ClassifierOptions { arch: Some(Arch::Config(arch)), top: 10, ..Default::default() };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slab/slab_deit_test.pth");
    let _guard = serial();
    let model = ImageClassifier::open(&ctx(), &path, &opts).expect("open");
    let (w, h) = (61u32, 37u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
    let stride = w * 4 + 5;
    let mut rgba = vec![0u8; (stride * (h - 1) + w * 4) as usize];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        let (x, y) = (i as u32 % w, i as u32 / w);
        let at = (y * stride + x * 4) as usize;
        rgba[at..at + 3].copy_from_slice(px);
        rgba[at + 3] = 7;
    }
    let a = model.classify(&ImageView::packed(&rgb, w, h, PixelFormat::Rgb8)).expect("rgb");
    let b = model.classify(&ImageView { data: &rgba, width: w, height: h, stride, format: PixelFormat::Rgba8 }).expect("rgba");
    assert_eq!(a.top, b.top);
    assert_eq!(a.top.len(), 10);
    let short = ImageView { data: &rgba[..rgba.len() - 1], width: w, height: h, stride, format: PixelFormat::Rgba8 };
    assert!(matches!(model.classify(&short), Err(ModelError::Input(_))));
}
