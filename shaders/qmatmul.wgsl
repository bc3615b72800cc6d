// Weight-quantised products: C = A · Wᵀ (+ bias) with W [N, K] quantised (runtime/src/quant.rs
// documents the packed layout), dequantised on the fly; A and C f32, f32 accumulation.
//
// Entry points (one per variant, chosen by define):
//   qgemv         (GEMV)  M = 1: row groups of LANES invocations, 8 rows per invocation, each
//                         lane striding over whole 32-element blocks (SPLIT, for GPUs: quarter
//                         blocks, so short rows still occupy every lane); subgroupAdd
//                         (SUBGROUP) or shared-memory tree reduction.
//   qgemv_rows    (GEMV and ROWS) M = 1 on CPU adapters: 8-invocation workgroups, 4 whole rows
//                         per invocation, activations shared with subgroupBroadcast (SUBGROUP).
//   qmatmul_rows  (ROWS)  CPU adapters: 8-invocation workgroups, RM = 8·RG rows × CP = 4·CV
//                         columns per invocation, A rows shared with subgroupBroadcast
//                         (SUBGROUP), each column's block loaded once per 32 of K.
//   qmatmul       (else)  GPUs: 16×16 invocations, 64×64 block of C, 4×4 per invocation; the
//                         dequantised W tile is staged in workgroup memory, 16 deep along K.
//
// Weight defines: Q8 (8-bit values, else 4-bit), ROW_SCALE (one f32 scale per row: W8), MIN
// (per-block f16 (d, m): w = q·d + m); 4-bit without MIN is w = (q − 8)·d; 8-bit without
// ROW_SCALE is w = q·d with a per-block f16 d (Q8_0).
// Storage: TEX reads values and scales from textures (runtime/src/texture.rs) instead of
// storage buffers; every kernel reads them through w_vec / s_word.
// Other defines: A_VEC4 (A rows and offset are multiples of 4 elements), K_TAIL (K is not a
// multiple of 32: activations past K are masked), BIAS, LANES, SPLIT and SUBGROUP (qgemv),
// RG, CV and SUBGROUP (qmatmul_rows).
//
// Element (m, k) of A is at a_off + m·k; C (m, n) at c_off + m·ldc + n; block b of weight row
// n (relative to the window) at vec4 index w_off + (n·nb + b)·BW.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    nb: u32,
    w_off: u32,
    s_off: u32,
    a_off: u32,
    c_off: u32,
    bias_off: u32,
    ldc: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

#if A_VEC4
@group(0) @binding(1) var<storage, read> a_buf: array<vec4<f32>>;
// Elements i..i+3 of A (i a multiple of 4).
fn a_run(i: u32) -> vec4<f32> { return a_buf[i / 4u]; }
fn a1(i: u32) -> f32 { return a_buf[i / 4u][i % 4u]; }
#else
@group(0) @binding(1) var<storage, read> a_buf: array<f32>;
fn a_run(i: u32) -> vec4<f32> { return vec4<f32>(a_buf[i], a_buf[i + 1u], a_buf[i + 2u], a_buf[i + 3u]); }
fn a1(i: u32) -> f32 { return a_buf[i]; }
#endif
#if TEX
@group(0) @binding(2) var w_tex: texture_2d<u32>;
@group(0) @binding(3) var s_tex: texture_2d<u32>;
#include tex_words
// Vec4 i of the values and word i of the scales (one word per scale texel).
fn w_vec(i: u32) -> vec4<u32> { return tex_texel(w_tex, i); }
fn s_word(i: u32) -> u32 { return tex_texel(s_tex, i).x; }
#else
@group(0) @binding(2) var<storage, read> w_buf: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> s_buf: array<u32>;
fn w_vec(i: u32) -> vec4<u32> { return w_buf[i]; }
fn s_word(i: u32) -> u32 { return s_buf[i]; }
#endif
@group(0) @binding(4) var<storage, read_write> c_buf: array<f32>;
#if BIAS
@group(0) @binding(5) var<storage, read> bias: array<f32>;
#endif

// vec4<u32> per block of 32 values.
#if Q8
const BW: u32 = 2u;
#else
const BW: u32 = 1u;
#endif

