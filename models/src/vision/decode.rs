//! Image decoding to [`Rgb8Image`], with the size checked from the header before any pixel
//! buffer is allocated: PNG, WebP and BMP through the `image` crate; JPEG pixels through
//! `libjpeg-turbo-rs`, a Rust port of libjpeg-turbo that decodes bit-exactly like the C library
//! inside Pillow (ISLOW IDCT, fancy upsampling, the same colour tables) — the `image` crate's
//! JPEG decoder differs from Pillow by up to 4 levels, which the timm-exact preprocessing would
//! carry into the model's input. `image` still parses the JPEG header for the size checks.
//!
//! Colour conversion follows Pillow's `Image.convert("RGB")`, as timm's datasets use it:
//! grey is replicated to the three channels, alpha is dropped (not blended), palettes are
//! expanded, 16-bit samples keep their high byte. One deliberate difference: Pillow clips
//! 16-bit *greyscale* (`I;16`) to 255 instead of scaling it, turning such images nearly white;
//! here they keep their high byte like every other 16-bit image. EXIF orientation is not
//! applied (neither Pillow's `open` nor timm applies it).

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};

use super::rgb::Rgb8Image;
use crate::error::{ModelError, Result};

/// Bounds on what the decoder accepts. [`Default`]: at most 16384 × 16384 pixels, 1 GiB of
/// decoded pixels and 256 MiB of encoded file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width, pixels.
    pub max_width: u32,
    /// Largest height, pixels.
    pub max_height: u32,
    /// Largest buffer of decoded pixels in the image's own format (e.g. 8 bytes per pixel for
    /// 16-bit RGBA), bytes. The RGB8 copy made afterwards is at most as large.
    pub max_alloc: u64,
    /// Largest file [`load_image`] reads, bytes.
    pub max_file_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_width: 16384, max_height: 16384, max_alloc: 1 << 30, max_file_bytes: 256 << 20 }
    }
}

/// The error for a decoder failure; a limit reached inside the decoder is reported as
/// [`ModelError::ImageTooLarge`] with the header's dimensions.
fn decode_error(e: ImageError, dims: Option<(u32, u32)>) -> ModelError {
    match (e, dims) {
        (ImageError::Limits(l), Some((width, height))) => ModelError::ImageTooLarge { width, height, limit: l.to_string() },
        (e, _) => ModelError::ImageDecode(e.to_string()),
    }
}

/// Decodes an encoded image held in memory (format detected from its magic bytes).
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<Rgb8Image> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ModelError::ImageDecode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ModelError::ImageDecode("unrecognised image format (supported: PNG, JPEG, WebP, BMP)".into()));
    }
    let reader_is_jpeg = reader.format() == Some(ImageFormat::Jpeg);
    if reader_is_jpeg {
        check_jpeg_complete(bytes)?;
    }
    // Dimensions are checked below with a typed error; the allocation bound also constrains
    // the decoders' internal buffers (PNG applies it while parsing).
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = None;
    decoder_limits.max_image_height = None;
    decoder_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(decoder_limits);

    let decoder = reader.into_decoder().map_err(|e| decode_error(e, None))?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_width || height > limits.max_height {
        let limit = format!("at most {}x{} pixels", limits.max_width, limits.max_height);
        return Err(ModelError::ImageTooLarge { width, height, limit });
    }
    if width == 0 || height == 0 {
        return Err(ModelError::ImageDecode(format!("image of {width}x{height} pixels is empty")));
    }
    let total = decoder.total_bytes();
    if total > limits.max_alloc {
        let limit = format!("{total} bytes of decoded pixels, at most {} allowed", limits.max_alloc);
        return Err(ModelError::ImageTooLarge { width, height, limit });
    }
    if reader_is_jpeg {
        drop(decoder);
        return decode_jpeg(bytes, width, height);
    }
    let decoded = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, Some((width, height))))?;
    to_rgb8(decoded)
}

/// Decodes a JPEG (whose header `image` has read and the limits have admitted) like Pillow's
/// `Image.open(f).convert("RGB")`: grey replicated, CMYK converted, EXIF orientation ignored.
fn decode_jpeg(bytes: &[u8], width: u32, height: u32) -> Result<Rgb8Image> {
    let image = libjpeg_turbo_rs::decompress_to(bytes, libjpeg_turbo_rs::PixelFormat::Rgb)
        .map_err(|e| ModelError::ImageDecode(format!("JPEG: {e}")))?;
    if (image.width, image.height) != (width as usize, height as usize) {
        return Err(ModelError::ImageDecode(format!(
            "JPEG decoded to {}x{} pixels, its header says {width}x{height}",
            image.width, image.height
        )));
    }
    Rgb8Image::new(image.width, image.height, image.data)
}

/// Refuses a JPEG stream cut short. The decoder would fill the missing blocks with grey;
/// Pillow (hence timm) raises "image file is truncated". A complete stream has an end-of-image
/// marker (`FF D9`) after its last start-of-scan (`FF DA`): inside entropy-coded data a `FF`
/// byte is only ever followed by `00` or a restart marker, and an embedded thumbnail's markers
/// precede the main scans.
fn check_jpeg_complete(bytes: &[u8]) -> Result<()> {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    if let Some(at) = last_scan
        && !bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9])
    {
        return Err(ModelError::ImageDecode("JPEG data is truncated (no end-of-image marker after the last scan)".into()));
    }
    Ok(())
}

/// Reads and decodes the image file at `path` (format detected from its content).
pub fn load_image(path: &Path, limits: &DecodeLimits) -> Result<Rgb8Image> {
    let io = |source: std::io::Error| ModelError::Io { path: path.display().to_string(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > limits.max_file_bytes {
        return Err(ModelError::Input(format!(
            "{}: file of {len} bytes exceeds the limit of {} bytes",
            path.display(),
            limits.max_file_bytes
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    decode_image(&bytes, limits).map_err(|e| match e {
        ModelError::ImageDecode(detail) => ModelError::ImageDecode(format!("{}: {detail}", path.display())),
        other => other,
    })
}

/// Expands `samples` of `channels` per pixel to RGB with `f` (one output pixel per input pixel).
fn expand<T: Copy>(samples: &[T], channels: usize, f: impl Fn(&[T]) -> [u8; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() / channels * 3);
    for px in samples.chunks_exact(channels) {
        out.extend_from_slice(&f(px));
    }
    out
}

/// Pillow's `convert("RGB")` of every layout the enabled decoders produce (see module docs).
fn to_rgb8(image: DynamicImage) -> Result<Rgb8Image> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let hi = |v: u16| (v >> 8) as u8;
    let data = match image {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => expand(b.as_raw(), 4, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageLuma8(b) => expand(b.as_raw(), 1, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(b) => expand(b.as_raw(), 2, |p| [p[0]; 3]),
        DynamicImage::ImageRgb16(b) => expand(b.as_raw(), 3, |p| [hi(p[0]), hi(p[1]), hi(p[2])]),
        DynamicImage::ImageRgba16(b) => expand(b.as_raw(), 4, |p| [hi(p[0]), hi(p[1]), hi(p[2])]),
        DynamicImage::ImageLuma16(b) => expand(b.as_raw(), 1, |p| [hi(p[0]); 3]),
        DynamicImage::ImageLumaA16(b) => expand(b.as_raw(), 2, |p| [hi(p[0]); 3]),
        other => other.to_rgb8().into_raw(),
    };
    Rgb8Image::new(w, h, data)
}
