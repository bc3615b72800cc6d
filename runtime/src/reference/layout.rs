//! CPU references of the layout ops (any element type: they only move values).

use std::ops::Range;

/// The multi-index of row-major linear index `i` over `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// The row-major linear index of multi-index `idx` over `shape`.
fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &e)| acc * e + i)
}

/// `x` (of `shape`) with output dimension `i` taken from input dimension `dims[i]`; returns the
/// values and the output shape.
pub fn permute<T: Copy>(x: &[T], shape: &[usize], dims: &[usize]) -> (Vec<T>, Vec<usize>) {
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let n: usize = out_shape.iter().product();
    let out = (0..n)
        .map(|o| {
            let oi = unravel(o, &out_shape);
            let mut xi = vec![0; shape.len()];
            for (k, &d) in dims.iter().enumerate() {
                xi[d] = oi[k];
            }
            x[ravel(&xi, shape)]
        })
        .collect();
    (out, out_shape)
}

/// `x[ranges[0], ranges[1], …]`; returns the values and the output shape.
pub fn slice_ranges<T: Copy>(x: &[T], shape: &[usize], ranges: &[Range<usize>]) -> (Vec<T>, Vec<usize>) {
    let out_shape: Vec<usize> = ranges.iter().map(|r| r.end - r.start).collect();
    let n: usize = out_shape.iter().product();
    let out = (0..n)
        .map(|o| {
            let xi: Vec<usize> = unravel(o, &out_shape).iter().zip(ranges).map(|(i, r)| i + r.start).collect();
            x[ravel(&xi, shape)]
        })
        .collect();
    (out, out_shape)
}

/// The inputs (values, shape) joined along `axis`; returns the values and the output shape.
pub fn concat<T: Copy>(inputs: &[(&[T], &[usize])], axis: usize) -> (Vec<T>, Vec<usize>) {
    let mut out_shape = inputs[0].1.to_vec();
    out_shape[axis] = inputs.iter().map(|(_, s)| s[axis]).sum();
    let n: usize = out_shape.iter().product();
    let out = (0..n)
        .map(|o| {
            let mut idx = unravel(o, &out_shape);
            for (data, shape) in inputs {
                if idx[axis] < shape[axis] {
                    return data[ravel(&idx, shape)];
                }
                idx[axis] -= shape[axis];
            }
            unreachable!("index {o} lies in some input")
        })
        .collect();
    (out, out_shape)
}