// A run of 4 activations at element index i, where column kk = i's position in its row; zero
// past K.
fn a_run_masked(i: u32, kk: u32) -> vec4<f32> {
#if K_TAIL
    return select(vec4<f32>(0.0), a_run(i), vec4<u32>(kk) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.k));
#else
    return a_run(i);
#endif
}

// (d, c) of weight row `row` (relative to the window), block b: w = d·q + c.
fn scale_of(row: u32, b: u32) -> vec2<f32> {
#if ROW_SCALE
    return vec2<f32>(bitcast<f32>(s_word(p.s_off + row)), 0.0);
#else
#if MIN
    return unpack2x16float(s_word(p.s_off + row * p.nb + b));
#else
    let j = p.s_off + row * p.nb + b;
    let d = unpack2x16float(s_word(j / 2u))[j % 2u];
#if Q8
    return vec2<f32>(d, 0.0);
#else
    return vec2<f32>(d, -8.0 * d);
#endif
#endif
#endif
}

// Stored integers of a word: low / high nibbles of its four bytes, or its four i8s.
fn lo4(w: u32) -> vec4<f32> { return vec4<f32>((vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u)); }
fn hi4(w: u32) -> vec4<f32> { return vec4<f32>((vec4<u32>(w) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u)); }
fn i8x4(w: u32) -> vec4<f32> { return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u)); }

// Stored integers of elements 4j..4j+3 (j < 8) of the block at vec4 index vi.
fn q_run(vi: u32, j: u32) -> vec4<f32> {
#if Q8
    return i8x4(w_vec(vi + j / 4u)[j % 4u]);
#else
    let sh = vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(select(4u, 0u, j < 4u));
    return vec4<f32>((vec4<u32>(w_vec(vi)[j % 4u]) >> sh) & vec4<u32>(15u));
#endif
}

#if GEMV
// ---------------------------------------------------------------------------------------------
// qgemv: y[n] = Σ_k x[k]·W[n, k] (+ bias). An invocation accumulates RPI = 8 rows; per block
// (or quarter block) it loads the activations once for all of them and forms d·Σq·x + c·Σx per
// row, so the offset/minimum costs one multiply-add per block.
#if SPLIT
// A lane's unit is a quarter block: 8 values (4-bit: one word, low nibbles = elements 4q..4q+3
// and high nibbles = 16+4q..; 8-bit: two words = elements 8q..8q+7).
const UNITS: u32 = 4u;

struct XBlock {
    v0: vec4<f32>,
    v1: vec4<f32>,
    sum: f32,
}

fn x_block(u: u32) -> XBlock {
    let q = u % 4u;
#if Q8
    let e0 = (u / 4u) * 32u + q * 8u;
    let e1 = e0 + 4u;
#else
    let e0 = (u / 4u) * 32u + q * 4u;
    let e1 = e0 + 16u;
#endif
    var x: XBlock;
    x.v0 = a_run_masked(p.a_off + e0, e0);
    x.v1 = a_run_masked(p.a_off + e1, e1);
    let t = x.v0 + x.v1;
    x.sum = (t.x + t.y) + (t.z + t.w);
    return x;
}

// Σ q·x over quarter `q` of the block at vec4 index vi.
fn block_dot(vi: u32, q: u32, x: XBlock) -> f32 {
#if Q8
    let v = w_vec(vi + q / 2u);
    let h = (q % 2u) * 2u;
    let s = fma(i8x4(v[h]), x.v0, i8x4(v[h + 1u]) * x.v1);
#else
    let w = w_vec(vi)[q];
    let s = fma(lo4(w), x.v0, hi4(w) * x.v1);
#endif
    return (s.x + s.y) + (s.z + s.w);
}
#else
const UNITS: u32 = 1u;

struct XBlock {
    v0: vec4<f32>,
    v1: vec4<f32>,
    v2: vec4<f32>,
    v3: vec4<f32>,
    v4: vec4<f32>,
    v5: vec4<f32>,
    v6: vec4<f32>,
    v7: vec4<f32>,
    sum: f32,
}

