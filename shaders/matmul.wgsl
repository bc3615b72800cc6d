// Register-tiled matrix multiply: C[b] = A[b] · B[b] (+ bias), f32 accumulation. Two kernels,
// one per compilation (ROWS):
//
// `matmul` (GPUs): each 16×16 workgroup computes a 64×64 block of C, each invocation a 4×4
// sub-block held in registers (TILE8: 128×128 and 8×8). Per K step the block's A and B tiles
// are staged in workgroup memory, k-major, so the inner loop loads TM/2 vec4s per TM²
// multiply-adds.
//
// `matmul_rows` (CPU adapters): see its own comment below.
//
// Defines:
//   F16      the device has SHADER_F16 (`enable f16;`, f16 operands read natively)
//   A_F16    A is stored as f16 (without F16: read as packed u32 and unpacked)
//   B_F16    B is stored as f16
//   A_VEC4   A rows and offsets are multiples of 4 elements: vec4 loads along K
//   B_VEC4   B's contiguous dimension and offsets are multiples of 4: vec4 loads
//   TRANS_B  B is stored [N, K] (an nn.Linear weight) instead of [K, N]
//   TEX      B (TRANS_B) is read from a texture (runtime/src/texture.rs DenseTexture)
//   BIAS     add bias[n]
//   ACCUM    C += A·B (continuing a K-chunked product, or a residual accumulated in place)
//   GELU     store GELU(value) (erf form, as the elementwise `gelu_erf`), the value being
//            A·B + bias (+ C with ACCUM): the activation epilogue of an MLP's first linear
//   TILE8    8×8 outputs per invocation (large M and N)
//   ROWS     compile `matmul_rows` (CPU adapters) instead of the tiled `matmul`; with it:
//     RG        row groups of 8 per workgroup, 4 to 8 (32 to 64 rows of C)
//     CV        vec4s of columns per invocation: 1 to 4 (4 to 16 columns)
//     SUBGROUP  the 8 invocations share A rows through subgroupBroadcast (the device has
//               subgroups of at least 8 invocations)
//     C_VEC4    C rows, c_off and N are multiples of 4: C is written (and read) as vec4s
//
// Element (m, k) of A is at a_off + batch·a_bs + m·lda + k; B (k, n) at
// b_off + batch·b_bs + k·ldb + n (TRANS_B: n·ldb + k); C (m, n) at c_off + batch·c_bs + m·ldc + n.
#if F16
enable f16;
#endif

struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    bias_off: u32,
    a_bs: u32,
    b_bs: u32,
    c_bs: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

