//! timm's ImageNet evaluation transform (`transforms_imagenet_eval`, centre-crop mode):
//! `Resize(floor(size / crop_pct))` of the shorter side → `CenterCrop(size)` → `ToTensor` →
//! `Normalize(mean, std)`, reproduced with torchvision's size and offset rounding and Pillow's
//! resampling arithmetic, so a model sees the same tensor as in Python.

use std::path::Path;

use super::decode::{DecodeLimits, load_image};
use super::resample::{Interpolation, resize_window};
use super::rgb::Rgb8Image;
use crate::error::{ModelError, Result};

/// Largest accepted crop side (pixels).
pub const MAX_CROP_SIZE: usize = 8192;

/// Largest accepted target of the shorter side of the resize (pixels).
pub const MAX_RESIZE_SIDE: usize = 1 << 20;

/// The ImageNet mean per RGB channel (timm's `IMAGENET_DEFAULT_MEAN`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// The ImageNet standard deviation per RGB channel (timm's `IMAGENET_DEFAULT_STD`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How the offset of a centre crop that fits is rounded when the margin is odd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CropRounding {
    /// torchvision's `CenterCrop` (timm): `round(margin / 2)`, half to even.
    HalfToEven,
    /// transformers' image processors (`CLIPImageProcessor`): `margin // 2`.
    Floor,
}

/// Parameters of the evaluation transform (the fields of a timm data config).
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    /// Side of the square model input (timm `input_size[1..]`, square only).
    pub crop_size: usize,
    /// Fraction of the resized shorter side kept by the crop: the shorter side is resized to
    /// `floor(crop_size / crop_pct)`. Above 1 the crop is zero-padded, as in torchvision.
    pub crop_pct: f64,
    /// Filter of the resize.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after the mean.
    pub std: [f32; 3],
    /// Rounding of the crop offset.
    pub crop_rounding: CropRounding,
}

impl PreprocessConfig {
    /// timm's default: 224 crop of a 256 resize (`crop_pct` 0.875), bicubic, ImageNet mean/std.
    pub fn imagenet_default() -> Self {
        Self {
            crop_size: 224,
            crop_pct: 0.875,
            interpolation: Interpolation::Bicubic,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            crop_rounding: CropRounding::HalfToEven,
        }
    }

    /// Checks every field; the other methods call it.
    pub fn validate(&self) -> Result<()> {
        if self.crop_size == 0 || self.crop_size > MAX_CROP_SIZE {
            return Err(ModelError::Config(format!("crop size {} outside 1..={MAX_CROP_SIZE}", self.crop_size)));
        }
        if !(self.crop_pct.is_finite() && self.crop_pct > 0.0) {
            return Err(ModelError::Config(format!("crop_pct {} is not a positive number", self.crop_pct)));
        }
        let side = (self.crop_size as f64 / self.crop_pct).floor();
        if !(1.0..=MAX_RESIZE_SIDE as f64).contains(&side) {
            return Err(ModelError::Config(format!(
                "crop_pct {} resizes the shorter side to {side}, outside 1..={MAX_RESIZE_SIDE}",
                self.crop_pct
            )));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(ModelError::Config(format!("mean {:?} is not finite", self.mean)));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(ModelError::Config(format!("std {:?} must be finite and non-zero", self.std)));
        }
        Ok(())
    }

    /// Target of the shorter side of the resize: `floor(crop_size / crop_pct)`.
    pub fn resize_side(&self) -> Result<usize> {
        self.validate()?;
        Ok((self.crop_size as f64 / self.crop_pct).floor() as usize)
    }

    /// Shape of the tensor [`preprocess`] returns: `[1, 3, crop_size, crop_size]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [1, 3, self.crop_size, self.crop_size]
    }
}

/// A preprocessed image: `f32` values in NCHW order.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTensor {
    /// `[1, 3, height, width]`.
    pub shape: [usize; 4],
    /// `shape.iter().product()` values, channel planes R, G, B.
    pub data: Vec<f32>,
}

