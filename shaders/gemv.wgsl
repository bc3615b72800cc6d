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
//          (subgroup reduction; subgroups must not straddle row groups), BIAS, TEX (W read
//          from a texture: runtime/src/texture.rs DenseTexture).
//
// ROWS compiles `gemv_rows` instead (CPU adapters; see its comment below); with it W_F16,
// SUBGROUP (x shared with subgroupBroadcast), RPI8 (8 rows per invocation, else 4), BIAS and TEX.
#if F16
enable f16;
#endif

struct Params {
    n: u32,
    k: u32,
    w_off: u32,
    y_off: u32,
    bias_off: u32,
    // gemv_rows: whole 32-element chunks of K read with vec4 loads (0 when W's rows are not
    // aligned for them).
    kc: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

#if ROWS
// ---------------------------------------------------------------------------------------------
// `gemv_rows`: the GEMV for CPU adapters (lavapipe, llvmpipe), whose JIT runs a workgroup's
// invocations as the lanes of SIMD vectors and turns every storage access with a per-lane
// address into a loop over the lanes. Loads set the speed, so:
// - a workgroup is 8 invocations (one SIMD vector); each owns RPI = 4 (RPI8: 8) whole rows, so
//   there is no reduction across invocations, no workgroup memory and no barrier;
// - K is walked in 32-element chunks: with SUBGROUP each invocation loads one vec4 of x and
//   the 8 are passed round with subgroupBroadcast (one x load per workgroup and chunk), else
//   every invocation loads the 8 vec4s itself; each row's chunk is 8 vec4 loads (f32) or 4
//   vec4<u32> loads of packed f16 pairs;
// - the chunk loop bound is hidden from lavapipe's uniform inlining (`opaque`), so one
//   compiled kernel serves every K; a scalar loop handles the elements past the last whole
//   chunk (all of K when rows are not 8-element aligned: kc = 0).
// Rows past N are clamped into the matrix for loading and skipped at the store.
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
// wv(i): vec4 i of W (packed f16 pairs with W_F16); w_elem(i): element i.
#if TEX
@group(0) @binding(2) var w_tex: texture_2d<u32>;
#include tex_words
// (wv's index is a texel's.)
#if W_F16
fn wv(i: u32) -> vec4<u32> { return tex_texel(w_tex, i); }
#else
fn wv(i: u32) -> vec4<f32> { return bitcast<vec4<f32>>(tex_texel(w_tex, i)); }
#endif
#else
#if W_F16
@group(0) @binding(2) var<storage, read> w_buf: array<vec4<u32>>;
fn wv(i: u32) -> vec4<u32> { return w_buf[i]; }
#else
@group(0) @binding(2) var<storage, read> w_buf: array<vec4<f32>>;
fn wv(i: u32) -> vec4<f32> { return w_buf[i]; }
#endif
#endif
#if W_F16
fn w_elem(i: u32) -> f32 { return unpack2x16float(wv(i / 8u)[(i / 2u) % 4u])[i % 2u]; }
#else
fn w_elem(i: u32) -> f32 { return wv(i / 4u)[i % 4u]; }
#endif
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

#if RPI8
const RPI: u32 = 8u;
#else
const RPI: u32 = 4u;
#endif

// 32 consecutive elements of x.
struct X8 {
    v0: vec4<f32>,
    v1: vec4<f32>,
    v2: vec4<f32>,
    v3: vec4<f32>,
    v4: vec4<f32>,
    v5: vec4<f32>,
    v6: vec4<f32>,
    v7: vec4<f32>,
}

// acc + (elements base .. base + 31 of W) · x, lane-wise (base a multiple of 8).
fn chunk(base: u32, x: X8, acc: vec4<f32>) -> vec4<f32> {
    var a = acc;
#if W_F16
    let i = base / 8u;
    let q0 = wv(i);
    let q1 = wv(i + 1u);
    let q2 = wv(i + 2u);
    let q3 = wv(i + 3u);
    a = fma(vec4<f32>(unpack2x16float(q0.x), unpack2x16float(q0.y)), x.v0, a);
    a = fma(vec4<f32>(unpack2x16float(q0.z), unpack2x16float(q0.w)), x.v1, a);
    a = fma(vec4<f32>(unpack2x16float(q1.x), unpack2x16float(q1.y)), x.v2, a);
    a = fma(vec4<f32>(unpack2x16float(q1.z), unpack2x16float(q1.w)), x.v3, a);
    a = fma(vec4<f32>(unpack2x16float(q2.x), unpack2x16float(q2.y)), x.v4, a);
    a = fma(vec4<f32>(unpack2x16float(q2.z), unpack2x16float(q2.w)), x.v5, a);
    a = fma(vec4<f32>(unpack2x16float(q3.x), unpack2x16float(q3.y)), x.v6, a);
    a = fma(vec4<f32>(unpack2x16float(q3.z), unpack2x16float(q3.w)), x.v7, a);
#else
    let i = base / 4u;
    a = fma(wv(i), x.v0, a);
    a = fma(wv(i + 1u), x.v1, a);
    a = fma(wv(i + 2u), x.v2, a);
    a = fma(wv(i + 3u), x.v3, a);
    a = fma(wv(i + 4u), x.v4, a);
    a = fma(wv(i + 5u), x.v5, a);
    a = fma(wv(i + 6u), x.v6, a);
    a = fma(wv(i + 7u), x.v7, a);
#endif
    return a;
}

#include opaque

fn store(row: u32, acc: vec4<f32>) {
    if (row < p.n) {
        var v = (acc.x + acc.y) + (acc.z + acc.w);
#if BIAS
        v = v + bias[p.bias_off + row];
#endif
#if ACCUM
        v = v + y[p.y_off + row];
#endif
        y[p.y_off + row] = v;
    }
}

@compute @workgroup_size(8)
fn gemv_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUP
    @builtin(subgroup_invocation_id) lane: u32,
#else
    @builtin(local_invocation_index) lane: u32,
#endif
) {
    let first = (wg.y * nwg.x + wg.x) * (8u * RPI) + lane * RPI;
    let last = p.n - 1u;
    let b0 = p.w_off + min(first, last) * p.k;
    let b1 = p.w_off + min(first + 1u, last) * p.k;
    let b2 = p.w_off + min(first + 2u, last) * p.k;
    let b3 = p.w_off + min(first + 3u, last) * p.k;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
#if RPI8
    let b4 = p.w_off + min(first + 4u, last) * p.k;
    let b5 = p.w_off + min(first + 5u, last) * p.k;
    let b6 = p.w_off + min(first + 6u, last) * p.k;
    let b7 = p.w_off + min(first + 7u, last) * p.k;
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
#endif
    for (var c = 0u; c < opaque(p.kc, nwg); c = c + 1u) {
#if SUBGROUP
        let xv = x4[c * 8u + lane];
        let x = X8(subgroupBroadcast(xv, 0u), subgroupBroadcast(xv, 1u), subgroupBroadcast(xv, 2u), subgroupBroadcast(xv, 3u),
                   subgroupBroadcast(xv, 4u), subgroupBroadcast(xv, 5u), subgroupBroadcast(xv, 6u), subgroupBroadcast(xv, 7u));
#else
        let j = c * 8u;
        let x = X8(x4[j], x4[j + 1u], x4[j + 2u], x4[j + 3u], x4[j + 4u], x4[j + 5u], x4[j + 6u], x4[j + 7u]);
#endif
        let o = c * 32u;
        a0 = chunk(b0 + o, x, a0);
        a1 = chunk(b1 + o, x, a1);
        a2 = chunk(b2 + o, x, a2);
        a3 = chunk(b3 + o, x, a3);
#if RPI8
        a4 = chunk(b4 + o, x, a4);
        a5 = chunk(b5 + o, x, a5);
        a6 = chunk(b6 + o, x, a6);
        a7 = chunk(b7 + o, x, a7);
#endif
    }
    // The elements past the whole chunks (fewer than 32 unless kc = 0).
    for (var k = opaque(p.kc, nwg) * 32u; k < p.k; k = k + 1u) {
        let xk = x4[k / 4u][k % 4u];
        a0.x = fma(w_elem(b0 + k), xk, a0.x);
        a1.x = fma(w_elem(b1 + k), xk, a1.x);
        a2.x = fma(w_elem(b2 + k), xk, a2.x);
        a3.x = fma(w_elem(b3 + k), xk, a3.x);
#if RPI8
        a4.x = fma(w_elem(b4 + k), xk, a4.x);
        a5.x = fma(w_elem(b5 + k), xk, a5.x);
        a6.x = fma(w_elem(b6 + k), xk, a6.x);
        a7.x = fma(w_elem(b7 + k), xk, a7.x);
#endif
    }
    store(first, a0);
    store(first + 1u, a1);
    store(first + 2u, a2);
    store(first + 3u, a3);
#if RPI8
    store(first + 4u, a4);
    store(first + 5u, a5);
    store(first + 6u, a6);
    store(first + 7u, a7);
#endif
}
#else