#if A_F16
#if F16
#if A_VEC4
@group(0) @binding(1) var<storage, read> a_buf: array<vec4<f16>>;
fn a4(i: u32) -> vec4<f32> { return vec4<f32>(a_buf[i / 4u]); }
fn a1(i: u32) -> f32 { return f32(a_buf[i / 4u][i % 4u]); }
#else
@group(0) @binding(1) var<storage, read> a_buf: array<f16>;
fn a1(i: u32) -> f32 { return f32(a_buf[i]); }
#endif
#else
#if A_VEC4
@group(0) @binding(1) var<storage, read> a_buf: array<vec2<u32>>;
fn a4(i: u32) -> vec4<f32> { let w = a_buf[i / 4u]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn a1(i: u32) -> f32 { return unpack2x16float(a_buf[i / 4u][(i % 4u) / 2u])[i % 2u]; }
#else
@group(0) @binding(1) var<storage, read> a_buf: array<u32>;
fn a1(i: u32) -> f32 { return unpack2x16float(a_buf[i / 2u])[i % 2u]; }
#endif
#endif
#else
#if A_VEC4
@group(0) @binding(1) var<storage, read> a_buf: array<vec4<f32>>;
fn a4(i: u32) -> vec4<f32> { return a_buf[i / 4u]; }
fn a1(i: u32) -> f32 { return a_buf[i / 4u][i % 4u]; }
#else
@group(0) @binding(1) var<storage, read> a_buf: array<f32>;
fn a1(i: u32) -> f32 { return a_buf[i]; }
#endif
#endif

#if TEX
// B is a weight [N, K] in a texture (runtime/src/texture.rs DenseTexture).
@group(0) @binding(2) var b_tex: texture_2d<u32>;
#include tex_words
#if B_F16
fn b4(i: u32) -> vec4<f32> { return tex_f16x4(b_tex, i); }
fn b1(i: u32) -> f32 { return tex_f16(b_tex, i); }
#else
fn b4(i: u32) -> vec4<f32> { return tex_f32x4(b_tex, i); }
fn b1(i: u32) -> f32 { return tex_f32(b_tex, i); }
#endif
#else
#if B_F16
#if F16
#if B_VEC4
@group(0) @binding(2) var<storage, read> b_buf: array<vec4<f16>>;
fn b4(i: u32) -> vec4<f32> { return vec4<f32>(b_buf[i / 4u]); }
fn b1(i: u32) -> f32 { return f32(b_buf[i / 4u][i % 4u]); }
#else
@group(0) @binding(2) var<storage, read> b_buf: array<f16>;
fn b1(i: u32) -> f32 { return f32(b_buf[i]); }
#endif
#else
#if B_VEC4
@group(0) @binding(2) var<storage, read> b_buf: array<vec2<u32>>;
fn b4(i: u32) -> vec4<f32> { let w = b_buf[i / 4u]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn b1(i: u32) -> f32 { return unpack2x16float(b_buf[i / 4u][(i % 4u) / 2u])[i % 2u]; }
#else
@group(0) @binding(2) var<storage, read> b_buf: array<u32>;
fn b1(i: u32) -> f32 { return unpack2x16float(b_buf[i / 2u])[i % 2u]; }
#endif
#endif
#else
#if B_VEC4
@group(0) @binding(2) var<storage, read> b_buf: array<vec4<f32>>;
fn b4(i: u32) -> vec4<f32> { return b_buf[i / 4u]; }
fn b1(i: u32) -> f32 { return b_buf[i / 4u][i % 4u]; }
#else
@group(0) @binding(2) var<storage, read> b_buf: array<f32>;
fn b1(i: u32) -> f32 { return b_buf[i]; }
#endif
#endif
#endif

#if C_VEC4
@group(0) @binding(3) var<storage, read_write> c_buf: array<vec4<f32>>;
#else
@group(0) @binding(3) var<storage, read_write> c_buf: array<f32>;
#endif
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

#if GELU
// Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7 (the same as shaders/elementwise.wgsl).
fn erf_approx(v: f32) -> f32 {
    let s = sign(v);
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
    return s * y;
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
}
#endif

// The value stored for an output whose product (+ bias) is `x` and whose previous value (read
// only with ACCUM) is `prev`.
fn epilogue(x: f32, prev: f32) -> f32 {
#if ACCUM
    let v = x + prev;
#else
    let v = x;
#endif
#if GELU
    return gelu(v);
#else
    return v;
#endif
}

#if ROWS
// ---------------------------------------------------------------------------------------------
// `matmul_rows`: the kernel for CPU adapters (lavapipe, llvmpipe). Their JIT runs the
// invocations of a workgroup as the lanes of SIMD vectors and turns every storage load or
// store whose address it cannot prove uniform (in practice, every one) into a loop over the
// lanes with one bounds-checked scalar access per vector component. Loads, not multiply-adds,
// set the speed, so the kernel maximises multiply-adds per loaded component:
// - a workgroup is 8 invocations, one SIMD vector (larger workgroups measured slower);
// - each invocation keeps an RM × CP block of C in registers: RM = 32, 40, …, 64 rows shared
//   by the workgroup (RG groups of 8), CP = 4, 8, 12 or 16 columns of its own; a 4-deep K step loads CP vec4s of B and
//   does 4·RM·CP multiply-adds;
// - with SUBGROUP the 8 invocations load 8 different rows of A and pass them round with
//   subgroupBroadcast (a register shuffle): each A element is loaded once per workgroup, not
//   once per invocation;
// - the private arrays are indexed only by constants: the work is spelled out in helper
//   functions called with literal arguments. A loop around the array accesses would survive
//   the unroller (its body is large) and leave the arrays in per-lane memory.
// Row groups past the matrix are skipped; rows and columns past it inside a group are clamped
// into it for loading and skipped at the store.
// The K loop runs K/4 iterations (the host caps K: llvmpipe ends an invocation's loops after
// 65535 iterations); the stores run in a loop over the row groups, which keeps the number of
// store instructions, each a loop over the lanes in the compiled code, and with it the
// compile time, small.
const RG: u32 = {{RG}}u;
const RM: u32 = 8u * RG;
// vec4s of C per row of an invocation, and its columns.
const CV: u32 = {{CV}}u;
const CP: u32 = 4u * CV;

// acc[i·CV + v]: row row0 + i, columns col + 4v .. col + 4v + 3.
var<private> acc: array<vec4<f32>, RM * CV>;
// B of the current 4-deep K step at depth k. TRANS_B: bk[j] = column col + j at depths
// k .. k + 3; otherwise bk[kk·CV + v] = row k + kk, columns col + 4v .. col + 4v + 3.
var<private> bk: array<vec4<f32>, 4u * CV>;
// The invocation's block: first row, first column, lane (0..7), operand and output bases.
var<private> row0: u32;
var<private> col: u32;
var<private> lane: u32;
var<private> a_base: u32;
var<private> b_base: u32;
var<private> c_base: u32;

// Four elements along K of A row `m` (clamped into the matrix) from depth k, zeros past K.
fn a_row4(m: u32, k: u32) -> vec4<f32> {
    let i = a_base + min(m, p.m - 1u) * p.lda;
#if A_VEC4
    return a4(i + k);
#else
    let kk = vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u);
    let kc = min(kk, vec4<u32>(p.k - 1u));
    let v = vec4<f32>(a1(i + kc.x), a1(i + kc.y), a1(i + kc.z), a1(i + kc.w));
    return select(vec4<f32>(0.0), v, kk < vec4<u32>(p.k));
#endif
}

#if TRANS_B
// Four elements along K of B column `n` (clamped into the matrix) from depth k, zeros past K.
fn b_run(n: u32, k: u32) -> vec4<f32> {
    let i = b_base + min(n, p.n - 1u) * p.ldb;
#if B_VEC4
    return b4(i + k);
#else
    let kk = vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u);
    let kc = min(kk, vec4<u32>(p.k - 1u));
    let v = vec4<f32>(b1(i + kc.x), b1(i + kc.y), b1(i + kc.z), b1(i + kc.w));
    return select(vec4<f32>(0.0), v, kk < vec4<u32>(p.k));
#endif
}