/// Size of an image whose shorter side is resized to `side`, as torchvision's `Resize(int)`:
/// the longer side becomes `int(side * long / short)` (float division, truncated).
/// Returns `(width, height)`.
pub fn resized_size(width: usize, height: usize, side: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = (side as f64 * long as f64 / short.max(1) as f64) as usize;
    if width <= height { (side, new_long) } else { (new_long, side) }
}

/// Offset of a `crop`-sample centre crop of an axis of `len` samples: when the crop fits,
/// `(len - crop) / 2` rounded as `rounding` says (torchvision's `CenterCrop`: Python's
/// half-to-even `round`); otherwise minus the left/top zero padding `(crop - len) // 2`.
fn crop_offset(len: usize, crop: usize, rounding: CropRounding) -> isize {
    if crop > len {
        return -(((crop - len) / 2) as isize);
    }
    let d = len - crop;
    let half = d / 2;
    // d odd: d / 2 is exactly x.5, which rounds to the even neighbour.
    let rounded = if rounding == CropRounding::HalfToEven && d % 2 == 1 && half % 2 == 1 { half + 1 } else { half };
    rounded as isize
}

/// The part of the output `0..crop` that lies inside `0..len` when shifted by `offset`, and
/// the matching range of the resized axis.
fn visible(offset: isize, crop: usize, len: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let first = (-offset).max(0) as usize;
    let last = (len as isize - offset).clamp(0, crop as isize) as usize;
    let first = first.min(last);
    let src = (first as isize + offset) as usize..(last as isize + offset) as usize;
    (first..last, src)
}

/// Resize and centre crop of the transform: the 8-bit `crop_size` × `crop_size` image that
/// `ToTensor` would receive (zeros where the crop is padded).
pub fn resize_and_crop(image: &Rgb8Image, config: &PreprocessConfig) -> Result<Rgb8Image> {
    let side = config.resize_side()?;
    let crop = config.crop_size;
    let (new_w, new_h) = resized_size(image.width(), image.height(), side);
    if new_w == 0 || new_h == 0 {
        return Err(ModelError::Input(format!("image of {}x{} pixels resizes to {new_w}x{new_h}", image.width(), image.height())));
    }
    let (out_x, src_x) = visible(crop_offset(new_w, crop, config.crop_rounding), crop, new_w);
    let (out_y, src_y) = visible(crop_offset(new_h, crop, config.crop_rounding), crop, new_h);
    let window = resize_window(image, new_w, new_h, src_x, src_y, config.interpolation);

    let mut canvas = vec![0u8; crop * crop * 3];
    let row_bytes = out_x.len() * 3;
    if row_bytes > 0 {
        for (y, line) in out_y.zip(window.chunks_exact(row_bytes)) {
            let at = (y * crop + out_x.start) * 3;
            canvas[at..at + row_bytes].copy_from_slice(line);
        }
    }
    Rgb8Image::new(crop, crop, canvas)
}

/// `ToTensor` + `Normalize`: `(v / 255 - mean[c]) / std[c]` in `f32` (torchvision's order of
/// operations), laid out as `[1, 3, height, width]`.
pub fn normalize(image: &Rgb8Image, mean: [f32; 3], std: [f32; 3]) -> ImageTensor {
    let plane = image.width() * image.height();
    let mut data = vec![0f32; 3 * plane];
    for (i, px) in image.as_bytes().chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * plane + i] = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    ImageTensor { shape: [1, 3, image.height(), image.width()], data }
}

/// The whole transform on a decoded image: [`resize_and_crop`] then [`normalize`].
pub fn preprocess(image: &Rgb8Image, config: &PreprocessConfig) -> Result<ImageTensor> {
    let cropped = resize_and_crop(image, config)?;
    Ok(normalize(&cropped, config.mean, config.std))
}

/// Decodes the image file at `path` within `limits` and applies [`preprocess`].
pub fn preprocess_file(path: &Path, config: &PreprocessConfig, limits: &DecodeLimits) -> Result<ImageTensor> {
    config.validate()?;
    preprocess(&load_image(path, limits)?, config)
}
