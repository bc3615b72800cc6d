//! Plain pixel buffers as apps hold them (a camera frame, a decoded bitmap): 8-bit RGBA or RGB
//! rows with a stride, converted to the [`Rgb8Image`] every vision model preprocesses.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::vision::Rgb8Image;

/// Layout of one pixel in an [`ImageView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// `R G B A`, one byte each; alpha is ignored (as Pillow's `convert("RGB")` drops it).
    Rgba8,
    /// `R G B`, one byte each.
    Rgb8,
}

impl PixelFormat {
    /// Bytes per pixel (4 or 3).
    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgba8 => 4,
            PixelFormat::Rgb8 => 3,
        }
    }
}

/// A borrowed 8-bit image: `height` rows of `width` pixels, top to bottom, each row starting
/// `stride` bytes after the previous one (`stride ≥ width × bytes per pixel`; the last row
/// needs no padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageView<'a> {
    /// The pixel bytes.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from the start of one row to the start of the next.
    pub stride: u32,
    /// Layout of a pixel.
    pub format: PixelFormat,
}

impl<'a> ImageView<'a> {
    /// A tightly packed image (`stride = width × bytes per pixel`).
    pub fn packed(data: &'a [u8], width: u32, height: u32, format: PixelFormat) -> ImageView<'a> {
        let stride = (width as usize).saturating_mul(format.bytes_per_pixel()).try_into().unwrap_or(u32::MAX);
        ImageView { data, width, height, stride, format }
    }

    /// Bytes a `width × height` image with this `stride` spans (`stride × (height − 1)` plus one
    /// row). Errors ([`ModelError::Input`]): a zero side, a stride shorter than a row, a size
    /// that overflows.
    pub fn required_bytes(width: u32, height: u32, stride: u32, format: PixelFormat) -> Result<usize> {
        let (w, h, stride) = (width as usize, height as usize, stride as usize);
        if w == 0 || h == 0 {
            return Err(ModelError::Input(format!("image of {w}x{h} pixels is empty")));
        }
        let too_large = || ModelError::Input(format!("image of {w}x{h} pixels with stride {stride} is too large"));
        let row = w.checked_mul(format.bytes_per_pixel()).ok_or_else(too_large)?;
        if stride < row {
            return Err(ModelError::Input(format!("stride {stride} is shorter than a row of {w} pixels ({row} bytes)")));
        }
        stride.checked_mul(h - 1).and_then(|n| n.checked_add(row)).ok_or_else(too_large)
    }

    /// Checks the geometry against the buffer and copies the pixels into an RGB image.
    /// Errors ([`ModelError::Input`]): as [`required_bytes`](Self::required_bytes), and a
    /// buffer shorter than the rows need.
    pub fn to_rgb(&self) -> Result<Rgb8Image> {
        let needed = ImageView::required_bytes(self.width, self.height, self.stride, self.format)?;
        let (w, h, stride) = (self.width as usize, self.height as usize, self.stride as usize);
        let row = w * self.format.bytes_per_pixel();
        if self.data.len() < needed {
            return Err(ModelError::Input(format!(
                "{w}x{h} image with stride {stride} needs {needed} bytes, the buffer has {}",
                self.data.len()
            )));
        }
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            let line = &self.data[y * stride..y * stride + row];
            match self.format {
                PixelFormat::Rgb8 => rgb.extend_from_slice(line),
                PixelFormat::Rgba8 => line.chunks_exact(4).for_each(|p| rgb.extend_from_slice(&p[..3])),
            }
        }
        Rgb8Image::new(w, h, rgb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_rgba_drops_alpha_and_padding() {
        // 2x2 RGBA with 2 bytes of padding per row; the last row unpadded.
        let data = [1, 2, 3, 255, 4, 5, 6, 255, 0, 0, 7, 8, 9, 0, 10, 11, 12, 0];
        let img = ImageView { data: &data, width: 2, height: 2, stride: 10, format: PixelFormat::Rgba8 }.to_rgb().unwrap();
        assert_eq!(img.as_bytes(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn bad_geometry_is_an_input_error() {
        let data = [0u8; 12];
        for (w, h, stride) in [(0, 1, 3), (1, 0, 3), (2, 2, 5), (2, 3, 6)] {
            let r = ImageView { data: &data, width: w, height: h, stride, format: PixelFormat::Rgb8 }.to_rgb();
            assert!(matches!(r, Err(ModelError::Input(_))), "{w}x{h} stride {stride}: {r:?}");
        }
        assert!(ImageView::packed(&data, 2, 2, PixelFormat::Rgb8).to_rgb().is_ok());
    }
}
