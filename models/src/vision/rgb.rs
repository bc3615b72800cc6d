//! The 8-bit RGB image every vision input is converted to before preprocessing.

use crate::error::{ModelError, Result};

/// An 8-bit RGB image: rows top to bottom, pixels left to right, `R G B` interleaved
/// (what Pillow's `Image.convert("RGB")` holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8Image {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl Rgb8Image {
    /// Wraps interleaved RGB bytes; `data.len()` must be `width * height * 3` and neither side
    /// may be zero.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(ModelError::Input(format!("image of {width}x{height} pixels is empty")));
        }
        let expected = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| ModelError::Input(format!("image of {width}x{height} pixels is too large")))?;
        if data.len() != expected {
            return Err(ModelError::Input(format!("{width}x{height} RGB image needs {expected} bytes, got {}", data.len())));
        }
        Ok(Self { width, height, data })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The interleaved RGB bytes, row-major.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The bytes, consuming the image.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// The `[r, g, b]` of pixel (`x`, `y`), or `None` outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y * self.width + x) * 3;
        Some([self.data[i], self.data[i + 1], self.data[i + 2]])
    }
}
