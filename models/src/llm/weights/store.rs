//! The decoder's view of a checkpoint: tensors by name as host f32 values or uploaded in their
//! stored form, from any weight file Kestrel reads or from a Kestrel model file (whose
//! quantised weights are packed for the GPU already).

use std::sync::Arc;

use kestrel::nn::LinearWeight;
use kestrel::quant::{PackedWeights, QuantTensor};
use kestrel::weights::kestrel_file::{KestrelFile, PackedInfo};
use kestrel::weights::{WeightDType, WeightSource};
use kestrel::{Context, DType, Tensor};

use crate::error::{ModelError, Result};
use crate::params::read_checked;

/// An opened checkpoint.
pub enum Store {
    /// A GGUF, safetensors or PyTorch file.
    Plain(Box<dyn WeightSource>),
    /// A Kestrel model file.
    Kestrel(Box<KestrelFile>),
}

impl Store {
    /// The file as a generic weight source (plain tensors only, for a Kestrel file).
    pub fn source(&self) -> &dyn WeightSource {
        match self {
            Store::Plain(s) => s.as_ref(),
            Store::Kestrel(k) => k.as_ref(),
        }
    }

    /// The file's path, for messages.
    pub fn file(&self) -> String {
        self.source().path().display().to_string()
    }

    /// A [`ModelError::Checkpoint`] about this file.
    pub fn error(&self, detail: impl Into<String>) -> ModelError {
        ModelError::Checkpoint { file: self.file(), detail: detail.into() }
    }