fn x_block(b: u32) -> XBlock {
    let i = p.a_off + b * 32u;
    let k = b * 32u;
    var x: XBlock;
    x.v0 = a_run_masked(i, k);
    x.v1 = a_run_masked(i + 4u, k + 4u);
    x.v2 = a_run_masked(i + 8u, k + 8u);
    x.v3 = a_run_masked(i + 12u, k + 12u);
    x.v4 = a_run_masked(i + 16u, k + 16u);
    x.v5 = a_run_masked(i + 20u, k + 20u);
    x.v6 = a_run_masked(i + 24u, k + 24u);
    x.v7 = a_run_masked(i + 28u, k + 28u);
    let t = ((x.v0 + x.v1) + (x.v2 + x.v3)) + ((x.v4 + x.v5) + (x.v6 + x.v7));
    x.sum = (t.x + t.y) + (t.z + t.w);
    return x;
}

// Σ q·x over one block (`part` is always 0 here).
fn block_dot(vi: u32, part: u32, x: XBlock) -> f32 {
#if Q8
    let q0 = w_vec(vi);
    let q1 = w_vec(vi + 1u);
    var s = i8x4(q0.x) * x.v0;
    s = fma(i8x4(q0.y), x.v1, s);
    s = fma(i8x4(q0.z), x.v2, s);
    s = fma(i8x4(q0.w), x.v3, s);
    s = fma(i8x4(q1.x), x.v4, s);
    s = fma(i8x4(q1.y), x.v5, s);
    s = fma(i8x4(q1.z), x.v6, s);
    s = fma(i8x4(q1.w), x.v7, s);
#else
    let q = w_vec(vi);
    var s = lo4(q.x) * x.v0;
    s = fma(lo4(q.y), x.v1, s);
    s = fma(lo4(q.z), x.v2, s);
    s = fma(lo4(q.w), x.v3, s);
    s = fma(hi4(q.x), x.v4, s);
    s = fma(hi4(q.y), x.v5, s);
    s = fma(hi4(q.z), x.v6, s);
    s = fma(hi4(q.w), x.v7, s);
#endif
    return (s.x + s.y) + (s.z + s.w);
}
#endif

// Contribution of unit u (a block, or a quarter of block u / UNITS with SPLIT) of row `row`
// (clamped to the last row; duplicates are discarded).
fn row_block(row: u32, u: u32, x: XBlock) -> f32 {
    let r = min(row, p.n - 1u);
    let b = u / UNITS;
    let s = scale_of(r, b);
    return fma(s.x, block_dot(p.w_off + (r * p.nb + b) * BW, u % UNITS, x), s.y * x.sum);
}

#if ROWS
// ---------------------------------------------------------------------------------------------
// qgemv_rows (GEMV with ROWS, CPU adapters; cf. gemv_rows in gemv.wgsl): 8-invocation
// workgroups, each invocation owning RPI = 4 (or 8 with RPI8) whole rows (no reduction across
// invocations).
// Per block the 32 activations are loaded once per workgroup (SUBGROUP: one vec4 per
// invocation, passed round with subgroupBroadcast) or once per invocation; per row a block is
// one vec4 of values (two for 8-bit) and one scale word. The block loop bound is hidden from
// lavapipe's uniform inlining (`opaque`), so one compiled kernel serves every K.
#if RPI8
const RPI: u32 = 8u;
#else
const RPI: u32 = 4u;
#endif

#include opaque

fn store(row: u32, acc: f32) {
    if (row < p.n) {
        var v = acc;
#if BIAS
        v = v + bias[p.bias_off + row];
#endif
#if ACCUM
        v = v + c_buf[p.c_off + row];
#endif
        c_buf[p.c_off + row] = v;
    }
}

@compute @workgroup_size(8)
fn qgemv_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUP
    @builtin(subgroup_invocation_id) lane: u32,
#else
    @builtin(local_invocation_index) lane: u32,
