//! Read-only 32-bit words stored in a 2-D integer texture instead of a storage buffer.
//!
//! Quantised and dense linear weights live here on adapters where texture fetches are the
//! faster read path ([`Capabilities::texture_weights`](crate::Capabilities::texture_weights)):
//! lavapipe / llvmpipe compile a storage-buffer load whose address differs per SIMD lane into a
//! loop over the lanes, but a `textureLoad` into a straight-line gather — about 4× the bytes per
//! second for a GEMV's weight stream (BENCHMARKS.md). Mobile GPUs with a separate texture cache
//! (the image-backed weights of MNN and TFLite's GPU delegate) are the other candidates.
//!
//! Layout: word (or, for [`TexelKind::Vec4`], vec4 of words) `i` is texel `(i % TEXTURE_WIDTH,
//! i / TEXTURE_WIDTH)`; the shaders index it the same way (`shaders/include/tex_words.wgsl`,
//! where the width is the literal 4096: the two change together).
//! Textures are not subject to the storage-binding size limit, only to the largest 2-D texture
//! dimension, so one texture holds what would need several buffer windows.

use std::sync::Arc;

use crate::caps::Capabilities;
use crate::context::Context;
use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::memory::MemoryMeter;
use crate::tensor::{Tensor, read_staging};

/// Texels per texture row (a power of two, so the shaders' `%` and `/` are a mask and a shift;
/// well under WebGPU's minimum `max_texture_dimension_2d` of 8192).
pub const TEXTURE_WIDTH: usize = 4096;

/// What one texel holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TexelKind {
    /// One u32 word (`R32Uint`).
    Word,
    /// Four consecutive u32 words (`Rgba32Uint`): one texel per 16 bytes.
    Vec4,
}

impl TexelKind {
    fn words(self) -> usize {
        match self {
            TexelKind::Word => 1,
            TexelKind::Vec4 => 4,
        }
    }

    fn format(self) -> wgpu::TextureFormat {
        match self {
            TexelKind::Word => wgpu::TextureFormat::R32Uint,
            TexelKind::Vec4 => wgpu::TextureFormat::Rgba32Uint,
        }
    }
}

/// `(width, height)` of the texture holding `texels` texels.
fn extent(texels: usize) -> (usize, usize) {
    let texels = texels.max(1);
    if texels <= TEXTURE_WIDTH { (texels, 1) } else { (TEXTURE_WIDTH, texels.div_ceil(TEXTURE_WIDTH)) }
}

/// A texture counted by its context's [`MemoryMeter`] while it exists.
#[derive(Debug)]
struct HeldTexture {
    texture: wgpu::Texture,
    bytes: u64,
    meter: Arc<MemoryMeter>,
}

impl std::ops::Deref for HeldTexture {
    type Target = wgpu::Texture;

    fn deref(&self) -> &wgpu::Texture {
        &self.texture
    }
}

impl Drop for HeldTexture {
    fn drop(&mut self) {
        self.meter.sub(self.bytes);
    }
}

/// A `width × height` texture of `kind` texels that kernels read and copies fill or read.
fn create(ctx: &Context, kind: TexelKind, width: usize, height: usize) -> HeldTexture {
    let bytes = (width * height * kind.words() * 4) as u64;
    ctx.memory().add(bytes);
    let texture = ctx.device().create_texture(&wgpu::TextureDescriptor {
        label: Some("kestrel-weight-texture"),
        size: wgpu::Extent3d { width: width as u32, height: height as u32, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: kind.format(),
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    HeldTexture { texture, bytes, meter: ctx.memory().clone() }
}

/// u32 words in a read-only 2-D texture (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct WordTexture {
    ctx: Arc<Context>,
    texture: Arc<HeldTexture>,
    view: Arc<wgpu::TextureView>,
    kind: TexelKind,
    words: usize,
}

impl WordTexture {
    /// Whether `words` words fit one texture of this kind on the device.
    pub fn fits(caps: &Capabilities, words: usize, kind: TexelKind) -> bool {
        let (w, h) = extent(words.div_ceil(kind.words()));
        w as u64 <= u64::from(caps.max_texture_dimension_2d) && h as u64 <= u64::from(caps.max_texture_dimension_2d)
    }

    /// Uploads the little-endian bytes of `bytes.len() / 4` words (a multiple of 4 bytes; for
    /// [`TexelKind::Vec4`] the last texel is zero-padded). Errors: a byte count that is not whole
    /// words, or more words than one texture holds ([`WordTexture::fits`]).
    pub fn from_le_bytes(ctx: &Arc<Context>, bytes: &[u8], kind: TexelKind) -> Result<WordTexture> {
        let err = |detail: String| KestrelError::InvalidArgument { op: "WordTexture", detail };
        if !bytes.len().is_multiple_of(4) {
            return Err(err(format!("{} bytes is not a whole number of u32 words", bytes.len())));
        }
        let words = bytes.len() / 4;
        if !WordTexture::fits(ctx.caps(), words, kind) {
            return Err(err(format!("{words} words exceed the largest texture")));
        }
        let texel_bytes = 4 * kind.words();
        let (width, height) = extent(words.div_ceil(kind.words()));
        let texture = create(ctx, kind, width, height);
        // Whole rows in one write; the last, partial row padded with zeros.
        let row_bytes = width * texel_bytes;
        let full_rows = bytes.len() / row_bytes;
        let write = |data: &[u8], y: usize, rows: usize| {
            ctx.queue().write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y: y as u32, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                data,
                wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(row_bytes as u32), rows_per_image: Some(rows as u32) },
                wgpu::Extent3d { width: width as u32, height: rows as u32, depth_or_array_layers: 1 },
            );
        };
        if full_rows > 0 {
            write(&bytes[..full_rows * row_bytes], 0, full_rows);
        }
        let rest = &bytes[full_rows * row_bytes..];
        if full_rows < height {
            let mut last = vec![0u8; row_bytes];
            last[..rest.len()].copy_from_slice(rest);
            write(&last, full_rows, 1);
        }
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        Ok(WordTexture { ctx: ctx.clone(), texture: Arc::new(texture), view: Arc::new(view), kind, words })
    }

    /// The view the kernels bind.
    pub fn view(&self) -> &Arc<wgpu::TextureView> {
        &self.view
    }

    /// Words stored (without the padding of the last row).
    pub fn words(&self) -> usize {
        self.words
    }

    /// Bytes of the stored words.
    pub fn byte_size(&self) -> u64 {
        self.words as u64 * 4
    }

    /// Downloads the words (waits for submitted work).
    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        let (width, height) = extent(self.words.div_ceil(self.kind.words()));
        let row_bytes = width * 4 * self.kind.words();
        let padded_row = row_bytes.div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize) * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize;
        let device = self.ctx.device();
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kestrel-texture-readback"),
            size: (padded_row * height) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("texture-readback") });
        enc.copy_texture_to_buffer(
            self.texture.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &staging,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(padded_row as u32),
                    rows_per_image: Some(height as u32),
                },
            },
            wgpu::Extent3d { width: width as u32, height: height as u32, depth_or_array_layers: 1 },
        );
        self.ctx.queue().submit([enc.finish()]);
        let bytes = read_staging(&self.ctx, &staging)?;
        let mut out = Vec::with_capacity(self.words);
        for row in bytes.chunks(padded_row) {
            out.extend(row[..row_bytes].chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        }
        out.truncate(self.words);
        Ok(out)
    }
}

