// Matrix-vector product for M = 1 (decode): y[n] = Σ_k x[k] · W[n, k] (+ bias[n]).
// W is stored [N, K] (an nn.Linear weight), f32 or f16; x and y are f32.
//
// A workgroup of 256 invocations is split into row groups of LANES invocations; each
// invocation accumulates 8 rows while striding along K (vec4 loads where K allows), so every
// x element it loads serves eight weights. The LANES
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

// Each invocation accumulates RPI = 8 rows (two vec4 accumulators); LANES invocations share a
// row group; a workgroup covers ROWS = 8 · 256 / LANES rows.
const RPI: u32 = 8u;
const LANES: u32 = {{LANES}}u;
const GROUPS: u32 = 256u / LANES;
const ROWS: u32 = RPI * GROUPS;

struct Acc {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

#if SUBGROUP
// One slot per subgroup; 256 invocations / minimum subgroup size 4.
var<workgroup> partial: array<Acc, 64>;
#else
var<workgroup> partial: array<Acc, 256>;
#endif

// Element offsets of rows first..first+7, clamped to the last row so every load is in
// bounds (the duplicates are discarded at the write).
fn row_base(first: u32, r: u32) -> u32 {
    return p.w_off + min(first + r, p.n - 1u) * p.k;
}

fn rows_dot(first: u32, lane: u32) -> Acc {
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    let b0 = row_base(first, 0u);
    let b1 = row_base(first, 1u);
    let b2 = row_base(first, 2u);
    let b3 = row_base(first, 3u);
    let b4 = row_base(first, 4u);
    let b5 = row_base(first, 5u);
    let b6 = row_base(first, 6u);
    let b7 = row_base(first, 7u);
#if W_VEC4
    for (var k = lane * 4u; k < p.k; k = k + LANES * 4u) {
        let x = x4[k / 4u];
        lo = lo + vec4<f32>(dot(x, w4(b0 + k)), dot(x, w4(b1 + k)), dot(x, w4(b2 + k)), dot(x, w4(b3 + k)));
        hi = hi + vec4<f32>(dot(x, w4(b4 + k)), dot(x, w4(b5 + k)), dot(x, w4(b6 + k)), dot(x, w4(b7 + k)));
    }
#else
    for (var k = lane; k < p.k; k = k + LANES) {
        let x = x1[k];
        lo = lo + x * vec4<f32>(w1(b0 + k), w1(b1 + k), w1(b2 + k), w1(b3 + k));
        hi = hi + x * vec4<f32>(w1(b4 + k), w1(b5 + k), w1(b6 + k), w1(b7 + k));
    }
#endif
    return Acc(lo, hi);
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
    var sum = Acc(vec4<f32>(0.0), vec4<f32>(0.0));
    if (first < p.n) {
        sum = rows_dot(first, lane);
    }
#if SUBGROUP
    let s = Acc(subgroupAdd(sum.lo), subgroupAdd(sum.hi));
    if (sg_lane == 0u) {
        partial[lid / sg_size] = s;
    }
    workgroupBarrier();
    if (lane == 0u && first < p.n) {
        let slot = lid / sg_size;
        var total = Acc(vec4<f32>(0.0), vec4<f32>(0.0));
        for (var i = 0u; i < LANES / sg_size; i = i + 1u) {
            total = Acc(total.lo + partial[slot + i].lo, total.hi + partial[slot + i].hi);
        }
#else
    partial[lid] = sum;
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lane < stride) {
            let o = partial[lid + stride];
            partial[lid] = Acc(partial[lid].lo + o.lo, partial[lid].hi + o.hi);
        }
    }
    if (lane == 0u && first < p.n) {
        let total = partial[lid];
#endif
        for (var r = 0u; r < RPI; r = r + 1u) {
            let row = first + r;
            if (row < p.n) {
                var v = select(total.hi[r % 4u], total.lo[r % 4u], r < 4u);
#if BIAS
                v = v + bias[p.bias_off + row];
#endif
                y[p.y_off + row] = v;
            }
        }
    }
}
