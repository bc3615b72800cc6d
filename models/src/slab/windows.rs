//! Host-side index tables of Swin and CSWin: the token order of (cyclically shifted) windows
//! and of rectangular stripes, the shifted-window attention mask, the relative-position index,
//! and patch merging's 2×2 gather.

/// The order that groups a `res`×`res` map (tokens row-major) into `window`×`window` windows
/// after rolling it by `-shift` in both directions: `fwd[w·T + t]` is the map token at window
/// `w`, position `t`; `inv` undoes it (`inv[fwd[i]] = i`).
pub fn window_order(res: usize, window: usize, shift: usize) -> (Vec<u32>, Vec<u32>) {
    rect_order(res, window, window, shift)
}

/// The order that groups a `res`×`res` map into `hs`×`ws` windows (CSWin's stripes, `res`×`s`
/// or `s`×`res`), windows row-major over the map and tokens row-major inside each; `inv` undoes
/// it.
pub fn stripe_order(res: usize, hs: usize, ws: usize) -> (Vec<u32>, Vec<u32>) {
    rect_order(res, hs, ws, 0)
}

/// [`window_order`] for `hs`×`ws` windows.
fn rect_order(res: usize, hs: usize, ws: usize, shift: usize) -> (Vec<u32>, Vec<u32>) {
    let mut fwd = Vec::with_capacity(res * res);
    for wi in 0..res / hs {
        for wj in 0..res / ws {
            for ti in 0..hs {
                for tj in 0..ws {
                    let r = (wi * hs + ti + shift) % res;
                    let c = (wj * ws + tj + shift) % res;
                    fwd.push((r * res + c) as u32);
                }
            }
        }
    }
    let mut inv = vec![0u32; fwd.len()];
    for (i, &f) in fwd.iter().enumerate() {
        inv[f as usize] = i as u32;
    }
    (fwd, inv)
}

/// Region label of a coordinate of the shifted map: Swin splits each axis into
/// `[0, res−window)`, `[res−window, res−shift)`, `[res−shift, res)`.
fn region(v: usize, res: usize, window: usize, shift: usize) -> usize {
    if v < res - window {
        0
    } else if v < res - shift {
        1
    } else {
        2
    }
}

/// The additive mask `[nW, T, T]` of shifted-window attention: −100 between tokens of a window
/// that came from different regions of the rolled map, 0 otherwise.
pub fn shift_mask(res: usize, window: usize, shift: usize) -> Vec<f32> {
    let nw = res / window;
    let t = window * window;
    let mut out = Vec::with_capacity(nw * nw * t * t);
    for wi in 0..nw {
        for wj in 0..nw {
            let labels: Vec<usize> = (0..t)
                .map(|k| {
                    let (r, c) = (wi * window + k / window, wj * window + k % window);
                    region(r, res, window, shift) * 3 + region(c, res, window, shift)
                })
                .collect();
            for a in &labels {
                for b in &labels {
                    out.push(if a == b { 0.0 } else { -100.0 });
                }
            }
        }
    }
    out
}

/// Swin's relative position index `[T, T]` into the `(2w−1)²`-row bias table.
pub fn relative_index(window: usize) -> Vec<usize> {
    let t = window * window;
    let side = 2 * window - 1;
    let mut out = Vec::with_capacity(t * t);
    for a in 0..t {
        for b in 0..t {
            let dy = a / window + window - 1 - b / window;
            let dx = a % window + window - 1 - b % window;
            out.push(dy * side + dx);
        }
    }
    out
}

/// The relative position bias `[heads, T, T]` gathered from the table `[(2w−1)², heads]`.
pub fn relative_bias(table: &[f32], heads: usize, window: usize) -> Vec<f32> {
    let idx = relative_index(window);
    let t = window * window;
    let mut out = vec![0.0; heads * t * t];
    for h in 0..heads {
        for (i, &r) in idx.iter().enumerate() {
            out[h * t * t + i] = table[r * heads + h];
        }
    }
    out
}

/// Row ids that gather a `res`×`res` map into patch merging's order: for each output token
/// (row-major over the `res/2` map) the four neighbours (2i, 2j), (2i+1, 2j), (2i, 2j+1),
/// (2i+1, 2j+1), so a `[res²/4, 4C]` reshape of the gathered rows is Swin's concatenation.
pub fn merge_ids(res: usize) -> Vec<u32> {
    let half = res / 2;
    let mut out = Vec::with_capacity(res * res);
    for i in 0..half {
        for j in 0..half {
            for (di, dj) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                out.push(((2 * i + di) * res + 2 * j + dj) as u32);
            }
        }
    }
    out
}
