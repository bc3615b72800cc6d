// Matrix-vector product for M = 1 (decode): y[n] = Σ_k x[k] · W[n, k] (+ bias[n]).
// W is stored [N, K] (an nn.Linear weight), f32 or f16; x and y are f32.
//
// A workgroup of 256 invocations is split into row groups of LANES invocations; each
// invocation accumulates 4 rows while striding along K (vec4 loads where K allows). The LANES
// partial sums of a row group are reduced either with subgroupAdd + one shared slot per
// subgroup (SUBGROUP) or with a shared-memory tree.
//
// Defines: LANES (invocations per row group: 64 on GPUs, 16 on CPU adapters), F16 (native
//          f16), W_F16 (W stored as f16), W_VEC4 (K and offsets multiples of 4), SUBGROUP
//          (subgroup reduction; subgroups must not straddle row groups), BIAS.
#if F16
enable f16;
#endif

struct Params {
    n: u32,
    k: u32,
    w_off: u32,
    y_off: u32,
    bias_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

#if W_VEC4
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x1: array<f32>;
#endif

#if W_F16
#if F16
#if W_VEC4
@group(0) @binding(2) var<storage, read> w_buf: array<vec4<f16>>;
fn w4(i: u32) -> vec4<f32> { return vec4<f32>(w_buf[i / 4u]); }
#else
@group(0) @binding(2) var<storage, read> w_buf: array<f16>;
fn w1(i: u32) -> f32 { return f32(w_buf[i]); }
#endif
#else
#if W_VEC4
@group(0) @binding(2) var<storage, read> w_buf: array<vec2<u32>>;
fn w4(i: u32) -> vec4<f32> { let v = w_buf[i / 4u]; return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)); }
#else
@group(0) @binding(2) var<storage, read> w_buf: array<u32>;
fn w1(i: u32) -> f32 { return unpack2x16float(w_buf[i / 2u])[i % 2u]; }
#endif
#endif
#else
#if W_VEC4
@group(0) @binding(2) var<storage, read> w_buf: array<vec4<f32>>;
fn w4(i: u32) -> vec4<f32> { return w_buf[i / 4u]; }
#else
@group(0) @binding(2) var<storage, read> w_buf: array<f32>;
fn w1(i: u32) -> f32 { return w_buf[i]; }
#endif
#endif

@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

// Each invocation accumulates RPI = 4 rows at once so every x element it loads is reused four
// times; LANES invocations share a row group; a workgroup covers ROWS = 4 · 256 / LANES rows.
const RPI: u32 = 4u;
const LANES: u32 = {{LANES}}u;
const GROUPS: u32 = 256u / LANES;
const ROWS: u32 = RPI * GROUPS;

#if SUBGROUP
// One slot per subgroup; 256 invocations / minimum subgroup size 4.
var<workgroup> partial: array<vec4<f32>, 64>;
#else
var<workgroup> partial: array<vec4<f32>, 256>;
#endif

// Partial dot products of rows first..first+3 (clamped to the last row, so every load is in
// bounds; the duplicates are discarded at the write).
fn rows_dot(first: u32, lane: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    let last = p.n - 1u;
    let b0 = p.w_off + min(first, last) * p.k;
    let b1 = p.w_off + min(first + 1u, last) * p.k;
    let b2 = p.w_off + min(first + 2u, last) * p.k;
    let b3 = p.w_off + min(first + 3u, last) * p.k;
#if W_VEC4
    // Two steps per iteration (fewer loop-control instructions), then at most one more.
    let step = LANES * 4u;
    var k = lane * 4u;
    for (; k + step < p.k; k = k + 2u * step) {
        let xa = x4[k / 4u];
        let xb = x4[(k + step) / 4u];
        acc = acc + vec4<f32>(dot(xa, w4(b0 + k)), dot(xa, w4(b1 + k)), dot(xa, w4(b2 + k)), dot(xa, w4(b3 + k)));
        let kb = k + step;
        acc = acc + vec4<f32>(dot(xb, w4(b0 + kb)), dot(xb, w4(b1 + kb)), dot(xb, w4(b2 + kb)), dot(xb, w4(b3 + kb)));
    }
    if (k < p.k) {
        let xv = x4[k / 4u];
        acc = acc + vec4<f32>(dot(xv, w4(b0 + k)), dot(xv, w4(b1 + k)), dot(xv, w4(b2 + k)), dot(xv, w4(b3 + k)));
    }
#else
    for (var k = lane; k < p.k; k = k + LANES) {
        let xv = x1[k];
        acc = acc + xv * vec4<f32>(w1(b0 + k), w1(b1 + k), w1(b2 + k), w1(b3 + k));
    }
#endif
    return acc;
}

@compute @workgroup_size(256)
fn gemv(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#if SUBGROUP
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
) {
    let first = (wg.y * nwg.x + wg.x) * ROWS + (lid / LANES) * RPI;
    let lane = lid % LANES;
    var sum = vec4<f32>(0.0);
    if (first < p.n) {
        sum = rows_dot(first, lane);
    }
#if SUBGROUP
    let s = subgroupAdd(sum);
    if (sg_lane == 0u) {
        partial[lid / sg_size] = s;
    }
    workgroupBarrier();
    if (lane == 0u && first < p.n) {
        let slot = lid / sg_size;
        var total = vec4<f32>(0.0);
        for (var i = 0u; i < LANES / sg_size; i = i + 1u) {
            total = total + partial[slot + i];
        }
#else
    partial[lid] = sum;
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lane < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
    }
    if (lane == 0u && first < p.n) {
        let total = partial[lid];
#endif
        for (var r = 0u; r < RPI; r = r + 1u) {
            let row = first + r;
            if (row < p.n) {
#if BIAS
                y[p.y_off + row] = total[r] + bias[p.bias_off + row];
#else
                y[p.y_off + row] = total[r];
#endif
            }
        }
    }
}
