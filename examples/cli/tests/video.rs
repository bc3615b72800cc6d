//! `kestrel video` and `kestrel video plan` on the tiny Free Video-LLM fixture
//! (models/tests/fixtures/video): the choices, boxes, token count and greedy ids equal the
//! PyTorch reference's; bad inputs are clear errors.
#![cfg(feature = "video")]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn kestrel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kestrel")).args(args).output().expect("run kestrel")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tests/fixtures/video")
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "kestrel failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn plan_prints_frames_and_counts() {
    let v = json(&kestrel(&["video", "plan", "--frames", "250", "--json"]));
    assert_eq!(v["frames"][25], 127);
    assert_eq!(v["middle"], serde_json::json!([0, 10, 20, 30, 40]));
    assert_eq!(v["visual_tokens"], 2648);
    let v = json(&kestrel(&["video", "plan", "--frames", "7", "--json"]));
    assert_eq!(v["frames"], serde_json::json!([0, 1, 2, 3, 3, 4, 5]));
    assert_eq!(v["visual_tokens"], 3 * 231 + 5 * 231 + 7 * 16);
    let bad = kestrel(&["video", "plan", "--frames", "7", "--spec", "slowfast_3frms"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("spec"));
}

#[test]
fn frames_writes_the_sampled_frames() {
    let out = std::env::temp_dir().join(format!("kestrel-cli-frames-{}", std::process::id()));
    let video = fixtures().join("clip_60f.mp4");
    let v =
        json(&kestrel(&["video", "frames", "--video", video.to_str().expect("utf-8"), "--out", out.to_str().expect("utf-8"), "--json"]));
    assert_eq!((v["n_frames"].as_u64(), v["width"].as_u64(), v["height"].as_u64()), (Some(60), Some(96), Some(64)));
    assert_eq!(v["fps"].as_f64(), Some(25.0));
    let frames = v["frames"].as_array().expect("frames");
    assert_eq!(frames.len(), 50);
    for k in frames {
        let path = out.join(format!("frame_{:06}.png", k.as_u64().expect("index")));
        let png = image::open(&path).expect("png").to_rgb8();
        assert_eq!(png.dimensions(), (96, 64));
        // The frame index burnt into the top stripe (ten 9-pixel cells, white = bit set).
        let index: u64 = (0..10).filter(|b| png.get_pixel(b * 9 + 4, 8)[0] > 128).map(|b| 1 << b).sum();
        assert_eq!(Some(index), k.as_u64());
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn answers_as_the_reference() {
    let f = fixtures();
    let want: Value = serde_json::from_str(&std::fs::read_to_string(f.join("pipeline.json")).expect("pipeline.json")).expect("json");
    let n_gen = want["generated"].as_array().expect("ids").len().to_string();
    let (model, clip, video) = (f.join("llava"), f.join("clip"), f.join("clip_60f.mp4"));
    let q = want["question"].as_str().expect("question");
    let args = |video: &str| {
        vec![
            "video".to_string(),
            "--model".into(),
            model.display().to_string(),
            "--clip".into(),
            clip.display().to_string(),
            "--video".into(),
            video.to_string(),
            "--prompt".into(),
            q.to_string(),
            "--max-tokens".into(),
            n_gen.clone(),
            "--json".into(),
        ]
    };
    let a = args(video.to_str().expect("utf-8"));
    let v = json(&kestrel(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    let frames = want["frames"].as_array().expect("frames");
    assert_eq!(v["frames"], want["frames"]);
    let at = |p: &Value| frames[p.as_u64().expect("position") as usize].clone();
    assert_eq!(v["slow"], Value::Array(want["slow"].as_array().expect("slow").iter().map(at).collect()));
    assert_eq!(v["middle"], Value::Array(want["middle"].as_array().expect("middle").iter().map(at).collect()));
    assert_eq!(v["visual_tokens"], 2648);
    for (got, w) in v["roi"].as_array().expect("roi").iter().zip(want["roi"].as_array().expect("roi")) {
        for k in ["top", "left", "height", "width"] {
            assert_eq!(got[k], w[k]);
        }
        assert_eq!((got["height"].as_u64(), got["width"].as_u64()), (Some(11), Some(21)));
    }
    assert_eq!(v["tokens"], want["generated"]);
    for stage in ["decode", "clip", "selection", "vision_tower", "prefill", "generation"] {
        assert!(v["timings_ms"][stage].as_f64().is_some(), "{stage}");
    }

    // Bad inputs: clear errors, no panic.
    let dir = std::env::temp_dir().join(format!("kestrel-cli-video-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let empty = dir.join("empty.mp4");
    std::fs::write(&empty, b"").expect("write");
    for (path, needle) in [(dir.join("missing.mp4"), "cannot open"), (empty.clone(), "cannot open")] {
        let out = kestrel(&args(path.to_str().expect("utf-8")).iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle) && !err.contains("panicked"), "{err}");
    }
    let mut bad_spec = a.clone();
    bad_spec.extend(["--spec".to_string(), "slow_3frms".to_string()]);
    let out = kestrel(&bad_spec.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("spec"));
    let _ = std::fs::remove_dir_all(&dir);
}
