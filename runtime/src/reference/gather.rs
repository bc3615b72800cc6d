//! CPU reference of the gather ops.

/// Rows of `table` (`[vocab, d]`, row-major) picked by `ids`, ids `>= vocab` clamped to the last
/// row as the kernel does.
pub fn embedding(table: &[f32], vocab: usize, d: usize, ids: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(ids.len() * d);
    for &id in ids {
        let row = (id as usize).min(vocab - 1);
        out.extend_from_slice(&table[row * d..(row + 1) * d]);
    }
    out
}
