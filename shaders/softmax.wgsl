// Softmax over the last dimension of an f32 tensor [.., rows, cols], one workgroup per row:
// y = softmax(scale·x + bias), with an optional causal mask.
//
// Defines:
//   SUBGROUPS  reduce with subgroupMax / subgroupAdd (device has SUBGROUP); otherwise a
//              shared-memory tree
//   BIAS       binding 3 holds a bias broadcast over x (numpy rules); the bias offset of a row is
//              found from the row's index over x's leading dimensions and the bias strides (0
//              where broadcast), and the bias column stride is 0 or 1
//   TOP1       keep only the first column holding the row maximum (its softmax probability);
//              every other column outputs 0 (a mixture of experts' top-1 routing weights)
//
// Masking: with `causal`, column j of query row i (i = row index mod `q_rows`) is masked when
// j > i + cols − q_rows (the last q_rows queries of a KV cache attend to all earlier keys).
// Logits equal to −inf (e.g. from the bias) are masked too. Masked entries output 0, and a row
// with every entry masked outputs all zeros. NaN logits are left out of the row statistics and
// output NaN.
//
// Each invocation keeps an online (max, Σexp) pair over its strided slice of the row; the pairs
// are combined as M = max mᵢ, S = Σ sᵢ·exp(mᵢ − M), and the row is then written as
// exp(v − M) / S. Accumulation is f32.

struct Params {
    rows: u32,
    cols: u32,
    x_base: u32,
    out_base: u32,
    row_base: u32,
    q_rows: u32,
    causal: u32,
    scale: f32,
    lead_rank: u32,
    bias_col_stride: u32,
    _pad0: u32,
    _pad1: u32,
    lead_shape: array<vec4<u32>, 2>,
    bias_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(3) var<storage, read> bias: array<f32>;
#endif

const WG: u32 = 256u;
// The largest finite f32: the initial running max (WGSL has no infinity literal).
const F32_MAX: f32 = 3.40282347e38;

#include wg_reduce

// Offset of a row's bias within the bias tensor (global row index over x's leading dims).
fn bias_row_offset(row: u32) -> u32 {
    var rem = row;
    var off = 0u;
    for (var d = i32(p.lead_rank) - 1; d >= 0; d = d - 1) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let dim = p.lead_shape[q][r];
        off += (rem % dim) * p.bias_strides[q][r];
        rem = rem / dim;
    }
    return off;
}

@compute @workgroup_size(256)
fn softmax(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
#include subgroup_params
) {
#if SUBGROUPS
    set_ids(local, lane, size, id, count);
#else
    set_ids(local);
#endif
    let row = wg.y * nwg.x + wg.x;
    if (row >= p.rows) {
        return;
    }
    let grow = p.row_base + row;
    // Columns [0, valid) are visible to this row.
    var valid = p.cols;
    if (p.causal != 0u) {
        let i = i32(grow % p.q_rows);
        valid = u32(clamp(i + i32(p.cols) - i32(p.q_rows) + 1, 0, i32(p.cols)));
    }
    let xr = p.x_base + row * p.cols;
#if BIAS
    let br = bias_row_offset(grow);
#endif
    var m = -F32_MAX;
    var s = 0.0;
    for (var j = lid; j < valid; j += WG) {
        var v = p.scale * x[xr + j];
#if BIAS
        v += bias[br + j * p.bias_col_stride];
#endif
        if (v > m) {
            s = s * exp(m - v) + 1.0;
            m = v;
        } else if (v >= -F32_MAX) {
            s += exp(v - m);
        }
    }
    let row_max = wg_reduce(m, true);
    let sum = wg_reduce(select(0.0, s * exp(m - row_max), s > 0.0), false);
    var inv = 0.0;
    if (sum > 0.0) {
        inv = 1.0 / sum;
    }
#if TOP1
    // The lowest column index holding the row maximum, as the max of −index (exact below 2²⁴).
    var first = -F32_MAX;
    for (var j = lid; j < valid; j += WG) {
        var v = p.scale * x[xr + j];
#if BIAS
        v += bias[br + j * p.bias_col_stride];
#endif
        if (v == row_max) {
            first = max(first, -f32(j));
        }
    }
    let winner = u32(-wg_reduce(first, true));
#endif
    let yr = p.out_base + row * p.cols;
    for (var j = lid; j < p.cols; j += WG) {
        var out = 0.0;
        if (j < valid) {
            var v = p.scale * x[xr + j];
#if BIAS
            v += bias[br + j * p.bias_col_stride];
#endif
            // −inf is masked; a NaN logit stays NaN.
            out = select(exp(v - row_max) * inv, 0.0, v < -F32_MAX);
#if TOP1
            out = select(0.0, out, j == winner);
#endif
        }
        y[yr + j] = out;
    }
}