#endif
) {
    let first = (wg.y * nwg.x + wg.x) * (8u * RPI) + lane * RPI;
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
#if RPI8
    var a4 = 0.0;
    var a5 = 0.0;
    var a6 = 0.0;
    var a7 = 0.0;
#endif
    for (var b = 0u; b < opaque(p.nb, nwg); b = b + 1u) {
#if SUBGROUP
        let kk = b * 32u + lane * 4u;
        let xv = a_run_masked(p.a_off + kk, kk);
        var x: XBlock;
        x.v0 = subgroupBroadcast(xv, 0u);
        x.v1 = subgroupBroadcast(xv, 1u);
        x.v2 = subgroupBroadcast(xv, 2u);
        x.v3 = subgroupBroadcast(xv, 3u);
        x.v4 = subgroupBroadcast(xv, 4u);
        x.v5 = subgroupBroadcast(xv, 5u);
        x.v6 = subgroupBroadcast(xv, 6u);
        x.v7 = subgroupBroadcast(xv, 7u);
        let t = ((x.v0 + x.v1) + (x.v2 + x.v3)) + ((x.v4 + x.v5) + (x.v6 + x.v7));
        x.sum = (t.x + t.y) + (t.z + t.w);
#else
        let x = x_block(b);
#endif
        a0 = a0 + row_block(first, b, x);
        a1 = a1 + row_block(first + 1u, b, x);
        a2 = a2 + row_block(first + 2u, b, x);
        a3 = a3 + row_block(first + 3u, b, x);
#if RPI8
        a4 = a4 + row_block(first + 4u, b, x);
        a5 = a5 + row_block(first + 5u, b, x);
        a6 = a6 + row_block(first + 6u, b, x);
        a7 = a7 + row_block(first + 7u, b, x);
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
const LANES: u32 = {{LANES}}u;
// Invocations per workgroup: 256 on GPUs, 64 on CPU adapters (more, smaller workgroups spread
// short matrices over every CPU thread).
const WG: u32 = {{WG}}u;
const GROUPS: u32 = WG / LANES;

#if RPI16
// 16 rows per invocation (CPU adapters, where every activation load is a per-lane loop: more
// rows per load halve that cost per weight).
const RPI: u32 = 16u;

struct Acc {
    a: vec4<f32>,
    b: vec4<f32>,
    c: vec4<f32>,
    d: vec4<f32>,
}

fn acc_zero() -> Acc { return Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0)); }
fn acc_add(x: Acc, y: Acc) -> Acc { return Acc(x.a + y.a, x.b + y.b, x.c + y.c, x.d + y.d); }
fn acc_get(x: Acc, r: u32) -> f32 {
    let v = select(select(x.d, x.c, r < 12u), select(x.b, x.a, r < 4u), r < 8u);
    return v[r % 4u];
}
#if SUBGROUP
fn acc_sg(x: Acc) -> Acc { return Acc(subgroupAdd(x.a), subgroupAdd(x.b), subgroupAdd(x.c), subgroupAdd(x.d)); }
#endif

fn rows_dot(first: u32, lane: u32) -> Acc {
    var acc = acc_zero();
    for (var u = lane; u < p.nb * UNITS; u = u + LANES) {
        let x = x_block(u);
        let a = vec4<f32>(row_block(first, u, x), row_block(first + 1u, u, x), row_block(first + 2u, u, x), row_block(first + 3u, u, x));
        let b = vec4<f32>(row_block(first + 4u, u, x), row_block(first + 5u, u, x), row_block(first + 6u, u, x), row_block(first + 7u, u, x));
        let c = vec4<f32>(row_block(first + 8u, u, x), row_block(first + 9u, u, x), row_block(first + 10u, u, x), row_block(first + 11u, u, x));
        let d = vec4<f32>(row_block(first + 12u, u, x), row_block(first + 13u, u, x), row_block(first + 14u, u, x), row_block(first + 15u, u, x));
        acc = acc_add(acc, Acc(a, b, c, d));
    }
    return acc;
}
#else
const RPI: u32 = 8u;

