//! A minimal `.npy` reader and writer for C-order float arrays (test references, tensors
//! exchanged with Python).
//!
//! Reads format versions 1.0, 2.0 and 3.0 with `descr` `<f4` / `>f4` / `<f8` / `>f8` / `<f2` /
//! `>f2`, converted to `f32`, and integer arrays (`i4`, `i8`, `u4`; token ids) as `u32`;
//! writes version 1.0 `<f4`. Everything read is checked before use:
//! magic and version, header length (at most [`MAX_HEADER_LEN`]), the header dictionary
//! (exactly `descr`, `fortran_order`, `shape`), the shape's element and byte counts for
//! overflow, and the data length against the shape — a malformed file is a typed
//! [`ModelError::Npy`], never a panic or a huge allocation.

use std::io::Write;
use std::path::Path;

use crate::error::{ModelError, Result};

/// Longest header accepted, bytes (numpy's own loader refuses more than 10 000 by default).
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// Most dimensions accepted (numpy's limit).
pub const MAX_DIMS: usize = 64;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Element type of the stored data.
#[derive(Clone, Copy)]
enum Elem {
    F16,
    F32,
    F64,
    I32,
    U32,
    I64,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 | Self::I32 | Self::U32 => 4,
            Self::F64 | Self::I64 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Self::F16 | Self::F32 | Self::F64)
    }
}

/// A parsed header: element type, byte order, shape.
struct Header {
    elem: Elem,
    little: bool,
    shape: Vec<usize>,
}

fn bad(path: &str, detail: impl Into<String>) -> ModelError {
    ModelError::Npy { path: path.to_string(), detail: detail.into() }
}

/// Reads the `.npy` file at `path` as `f32`: returns `(shape, values in C order)`.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: name.clone(), source })?;
    parse(&bytes, &name)
}

/// Parses an in-memory `.npy` file as `f32`: returns `(shape, values in C order)`.
pub fn parse_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    parse(bytes, "<memory>")
}

/// Reads the `.npy` file at `path` holding integers (`i4`, `i8` or `u4`, e.g. token ids) as
/// `u32`: returns `(shape, values in C order)`. A negative value or one above `u32::MAX` is
/// an error.
pub fn read_npy_u32(path: &Path) -> Result<(Vec<usize>, Vec<u32>)> {
    let name = path.display().to_string();
    let (shape, values) = read_npy_i64(path)?;
    let values = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| u32::try_from(v).map_err(|_| bad(&name, format!("value {v} at index {i} is not a u32"))))
        .collect::<Result<Vec<u32>>>()?;
    Ok((shape, values))
}

/// Reads the `.npy` file at `path` holding integers (`i4`, `i8` or `u4`) as `i64` (token ids
/// with negative placeholders, e.g. Eve's image token −200): returns `(shape, values in C
/// order)`.
pub fn read_npy_i64(path: &Path) -> Result<(Vec<usize>, Vec<i64>)> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: name.clone(), source })?;
    let (header, data) = parse_raw(&bytes, &name)?;
    if header.elem.is_float() {
        return Err(bad(&name, "holds floats; integers (i4, i8 or u4) wanted"));
    }
    let size = header.elem.size();
    let values = data
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            if !header.little {
                b[..size].reverse();
            }
            match header.elem {
                Elem::I32 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                Elem::U32 => i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                _ => i64::from_le_bytes(b),
            }
        })
        .collect();
    Ok((header.shape, values))
}

fn parse(bytes: &[u8], path: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let (header, data) = parse_raw(bytes, path)?;
    if !header.elem.is_float() {
        return Err(bad(path, "holds integers; floats (f2, f4 or f8) wanted"));
    }
    Ok((header.shape, decode(data, header.elem, header.little)))
}

/// The checked header and the data bytes.
fn parse_raw<'a>(bytes: &'a [u8], path: &str) -> Result<(Header, &'a [u8])> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(path, "not a .npy file (bad magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or_else(|| bad(path, "file ends inside the preamble"))?;
            let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (usize::try_from(n).unwrap_or(usize::MAX), 12)
        }
        v => return Err(bad(path, format!("unsupported format version {v}.{}", bytes[7]))),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(bad(path, format!("header of {header_len} bytes exceeds {MAX_HEADER_LEN}")));
    }
    let end = start + header_len;
    let text = bytes.get(start..end).ok_or_else(|| bad(path, "file ends inside the header"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad(path, "header is not UTF-8"))?;
    let header = parse_header(text).map_err(|d| bad(path, d))?;

    let count = header
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(path, format!("shape {:?} overflows", header.shape)))?;
    let nbytes = count.checked_mul(header.elem.size()).ok_or_else(|| bad(path, format!("shape {:?} overflows", header.shape)))?;
    let data = &bytes[end..];
    if data.len() != nbytes {
        return Err(bad(path, format!("shape {:?} needs {nbytes} data bytes, file has {}", header.shape, data.len())));
    }
    Ok((header, data))
}

