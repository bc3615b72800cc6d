//! Conversion of any [`WeightSource`] into a [Kestrel model file](super::kestrel_file).
//!
//! Which tensors are quantised (with `w8` / `w4`): 2-D tensors whose name ends in `weight`,
//! whose stored type is a float or a GGUF block type (not an integer), and whose K (inner
//! dimension) is at least one block of 32 — the packers pad K to whole blocks, so a shorter row
//! would mostly store padding. Everything else is stored as f32 (f16 with `quant = f16`).
//! Sources are dequantised with [`tensor_f32`] first, so a GGUF Q4_1 file is re-quantised from
//! its exact f32 values.
//!
//! The file is written tensor by tensor (one tensor in memory at a time) to a fresh temporary
//! file beside `OUT`, then renamed to `OUT` ([`PendingFile`]), so a failed conversion never
//! leaves a half-written model file and never writes through an existing path. `OUT` must be
//! absent or a regular file, and not the source.

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::kestrel_file::{KestrelHeader, METADATA_KEY, PackedInfo, SCALES_SUFFIX, SourceInfo, VALUES_SUFFIX, VERSION};
use super::{TensorInfo, WeightDType, WeightSource, bad, tensor_f32};
use crate::Quant;
use crate::error::{KestrelError, Result};
use crate::output::PendingFile;
use crate::quant::{BLOCK, PackedWeights, QuantScheme, check_weight_shape, packed_words};

/// What to write.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Storage choice.
    pub quant: Quant,
    /// Architecture name; default: the source's `general.architecture` (GGUF) or `unknown`.
    pub architecture: Option<String>,
    /// Model configuration (a JSON object); default: a GGUF source's whole metadata (model
    /// hyper-parameters, tokenizer vocabulary and chat template, so the converted file is as
    /// self-describing as its source), otherwise `{}`.
    pub config: Option<Value>,
}

/// What a conversion wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertSummary {
    /// Logical tensors written.
    pub tensors: usize,
    /// Of which quantised.
    pub quantised: usize,
    /// Size of the written file.
    pub bytes: u64,
}

/// One logical tensor of the output and how it is stored.
struct Planned<'a> {
    info: &'a TensorInfo,
    scheme: Option<QuantScheme>,
}