// Columns col + 4v .. col + 4v + 3 at depths k .. k + 3.
fn load_b4(v: u32, k: u32) {
    bk[4u * v] = b_run(col + 4u * v, k);
    bk[4u * v + 1u] = b_run(col + 4u * v + 1u, k);
    bk[4u * v + 2u] = b_run(col + 4u * v + 2u, k);
    bk[4u * v + 3u] = b_run(col + 4u * v + 3u, k);
}

// C row i, columns col + 4v .., += a · B.
fn fma_v(i: u32, v: u32, a: vec4<f32>) {
    acc[i * CV + v] += vec4<f32>(dot(a, bk[4u * v]), dot(a, bk[4u * v + 1u]), dot(a, bk[4u * v + 2u]), dot(a, bk[4u * v + 3u]));
}
#else
// Four adjacent elements of B row k from column n (clamped into the matrix), zeros past K.
fn b_row(k: u32, n: u32) -> vec4<f32> {
    if (k >= p.k) {
        return vec4<f32>(0.0);
    }
    let i = b_base + k * p.ldb;
#if B_VEC4
    return b4(i + min(n, p.n - 4u));
#else
    let c = min(vec4<u32>(n) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    return vec4<f32>(b1(i + c.x), b1(i + c.y), b1(i + c.z), b1(i + c.w));
#endif
}

// Rows k .. k + 3, columns col + 4v .. col + 4v + 3.
fn load_b4(v: u32, k: u32) {
    bk[v] = b_row(k, col + 4u * v);
    bk[CV + v] = b_row(k + 1u, col + 4u * v);
    bk[2u * CV + v] = b_row(k + 2u, col + 4u * v);
    bk[3u * CV + v] = b_row(k + 3u, col + 4u * v);
}

// C row i, columns col + 4v .., += a · B.
fn fma_v(i: u32, v: u32, a: vec4<f32>) {
    let o = i * CV + v;
    acc[o] = fma(vec4<f32>(a.x), bk[v], fma(vec4<f32>(a.y), bk[CV + v], fma(vec4<f32>(a.z), bk[2u * CV + v], fma(vec4<f32>(a.w), bk[3u * CV + v], acc[o]))));
}
#endif

// B of the K step at depth k.
fn load_b(k: u32) {
    load_b4(0u, k);
    if (CV > 1u) {
        load_b4(1u, k);
    }
    if (CV > 2u) {
        load_b4(2u, k);
    }
    if (CV > 3u) {
        load_b4(3u, k);
    }
}

#include rows_block

#if BIAS
// bias_v[v]: bias of columns col + 4v .. col + 4v + 3 (clamped into the matrix).
var<private> bias_v: array<vec4<f32>, CV>;

fn load_bias4(v: u32) {
    let n = min(vec4<u32>(col + 4u * v) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u)) + vec4<u32>(p.bias_off);
    bias_v[v] = vec4<f32>(bias[n.x], bias[n.y], bias[n.z], bias[n.w]);
}
#endif

