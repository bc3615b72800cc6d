// Normalisations over the last dimension of an f32 tensor, one workgroup per row, and the
// per-channel affine map.
//
// Defines:
//   LAYER_NORM  entry `layer_norm`: (x - mean) / sqrt(var + eps) [* gamma] [+ beta]
//   RMS_NORM    entry `rms_norm`: x / sqrt(mean(x²) + eps) [* gamma]
//   AFFINE      entry `channel_affine`: x * scale[c] + shift[c], one invocation per element
//   SUBGROUPS   reduce with subgroupAdd (device has SUBGROUP); otherwise a shared-memory tree
//   GAMMA, BETA the optional per-channel scale / shift bindings are present
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

const WG: u32 = 256u;

var<private> lid: u32;

#if SUBGROUPS
// One slot per subgroup; subgroups have at least 4 invocations.
var<workgroup> red: array<f32, 64>;
var<private> sg_lane: u32;
var<private> sg_size: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;
#else
var<workgroup> red: array<f32, WG>;
#endif

// The sum of `v` over the workgroup, returned to every invocation. Call in uniform control flow.
fn wg_sum(v: f32) -> f32 {
#if SUBGROUPS
    let s = subgroupAdd(v);
    if (sg_lane == 0u) {
        red[sg_id] = s;
    }
    workgroupBarrier();
    var t = 0.0;
    for (var i = sg_lane; i < sg_count; i += sg_size) {
        t += red[i];
    }
    let total = subgroupAdd(t);
#else
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
#endif
    // `red` is reused by the next reduction.
    workgroupBarrier();
    return total;
}

// Applies the optional per-channel gamma / beta.
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

#if SUBGROUPS
fn set_ids(local: u32, lane: u32, size: u32, id: u32, count: u32) {
    lid = local;
    sg_lane = lane;
    sg_size = size;
    sg_id = id;
    sg_count = count;
}
#endif

#if LAYER_NORM
@compute @workgroup_size(256)
fn layer_norm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
#if SUBGROUPS
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
    @builtin(subgroup_id) id: u32,
    @builtin(num_subgroups) count: u32,
#endif
) {
#if SUBGROUPS
    set_ids(local, lane, size, id, count);
#else
    lid = local;
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
    let mu = wg_sum(n * mean) / c;
    let dm = mean - mu;
    let variance = wg_sum(m2 + n * dm * dm) / c;
    let inv = 1.0 / sqrt(variance + p.eps);
    let yr = p.out_base + row * p.cols;
    for (var j = lid; j < p.cols; j += WG) {
        y[yr + j] = affine((x[xr + j] - mu) * inv, j);
    }
}
#endif

#if RMS_NORM
@compute @workgroup_size(256)
fn rms_norm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
#if SUBGROUPS
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
    @builtin(subgroup_id) id: u32,
    @builtin(num_subgroups) count: u32,
#endif
) {
#if SUBGROUPS
    set_ids(local, lane, size, id, count);
#else
    lid = local;
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
    let inv = 1.0 / sqrt(wg_sum(ss) / f32(p.cols) + p.eps);
    let yr = p.out_base + row * p.cols;
    for (var j = lid; j < p.cols; j += WG) {
        y[yr + j] = affine(x[xr + j] * inv, j);
    }
}
#endif

#endif
