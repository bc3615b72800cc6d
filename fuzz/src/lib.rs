//! Shared body of the fuzz targets: open a weight file from memory and touch everything a
//! caller could ask of it.

use kestrel::weights::{self, WeightSource};

/// Opens `data` with [`weights::open_bytes`] (format detected from the file's structure, as
/// `weights::open` does) and, if it opens, lists its metadata and tensors, then requests every
/// tensor's bytes and its f32 conversion. Errors are expected; only panics, overflows,
/// out-of-bounds accesses, runaway allocations and hangs are findings.
pub fn open_and_read_all(data: &[u8]) {
    let Ok(src) = weights::open_bytes(data.to_vec()) else { return };
    read_all(src.as_ref());
}

/// Requests everything of an opened source.
pub fn read_all(src: &dyn WeightSource) {
    let _ = src.format();
    let _ = src.metadata().to_string();
    for t in src.tensors() {
        let numel = t.numel();
        let _ = src.info(&t.name);
        if let Ok(b) = src.bytes(&t.name) {
            // A tensor's bytes always match its dtype and shape.
            assert_eq!(Some(b.len()), t.dtype.bytes_for(numel), "tensor `{}`: byte length vs shape", t.name);
        }
        if let Ok(v) = weights::tensor_f32(src, &t.name) {
            assert_eq!(v.len(), numel, "tensor `{}`: f32 length vs shape", t.name);
        }
    }
}