#if C_VEC4
// Columns n .. n + 3 of C row m (accumulated, stored); skipped past the matrix.
fn store4(m: u32, n: u32, x: vec4<f32>) {
    if (n < p.n) {
        let ci = (c_base + m * p.ldc + n) / 4u;
#if ACCUM
        let prev = c_buf[ci];
#else
        let prev = vec4<f32>(0.0);
#endif
#if GELU
        c_buf[ci] = vec4<f32>(epilogue(x.x, prev.x), epilogue(x.y, prev.y), epilogue(x.z, prev.z), epilogue(x.w, prev.w));
#else
        c_buf[ci] = x + prev;
#endif
    }
}
#else
// Element (m, n) of C (accumulated, stored); skipped past the matrix.
fn store1(m: u32, n: u32, x: f32) {
    if (n < p.n) {
        let ci = c_base + m * p.ldc + n;
#if ACCUM
        c_buf[ci] = epilogue(x, c_buf[ci]);
#else
        c_buf[ci] = epilogue(x, 0.0);
#endif
    }
}

fn store4(m: u32, n: u32, x: vec4<f32>) {
    store1(m, n, x.x);
    store1(m, n + 1u, x.y);
    store1(m, n + 2u, x.z);
    store1(m, n + 3u, x.w);
}
#endif

// Columns col + 4v .. of row 8g + r: bias added, stored.
fn store_v(m: u32, g: u32, r: u32, v: u32) {
#if BIAS
    store4(m, col + 4u * v, pick_acc(g, r, v) + bias_v[v]);
#else
    store4(m, col + 4u * v, pick_acc(g, r, v));
#endif
}

#include opaque

