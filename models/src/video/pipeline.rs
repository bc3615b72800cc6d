//! The Free Video-LLM pipeline on decoded frames: CLIP scores the frames and their regions
//! against the question, the selection runs on the GPU, LLaVA's visual tokens of the chosen
//! frames and boxes are gathered straight into the prompt's embeddings, and the decoder
//! answers.
//!
//! What is read back from the GPU: the chosen frames' indices and each cropped frame's top-k
//! region positions (the box is their mean). Everything else stays on the GPU.

use std::time::Instant;

use kestrel::ops::gather::embedding;
use kestrel::ops::layout::{concat, permute};
use kestrel::ops::reduce::{adaptive_avg_pool2d, max_pool1d, top_k};
use kestrel::ops::select::cosine_rows;
use kestrel::{Recorder, Tensor};
use serde::Serialize;

use super::sample::{Plan, RoiBox, RoiGrid};
use super::spec::Spec;
use crate::clip::ClipModel;
use crate::error::{ModelError, Result};
use crate::llava::{ImageInput, LlavaModel};
use crate::vision::resample::resize_window;
use crate::vision::{Interpolation, PreprocessConfig, Rgb8Image, normalize};

/// The official video prompt (LLaVA-1.6-7B, `image_seq_v3`); `%s` is the question.
pub const PROMPT: &str = "USER: <image>\nThe input consists of a sequence of key frames from a video. Answer concisely with overall content and context of the video, highlighting any significant events, characters, or objects that appear throughout the video. Question: %s \nASSISTANT:\nAnswer: In the video,";

/// The prompt text for `question`.
pub fn prompt_text(question: &str) -> String {
    PROMPT.replacen("%s", question, 1)
}

/// A cropped frame's box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FrameRoi {
    /// Position of the frame among the sampled frames.
    pub frame: usize,
    /// First row of the pooled grid.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// What the selection chose (positions among the sampled frames).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Slow frames, in time order.
    pub slow: Vec<usize>,
    /// Middle frames.
    pub middle: Vec<usize>,
    /// Fast frames, in time order.
    pub fast: Vec<usize>,
    /// One box per cropped frame, slow frames first, then middle (empty without cropping).
    pub roi: Vec<FrameRoi>,
    /// Visual tokens assembled.
    pub visual_tokens: usize,
}

/// Milliseconds per stage of [`encode_video`] (each waits for the GPU).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SelectionTimings {
    /// CLIP towers and the scores, through the readback of the choice.
    pub clip: f64,
    /// LLaVA's vision tower and projector over every sampled frame.
    pub vision_tower: f64,
    /// Pooling, crops and the assembly gather.
    pub selection: f64,
}

/// Frames squashed to `size × size` (Pillow's bicubic `Image.resize`, no aspect kept) and
/// normalised with `cfg`'s mean and std: `[frames, 3, size, size]`.
pub fn frame_pixels(frames: &[Rgb8Image], size: usize, cfg: &PreprocessConfig) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(frames.len() * 3 * size * size);
    for f in frames {
        let squashed = Rgb8Image::new(size, size, resize_window(f, size, size, 0..size, 0..size, Interpolation::Bicubic))?;
        out.extend(normalize(&squashed, cfg.mean, cfg.std).data);
    }
    Ok(out)
}

/// `[t, n, c]` → `[t, n/2, c]`: `MaxPool1d(2, 2)` over the token axis.
fn pool_pairs(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let xt = permute(rec, x, &[0, 2, 1])?;
    let pooled = max_pool1d(rec, &xt, 2, 2, 0)?;
    Ok(permute(rec, &pooled, &[0, 2, 1])?)
}

/// Indices of the `k` largest of `scores` (`[t]` on the GPU) with a later index winning ties:
/// `top_k` (lower index wins) over the reversed scores, recorded; mapped back by the caller.
fn reversed_top_k(rec: &mut Recorder, scores: &Tensor, k: usize) -> Result<Tensor> {
    let t = scores.numel();
    let rev: Vec<u32> = (0..t as u32).rev().collect();
    let ids = Tensor::from_u32(rec.context(), &[t], &rev)?;
    let reversed = embedding(rec, &scores.reshape(&[t, 1])?, &ids)?.reshape(&[t])?;
    Ok(top_k(rec, &reversed, k)?.1)
}

/// Back from [`reversed_top_k`]'s indices to frame positions in time order.
fn unreverse(t: usize, picked: &[u32]) -> Vec<usize> {
    let mut v: Vec<usize> = picked.iter().map(|&i| t - 1 - i as usize).collect();
    v.sort_unstable();
    v
}

/// Runs CLIP and the selection on `frames` (the sampled frames, in time order) for `question`
/// and assembles LLaVA's visual tokens `[slow | middle | fast]` on the GPU: the tokens
/// `[n, hidden]`, what was chosen, and the stage times. The official RoI reading.
pub fn encode_video(
    llava: &LlavaModel,
    clip: &ClipModel,
    frames: &[Rgb8Image],
    question: &str,
    spec: &Spec,
) -> Result<(Tensor, Selection, SelectionTimings)> {
    encode_video_with(llava, clip, frames, question, spec, RoiGrid::Official)
}

