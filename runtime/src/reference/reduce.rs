//! CPU references of the reductions and pools (f64 accumulation).

/// Mean over the tokens of `x` `[b, n, c]` → `[b, c]`.
pub fn mean_tokens(x: &[f32], b: usize, n: usize, c: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(b * c);
    for bi in 0..b {
        for ci in 0..c {
            let sum: f64 = (0..n).map(|t| f64::from(x[(bi * n + t) * c + ci])).sum();
            out.push((sum / n as f64) as f32);
        }
    }
    out
}

/// PyTorch `max_pool1d` (floor mode, no dilation) of every `l`-long row of `x`; padding is −inf.
pub fn max_pool1d(x: &[f32], l: usize, kernel: usize, stride: usize, padding: usize) -> Vec<f32> {
    let out_len = (l + 2 * padding - kernel) / stride + 1;
    x.chunks(l)
        .flat_map(|row| {
            (0..out_len).map(move |o| {
                let start = (o * stride) as i64 - padding as i64;
                (start..start + kernel as i64)
                    .filter(|&pos| pos >= 0 && pos < l as i64)
                    .map(|pos| row[pos as usize])
                    .fold(f32::NEG_INFINITY, f32::max)
            })
        })
        .collect()
}

/// PyTorch `adaptive_avg_pool2d` of every `h × w` plane of `x` to `oh × ow`.
pub fn adaptive_avg_pool2d(x: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let bins = |o: usize, d: usize, od: usize| (o * d / od, ((o + 1) * d).div_ceil(od));
    x.chunks(h * w)
        .flat_map(|plane| {
            (0..oh * ow).map(move |i| {
                let (y0, y1) = bins(i / ow, h, oh);
                let (x0, x1) = bins(i % ow, w, ow);
                let mut sum = 0.0f64;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        sum += f64::from(plane[yy * w + xx]);
                    }
                }
                (sum / ((y1 - y0) * (x1 - x0)) as f64) as f32
            })
        })
        .collect()
}

/// Index of the first maximum of every `n`-long row.
pub fn argmax(x: &[f32], n: usize) -> Vec<u32> {
    x.chunks(n)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// The `k` largest of every `n`-long row, descending, ties by lower index: (values, indices).
pub fn top_k(x: &[f32], n: usize, k: usize) -> (Vec<f32>, Vec<u32>) {
    let mut values = Vec::new();
    let mut indices = Vec::new();
    for row in x.chunks(n) {
        let mut order: Vec<usize> = (0..n).collect();
        // −0 ranks equal to +0 (as in the kernel and in comparisons); then the lower index.
        let key = |j: usize| if row[j] == 0.0 { 0.0 } else { row[j] };
        order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        for &j in &order[..k] {
            values.push(row[j]);
            indices.push(j as u32);
        }
    }
    (values, indices)
}