@compute @workgroup_size(8)
fn matmul_rows(
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
    a_base = p.a_off + wg.z * p.a_bs;
    b_base = p.b_off + wg.z * p.b_bs;
    c_base = p.c_off + wg.z * p.c_bs;
    // Row groups inside the matrix (uniform in the workgroup): the last block of rows skips
    // the multiply-adds of its groups past M (e.g. 4 of 7 run for M = 196).
    let ng = min(RG, (p.m - row0 + 7u) / 8u);
    for (var k = 0u; k < opaque(p.k, nwg); k += 4u) {
        load_b(k);
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
#if BIAS
    load_bias4(0u);
    if (CV > 1u) {
        load_bias4(1u);
    }
    if (CV > 2u) {
        load_bias4(2u);
    }
    if (CV > 3u) {
        load_bias4(3u);
    }
#endif
    // Row groups inside the matrix; a run-time loop keeps the stores few in the code.
    for (var g = 0u; g < ng; g++) {
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
#if TILE8
// 8×8 outputs per invocation, 128×128 per workgroup, 8-deep K steps.
const TM: u32 = 8u;
const BK: u32 = 8u;
#else
// 4×4 outputs per invocation, 64×64 per workgroup, 16-deep K steps.
const TM: u32 = 4u;
const BK: u32 = 16u;
#endif
const BM: u32 = 16u * TM;
const VM: u32 = TM / 4u;
const BV: u32 = BM / 4u;

// k-major tiles (BM×BK = 1024 elements in both configurations): a_tile[k·BV + i] holds rows
// 4i..4i+3 at depth k; b_tile likewise columns.
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

// Four consecutive elements along K of A row `m` from depth `k`, zero outside the matrix.
fn load_a_run(base: u32, m: u32, k: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (m >= p.m) {
        return v;
    }
    let i = base + m * p.lda + k;
#if A_VEC4
    if (k + 3u < p.k) {
        return a4(i);
    }
#endif
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (k + j < p.k) {
            v[j] = a1(i + j);
        }
    }
    return v;
}

// Four consecutive elements of B along its contiguous dimension, zero outside the matrix.
#if TRANS_B
fn load_b_run(base: u32, n: u32, k: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (n >= p.n) {
        return v;
    }
    let i = base + n * p.ldb + k;
#if B_VEC4
    if (k + 3u < p.k) {
        return b4(i);
    }
#endif
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (k + j < p.k) {
            v[j] = b1(i + j);
        }
    }
    return v;
}
#else
fn load_b_run(base: u32, k: u32, n: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (k >= p.k) {
        return v;
    }
    let i = base + k * p.ldb + n;
#if B_VEC4
    if (n + 3u < p.n) {
        return b4(i);
    }
#endif
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (n + j < p.n) {
            v[j] = b1(i + j);
        }
    }
    return v;
}
#endif

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let batch = wg.z;
    let row0 = wg.y * BM;
    let col0 = wg.x * BM;
    let a_base = p.a_off + batch * p.a_bs;
    let b_base = p.b_off + batch * p.b_bs;
    // acc[(i·4 + r)·VM + j]: output row l.y·TM + 4i + r, columns l.x·TM + 4j .. +3.
    var acc: array<vec4<f32>, TM * VM>;
    for (var i = 0u; i < TM * VM; i = i + 1u) {
        acc[i] = vec4<f32>(0.0);
    }
    // Tile-load roles: each invocation stages one run of 4 elements of each tile.
    let ar = lid / (BK / 4u);
    let ak = (lid % (BK / 4u)) * 4u;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + BK) {
        let av = load_a_run(a_base, row0 + ar, k0 + ak);
        for (var j = 0u; j < 4u; j = j + 1u) {
            a_tile[(ak + j) * BV + ar / 4u][ar % 4u] = av[j];
        }
#if TRANS_B
        let bv = load_b_run(b_base, col0 + ar, k0 + ak);
        for (var j = 0u; j < 4u; j = j + 1u) {
            b_tile[(ak + j) * BV + ar / 4u][ar % 4u] = bv[j];
        }
#else
        let bk = lid / BV;
        let bn = (lid % BV) * 4u;
        b_tile[bk * BV + bn / 4u] = load_b_run(b_base, k0 + bk, col0 + bn);
#endif
        workgroupBarrier();
        for (var k = 0u; k < BK; k = k + 1u) {
            for (var i = 0u; i < VM; i = i + 1u) {
                let a = a_tile[k * BV + l.y * VM + i];
                for (var j = 0u; j < VM; j = j + 1u) {
                    let b = b_tile[k * BV + l.x * VM + j];
                    acc[(i * 4u) * VM + j] = fma(vec4<f32>(a.x), b, acc[(i * 4u) * VM + j]);
                    acc[(i * 4u + 1u) * VM + j] = fma(vec4<f32>(a.y), b, acc[(i * 4u + 1u) * VM + j]);
                    acc[(i * 4u + 2u) * VM + j] = fma(vec4<f32>(a.z), b, acc[(i * 4u + 2u) * VM + j]);
                    acc[(i * 4u + 3u) * VM + j] = fma(vec4<f32>(a.w), b, acc[(i * 4u + 3u) * VM + j]);
                }
            }
        }
        workgroupBarrier();
    }
    let c_base = p.c_off + batch * p.c_bs;
    for (var i = 0u; i < TM; i = i + 1u) {
        let m = row0 + l.y * TM + i;
        if (m >= p.m) {
            break;
        }
        for (var j = 0u; j < TM; j = j + 1u) {
            let n = col0 + l.x * TM + j;
            if (n < p.n) {
                var v = acc[i * VM + j / 4u][j % 4u];
#if BIAS
                v = v + bias[p.bias_off + n];
#endif
                let ci = c_base + m * p.ldc + n;
#if ACCUM
                c_buf[ci] = epilogue(v, c_buf[ci]);
#else
                c_buf[ci] = epilogue(v, 0.0);
#endif
            }
        }
    }
}
#endif