/// A dense f32 or f16 weight `[N, K]` (row-major; f16 elements two per word, the lower index
/// in the low half) in a [`TexelKind::Vec4`] texture: what [`crate::nn::Linear`] keeps its
/// dense weight in where [`Capabilities::texture_weights`] holds. The GEMV and matmul kernels
/// read it (their `TEX` variants) in place of a storage buffer.
#[derive(Clone, Debug)]
pub struct DenseTexture {
    words: WordTexture,
    shape: [usize; 2],
    dtype: DType,
}

impl DenseTexture {
    /// Copies a 2-D f32/f16 tensor into a texture on the GPU (one copy command, submitted
    /// now). `None` when the tensor is not such a weight or does not fit one texture.
    pub fn from_tensor(t: &Tensor) -> Option<DenseTexture> {
        let (&[n, k], dtype @ (DType::F32 | DType::F16)) = (t.shape(), t.dtype()) else { return None };
        let ctx = t.context();
        let bytes = t.byte_size() as usize;
        let texels = bytes.div_ceil(16);
        // Pooled buffers are whole 16-byte texels long, so the last texel can be copied whole.
        if texels == 0 || (texels * 16) as u64 > t.pooled().size() || !WordTexture::fits(ctx.caps(), texels * 4, TexelKind::Vec4) {
            return None;
        }
        let (width, height) = extent(texels);
        let texture = create(ctx, TexelKind::Vec4, width, height);
        let row_bytes = (width * 16) as u64;
        let full_rows = texels / width;
        let mut enc = ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("weight-texture") });
        let mut copy = |offset: u64, y: usize, w: usize, rows: usize| {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: t.buffer(),
                    layout: wgpu::TexelCopyBufferLayout {
                        offset,
                        bytes_per_row: Some(row_bytes.max(256) as u32).filter(|_| rows > 1),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: &texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y: y as u32, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d { width: w as u32, height: rows as u32, depth_or_array_layers: 1 },
            );
        };
        if full_rows > 0 {
            copy(0, 0, width, full_rows);
        }
        if texels > full_rows * width {
            copy(full_rows as u64 * row_bytes, full_rows, texels - full_rows * width, 1);
        }
        ctx.queue().submit([enc.finish()]);
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        let words = WordTexture {
            ctx: ctx.clone(),
            texture: Arc::new(texture),
            view: Arc::new(view),
            kind: TexelKind::Vec4,
            words: bytes.div_ceil(4),
        };
        Some(DenseTexture { words, shape: [n, k], dtype })
    }

    /// `[N, K]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// f32 or f16.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes of the elements.
    pub fn byte_size(&self) -> u64 {
        (self.shape[0] * self.shape[1] * self.dtype.size()) as u64
    }

    /// The texture of words.
    pub fn words(&self) -> &WordTexture {
        &self.words
    }

    /// Downloads the elements as f32 (waits for submitted work).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        let words = self.words.to_vec_u32()?;
        let n = self.shape[0] * self.shape[1];
        Ok(match self.dtype {
            DType::F16 => words
                .iter()
                .flat_map(|w| [half::f16::from_bits(*w as u16), half::f16::from_bits((*w >> 16) as u16)])
                .take(n)
                .map(half::f16::to_f32)
                .collect(),
            _ => words.iter().take(n).map(|w| f32::from_bits(*w)).collect(),
        })
    }
}