struct Acc {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn acc_zero() -> Acc { return Acc(vec4<f32>(0.0), vec4<f32>(0.0)); }
fn acc_add(x: Acc, y: Acc) -> Acc { return Acc(x.lo + y.lo, x.hi + y.hi); }
fn acc_get(x: Acc, r: u32) -> f32 { return select(x.hi[r % 4u], x.lo[r % 4u], r < 4u); }
#if SUBGROUP
fn acc_sg(x: Acc) -> Acc { return Acc(subgroupAdd(x.lo), subgroupAdd(x.hi)); }
#endif

fn rows_dot(first: u32, lane: u32) -> Acc {
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var u = lane; u < p.nb * UNITS; u = u + LANES) {
        let x = x_block(u);
        lo = lo + vec4<f32>(row_block(first, u, x), row_block(first + 1u, u, x), row_block(first + 2u, u, x), row_block(first + 3u, u, x));
        hi = hi + vec4<f32>(row_block(first + 4u, u, x), row_block(first + 5u, u, x), row_block(first + 6u, u, x), row_block(first + 7u, u, x));
    }
    return Acc(lo, hi);
}
#endif

const ROWS: u32 = RPI * GROUPS;

#include subgroup_ids

// One slot per invocation (the tree, and SUBGROUP on untiled subgroups) or per subgroup.
var<workgroup> partial: array<Acc, WG>;

@compute @workgroup_size({{WG}})
fn qgemv(
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
    // Row groups are made of whole subgroups, as in gemv.wgsl's `gemv` (whose comment explains).
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
    var sum = acc_zero();
    if (first < p.n) {
        sum = rows_dot(first, lane);
    }
#if SUBGROUP
    let s = acc_sg(sum);
    let per = select(LANES, LANES / sg_size, tiled);
    if (!tiled) {
        partial[lid] = sum;
    } else if (sg_lane == 0u) {
        partial[sg_id] = s;
    }
    workgroupBarrier();
    if (lane == 0u && first < p.n) {
        let slot = (v / LANES) * per;
        var total = acc_zero();
        for (var i = 0u; i < per; i = i + 1u) {
            total = acc_add(total, partial[slot + i]);
        }
#else
    partial[v] = sum;
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lane < stride) {
            partial[v] = acc_add(partial[v], partial[v + stride]);
        }
    }
    if (lane == 0u && first < p.n) {
        let total = partial[v];
#endif
        for (var r = 0u; r < RPI; r = r + 1u) {
            let row = first + r;
            if (row < p.n) {
                var v = acc_get(total, r);
#if BIAS
                v = v + bias[p.bias_off + row];
#endif
#if ACCUM
                v = v + c_buf[p.c_off + row];
#endif
                c_buf[p.c_off + row] = v;
            }
        }
    }
}
#endif
#else
#if ROWS
// ---------------------------------------------------------------------------------------------
// qmatmul_rows (CPU adapters; the quantised twin of `matmul_rows` in matmul.wgsl, whose
// comment explains the design): 8-invocation workgroups, each invocation keeping an RM × CP
// block of C in registers (RM = 8·RG rows shared by the workgroup, CP = 4·CV columns of its
// own). Per 32-deep K block an invocation loads the packed block and scale of each of its
// columns once; per 4-deep step it dequantises them into bk and applies them to all RM rows.
// With SUBGROUP lane j loads row 8g + j of A and subgroupBroadcast passes it round.
// The private arrays are indexed only by constants (helpers called with literal arguments).
// Loop iterations: 9 per block (block loop and its 8 steps) plus RG for the stores; the host
// keeps them under llvmpipe's 65535 per invocation.
const RG: u32 = {{RG}}u;
const RM: u32 = 8u * RG;
const CV: u32 = {{CV}}u;
const CP: u32 = 4u * CV;

// acc[i·CV + v]: row row0 + i, columns col + 4v .. col + 4v + 3.
var<private> acc: array<vec4<f32>, RM * CV>;
// Packed values of the current block of column col + c: wq[c·BW ..], its (d, c) in sc[c].
var<private> wq: array<vec4<u32>, CP * BW>;
var<private> sc: array<vec2<f32>, CP>;
// Dequantised weights of the current 4-deep step, depth-major: bk[4v + kk] = columns
// col + 4v .. col + 4v + 3 at depth k + kk.
var<private> bk: array<vec4<f32>, 4u * CV>;
var<private> row0: u32;
var<private> col: u32;
var<private> lane: u32;

