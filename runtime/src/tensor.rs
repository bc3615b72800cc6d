//! Tensors: a shape, an element type and a pooled GPU buffer.

use std::sync::Arc;

use crate::context::Context;
use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::pool::{BufferKind, PooledBuffer};

/// A dense, row-major tensor in GPU memory. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    buf: Arc<PooledBuffer>,
    ctx: Arc<Context>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype.name())
    }
}

/// Bytes of a tensor's buffer: its data padded to 16 bytes so kernels may use vec4 loads
/// (they mask the tail); an error when the buffer would exceed the device's largest, also when
/// the element count or the byte size does not fit in 64 bits (checked arithmetic throughout:
/// a shape from a file or an app never wraps around to a small buffer).
pub(crate) fn padded_bytes(ctx: &Context, shape: &[usize], dtype: DType) -> Result<u64> {
    let limit = ctx.caps().max_buffer_size;
    let too_large = KestrelError::BufferTooLarge { requested: u64::MAX, limit };
    let padded = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .and_then(|bytes| bytes.checked_next_multiple_of(16))
        .ok_or(too_large)?;
    if padded > limit || crate::pool::size_class(padded) > limit {
        return Err(KestrelError::BufferTooLarge { requested: padded, limit });
    }
    Ok(padded)
}

/// Number of elements of a shape (of a tensor that exists: creating one checks that its size
/// fits).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// An uninitialised tensor (contents are whatever the pooled buffer held).
    pub fn empty(ctx: &Arc<Context>, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let padded = padded_bytes(ctx, shape, dtype)?;
        let buf = ctx.pool().get(ctx.device(), padded, BufferKind::Storage);
        Ok(Tensor { shape: shape.to_vec(), dtype, buf, ctx: ctx.clone() })
    }

    /// A tensor over a buffer already taken from the pool (at least [`padded_bytes`] long).
    pub(crate) fn from_pooled(ctx: &Arc<Context>, shape: &[usize], dtype: DType, buf: Arc<PooledBuffer>) -> Tensor {
        Tensor { shape: shape.to_vec(), dtype, buf, ctx: ctx.clone() }
    }

    fn from_bytes(ctx: &Arc<Context>, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let mut data = bytes;
        let padded;
        if !data.len().is_multiple_of(4) {
            padded = [bytes, &[0u8; 2]].concat();
            data = &padded;
        }
        // Host-mappable storage (CPU adapters): fill a fresh buffer in place, one copy.
        if let Some(buf) = ctx.pool().get_filled(ctx.device(), padded_bytes(ctx, shape, dtype)?, data) {
            return Ok(Tensor { shape: shape.to_vec(), dtype, buf, ctx: ctx.clone() });
        }
        let t = Tensor::empty(ctx, shape, dtype)?;
        if !data.is_empty() {
            ctx.queue().write_buffer(t.buf.buffer(), 0, data);
        }
        Ok(t)
    }

    /// Uploads f32 data.
    pub fn from_f32(ctx: &Arc<Context>, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        Tensor::from_bytes(ctx, shape, DType::F32, bytemuck::cast_slice(data))
    }

    /// Uploads f32 data converted to f16.
    pub fn from_f32_as_f16(ctx: &Arc<Context>, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
        Tensor::from_bytes(ctx, shape, DType::F16, bytemuck::cast_slice(&h))
    }

    /// Uploads f16 data.
    pub fn from_f16(ctx: &Arc<Context>, shape: &[usize], data: &[half::f16]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        Tensor::from_bytes(ctx, shape, DType::F16, bytemuck::cast_slice(data))
    }

    /// Uploads u32 data (indices, token ids).
    pub fn from_u32(ctx: &Arc<Context>, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        Tensor::from_bytes(ctx, shape, DType::U32, bytemuck::cast_slice(data))
    }

    /// Uploads little-endian element bytes as they are stored in a file (e.g. borrowed from a
    /// memory-mapped weight file: no host copy, no alignment needed). `bytes` must hold exactly
    /// `numel(shape)` elements of `dtype`.
    pub fn from_le_bytes(ctx: &Arc<Context>, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let size = dtype.size();
        if !bytes.len().is_multiple_of(size) {
            return Err(KestrelError::InvalidArgument {
                op: "Tensor::from_le_bytes",
                detail: format!("{} bytes is not a whole number of {} elements", bytes.len(), dtype.name()),
            });
        }
        check_len(shape, bytes.len() / size)?;
        Tensor::from_bytes(ctx, shape, dtype, bytes)
    }

    /// Uploads f32 data and stores it as `dtype` (f32 or f16).
    pub fn from_f32_as(ctx: &Arc<Context>, shape: &[usize], data: &[f32], dtype: DType) -> Result<Tensor> {
        match dtype {
            DType::F32 => Tensor::from_f32(ctx, shape, data),
            DType::F16 => Tensor::from_f32_as_f16(ctx, shape, data),
            DType::U32 => Err(KestrelError::UnsupportedDtype { op: "from_f32_as", dtype }),
        }
    }

    /// Shape (row-major, last dimension contiguous).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Bytes of data (without padding).
    pub fn byte_size(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }

    /// The underlying GPU buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    /// The pooled buffer handle (kept alive by recorded work until it is submitted).
    pub fn pooled(&self) -> &Arc<PooledBuffer> {
        &self.buf
    }

    /// The context the tensor lives on.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Same data, new shape with the same number of elements (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(KestrelError::Shape {
                op: "reshape",
                detail: format!("{:?} has {} elements, {:?} has {}", self.shape, self.numel(), shape, numel(shape)),
            });
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// Downloads the raw bytes (waits for all submitted work).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes = self.byte_size();
        let copy = bytes.div_ceil(4) * 4;
        if copy == 0 {
            return Ok(Vec::new());
        }
        let device = self.ctx.device();
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kestrel-readback"),
            size: copy,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(self.buffer(), 0, &staging, 0, copy);
        self.ctx.queue().submit([enc.finish()]);
        let mut out = read_staging(&self.ctx, &staging)?;
        out.truncate(bytes as usize);
        Ok(out)
    }

    /// Downloads as f32 (f16 is widened).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        let bytes = self.to_bytes()?;
        match self.dtype {
            DType::F32 => Ok(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F16 => {
                let h: Vec<half::f16> = bytemuck::pod_collect_to_vec(&bytes);
                Ok(h.iter().map(|x| x.to_f32()).collect())
            }
            DType::U32 => Err(KestrelError::UnsupportedDtype { op: "to_vec_f32", dtype: self.dtype }),
        }
    }

    /// Downloads as u32.
    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        if self.dtype != DType::U32 {
            return Err(KestrelError::UnsupportedDtype { op: "to_vec_u32", dtype: self.dtype });
        }
        Ok(bytemuck::pod_collect_to_vec(&self.to_bytes()?))
    }
}

fn check_len(shape: &[usize], got: usize) -> Result<()> {
    let Some(expected) = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        return Err(KestrelError::InvalidArgument { op: "Tensor", detail: format!("shape {shape:?} has more elements than fit in usize") });
    };
    if expected != got {
        return Err(KestrelError::DataLength { expected, got });
    }
    Ok(())
}

/// Waits for submitted work, then maps a `MAP_READ` staging buffer and copies it out.
pub(crate) fn read_staging(ctx: &Context, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.sync()?;
    rx.recv().map_err(|e| KestrelError::Readback(e.to_string()))?.map_err(|e| KestrelError::Readback(e.to_string()))?;
    let view = staging.get_mapped_range(..).map_err(|e| KestrelError::Readback(e.to_string()))?;
    let out = view.to_vec();
    drop(view);
    staging.unmap();
    Ok(out)
}
