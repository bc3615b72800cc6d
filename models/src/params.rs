//! Model parameters between the checkpoint and the GPU: a checkpoint is read (and its
//! normalisations folded) into [`HostParams`]; a model is then built from any [`ParamSource`] —
//! those host parameters, or a converted Kestrel file whose weights are already packed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kestrel::Context;
use kestrel::Quant;
use kestrel::nn::{Linear, LinearWeight};
use kestrel::weights::kestrel_file::KestrelFile;
use kestrel::weights::{TensorInfo, WeightDType, WeightSource, tensor_f32};

use crate::error::{ModelError, Result};

/// One f32 tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Named f32 tensors on the host, e.g. a checkpoint after its normalisations were folded. It
/// is itself a [`WeightSource`] (f32 tensors in name order), so it can be written to a Kestrel
/// file by [`kestrel::weights::convert::convert`].
#[derive(Clone, Debug, Default)]
pub struct HostParams {
    file: String,
    path: PathBuf,
    format: &'static str,
    tensors: BTreeMap<String, HostTensor>,
    infos: Vec<TensorInfo>,
}

impl HostParams {
    /// An empty set, remembering the file it came from (for error messages).
    pub fn new(file: impl Into<String>) -> HostParams {
        let file = file.into();
        HostParams { path: PathBuf::from(&file), file, format: "host", tensors: BTreeMap::new(), infos: Vec::new() }
    }

    /// An empty set derived from `src` (e.g. its folded form): it reports `src`'s path and
    /// format, so a Kestrel file converted from it records the original checkpoint.
    pub fn derived_from(src: &dyn WeightSource) -> HostParams {
        HostParams { format: src.format(), ..HostParams::new(src.path().display().to_string()) }
    }

    /// Adds (or replaces) a tensor; the data length must match the shape.
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Result<()> {
        let name = name.into();
        if shape.iter().product::<usize>() != data.len() {
            return Err(ModelError::Checkpoint {
                file: self.file.clone(),
                detail: format!("`{name}`: {} values for shape {shape:?}", data.len()),
            });
        }
        let info = TensorInfo { name: name.clone(), dtype: WeightDType::F32, shape: shape.clone() };
        if self.tensors.insert(name.clone(), HostTensor { shape, data }).is_some() {
            self.infos.retain(|i| i.name != name);
        }
        self.infos.push(info);
        Ok(())
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Every tensor, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &HostTensor)> {
        self.tensors.iter()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

impl WeightSource for HostParams {
    fn format(&self) -> &'static str {
        self.format
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn metadata(&self) -> serde_json::Value {
        serde_json::Value::Object(Default::default())
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn bytes(&self, name: &str) -> kestrel::Result<Cow<'_, [u8]>> {
        match self.tensors.get(name) {
            Some(t) => Ok(Cow::Owned(t.data.iter().flat_map(|v| v.to_le_bytes()).collect())),
            None => Err(kestrel::KestrelError::Weights {
                file: self.file.clone(),
                tensor: Some(name.to_string()),
                detail: "no such tensor".into(),
            }),
        }
    }
}

/// Reads `name` from a checkpoint as f32, requiring `shape` (element count and, after dropping
/// leading 1s on both sides, the dimensions): a missing or misshapen tensor is a
/// [`ModelError::Checkpoint`] naming the file and tensor.
pub fn read_checked(src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let file = src.path().display().to_string();
    let Some(info) = src.info(name) else {
        return Err(ModelError::Checkpoint {
            file,
            detail: format!("missing tensor `{name}` (is this checkpoint of the chosen architecture?)"),
        });
    };
    if squeeze(&info.shape) != squeeze(shape) {
        return Err(ModelError::Checkpoint {
            file,
            detail: format!("tensor `{name}` has shape {:?}, the architecture needs {shape:?}", info.shape),
        });
    }
    let data = tensor_f32(src, name)?;
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::Checkpoint { file, detail: format!("tensor `{name}` holds a non-finite value at index {i}") });
    }
    Ok(data)
}

fn squeeze(shape: &[usize]) -> &[usize] {
    let start = shape.iter().position(|&d| d != 1).unwrap_or(shape.len());
    &shape[start..]
}

/// Where a model's (folded) parameters come from when it is built on the GPU.
pub trait ParamSource {
    /// The file, for error messages.
    fn file(&self) -> &str;
    /// True when a tensor called `name` exists.
    fn has(&self, name: &str) -> bool;
    /// The f32 values of `name`, which must have `shape` (leading 1s ignored).
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
    /// The linear layer `{prefix}.weight` (`[out, in]`) and, when present, `{prefix}.bias`,
    /// stored as `quant` asks (a converted file keeps the storage it was converted with).
    fn linear(&self, ctx: &Arc<Context>, prefix: &str, out: usize, inp: usize, quant: Quant) -> Result<Linear>;
}

fn missing(file: &str, name: &str, shape: &[usize], got: Option<&[usize]>) -> ModelError {
    let detail = match got {
        None => format!("missing tensor `{name}`"),
        Some(s) => format!("tensor `{name}` has shape {s:?}, the architecture needs {shape:?}"),
    };
    ModelError::Checkpoint { file: file.to_string(), detail }
}