// Four activations of A row m (clamped into the matrix) from depth k, zeros past K.
fn a_row4(m: u32, k: u32) -> vec4<f32> {
    let i = p.a_off + min(m, p.m - 1u) * p.k;
#if A_VEC4
    return a_run(i + k);
#else
    let kk = vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u);
    let kc = min(kk, vec4<u32>(p.k - 1u));
    let v = vec4<f32>(a1(i + kc.x), a1(i + kc.y), a1(i + kc.z), a1(i + kc.w));
    return select(vec4<f32>(0.0), v, kk < vec4<u32>(p.k));
#endif
}

// Block b of column col + c (clamped into the matrix).
fn load_col(c: u32, b: u32) {
    let n = min(col + c, p.n - 1u);
    sc[c] = scale_of(n, b);
    let vi = p.w_off + (n * p.nb + b) * BW;
    wq[c * BW] = w_vec(vi);
#if Q8
    wq[c * BW + 1u] = w_vec(vi + 1u);
#endif
}

fn load_block4(v: u32, b: u32) {
    load_col(4u * v, b);
    load_col(4u * v + 1u, b);
    load_col(4u * v + 2u, b);
    load_col(4u * v + 3u, b);
}

fn load_block(b: u32) {
    load_block4(0u, b);
    if (CV > 1u) {
        load_block4(1u, b);
    }
    if (CV > 2u) {
        load_block4(2u, b);
    }
    if (CV > 3u) {
        load_block4(3u, b);
    }
}

// Dequantised elements 4j .. 4j + 3 of column col + c's current block.
fn deq(c: u32, j: u32) -> vec4<f32> {
#if Q8
    let q = i8x4(select(wq[c * BW], wq[c * BW + 1u], j >= 4u)[j % 4u]);
#else
    let sh = vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(select(4u, 0u, j < 4u));
    let q = vec4<f32>((vec4<u32>(wq[c][j % 4u]) >> sh) & vec4<u32>(15u));
#endif
    return fma(q, vec4<f32>(sc[c].x), vec4<f32>(sc[c].y));
}

// Columns col + 4v .. col + 4v + 3 at step j, transposed into bk.
fn step4(v: u32, j: u32) {
    let w0 = deq(4u * v, j);
    let w1 = deq(4u * v + 1u, j);
    let w2 = deq(4u * v + 2u, j);
    let w3 = deq(4u * v + 3u, j);
    bk[4u * v] = vec4<f32>(w0.x, w1.x, w2.x, w3.x);
    bk[4u * v + 1u] = vec4<f32>(w0.y, w1.y, w2.y, w3.y);
    bk[4u * v + 2u] = vec4<f32>(w0.z, w1.z, w2.z, w3.z);
    bk[4u * v + 3u] = vec4<f32>(w0.w, w1.w, w2.w, w3.w);
}

fn deq_step(j: u32) {
    step4(0u, j);
    if (CV > 1u) {
        step4(1u, j);
    }
    if (CV > 2u) {
        step4(2u, j);
    }
    if (CV > 3u) {
        step4(3u, j);
    }
}

// C row i, columns col + 4v .., += a · B.
fn fma_v(i: u32, v: u32, a: vec4<f32>) {
    let o = i * CV + v;
    acc[o] = fma(vec4<f32>(a.x), bk[4u * v], fma(vec4<f32>(a.y), bk[4u * v + 1u], fma(vec4<f32>(a.z), bk[4u * v + 2u], fma(vec4<f32>(a.w), bk[4u * v + 3u], acc[o]))));
}

#include rows_block

// Element (m, n) of C (bias added); skipped past the matrix.
fn store1(m: u32, n: u32, x: f32) {
    if (n < p.n) {
        var v = x;
#if BIAS
        v = v + bias[p.bias_off + n];
#endif
        c_buf[p.c_off + m * p.ldc + n] = v;
    }
}

fn store_v(m: u32, g: u32, r: u32, v: u32) {
    let x = pick_acc(g, r, v);
    let n = col + 4u * v;
    store1(m, n, x.x);
    store1(m, n + 1u, x.y);
    store1(m, n + 2u, x.z);
    store1(m, n + 3u, x.w);
}

