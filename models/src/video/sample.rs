//! Which frames Free Video-LLM reads and which of them each path takes, as the official code
//! computes them (`dataset.py` `get_seq_frames`, `prepare_visual_aggregation`, `roi_box`).

use serde::Serialize;

use super::spec::Spec;
use crate::error::{ModelError, Result};

/// The official frame budget `T`.
pub const DEFAULT_MAX_FRAMES: usize = 50;

/// `get_seq_frames(n, min(n, max_frames))`: `seg = float64(n − 1) / t`, frame
/// `(round(seg·i) + round(seg·(i + 1))) // 2` with round-half-to-even (numpy's `np.round`),
/// products in f64. Duplicates happen when `n − 1 < t`. Empty for `n == 0`.
pub fn seq_frames(n: usize, max_frames: usize) -> Vec<usize> {
    let t = n.min(max_frames);
    if t == 0 {
        return Vec::new();
    }
    let seg = (n - 1) as f64 / t as f64;
    (0..t)
        .map(|i| {
            let start = (seg * i as f64).round_ties_even() as usize;
            let end = (seg * (i + 1) as f64).round_ties_even() as usize;
            (start + end) / 2
        })
        .collect()
}

/// `torch.linspace(0, end, steps)` in f32 as PyTorch's CPU kernel computes it: the first half
/// `start + step·i`, the second half `end − step·(steps − 1 − i)`.
fn linspace_f32(end: f32, steps: usize) -> Vec<f32> {
    match steps {
        0 => Vec::new(),
        1 => vec![0.0],
        _ => {
            let step = end / (steps - 1) as f32;
            let half = steps / 2;
            (0..steps).map(|i| if i < half { step * i as f32 } else { end - step * (steps - 1 - i) as f32 }).collect()
        }
    }
}

/// The middle path's positions among the `t` sampled frames:
/// `int(torch.linspace(0, t, m + 1, float32))[:-1]` (repeats when `t < m`).
pub fn middle_positions(t: usize, middle_frames: usize) -> Vec<usize> {
    if middle_frames == 0 {
        return Vec::new();
    }
    let mut v: Vec<usize> = linspace_f32(t as f32, middle_frames + 1).into_iter().map(|x| x as usize).collect();
    v.pop();
    v
}

/// The RoI geometry of a pooled token grid, as the official `roi_crop` reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RoiGeometry {
    /// Rows of the grid the pooled scores are read as (`√N // 2`).
    pub h: usize,
    /// Columns (`√N`).
    pub w: usize,
    /// Top positions averaged for the centre (`int(h·w·ratio)`).
    pub k: usize,
    /// Box rows (`round(h·√ratio)`).
    pub box_h: usize,
    /// Box columns (`round(w·√ratio)`).
    pub box_w: usize,
}

/// How the pooled scores of a frame are read as a grid for the RoI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum RoiGrid {
    /// The official reading: `(√N // 2, √N)` rows × columns (24×12 pooled tokens read as
    /// 12×24).
    #[default]
    Official,
    /// The geometrically right reading: `(√N, √N // 2)` (the max pool joins horizontal pairs,
    /// so the pooled map has the full height and half the width). Beyond the official code.
    Spatial,
}

impl RoiGeometry {
    /// The official geometry for a square patch grid of `grid × grid` tokens (`grid` even, as
    /// the 1-D max pool of pairs needs) at `ratio` in (0, 1).
    pub fn new(grid: usize, ratio: f64) -> Result<RoiGeometry> {
        RoiGeometry::with_grid(grid, ratio, RoiGrid::Official)
    }

    /// The geometry for a `grid × grid` patch grid read as `reading` says.
    pub fn with_grid(grid: usize, ratio: f64, reading: RoiGrid) -> Result<RoiGeometry> {
        if grid < 2 || !grid.is_multiple_of(2) {
            return Err(ModelError::Input(format!("a {grid}x{grid} patch grid: the 1-D max pool needs an even side")));
        }
        let (h, w) = match reading {
            RoiGrid::Official => (grid / 2, grid),
            RoiGrid::Spatial => (grid, grid / 2),
        };
        let k = (h as f64 * w as f64 * ratio) as usize;
        // Python's round() on floats is half-to-even.
        let box_h = (h as f64 * ratio.sqrt()).round_ties_even() as usize;
        let box_w = (w as f64 * ratio.sqrt()).round_ties_even() as usize;
        if k == 0 || box_h == 0 || box_w == 0 || box_h > h || box_w > w {
            return Err(ModelError::Input(format!("RoI ratio {ratio} on a {h}x{w} grid gives k {k}, box {box_h}x{box_w}")));
        }
        Ok(RoiGeometry { h, w, k, box_h, box_w })
    }