/// The linear layer `{prefix}.weight` (+ `{prefix}.bias` when present) from `p`'s f32 values,
/// stored as `quant` asks.
fn linear_from_f32(p: &dyn ParamSource, ctx: &Arc<Context>, prefix: &str, out: usize, inp: usize, quant: Quant) -> Result<Linear> {
    let w = p.f32(&format!("{prefix}.weight"), &[out, inp])?;
    let bias_name = format!("{prefix}.bias");
    let b = if p.has(&bias_name) { Some(p.f32(&bias_name, &[out])?) } else { None };
    Ok(Linear::from_f32(ctx, &w, b.as_deref(), out, inp, quant)?)
}

impl ParamSource for HostParams {
    fn file(&self) -> &str {
        &self.file
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.tensors.get(name) {
            Some(t) if squeeze(&t.shape) == squeeze(shape) => Ok(t.data.clone()),
            Some(t) => Err(missing(&self.file, name, shape, Some(&t.shape))),
            None => Err(missing(&self.file, name, shape, None)),
        }
    }

    fn linear(&self, ctx: &Arc<Context>, prefix: &str, out: usize, inp: usize, quant: Quant) -> Result<Linear> {
        linear_from_f32(self, ctx, prefix, out, inp, quant)
    }
}

impl ParamSource for KestrelFile {
    fn file(&self) -> &str {
        self.path().to_str().unwrap_or("<kestrel file>")
    }

    fn has(&self, name: &str) -> bool {
        self.info(name).is_some() || self.quantised_names().any(|n| n == name)
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.info(name) {
            Some(info) if squeeze(&info.shape) == squeeze(shape) => Ok(tensor_f32(self, name)?),
            Some(info) => Err(missing(ParamSource::file(self), name, shape, Some(&info.shape.clone()))),
            None => Err(missing(ParamSource::file(self), name, shape, None)),
        }
    }

    fn linear(&self, ctx: &Arc<Context>, prefix: &str, out: usize, inp: usize, _quant: Quant) -> Result<Linear> {
        let wname = format!("{prefix}.weight");
        let weight = match self.upload_packed(ctx, &wname)? {
            Some(q) => LinearWeight::Quant(q),
            None => {
                ParamSource::f32(self, &wname, &[out, inp])?;
                LinearWeight::Dense(self.upload_plain(ctx, &wname)?)
            }
        };
        if weight.shape() != [out, inp] {
            return Err(missing(ParamSource::file(self), &wname, &[out, inp], Some(weight.shape())));
        }
        let bias_name = format!("{prefix}.bias");
        let bias = if self.info(&bias_name).is_some() {
            let b = ParamSource::f32(self, &bias_name, &[out])?;
            Some(kestrel::Tensor::from_f32(ctx, &[out], &b)?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias)?)
    }
}

/// A checkpoint read as it is stored (no folding), every name looked up under `prefix`: e.g.
/// a CLIP vision tower at `vision_model.` of a `CLIPModel`, or at `vision_tower.vision_model.`
/// of a LLaVA checkpoint. Reads are shape- and finiteness-checked ([`read_checked`]).
pub struct Checkpoint<'a> {
    src: &'a dyn WeightSource,
    prefix: String,
    file: String,
}

impl<'a> Checkpoint<'a> {
    /// The tensors of `src` whose names start with `prefix` (the prefix left out of the names
    /// the model asks for).
    pub fn new(src: &'a dyn WeightSource, prefix: impl Into<String>) -> Checkpoint<'a> {
        Checkpoint { src, prefix: prefix.into(), file: src.path().display().to_string() }
    }
}

impl ParamSource for Checkpoint<'_> {
    fn file(&self) -> &str {
        &self.file
    }

    fn has(&self, name: &str) -> bool {
        self.src.info(&format!("{}{name}", self.prefix)).is_some()
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        read_checked(self.src, &format!("{}{name}", self.prefix), shape)
    }

    fn linear(&self, ctx: &Arc<Context>, prefix: &str, out: usize, inp: usize, quant: Quant) -> Result<Linear> {
        linear_from_f32(self, ctx, prefix, out, inp, quant)
    }
}

/// Seeded pseudo-random parameters of any requested shape, for timing an architecture without
/// its weights (latency does not depend on weight values). Every name exists except the
/// `.scale` / `.shift` of unfolded normalisations, so models build their folded graph.
#[derive(Clone, Debug)]
pub struct RandomParams {
    seed: u64,
}

impl RandomParams {
    /// Parameters drawn from `seed`.
    pub fn new(seed: u64) -> RandomParams {
        RandomParams { seed }
    }

    /// `n` values uniform in ±0.05, a function of the seed and the name only.
    pub(crate) fn values(&self, name: &str, n: usize) -> Vec<f32> {
        // FNV-1a over the name, mixed with the seed, drives a SplitMix64 stream.
        let mut state = name.bytes().fold(0xcbf2_9ce4_8422_2325u64 ^ self.seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    }
}

impl ParamSource for RandomParams {
    fn file(&self) -> &str {
        "<random parameters>"
    }

    fn has(&self, name: &str) -> bool {
        !(name.ends_with(".scale") || name.ends_with(".shift"))
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self.values(name, shape.iter().product()))
    }

    fn linear(&self, ctx: &Arc<Context>, prefix: &str, out: usize, inp: usize, quant: Quant) -> Result<Linear> {
        let w = self.values(&format!("{prefix}.weight"), out * inp);
        let b = self.values(&format!("{prefix}.bias"), out);
        Ok(Linear::from_f32(ctx, &w, Some(&b), out, inp, quant)?)
    }
}
