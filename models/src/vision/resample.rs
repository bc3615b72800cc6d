//! Antialiased separable resampling of 8-bit RGB images with Pillow's `Image.resize` arithmetic,
//! so that a model sees the pixels timm / torchvision feed it.
//!
//! The method (Pillow's documented convolution resampling):
//! - each axis is filtered separately, horizontal pass first, then vertical;
//! - output sample `i` of an axis scaled from `n_in` to `n_out` is centred on input coordinate
//!   `(i + 0.5) * scale` with `scale = n_in / n_out`; when downscaling, the filter is stretched
//!   by `scale` (antialiasing: support and argument scaled), never shrunk when upscaling;
//! - taps cover the input samples whose centres fall within the stretched support
//!   (`[floor(c - support + 0.5), floor(c + support + 0.5))`, clipped to the image), weighted by
//!   the filter at their distance, normalised to sum 1, then turned into 22-bit fixed point
//!   (rounded half away from zero);
//! - each pass accumulates integers with a half-unit bias, shifts and clamps to 0..=255, so the
//!   intermediate image between the passes is 8-bit as in Pillow.
//!
//! Only a window of the output is computed (the centre crop), from only the input rows that
//! window needs: the values are those of the full resize, at a fraction of its cost and memory.

use std::ops::Range;

use super::rgb::Rgb8Image;

/// Fractional bits of the fixed-point filter weights: 32 bits less 8 for the sample and 2 of
/// headroom for the kernel's negative lobes.
const PRECISION_BITS: u32 = 22;

/// Resampling filter of the resize step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Triangle filter (support 1), Pillow's `BILINEAR`.
    Bilinear,
    /// Keys cubic convolution with `a = -0.5` (support 2), Pillow's `BICUBIC`.
    Bicubic,
}

impl Interpolation {
    /// Parses timm's name of the mode (`"bilinear"`, `"bicubic"`); `None` for any other.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bilinear" => Some(Self::Bilinear),
            "bicubic" => Some(Self::Bicubic),
            _ => None,
        }
    }

    /// timm's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bilinear => "bilinear",
            Self::Bicubic => "bicubic",
        }
    }

    /// Half-width of the filter in input samples at scale 1.
    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
        }
    }

    /// The filter's value at distance `x`.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Self::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point taps of one output sample: the first input index and one weight per input.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// Taps of the outputs `outputs` of an axis resized from `n_in` to `n_out` samples.
fn axis_taps(filter: Interpolation, n_in: usize, n_out: usize, outputs: Range<usize>) -> Vec<Taps> {
    let scale = n_in as f64 / n_out as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let inv = 1.0 / filterscale;
    let one = f64::from(1u32 << PRECISION_BITS);
    outputs
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // `as` truncates toward zero (saturating), then the window is clipped to the input.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).clamp(0, n_in as i64) as usize;
            let hi = hi.max(lo);
            let raw: Vec<f64> = (lo..hi).map(|x| filter.weight((x as f64 - center + 0.5) * inv)).collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let fixed = if w < 0.0 { (-0.5 + w * one).trunc() } else { (0.5 + w * one).trunc() };
                    fixed as i32
                })
                .collect();
            Taps { start: lo, weights }
        })
        .collect()
}

/// Rounds a fixed-point accumulator (bias included) to an 8-bit sample.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `src` to `out_w` × `out_h` with `filter` as Pillow does, returning only the window
/// `cols` × `rows` of the result as interleaved RGB (`cols.len() * rows.len() * 3` bytes).
/// The ranges must lie within `0..out_w` and `0..out_h`; `out_w` and `out_h` must be non-zero.
pub(crate) fn resize_window(
    src: &Rgb8Image,
    out_w: usize,
    out_h: usize,
    cols: Range<usize>,
    rows: Range<usize>,
    filter: Interpolation,
) -> Vec<u8> {
    let (in_w, in_h) = (src.width(), src.height());
    let htaps = axis_taps(filter, in_w, out_w, cols);
    let vtaps = axis_taps(filter, in_h, out_h, rows);
    let bias: i64 = 1 << (PRECISION_BITS - 1);

    // Input rows the vertical taps read: the horizontal pass runs on these only.
    let row_lo = vtaps.iter().map(|t| t.start).min().unwrap_or(0);
    let row_hi = vtaps.iter().map(|t| t.start + t.weights.len()).max().unwrap_or(0);
    let mid_w = htaps.len();
    let input = src.as_bytes();

    let mut mid = vec![0u8; (row_hi - row_lo) * mid_w * 3];
    for (r, mid_row) in (row_lo..row_hi).zip(mid.chunks_exact_mut(mid_w * 3)) {
        let line = &input[r * in_w * 3..(r + 1) * in_w * 3];
        for (t, out) in htaps.iter().zip(mid_row.chunks_exact_mut(3)) {
            let mut acc = [bias; 3];
            for (k, &w) in t.weights.iter().enumerate() {
                let p = (t.start + k) * 3;
                for c in 0..3 {
                    acc[c] += i64::from(line[p + c]) * i64::from(w);
                }
            }
            for c in 0..3 {
                out[c] = clip8(acc[c]);
            }
        }
    }

    let row_bytes = mid_w * 3;
    let mut out = vec![0u8; vtaps.len() * row_bytes];
    for (t, out_row) in vtaps.iter().zip(out.chunks_exact_mut(row_bytes.max(1))) {
        let mut acc = vec![bias; row_bytes];
        for (k, &w) in t.weights.iter().enumerate() {
            let r = t.start + k - row_lo;
            let line = &mid[r * row_bytes..(r + 1) * row_bytes];
            for (a, &v) in acc.iter_mut().zip(line) {
                *a += i64::from(v) * i64::from(w);
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}