/// [`encode_video`] with the RoI grid read as `reading` says.
pub fn encode_video_with(
    llava: &LlavaModel,
    clip: &ClipModel,
    frames: &[Rgb8Image],
    question: &str,
    spec: &Spec,
    reading: RoiGrid,
) -> Result<(Tensor, Selection, SelectionTimings)> {
    let t = frames.len();
    let vcfg = &llava.config().vision;
    let grid = vcfg.grid();
    let plan = Plan::with_roi_grid(spec, t, grid, reading)?;
    let ctx = llava.context().clone();
    let clip_vision = clip.vision().ok_or_else(|| ModelError::Input("the CLIP model has no vision tower".into()))?;
    if clip_vision.config().grid() != grid {
        return Err(ModelError::Input(format!(
            "CLIP's {0}x{0} patch grid differs from LLaVA's {grid}x{grid}",
            clip_vision.config().grid()
        )));
    }
    let mut timings = SelectionTimings::default();

    // CLIP: frame scores and region scores in one submission.
    let start = Instant::now();
    let clip_cfg = clip.preprocess_config().ok_or_else(|| ModelError::Input("the CLIP model has no image transform".into()))?;
    let clip_size = clip_vision.config().image_size;
    let clip_pixels = frame_pixels(frames, clip_size, clip_cfg)?;
    let ids = clip.tokenize(&[question.to_string()])?;
    let mut rec = Recorder::new(clip.context());
    let pixels = Tensor::from_f32(clip.context(), &[t, 3, clip_size, clip_size], &clip_pixels)?;
    let text = clip.text_features(&mut rec, &ids)?;
    let (image, patches) = clip.image_features_and_patches(&mut rec, &pixels)?;
    let frame_scores = cosine_rows(&mut rec, &image, &text)?;
    let slow_ids = (plan.slow > 0).then(|| reversed_top_k(&mut rec, &frame_scores, plan.slow)).transpose()?;
    let fast_ids = plan.fast_text_guided.then(|| reversed_top_k(&mut rec, &frame_scores, plan.fast)).transpose()?;
    let roi_ids = match plan.roi {
        Some(geo) => {
            let pooled = pool_pairs(&mut rec, &patches)?;
            let scores = cosine_rows(&mut rec, &pooled, &text)?;
            Some((geo, top_k(&mut rec, &scores, geo.k)?.1))
        }
        None => None,
    };
    rec.submit()?;
    let read = |ids: Option<Tensor>| -> Result<Option<Vec<u32>>> { Ok(ids.map(|t| t.to_vec_u32()).transpose()?) };
    let slow = read(slow_ids)?.map_or_else(Vec::new, |p| unreverse(t, &p));
    let fast = match read(fast_ids)? {
        Some(p) => unreverse(t, &p),
        None => (0..plan.fast).collect(),
    };
    let middle = plan.middle.clone();
    let mut roi = Vec::new();
    if let Some((geo, ids)) = roi_ids {
        let tops = ids.to_vec_u32()?;
        for &frame in slow.iter().chain(&middle) {
            let RoiBox { top, left, height, width } = geo.roi_box(&tops[frame * geo.k..(frame + 1) * geo.k]);
            roi.push(FrameRoi { frame, top, left, height, width });
        }
    }
    timings.clip = start.elapsed().as_secs_f64() * 1e3;

    // LLaVA's visual tokens of every sampled frame.
    let start = Instant::now();
    let size = vcfg.image_size;
    let pixels = frame_pixels(frames, size, llava.preprocess_config())?;
    let features = llava.encode(&ImageInput { pixels, tiles: t, grid: None, image_size: (size, size) })?;
    let hidden = features.shape()[1];
    ctx.sync()?;
    timings.vision_tower = start.elapsed().as_secs_f64() * 1e3;

    // Pooling and the assembly gather.
    let start = Instant::now();
    let n = grid * grid;
    let (fh, fw) = spec.fast_size;
    let mut rec = Recorder::new(&ctx);
    let x = features.reshape(&[t, n, hidden])?;
    let xt = permute(&mut rec, &x, &[0, 2, 1])?;
    let slow_pooled = max_pool1d(&mut rec, &xt, 2, 2, 0)?;
    let slow_table = permute(&mut rec, &slow_pooled, &[0, 2, 1])?.reshape(&[t * n / 2, hidden])?;
    let fast_pooled = adaptive_avg_pool2d(&mut rec, &xt.reshape(&[t, hidden, grid, grid])?, fh, fw)?;
    let fast_table = permute(&mut rec, &fast_pooled.reshape(&[t, hidden, fh * fw])?, &[0, 2, 1])?.reshape(&[t * fh * fw, hidden])?;
    let table = concat(&mut rec, &[&slow_table, &fast_table], 0)?;
    let half = n / 2;
    let mut rows: Vec<u32> = Vec::with_capacity(plan.visual_tokens);
    // Pooled token j of a frame is at row j / w, column j % w of the grid the RoI reads.
    let gw = plan.roi.map_or(grid, |g| g.w);
    for (i, &frame) in slow.iter().chain(&middle).enumerate() {
        match roi.get(i) {
            Some(b) => {
                for y in b.top..b.top + b.height {
                    rows.extend((b.left..b.left + b.width).map(|x| (frame * half + y * gw + x) as u32));
                }
            }
            None => rows.extend((0..half).map(|j| (frame * half + j) as u32)),
        }
    }
    for &frame in &fast {
        rows.extend((0..fh * fw).map(|j| (t * half + frame * fh * fw + j) as u32));
    }
    if rows.len() != plan.visual_tokens {
        return Err(ModelError::Input(format!("assembled {} visual tokens, the plan says {}", rows.len(), plan.visual_tokens)));
    }
    let ids = Tensor::from_u32(&ctx, &[rows.len()], &rows)?;
    let tokens = embedding(&mut rec, &table, &ids)?;
    rec.submit()?;
    ctx.sync()?;
    timings.selection = start.elapsed().as_secs_f64() * 1e3;
    let selection = Selection { slow, middle, fast, roi, visual_tokens: rows.len() };
    Ok((tokens, selection, timings))
}