#if W_VEC4
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x1: array<f32>;
#endif

#if TEX
// W in a texture (runtime/src/texture.rs DenseTexture).
@group(0) @binding(2) var w_tex: texture_2d<u32>;
#include tex_words
#if W_F16
fn w4(i: u32) -> vec4<f32> { return tex_f16x4(w_tex, i); }
fn w1(i: u32) -> f32 { return tex_f16(w_tex, i); }
#else
fn w4(i: u32) -> vec4<f32> { return tex_f32x4(w_tex, i); }
fn w1(i: u32) -> f32 { return tex_f32(w_tex, i); }
#endif
#else
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

const WG: u32 = 256u;

#include subgroup_ids

// One slot per invocation (the tree, and SUBGROUP on untiled subgroups) or per subgroup.
var<workgroup> partial: array<Acc, WG>;

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
    @builtin(local_invocation_index) local: u32,
#if SUBGROUP
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
#endif
) {
    set_ids(local);
#if SUBGROUP
    // Row groups are made of whole subgroups: the invocation's index in subgroup order
    // (subgroup id, then lane), where the subgroups tile the workgroup and fit a row group
    // (never straddle two); else its local index, and the reduction below uses no subgroup op.
    // No relation between subgroups and local indices is assumed (subgroup_ids.wgsl).
#if UNTILED
    let tiled = false;
#else
    let tiled = sg_size * sg_count == WG && LANES % sg_size == 0u;
#endif
    let v = select(lid, sg_id * sg_size + sg_lane, tiled);
#else
    let v = lid;
#endif
    let first = (wg.y * nwg.x + wg.x) * ROWS + (v / LANES) * RPI;
    let lane = v % LANES;
    var sum = Acc(vec4<f32>(0.0), vec4<f32>(0.0));
    if (first < p.n) {
        sum = rows_dot(first, lane);
    }
#if SUBGROUP
    let s = Acc(subgroupAdd(sum.lo), subgroupAdd(sum.hi));
    // Slots per row group: one per subgroup (lane 0 stores its subgroup's sum) or one per
    // invocation.
    let per = select(LANES, LANES / sg_size, tiled);
    if (!tiled) {
        partial[lid] = sum;
    } else if (sg_lane == 0u) {
        partial[sg_id] = s;
    }
    workgroupBarrier();
    if (lane == 0u && first < p.n) {
        let slot = (v / LANES) * per;
        var total = Acc(vec4<f32>(0.0), vec4<f32>(0.0));
        for (var i = 0u; i < per; i = i + 1u) {
            total = Acc(total.lo + partial[slot + i].lo, total.hi + partial[slot + i].hi);
        }
#else
    partial[v] = sum;
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lane < stride) {
            let o = partial[v + stride];
            partial[v] = Acc(partial[v].lo + o.lo, partial[v].hi + o.hi);
        }
    }
    if (lane == 0u && first < p.n) {
        let total = partial[v];
#endif
        for (var r = 0u; r < RPI; r = r + 1u) {
            let row = first + r;
            if (row < p.n) {
                var v = select(total.hi[r % 4u], total.lo[r % 4u], r < 4u);
#if BIAS
                v = v + bias[p.bias_off + row];
#endif
#if ACCUM
                v = v + y[p.y_off + row];
#endif
                y[p.y_off + row] = v;
            }
        }
    }
}
#endif
