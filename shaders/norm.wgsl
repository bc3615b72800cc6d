// Normalisations over the last dimension of an f32 tensor, one workgroup per row, and the
// per-channel affine map.
//
// Defines:
//   LAYER_NORM  entry `layer_norm`: (x - mean) / sqrt(var + eps) [* gamma] [+ beta]
//   RMS_NORM    entry `rms_norm`: x / sqrt(mean(x²) + eps) [* gamma]
//   AFFINE      entry `channel_affine`: x * scale[c] + shift[c], one invocation per element
//   SUBGROUPS   reduce with subgroupAdd (device has SUBGROUP); otherwise a shared-memory tree
//   GAMMA, BETA the optional per-channel scale / shift bindings are present
//   WG          invocations per row (a power of two): 256 on GPUs; 32 on CPU adapters, where a
//               row's work is one thread's and each extra SIMD batch costs a barrier round
//
// Each dispatch covers `rows` consecutive rows; every storage binding is a window of its buffer
// and `x_base` / `out_base` are the window indices of the dispatch's first element.
//
// Layer norm statistics: every invocation runs Welford's update over its strided slice of the
// row, then the partial results are combined exactly (Chan et al.) with two sums:
// mean = Σ nᵢ·meanᵢ / C and var = Σ (M2ᵢ + nᵢ·(meanᵢ - mean)²) / C. No E[x²] - E[x]²
// cancellation, and rows of any length are looped over.

struct Params {
    rows: u32,
    cols: u32,
    x_base: u32,
    out_base: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

#if AFFINE
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> shift: array<f32>;

@compute @workgroup_size(256)
fn channel_affine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (i >= p.rows * p.cols) {
        return;
    }
    let c = i % p.cols;
    y[p.out_base + i] = x[p.x_base + i] * scale[c] + shift[c];
}
#else

#if GAMMA
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
#if BETA
@group(0) @binding(4) var<storage, read> beta: array<f32>;
#endif
#else
#if BETA
@group(0) @binding(3) var<storage, read> beta: array<f32>;
#endif
#endif

const WG: u32 = {{WG}}u;
// The largest finite f32 (wg_reduce's identity of max).
const F32_MAX: f32 = 3.40282347e38;

#include wg_reduce

fn affine(v: f32, j: u32) -> f32 {
    var r = v;
#if GAMMA
    r = r * gamma[j];
#endif
#if BETA
    r = r + beta[j];
#endif
    return r;
}

#if LAYER_NORM
@compute @workgroup_size({{WG}})
fn layer_norm(
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
    let xr = p.x_base + row * p.cols;
    var n = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        let v = x[xr + j];
        n += 1.0;
        let d = v - mean;
        mean += d / n;
        m2 += d * (v - mean);
    }
    let c = f32(p.cols);
    let mu = wg_reduce(n * mean, false) / c;
    let dm = mean - mu;
    let variance = wg_reduce(m2 + n * dm * dm, false) / c;
    let inv = 1.0 / sqrt(variance + p.eps);
    let yr = p.out_base + row * p.cols;
    for (var j = lid; j < p.cols; j += WG) {
        y[yr + j] = affine((x[xr + j] - mu) * inv, j);
    }
}
#endif

#if RMS_NORM
@compute @workgroup_size({{WG}})
fn rms_norm(
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
    let xr = p.x_base + row * p.cols;
    var ss = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        let v = x[xr + j];
        ss += v * v;
    }
    let inv = 1.0 / sqrt(wg_reduce(ss, false) / f32(p.cols) + p.eps);
    let yr = p.out_base + row * p.cols;
    for (var j = lid; j < p.cols; j += WG) {
        y[yr + j] = affine(x[xr + j] * inv, j);
    }
}
#endif

#endif