    /// Tokens in one box.
    pub fn tokens(&self) -> usize {
        self.box_h * self.box_w
    }

    /// The box around the top positions `points` (indices into the `h × w` grid, any order):
    /// centre = the truncated f32 mean of their columns and rows, then `left = xm − box_w // 2`,
    /// `top = ym − box_h // 2`, shifted (never shrunk) to stay inside (`roi_box`).
    pub fn roi_box(&self, points: &[u32]) -> RoiBox {
        let n = points.len().max(1) as f32;
        let (sx, sy) =
            points.iter().fold((0u64, 0u64), |(sx, sy), &p| (sx + u64::from(p) % self.w as u64, sy + u64::from(p) / self.w as u64));
        // The sums are exact in f32 for every grid this runs on (< 2^24); the division rounds
        // once, as torch's f32 mean, and `.to(torch.int32)` truncates.
        let xm = (sx as f32 / n) as i64;
        let ym = (sy as f32 / n) as i64;
        let place = |centre: i64, size: usize, limit: usize| {
            let start = centre - (size / 2) as i64;
            if start < 0 {
                0
            } else if start as usize + size > limit {
                limit - size
            } else {
                start as usize
            }
        };
        RoiBox { top: place(ym, self.box_h, self.h), left: place(xm, self.box_w, self.w), height: self.box_h, width: self.box_w }
    }
}

/// A crop of the pooled grid (in pooled-grid units).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RoiBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// What a spec takes from `t` sampled frames of a `grid × grid` patch grid, before any score
/// is known: the middle positions and the token counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Sampled frames.
    pub t: usize,
    /// Frames of the slow path (`min(t, slow_frames)`; which ones the text decides).
    pub slow: usize,
    /// Positions of the middle frames among the sampled ones.
    pub middle: Vec<usize>,
    /// Frames of the fast path (`min(t, fast_frames)`).
    pub fast: usize,
    /// Whether fast frames are chosen by the text (`fast_frames < t`) rather than all taken.
    pub fast_text_guided: bool,
    /// The RoI geometry when slow and middle frames are cropped.
    pub roi: Option<RoiGeometry>,
    /// Tokens per slow or middle frame (the box, or the whole pooled frame).
    pub tokens_per_slow: usize,
    /// Tokens per fast frame.
    pub tokens_per_fast: usize,
    /// Visual tokens in all.
    pub visual_tokens: usize,
}

impl Plan {
    /// The plan for `t ≥ 1` sampled frames of a `grid × grid` patch grid (the official RoI
    /// reading).
    pub fn new(spec: &Spec, t: usize, grid: usize) -> Result<Plan> {
        Plan::with_roi_grid(spec, t, grid, RoiGrid::Official)
    }

    /// [`Plan::new`] with the RoI grid read as `reading` says.
    pub fn with_roi_grid(spec: &Spec, t: usize, grid: usize, reading: RoiGrid) -> Result<Plan> {
        if t == 0 {
            return Err(ModelError::Input("no frame was sampled (the video has no frames)".into()));
        }
        if !grid.is_multiple_of(2) {
            return Err(ModelError::Input(format!("a {grid}x{grid} patch grid: the 1-D max pool needs an even side")));
        }
        let roi = if spec.crops() && (spec.slow_frames > 0 || spec.middle_frames > 0) {
            Some(RoiGeometry::with_grid(grid, spec.roi_ratio(), reading)?)
        } else {
            None
        };
        let tokens_per_slow = roi.map_or(grid * grid / 2, |r| r.tokens());
        let (slow, middle) = (spec.slow_frames.min(t), middle_positions(t, spec.middle_frames));
        let fast = spec.fast_frames.min(t);
        let (fh, fw) = spec.fast_size;
        let tokens_per_fast = fh * fw;
        let visual_tokens = (slow + middle.len()) * tokens_per_slow + fast * tokens_per_fast;
        Ok(Plan { t, slow, middle, fast, fast_text_guided: spec.fast_frames < t, roi, tokens_per_slow, tokens_per_fast, visual_tokens })
    }
}

/// `torch.sort(scores)[-k:]` then sorted by index: the `k` highest-scoring frames in time
/// order, a later frame winning a tie (the official `text_guided_frames`). The host version of
/// what the pipeline does on the GPU (−0 equals +0; scores are compared in IEEE total order).
pub fn text_guided(scores: &[f32], k: usize) -> Vec<usize> {
    let key = |i: usize| if scores[i] == 0.0 { 0.0 } else { scores[i] };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
    let mut top: Vec<usize> = order[scores.len().saturating_sub(k)..].to_vec();
    top.sort_unstable();
    top
}
