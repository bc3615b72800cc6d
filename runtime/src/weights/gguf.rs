//! GGUF (v2 and v3, little-endian) parsed by hand over the memory-mapped file.
//!
//! Layout: `GGUF`, u32 version, u64 tensor count, u64 key/value count, the key/values, the
//! tensor infos (name, u32 dimension count, u64 dimensions innermost first, u32 type, u64
//! offset), padding to `general.alignment` (default 32), then the data section. Every count,
//! length and offset is checked against the file's length with checked arithmetic before it is
//! used, so an absurd declared count fails instead of allocating.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{FileBytes, OpaqueDType, TensorInfo, WeightDType, WeightSource, bad, map_file};
use crate::error::{KestrelError, Result};

/// Default alignment of the data section and of every tensor in it.
const DEFAULT_ALIGNMENT: usize = 32;
/// ggml's maximum number of tensor dimensions.
const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays in metadata values (real files use one level).
const MAX_ARRAY_DEPTH: usize = 8;

/// An opened GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: FileBytes,
    version: u32,
    alignment: usize,
    data_offset: usize,
    metadata: Value,
    tensors: Vec<TensorInfo>,
    /// Absolute byte range of each tensor in the file, parallel to `tensors`.
    ranges: Vec<(usize, usize)>,
    index: HashMap<String, usize>,
}

impl GgufFile {
    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of the data section and its tensors (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }
}

/// ggml tensor type id → Kestrel dtype; types Kestrel cannot convert are opaque (listed, their
/// bytes refused). `None` for an id this table does not know (the file is then rejected).
fn ggml_type(id: u32) -> Option<WeightDType> {
    let opaque = |name, block, bytes| Some(WeightDType::Opaque(OpaqueDType::new(name, block, bytes)));
    match id {
        0 => Some(WeightDType::F32),
        1 => Some(WeightDType::F16),
        2 => Some(WeightDType::Q4_0),
        3 => Some(WeightDType::Q4_1),
        6 => opaque("q5_0", 32, 22),
        7 => opaque("q5_1", 32, 24),
        8 => Some(WeightDType::Q8_0),
        9 => opaque("q8_1", 32, 36),
        10 => opaque("q2_k", 256, 84),
        11 => opaque("q3_k", 256, 110),
        12 => Some(WeightDType::Q4K),
        13 => Some(WeightDType::Q5K),
        14 => Some(WeightDType::Q6K),
        15 => opaque("q8_k", 256, 292),
        16 => opaque("iq2_xxs", 256, 66),
        17 => opaque("iq2_xs", 256, 74),
        18 => opaque("iq3_xxs", 256, 98),
        19 => opaque("iq1_s", 256, 50),
        20 => opaque("iq4_nl", 32, 18),
        21 => opaque("iq3_s", 256, 110),
        22 => opaque("iq2_s", 256, 82),
        23 => opaque("iq4_xs", 256, 136),
        24 => Some(WeightDType::I8),
        25 => Some(WeightDType::I16),
        26 => Some(WeightDType::I32),
        27 => Some(WeightDType::I64),
        28 => Some(WeightDType::F64),
        29 => opaque("iq1_m", 256, 56),
        30 => Some(WeightDType::BF16),
        34 => opaque("tq1_0", 256, 54),
        35 => opaque("tq2_0", 256, 66),
        39 => opaque("mxfp4", 32, 17),
        40 => opaque("nvfp4", 64, 36),
        41 => opaque("q1_0", 128, 18),
        _ => None,
    }
}