    /// The logical shape of `name` (a quantised weight of a Kestrel file included), or `None`.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self.packed_info(name) {
            Some(p) => Some(p.shape.clone()),
            None => self.source().info(name).map(|t| t.shape.clone()),
        }
    }

    /// Whether the file has a tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    /// Checks that `name` exists with `shape`.
    pub fn check_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        match self.shape(name) {
            Some(s) if s == shape => Ok(()),
            Some(s) => Err(self.error(format!("tensor `{name}` has shape {s:?}, the config needs {shape:?}"))),
            None => Err(self.error(format!("missing tensor `{name}` (is this checkpoint of the configured architecture?)"))),
        }
    }

    /// `name` as host f32 values (dequantised where stored quantised), checked to have `shape`
    /// and only finite values.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.check_shape(name, shape)?;
        if let Store::Kestrel(k) = self
            && let Some(p) = k.packed(name)?
        {
            return Ok(p.dequantize());
        }
        read_checked(self.source(), name, shape)
    }

    /// The stored element type of a plain tensor (`None` for a Kestrel file's packed weights).
    fn stored_dtype(&self, name: &str) -> Option<WeightDType> {
        self.source().info(name).map(|t| t.dtype)
    }

    /// Uploads the weight `name` (`shape` = `[out, in]`) in its stored form where the kernels
    /// read it: GGUF Q4_0/Q4_1/Q8_0 blocks and a Kestrel file's packed weights as
    /// [`LinearWeight::Quant`], f32 and f16 as they are; any other type (bf16, f64, K-quants) is
    /// converted to f16.
    pub fn native_weight(&self, ctx: &Arc<Context>, name: &str, shape: &[usize]) -> Result<LinearWeight> {
        self.check_shape(name, shape)?;
        if let Store::Kestrel(k) = self
            && let Some(q) = k.upload_packed(ctx, name)?
        {
            return Ok(LinearWeight::Quant(q));
        }
        let dtype = self.stored_dtype(name);
        if let Some(scheme) = dtype.and_then(WeightDType::gguf_scheme) {
            let bytes = self.source().bytes(name)?;
            return Ok(LinearWeight::Quant(QuantTensor::from_gguf_blocks(ctx, scheme, shape, &bytes)?));
        }
        match dtype {
            Some(d @ (WeightDType::F32 | WeightDType::F16)) => Ok(LinearWeight::Dense(self.plain_tensor(ctx, name, shape, d)?)),
            _ => Ok(LinearWeight::Dense(Tensor::from_f32_as_f16(ctx, shape, &self.f32(name, shape)?)?)),
        }
    }

    /// [`native_weight`](Self::native_weight) of several weights `[outᵢ, inp]` stacked by rows
    /// into one `[Σ outᵢ, inp]` (a fused projection), or `None` when their stored forms differ
    /// (say Q4_1 and Q8_0, or a packed and a plain tensor) and no stacked form keeps them native.
    pub fn native_stacked(&self, ctx: &Arc<Context>, parts: &[(String, usize)], inp: usize) -> Result<Option<LinearWeight>> {
        for (name, out) in parts {
            self.check_shape(name, &[*out, inp])?;
        }
        let rows = parts.iter().map(|(_, out)| out).sum::<usize>();
        let shape = [rows, inp];
        if let Store::Kestrel(k) = self {
            let packed = parts.iter().map(|(name, _)| k.packed(name)).collect::<kestrel::Result<Vec<_>>>()?;
            if packed.iter().all(Option::is_some) {
                let packed: Vec<PackedWeights> = packed.into_iter().flatten().collect();
                return Ok(Some(LinearWeight::Quant(QuantTensor::upload(ctx, &PackedWeights::concat_rows(&packed)?)?)));
            }
            if packed.iter().any(Option::is_some) {
                return Ok(None);
            }
        }
        let dtypes: Vec<Option<WeightDType>> = parts.iter().map(|(name, _)| self.stored_dtype(name)).collect();
        let Some(&dtype) = dtypes.first() else { return Ok(None) };
        if dtypes.iter().any(|&d| d != dtype) {
            return Ok(None);
        }
        let bytes = || parts.iter().map(|(name, _)| self.source().bytes(name)).collect::<kestrel::Result<Vec<_>>>();
        if let Some(scheme) = dtype.and_then(WeightDType::gguf_scheme) {
            let packed = parts
                .iter()
                .zip(bytes()?)
                .map(|((_, out), b)| PackedWeights::from_gguf_blocks(scheme, &[*out, inp], &b))
                .collect::<kestrel::Result<Vec<_>>>()?;
            return Ok(Some(LinearWeight::Quant(QuantTensor::upload(ctx, &PackedWeights::concat_rows(&packed)?)?)));
        }
        match dtype {
            Some(d @ (WeightDType::F32 | WeightDType::F16)) => {
                let stacked = bytes()?.concat();
                let names = parts.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join("|");
                Ok(Some(LinearWeight::Dense(self.checked_tensor(ctx, &names, &stacked, &shape, d)?)))
            }
            _ => {
                let mut w = Vec::with_capacity(rows * inp);
                for (name, out) in parts {
                    w.extend(self.f32(name, &[*out, inp])?);
                }
                Ok(Some(LinearWeight::Dense(Tensor::from_f32_as_f16(ctx, &shape, &w)?)))
            }
        }
    }

    /// Uploads `name` as a dense table of `dtype` (f32 or f16): the stored bytes when they are
    /// of that type already, else converted from f32.
    pub fn dense(&self, ctx: &Arc<Context>, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.check_shape(name, shape)?;
        let stored = match dtype {
            DType::F16 => WeightDType::F16,
            _ => WeightDType::F32,
        };
        if self.stored_dtype(name) == Some(stored) && self.packed_info(name).is_none() {
            return self.plain_tensor(ctx, name, shape, stored);
        }
        Ok(Tensor::from_f32_as(ctx, shape, &self.f32(name, shape)?, dtype)?)
    }

    /// The metadata entry of a Kestrel file's packed weight `name`.
    fn packed_info(&self, name: &str) -> Option<&PackedInfo> {
        match self {
            Store::Kestrel(k) => k.header().tensors.get(name),
            Store::Plain(_) => None,
        }
    }

    /// Uploads a plain f32 / f16 tensor's bytes unchanged (checking for non-finite values).
    fn plain_tensor(&self, ctx: &Arc<Context>, name: &str, shape: &[usize], stored: WeightDType) -> Result<Tensor> {
        self.checked_tensor(ctx, name, &self.source().bytes(name)?, shape, stored)
    }

    /// Uploads f32 / f16 `bytes` (of `what`, for messages) unchanged, refusing non-finite values.
    fn checked_tensor(&self, ctx: &Arc<Context>, what: &str, bytes: &[u8], shape: &[usize], stored: WeightDType) -> Result<Tensor> {
        let finite = match stored {
            WeightDType::F16 => bytes.chunks_exact(2).all(|b| half::f16::from_le_bytes([b[0], b[1]]).is_finite()),
            _ => bytes.chunks_exact(4).all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        };
        if !finite {
            return Err(self.error(format!("tensor `{what}` holds a non-finite value")));
        }
        let dtype = if stored == WeightDType::F16 { DType::F16 } else { DType::F32 };
        Ok(Tensor::from_le_bytes(ctx, shape, dtype, bytes)?)
    }
}
