//! A minimal reader of the zip central directory, enough for `torch.save` archives.
//!
//! `torch.save` (PyTorchStreamWriter / miniz) stores every entry uncompressed (method 0),
//! 64-byte aligned, and always writes zip64 records. Entries are therefore borrowed straight
//! from the memory map: this reader only locates them. A compressed or encrypted entry is a
//! typed error (a re-zipped checkpoint); no decompressor is linked.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use crate::error::Result;
use crate::weights::bad;

/// Signature of the end-of-central-directory record.
const EOCD_SIG: u32 = 0x0605_4b50;
/// Signature of the zip64 end-of-central-directory locator.
const EOCD64_LOCATOR_SIG: u32 = 0x0706_4b50;
/// Signature of the zip64 end-of-central-directory record.
const EOCD64_SIG: u32 = 0x0606_4b50;
/// Signature of a central-directory file header.
const CENTRAL_SIG: u32 = 0x0201_4b50;
/// Signature of a local file header.
const LOCAL_SIG: u32 = 0x0403_4b50;

/// Whether `data` starts like a zip archive (a local file header).
pub(super) fn is_zip(data: &[u8]) -> bool {
    data.len() >= 4 && le32(data, 0) == Some(LOCAL_SIG)
}

/// Entry name → byte range of its (stored, uncompressed) data inside the file.
pub(super) struct ZipIndex {
    /// Data ranges by entry name.
    pub(super) entries: HashMap<String, Range<usize>>,
}

/// Little-endian u16 at `at`, if in bounds.
fn le16(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// Little-endian u32 at `at`, if in bounds.
fn le32(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Little-endian u64 at `at`, if in bounds.
fn le64(d: &[u8], at: usize) -> Option<u64> {
    let b = d.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Converts a file offset/size field to `usize`, failing when it exceeds the file.
fn within(path: &Path, v: u64, len: usize, what: &str) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v <= len)
        .ok_or_else(|| bad(path, None, format!("zip: {what} {v} is past the end of the {len}-byte file")))
}

impl ZipIndex {
    /// Reads the central directory of `data` (the whole file).
    pub(super) fn parse(path: &Path, data: &[u8]) -> Result<ZipIndex> {
        let trunc = |what: &str| bad(path, None, format!("zip: truncated or corrupt archive ({what})"));
        let len = data.len();
        if len < 22 {
            return Err(trunc("shorter than an end-of-central-directory record"));
        }
        // The EOCD record is the last 22 bytes plus a comment of at most 65535 bytes.
        let lowest = len.saturating_sub(22 + 65535);
        let eocd = (lowest..=len - 22)
            .rev()
            .find(|&i| le32(data, i) == Some(EOCD_SIG))
            .ok_or_else(|| trunc("no end-of-central-directory record"))?;
        let field16 = |at: usize| le16(data, eocd + at).ok_or_else(|| trunc("end-of-central-directory record"));
        let field32 = |at: usize| le32(data, eocd + at).ok_or_else(|| trunc("end-of-central-directory record"));
        let mut count = u64::from(field16(10)?);
        let mut cd_size = u64::from(field32(12)?);
        let mut cd_offset = u64::from(field32(16)?);
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            // zip64: the locator sits right before the EOCD record.
            let loc = eocd.checked_sub(20).ok_or_else(|| trunc("zip64 locator"))?;
            if le32(data, loc) != Some(EOCD64_LOCATOR_SIG) {
                return Err(trunc("missing zip64 locator"));
            }
            let rec = within(path, le64(data, loc + 8).ok_or_else(|| trunc("zip64 locator"))?, len, "zip64 record offset")?;
            if le32(data, rec) != Some(EOCD64_SIG) {
                return Err(trunc("bad zip64 end-of-central-directory record"));
            }
            let f64at = |at: usize| le64(data, rec + at).ok_or_else(|| trunc("zip64 end-of-central-directory record"));
            count = f64at(32)?;
            cd_size = f64at(40)?;
            cd_offset = f64at(48)?;
        }
        let cd_start = within(path, cd_offset, len, "central directory offset")?;
        let cd_len = within(path, cd_size, len - cd_start, "central directory size")?;
        let cd = &data[cd_start..cd_start + cd_len];
        // Each central header is at least 46 bytes: this bounds the count before any allocation.
        if count > (cd_len / 46) as u64 {
            return Err(bad(path, None, format!("zip: {count} entries cannot fit a {cd_len}-byte central directory")));
        }
        let mut entries = HashMap::with_capacity(count as usize);
        let mut at = 0usize;
        for _ in 0..count {
            let h = |off: usize| at.checked_add(off).ok_or_else(|| trunc("central directory"));
            if le32(cd, at) != Some(CENTRAL_SIG) {
                return Err(trunc("bad central directory header"));
            }
            let rd16 = |off: usize| -> Result<u16> { le16(cd, h(off)?).ok_or_else(|| trunc("central directory")) };
            let rd32 = |off: usize| -> Result<u32> { le32(cd, h(off)?).ok_or_else(|| trunc("central directory")) };
            let flags = rd16(8)?;
            let method = rd16(10)?;
            let mut comp = u64::from(rd32(20)?);
            let mut size = u64::from(rd32(24)?);
            let name_len = usize::from(rd16(28)?);
            let extra_len = usize::from(rd16(30)?);
            let comment_len = usize::from(rd16(32)?);
            let mut local = u64::from(rd32(42)?);
            let name_at = h(46)?;
            let name = cd.get(name_at..name_at + name_len).ok_or_else(|| trunc("entry name"))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let extra = cd.get(name_at + name_len..name_at + name_len + extra_len).ok_or_else(|| trunc("extra field"))?;
            // zip64 extended information: only the fields saturated in the header, in order.
            let mut e = 0usize;
            while e + 4 <= extra.len() {
                let id = le16(extra, e).unwrap_or(0);
                let n = usize::from(le16(extra, e + 2).unwrap_or(0));
                let body = extra.get(e + 4..e + 4 + n).ok_or_else(|| trunc("zip64 extra field"))?;
                if id == 1 {
                    let mut p = 0usize;
                    for field in [&mut size, &mut comp, &mut local] {
                        if *field == 0xFFFF_FFFF {
                            *field = le64(body, p).ok_or_else(|| trunc("zip64 extra field"))?;
                            p += 8;
                        }
                    }
                }
                e += 4 + n;
            }
            at = name_at + name_len + extra_len + comment_len;
            if flags & 1 != 0 {
                return Err(bad(path, None, format!("zip: entry `{name}` is encrypted")));
            }
            if method != 0 || comp != size {
                return Err(bad(
                    path,
                    None,
                    format!(
                        "zip: entry `{name}` is compressed (method {method}); torch.save stores entries uncompressed — re-save the checkpoint with torch.save"
                    ),
                ));
            }
            let local = within(path, local, len, "local header offset")?;
            if le32(data, local) != Some(LOCAL_SIG) {
                return Err(bad(path, None, format!("zip: bad local header for `{name}`")));
            }
            let lname = usize::from(le16(data, local + 26).ok_or_else(|| trunc("local header"))?);
            let lextra = usize::from(le16(data, local + 28).ok_or_else(|| trunc("local header"))?);
            let start = local + 30 + lname + lextra;
            let end = usize::try_from(size).ok().and_then(|s| start.checked_add(s)).filter(|&end| end <= len);
            let end =
                end.ok_or_else(|| bad(path, None, format!("zip: entry `{name}` ({size} bytes) runs past the end of the {len}-byte file")))?;
            entries.insert(name, start..end);
        }
        Ok(ZipIndex { entries })
    }
}
