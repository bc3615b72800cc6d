//! `kestrel classify` end to end: a SLAB checkpoint converted (folded) into a Kestrel file,
//! classified from an `.npy` tensor and from images; bad images and the wrong architecture give
//! a clear message and a non-zero exit code, never a panic.

use kestrel::Quant;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use kestrel_models::npy::read_npy_f32;
use kestrel_models::slab::config::{SlabConfig, lookup};
use kestrel_models::slab::convert::convert_checkpoint;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tests/fixtures")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kestrel-cli-classify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The small SLAB-DeiT fixture's architecture (dim 36, 3 heads, depth 2, 48 px, patch 8).
fn small_deit() -> SlabConfig {
    let mut c = lookup("slab_deit_tiny").unwrap();
    c.arch = "slab_deit_test".into();
    c.embed_dims = vec![36];
    c.depths = vec![2];
    c.img_size = 48;
    c.patch_size = 8;
    c.num_classes = 10;
    c
}

/// The fixture converted to a Kestrel file (f32), made once per test process.
fn model_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let out = tmp("slab_deit_test.kestrel");
        let src = kestrel::weights::open(&fixtures().join("slab/slab_deit_test.pth")).unwrap();
        convert_checkpoint(src.as_ref(), &small_deit(), Quant::F32, &out, |_, _| {}).unwrap();
        out
    })
    .clone()
}

fn kestrel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kestrel")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn classifies_an_npy_input_like_the_reference() {
    let model = model_file();
    let logits = tmp("logits.npy");
    let input = fixtures().join("slab/slab_deit_test.input.npy");
    let o = kestrel(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--input-npy",
        input.to_str().unwrap(),
        "--json",
        "--top",
        "3",
        "--dump-logits",
        logits.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["top"].as_array().unwrap().len(), 3);
    assert!(v["ms"].as_f64().unwrap() > 0.0);
    let (shape, got) = read_npy_f32(&logits).unwrap();
    let (_, want) = read_npy_f32(&fixtures().join("slab/slab_deit_test.logits.npy")).unwrap();
    assert_eq!(shape, vec![1, 10]);
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err <= 1e-3, "logits differ by {err}");
    let best = (0..10).max_by(|&a, &b| want[a].total_cmp(&want[b])).unwrap();
    assert_eq!(v["top"][0]["index"].as_u64(), Some(best as u64));
}

#[test]
fn classifies_images_including_a_single_pixel() {
    let model = model_file();
    for image in ["preprocess/chelsea.png", "preprocess/one_px.png", "preprocess/chelsea_q85.jpg"] {
        let path = fixtures().join(image);
        let o = kestrel(&["classify", "--model", model.to_str().unwrap(), path.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{image}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let sum: f64 = v["top"].as_array().unwrap().iter().map(|t| t["prob"].as_f64().unwrap()).sum();
        assert!(sum > 0.0 && sum <= 1.0 + 1e-5, "{image}: {v}");
    }
}

#[test]
fn bad_images_are_clear_errors() {
    let model = model_file();
    let corrupt = tmp("corrupt.png");
    let mut bytes = std::fs::read(fixtures().join("preprocess/chelsea.png")).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, &bytes).unwrap();
    // A real JPEG whose frame header claims 20000 x 20000 pixels.
    let huge = tmp("huge.jpg");
    let mut jpeg = std::fs::read(fixtures().join("preprocess/chelsea_q85.jpg")).unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]);
    std::fs::write(&huge, &jpeg).unwrap();
    let missing = tmp("does-not-exist.png");
    for (path, expect) in [(&corrupt, "image"), (&huge, "20000"), (&missing, "does-not-exist")] {
        let o = kestrel(&["classify", "--model", model.to_str().unwrap(), path.to_str().unwrap()]);
        let err = stderr(&o);
        assert!(!o.status.success() && o.status.code() == Some(1), "{}: {err}", path.display());
        assert!(err.contains(expect) && !err.contains("panicked"), "{}: {err}", path.display());
    }
}

#[test]
fn the_wrong_architecture_is_a_clear_error() {
    let ckpt = fixtures().join("slab/slab_deit_test.pth");
    let input = fixtures().join("slab/slab_deit_test.input.npy");
    for arch in ["slab_swin_tiny", "slab_deit_tiny", "no_such_model"] {
        let o = kestrel(&["classify", "--model", ckpt.to_str().unwrap(), "--arch", arch, "--input-npy", input.to_str().unwrap()]);
        let err = stderr(&o);
        assert!(!o.status.success() && !err.contains("panicked"), "{arch}: {err}");
        assert!(err.contains("slab_deit_test.pth") || err.contains("unknown architecture"), "{arch}: {err}");
    }
}