fn decode(data: &[u8], elem: Elem, little: bool) -> Vec<f32> {
    let size = elem.size();
    data.chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            if !little {
                b[..size].reverse();
            }
            match elem {
                Elem::F16 => half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
                Elem::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                _ => f64::from_le_bytes(b) as f32,
            }
        })
        .collect()
}

/// A tiny cursor over the header's Python dict literal.
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    /// Consumes `c` (after whitespace) if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) { Ok(()) } else { Err(format!("expected '{}' at byte {}", c as char, self.i)) }
    }

    /// A quoted string without escapes.
    fn string(&mut self) -> std::result::Result<String, String> {
        self.skip_ws();
        let q = *self.s.get(self.i).ok_or("header ends early")?;
        if q != b'\'' && q != b'"' {
            return Err(format!("expected a string at byte {}", self.i));
        }
        let from = self.i + 1;
        let len = self.s[from..].iter().position(|&c| c == q).ok_or("unterminated string")?;
        self.i = from + len + 1;
        String::from_utf8(self.s[from..from + len].to_vec()).map_err(|_| "string is not UTF-8".into())
    }

    /// A bare word (`True`, `False`) or an unsigned integer.
    fn word(&mut self) -> &str {
        self.skip_ws();
        let from = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_alphanumeric() {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[from..self.i]).unwrap_or("")
    }

    /// A tuple of non-negative integers: `()`, `(3,)`, `(1, 3, 224, 224)`.
    fn shape(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            let w = self.word();
            let d: usize = w.parse().map_err(|_| format!("bad dimension {w:?} in shape"))?;
            if dims.len() == MAX_DIMS {
                return Err(format!("more than {MAX_DIMS} dimensions"));
            }
            dims.push(d);
            if !self.eat(b',') {
                self.expect(b')')?;
                if dims.len() == 1 {
                    // Python writes a 1-tuple as `(n,)`; `(n)` is just an integer.
                    return Err("shape `(n)` is not a tuple".into());
                }
                return Ok(dims);
            }
        }
    }
}

fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let mut lx = Lexer { s: text.as_bytes(), i: 0 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    lx.expect(b'{')?;
    while !lx.eat(b'}') {
        let key = lx.string()?;
        lx.expect(b':')?;
        match key.as_str() {
            "descr" if descr.is_none() => descr = Some(lx.string()?),
            "fortran_order" if fortran.is_none() => {
                fortran = Some(match lx.word() {
                    "True" => true,
                    "False" => false,
                    w => return Err(format!("fortran_order {w:?} is not a boolean")),
                })
            }
            "shape" if shape.is_none() => shape = Some(lx.shape()?),
            k => return Err(format!("unexpected or repeated key {k:?}")),
        }
        if !lx.eat(b',') {
            lx.expect(b'}')?;
            break;
        }
    }
    lx.skip_ws();
    if lx.i != lx.s.len() {
        return Err("trailing bytes after the header dictionary".into());
    }
    let descr = descr.ok_or("header has no 'descr'")?;
    let shape = shape.ok_or("header has no 'shape'")?;
    if fortran.ok_or("header has no 'fortran_order'")? {
        return Err("Fortran-order arrays are not supported".into());
    }
    let (little, elem) = match descr.as_str() {
        "<f2" => (true, Elem::F16),
        ">f2" => (false, Elem::F16),
        "<f4" => (true, Elem::F32),
        ">f4" => (false, Elem::F32),
        "<f8" => (true, Elem::F64),
        ">f8" => (false, Elem::F64),
        "<i4" => (true, Elem::I32),
        ">i4" => (false, Elem::I32),
        "<u4" => (true, Elem::U32),
        ">u4" => (false, Elem::U32),
        "<i8" => (true, Elem::I64),
        ">i8" => (false, Elem::I64),
        d => return Err(format!("unsupported dtype {d:?} (f2, f4, f8, i4, u4 or i8 wanted)")),
    };
    Ok(Header { elem, little, shape })
}

/// Encodes a C-order `f32` array as a version 1.0 `.npy` file (`<f4`).
pub fn encode_npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    let path = "<memory>";
    if shape.len() > MAX_DIMS {
        return Err(bad(path, format!("more than {MAX_DIMS} dimensions")));
    }
    let count =
        shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| bad(path, format!("shape {shape:?} overflows")))?;
    if count != data.len() {
        return Err(bad(path, format!("shape {shape:?} holds {count} values, got {}", data.len())));
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Pad with spaces and a final newline so the data starts on a 64-byte boundary.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len = u16::try_from(header.len()).map_err(|_| bad(path, "header too long"))?;

    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes a C-order `f32` array to `path` as a version 1.0 `.npy` file (`<f4`).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let name = path.display().to_string();
    let bytes = encode_npy_f32(shape, data).map_err(|e| match e {
        ModelError::Npy { detail, .. } => bad(&name, detail),
        other => other,
    })?;
    let io = |source: std::io::Error| ModelError::Io { path: name.clone(), source };
    let mut file = std::fs::File::create(path).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.flush().map_err(io)
}