/// A bounds-checked little-endian reader over the mapped file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, detail: impl Into<String>) -> KestrelError {
        bad(self.path, None, detail)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            self.err(format!("truncated GGUF: {what} needs {n} bytes at offset {}, file has {}", self.pos, self.buf.len()))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A u64 count or length that must fit in the rest of the file at `min_size` bytes each.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n).ok().filter(|&n| n.checked_mul(min_size).is_some_and(|b| b <= self.remaining()));
        fits.ok_or_else(|| self.err(format!("{what} {n} cannot fit in the {} bytes left in the file", self.remaining())))
    }

    /// A GGUF string: u64 length then bytes (invalid UTF-8 is replaced).
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        Ok(String::from_utf8_lossy(self.take(n, what)?).into_owned())
    }

    /// One metadata value of GGUF value type `ty`, as JSON.
    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::from(self.array::<1>("u8 value")?[0]),
            1 => Value::from(self.array::<1>("i8 value")?[0] as i8),
            2 => Value::from(u16::from_le_bytes(self.array("u16 value")?)),
            3 => Value::from(i16::from_le_bytes(self.array("i16 value")?)),
            4 => Value::from(self.u32("u32 value")?),
            5 => Value::from(i32::from_le_bytes(self.array("i32 value")?)),
            6 => f32_json(f32::from_le_bytes(self.array("f32 value")?)),
            7 => Value::from(self.array::<1>("bool value")?[0] != 0),
            8 => Value::from(self.string("string length")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("metadata arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let elem = self.u32("array element type")?;
                let min = min_value_size(elem).ok_or_else(|| self.err(format!("unknown metadata value type {elem}")))?;
                let n = self.count("array length", min)?;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::from(self.u64("u64 value")?),
            11 => Value::from(i64::from_le_bytes(self.array("i64 value")?)),
            12 => float_json(f64::from_le_bytes(self.array("f64 value")?)),
            _ => return Err(self.err(format!("unknown metadata value type {ty}"))),
        })
    }
}

/// An f32 as the JSON number with its shortest decimal form (`1e-5`, not
/// `9.999999747378752e-6`); converting that number back to f32 gives the same value.
/// Non-finite values as [`float_json`] writes them.
fn f32_json(x: f32) -> Value {
    if !x.is_finite() {
        return float_json(f64::from(x));
    }
    x.to_string().parse::<f64>().map_or(Value::Null, Value::from)
}

/// A float as a JSON number, or — since JSON has no NaN or infinity — as the string `"NaN"`,
/// `"inf"` or `"-inf"`, so that a non-finite setting is seen (and refused) rather than read as
/// an absent key.
pub fn float_json(x: f64) -> Value {
    match x {
        x if x.is_nan() => Value::from("NaN"),
        f64::INFINITY => Value::from("inf"),
        f64::NEG_INFINITY => Value::from("-inf"),
        x => Value::from(x),
    }
}

/// Smallest encoding of a value of GGUF value type `ty` (strings: the length; arrays: type and
/// length), or `None` for an unknown type.
fn min_value_size(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

/// Opens a GGUF file (v2 or v3).
pub fn open(path: &Path) -> Result<GgufFile> {
    from_bytes(path, map_file(path)?)
}

/// Parses a GGUF file whose bytes are `map`; `path` names it in errors.
pub(crate) fn from_bytes(path: &Path, map: FileBytes) -> Result<GgufFile> {
    let (version, alignment, data_offset, metadata, tensors, ranges, index) = parse(&map, path)?;
    Ok(GgufFile { path: path.to_path_buf(), map, version, alignment, data_offset, metadata, tensors, ranges, index })
}

/// version, alignment, data offset, metadata, tensors, their absolute byte ranges, name index.
type Parsed = (u32, usize, usize, Value, Vec<TensorInfo>, Vec<(usize, usize)>, HashMap<String, usize>);

fn parse(buf: &[u8], path: &Path) -> Result<Parsed> {
    let mut r = Reader { buf, pos: 0, path };
    if r.take(4, "magic")? != b"GGUF" {
        return Err(r.err("not a GGUF file (bad magic)"));
    }
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        1 => return Err(r.err("GGUF version 1 is not supported (only 2 and 3)")),
        v if matches!(v.swap_bytes(), 2 | 3) => return Err(r.err("big-endian GGUF files are not supported")),
        v => return Err(r.err(format!("unsupported GGUF version {v}"))),
    }
    // A tensor info takes at least 24 bytes (empty name, no dims), a key/value at least 13.
    let n_tensors = r.count("tensor count", 24)?;
    let n_kv = r.count("key/value count", 13)?;

    let mut metadata = Map::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..n_kv {
        let key = r.string("key length")?;
        let ty = r.u32("value type")?;
        let value = r.value(ty, 0).map_err(|e| with_context(e, &format!("metadata key `{key}`")))?;
        if key == "general.alignment" {
            alignment = value
                .as_u64()
                .filter(|&a| ty == 4 && a.is_power_of_two())
                .and_then(|a| usize::try_from(a).ok())
                .ok_or_else(|| r.err(format!("general.alignment must be a power-of-two u32, got {value}")))?;
        }
        if metadata.insert(key.clone(), value).is_some() {
            return Err(r.err(format!("duplicate metadata key `{key}`")));
        }
    }

    let mut tensors = Vec::new();
    let mut offsets = Vec::new();
    let mut index = HashMap::new();
    for _ in 0..n_tensors {
        let name = r.string("tensor name length")?;
        let info = tensor_info(&mut r, &name)?;
        if index.insert(name.clone(), tensors.len()).is_some() {
            return Err(bad(path, Some(&name), "duplicate tensor name"));
        }
        offsets.push(info.1);
        tensors.push(TensorInfo { name, dtype: info.0, shape: info.2 });
    }

    let data_offset = r.pos.div_ceil(alignment).checked_mul(alignment).ok_or_else(|| r.err("data offset overflows"))?;
    let mut ranges = Vec::with_capacity(tensors.len());
    for (t, &off) in tensors.iter().zip(&offsets) {
        let size = t.dtype.bytes_for(t.numel()).ok_or_else(|| bad(path, Some(&t.name), "tensor size overflows"))?;
        if off % alignment as u64 != 0 {
            return Err(bad(path, Some(&t.name), format!("data offset {off} is not a multiple of the alignment {alignment}")));
        }
        let range = usize::try_from(off)
            .ok()
            .and_then(|o| data_offset.checked_add(o))
            .and_then(|s| Some((s, s.checked_add(size)?)))
            .filter(|&(_, e)| e <= buf.len())
            .ok_or_else(|| {
                bad(
                    path,
                    Some(&t.name),
                    format!("data ({size} bytes at data offset {off}) extends past the end of the file ({} bytes)", buf.len()),
                )
            })?;
        ranges.push(range);
    }
    Ok((version, alignment, data_offset, Value::Object(metadata), tensors, ranges, index))
}