/// The scheme a source tensor is quantised with under `quant`, or `None` when it is stored as
/// a float (rules in the [module docs](self)).
pub fn quantise_scheme(quant: Quant, info: &TensorInfo) -> Option<QuantScheme> {
    let scheme = quant.scheme()?;
    let float = matches!(
        info.dtype,
        WeightDType::F64
            | WeightDType::F32
            | WeightDType::F16
            | WeightDType::BF16
            | WeightDType::Q4_0
            | WeightDType::Q4_1
            | WeightDType::Q8_0
            | WeightDType::Q4K
            | WeightDType::Q5K
            | WeightDType::Q6K
    );
    let ok = float
        && info.name.ends_with("weight")
        && info.shape.len() == 2
        && info.shape[1] >= BLOCK
        && check_weight_shape(scheme, &info.shape).is_ok();
    ok.then_some(scheme)
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| bad(path, None, format!("cannot open: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| bad(path, None, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Converts `src` into a Kestrel file at `out`, calling `progress(done, total)` after each
/// tensor (and once with `done = 0` before the first). Errors: a tensor whose type cannot be
/// converted, non-finite weights to quantise, a name clash with a packed buffer name, `out`
/// being the source file, or an I/O failure — all [`KestrelError::Weights`];
/// [`Quant::Native`] (not a storage a file records) — [`KestrelError::InvalidArgument`].
pub fn convert(
    src: &dyn WeightSource,
    out: &Path,
    opts: &ConvertOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<ConvertSummary> {
    if opts.quant == Quant::Native {
        return Err(KestrelError::InvalidArgument {
            op: "convert",
            detail: "`native` is not a storage a Kestrel file records: choose f32, f16, w8 or w4".into(),
        });
    }
    if same_file(src.path(), out) {
        return Err(bad(out, None, "the output would overwrite the source"));
    }
    let plan = plan(src, opts.quant)?;
    let header = header(src, opts, &plan)?;
    let mut pending = PendingFile::create(out).map_err(|e| bad(out, None, e.to_string()))?;
    if same_file(src.path(), pending.temp_path()) {
        return Err(bad(out, None, "the temporary output file is the source"));
    }
    let temp = pending.temp_path().to_path_buf();
    let bytes = write(src, &temp, pending.file(), &header, opts.quant, &plan, &mut progress)?;
    pending.commit().map_err(|e| bad(out, None, e.to_string()))?;
    Ok(ConvertSummary { tensors: plan.len(), quantised: plan.iter().filter(|p| p.scheme.is_some()).count(), bytes })
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Decides each tensor's storage and checks names and types before anything is written.
fn plan(src: &dyn WeightSource, quant: Quant) -> Result<Vec<Planned<'_>>> {
    let mut plan = Vec::with_capacity(src.tensors().len());
    for info in src.tensors() {
        if let WeightDType::Opaque(o) = info.dtype {
            return Err(bad(src.path(), Some(&info.name), format!("dtype {} cannot be converted", o.name())));
        }
        if info.name.ends_with(VALUES_SUFFIX) || info.name.ends_with(SCALES_SUFFIX) {
            return Err(bad(src.path(), Some(&info.name), "name clashes with Kestrel's packed-buffer suffixes"));
        }
        plan.push(Planned { info, scheme: quantise_scheme(quant, info) });
    }
    Ok(plan)
}

/// The `kestrel` metadata value.
fn header(src: &dyn WeightSource, opts: &ConvertOptions, plan: &[Planned<'_>]) -> Result<KestrelHeader> {
    let architecture = opts
        .architecture
        .clone()
        .unwrap_or_else(|| src.metadata().get("general.architecture").and_then(Value::as_str).unwrap_or("unknown").to_string());
    let config = match &opts.config {
        Some(c) => c.clone(),
        None if src.format() == "gguf" => src.metadata(),
        None => Value::Object(Map::new()),
    };
    if !config.is_object() {
        return Err(KestrelError::InvalidArgument { op: "convert", detail: "config must be a JSON object".into() });
    }
    let file = src.path().file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(KestrelHeader {
        version: VERSION,
        architecture,
        config,
        quant: opts.quant.name().to_string(),
        source: SourceInfo { file, sha256: sha256_file(src.path())?, format: src.format().to_string() },
        tensors: plan
            .iter()
            .filter_map(|p| {
                p.scheme.map(|s| (p.info.name.clone(), PackedInfo { scheme: s.name().to_string(), shape: p.info.shape.clone() }))
            })
            .collect(),
    })
}

/// The stored tensors of one logical tensor: (name, safetensors dtype, shape, bytes).
fn stored_layout(p: &Planned<'_>, quant: Quant) -> Vec<(String, &'static str, Vec<usize>, usize)> {
    match p.scheme {
        Some(s) => {
            let (vw, sw) = packed_words(s, p.info.shape[0], p.info.shape[1]);
            vec![
                (format!("{}{VALUES_SUFFIX}", p.info.name), "U32", vec![vw], vw * 4),
                (format!("{}{SCALES_SUFFIX}", p.info.name), "U32", vec![sw], sw * 4),
            ]
        }
        None => {
            let (dtype, size) = if quant == Quant::F16 { ("F16", 2) } else { ("F32", 4) };
            vec![(p.info.name.clone(), dtype, p.info.shape.clone(), p.info.numel() * size)]
        }
    }
}

/// Rejects NaN and ±Inf: a converted model must not carry them silently.
fn check_finite(src: &dyn WeightSource, name: &str, values: impl Iterator<Item = f32>) -> Result<()> {
    for (i, x) in values.enumerate() {
        if !x.is_finite() {
            return Err(bad(src.path(), Some(name), format!("non-finite value {x} at element {i}")));
        }
    }
    Ok(())
}

/// A tensor as f32, checked to be finite.
fn finite_f32(src: &dyn WeightSource, name: &str) -> Result<Vec<f32>> {
    let v = tensor_f32(src, name)?;
    check_finite(src, name, v.iter().copied())?;
    Ok(v)
}

/// Writes the file into `file` (at `path`, for error messages); returns its size.
fn write(
    src: &dyn WeightSource,
    path: &Path,
    file: &mut std::fs::File,
    header: &KestrelHeader,
    quant: Quant,
    plan: &[Planned<'_>],
    progress: &mut impl FnMut(usize, usize),
) -> Result<u64> {
    let io = |e: std::io::Error| bad(path, None, format!("cannot write: {e}"));
    let meta = serde_json::to_string(header).map_err(|e| bad(path, None, format!("metadata: {e}")))?;
    let mut json = Map::new();
    json.insert("__metadata__".into(), json!({ METADATA_KEY: meta }));
    let mut offset = 0usize;
    for p in plan {
        for (name, dtype, shape, bytes) in stored_layout(p, quant) {
            json.insert(name, json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}));
            offset += bytes;
        }
    }
    let mut head = serde_json::to_string(&Value::Object(json)).map_err(|e| bad(path, None, format!("header: {e}")))?;
    // Pad with spaces so the data starts 8-byte aligned (as the safetensors writers do).
    while !(8 + head.len()).is_multiple_of(8) {
        head.push(' ');
    }
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(head.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(head.as_bytes()).map_err(io)?;
    progress(0, plan.len());
    for (i, p) in plan.iter().enumerate() {
        let name = p.info.name.as_str();
        let expected: usize = stored_layout(p, quant).iter().map(|s| s.3).sum();
        let written = match p.scheme {
            Some(s) => {
                let wf = finite_f32(src, name)?;
                let packed = PackedWeights::quantize(s, &wf, &p.info.shape).map_err(|e| bad(src.path(), Some(name), e.to_string()))?;
                w.write_all(bytemuck::cast_slice(&packed.values)).map_err(io)?;
                w.write_all(bytemuck::cast_slice(&packed.scales)).map_err(io)?;
                (packed.values.len() + packed.scales.len()) * 4
            }
            None if quant != Quant::F16 && p.info.dtype == WeightDType::F32 => {
                let b = src.bytes(name)?;
                check_finite(src, name, b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))?;
                w.write_all(&b).map_err(io)?;
                b.len()
            }
            None if quant != Quant::F16 => {
                let wf = finite_f32(src, name)?;
                w.write_all(bytemuck::cast_slice(&wf)).map_err(io)?;
                wf.len() * 4
            }
            None => {
                let h: Vec<half::f16> = finite_f32(src, name)?.iter().map(|&x| half::f16::from_f32(x)).collect();
                w.write_all(bytemuck::cast_slice(&h)).map_err(io)?;
                h.len() * 2
            }
        };
        if written != expected {
            return Err(bad(src.path(), Some(name), format!("wrote {written} bytes, planned {expected}")));
        }
        progress(i + 1, plan.len());
    }
    w.flush().map_err(io)?;
    Ok((8 + head.len() + offset) as u64)
}