#include opaque

@compute @workgroup_size(8)
fn qmatmul_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUP
    @builtin(subgroup_invocation_id) sid: u32,
#endif
    @builtin(local_invocation_index) lid: u32,
) {
#if SUBGROUP
    lane = sid;
#else
    lane = lid;
#endif
    row0 = wg.y * RM;
    col = (wg.x * 8u + lane) * CP;
    // Row groups inside the matrix (uniform in the workgroup).
    let ng = min(RG, (p.m - row0 + 7u) / 8u);
    for (var b = 0u; b < opaque(p.nb, nwg); b = b + 1u) {
        load_block(b);
        for (var j = 0u; j < 8u; j = j + 1u) {
            let k = b * 32u + j * 4u;
#if K_TAIL
            if (k >= p.k) {
                break;
            }
#endif
            deq_step(j);
            rows8(0u, k);
            if (ng > 1u) {
                rows8(1u, k);
            }
            if (ng > 2u) {
                rows8(2u, k);
            }
            if (ng > 3u) {
                rows8(3u, k);
            }
            if (RG > 4u && ng > 4u) {
                rows8(4u, k);
            }
            if (RG > 5u && ng > 5u) {
                rows8(5u, k);
            }
            if (RG > 6u && ng > 6u) {
                rows8(6u, k);
            }
            if (RG > 7u && ng > 7u) {
                rows8(7u, k);
            }
        }
    }
    for (var g = 0u; g < ng; g = g + 1u) {
        store_row(g, 0u);
        store_row(g, 1u);
        store_row(g, 2u);
        store_row(g, 3u);
        store_row(g, 4u);
        store_row(g, 5u);
        store_row(g, 6u);
        store_row(g, 7u);
    }
}
#else
// ---------------------------------------------------------------------------------------------
// qmatmul (GPUs): the 4×4-per-invocation register tile of matmul.wgsl with B = Wᵀ; each
// invocation stages 4 activations and 4 dequantised weights per 16-deep K step.
const BM: u32 = 64u;
const BK: u32 = 16u;
const BV: u32 = BM / 4u;

var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

// Four elements along K of A row m from column k, zero outside the matrix.
fn load_a(m: u32, k: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (m >= p.m) {
        return v;
    }
    let i = p.a_off + m * p.k + k;
#if A_VEC4
    if (k + 3u < p.k) {
        return a_run(i);
    }
#endif
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (k + j < p.k) {
            v[j] = a1(i + j);
        }
    }
    return v;
}

// Four dequantised weights of row n from column k (a multiple of 4), zero past N. Columns past
// K are finite padding, multiplied by the zero activations there.
fn load_w(n: u32, k: u32) -> vec4<f32> {
    if (n >= p.n) {
        return vec4<f32>(0.0);
    }
    let b = k / 32u;
    let s = scale_of(n, b);
    return fma(q_run(p.w_off + (n * p.nb + b) * BW, (k % 32u) / 4u), vec4<f32>(s.x), vec4<f32>(s.y));
}

@compute @workgroup_size(16, 16)
fn qmatmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BM;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        acc[i] = vec4<f32>(0.0);
    }
    let ar = lid / 4u;
    let ak = (lid % 4u) * 4u;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + BK) {
        let av = load_a(row0 + ar, k0 + ak);
        let bv = load_w(col0 + ar, k0 + ak);
        for (var j = 0u; j < 4u; j = j + 1u) {
            a_tile[(ak + j) * BV + ar / 4u][ar % 4u] = av[j];
            b_tile[(ak + j) * BV + ar / 4u][ar % 4u] = bv[j];
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k = k + 1u) {
            let a = a_tile[k * BV + l.y];
            let b = b_tile[k * BV + l.x];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let m = row0 + l.y * 4u + i;
        if (m >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j = j + 1u) {
            let n = col0 + l.x * 4u + j;
            if (n < p.n) {
                var v = acc[i][j];
#if BIAS
                v = v + bias[p.bias_off + n];
#endif
                c_buf[p.c_off + m * p.ldc + n] = v;
            }
        }
    }
}
#endif
#endif