/// Reads the rest of one tensor info: dtype, relative data offset, shape (outermost first).
fn tensor_info(r: &mut Reader<'_>, name: &str) -> Result<(WeightDType, u64, Vec<usize>)> {
    let path = r.path;
    let n_dims = r.u32("dimension count")?;
    if n_dims > MAX_DIMS {
        return Err(bad(path, Some(name), format!("{n_dims} dimensions (at most {MAX_DIMS})")));
    }
    let mut shape = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let d = r.u64("dimension")?;
        shape.push(usize::try_from(d).map_err(|_| bad(path, Some(name), format!("dimension {d} too large")))?);
    }
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let numel = numel.ok_or_else(|| bad(path, Some(name), format!("element count of shape {shape:?} overflows")))?;
    let ty = r.u32("tensor type")?;
    let dtype = ggml_type(ty).ok_or_else(|| bad(path, Some(name), format!("unknown GGML tensor type {ty}")))?;
    let block = dtype.block().0;
    if shape.first().is_some_and(|&d| d % block != 0) {
        return Err(bad(
            path,
            Some(name),
            format!("innermost dimension {} is not a multiple of the {} block size {block}", shape[0], dtype.name()),
        ));
    }
    if dtype.bytes_for(numel).is_none() {
        return Err(bad(path, Some(name), format!("{numel} elements do not make whole {} blocks", dtype.name())));
    }
    let offset = r.u64("tensor data offset")?;
    shape.reverse();
    Ok((dtype, offset, shape))
}

/// Adds context to a metadata parsing error.
fn with_context(e: KestrelError, what: &str) -> KestrelError {
    match e {
        KestrelError::Weights { file, tensor, detail } => KestrelError::Weights { file, tensor, detail: format!("{what}: {detail}") },
        other => other,
    }
}

impl WeightSource for GgufFile {
    fn format(&self) -> &'static str {
        "gguf"
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn metadata(&self) -> Value {
        self.metadata.clone()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let &i = self.index.get(name).ok_or_else(|| bad(&self.path, Some(name), "no such tensor"))?;
        if let WeightDType::Opaque(o) = self.tensors[i].dtype {
            return Err(bad(&self.path, Some(name), format!("GGML type {} is not supported", o.name())));
        }
        let (s, e) = self.ranges[i];
        let bytes = self.map.get(s..e).ok_or_else(|| bad(&self.path, Some(name), "data range past the end of the file"))?;
        Ok(Cow::Borrowed(bytes))
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }
}
