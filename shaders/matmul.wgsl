// Register-tiled matrix multiply: C[b] = A[b] · B[b] (+ bias), f32 accumulation.
//
// Each 16×16 workgroup computes a 64×64 block of C, each invocation a 4×4 sub-block held in
// registers (TILE8: 128×128 and 8×8). Per K step the block's A and B tiles are staged in
// workgroup memory, k-major, so the inner loop loads TM/2 vec4s per TM² multiply-adds.
//
// Defines:
//   F16      the device has SHADER_F16 (`enable f16;`, f16 operands read natively)
//   A_F16    A is stored as f16 (without F16: read as packed u32 and unpacked)
//   B_F16    B is stored as f16
//   A_VEC4   A rows and offsets are multiples of 4 elements: vec4 loads along K
//   B_VEC4   B's contiguous dimension and offsets are multiples of 4: vec4 loads
//   TRANS_B  B is stored [N, K] (an nn.Linear weight) instead of [K, N]
//   BIAS     add bias[n]
//   ACCUM    C += A·B (continuing a K-chunked product)
//   TILE8    8×8 outputs per invocation (large M and N)
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

@group(0) @binding(3) var<storage, read_write> c_buf: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

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
                v = v + c_buf[ci];
#endif
                c_buf[ci] = v;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `matmul_rows`: the kernel for CPU adapters (lavapipe, llvmpipe, SwiftShader). There, memory
// accesses whose address is the same for every invocation are one scalar load, while
// per-invocation addresses cost a load per lane, and barriers are expensive. So a workgroup of
// 64 invocations shares RM = 8 rows of A (uniform loads, no workgroup memory, no barriers) and
// each invocation owns 4 columns of C.
const RM: u32 = 8u;
const COLS_PER_WG: u32 = 256u;

@compute @workgroup_size(64)
fn matmul_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let batch = wg.z;
    let row0 = wg.y * RM;
    let col = wg.x * COLS_PER_WG + lid * 4u;
    let a_base = p.a_off + batch * p.a_bs;
    let b_base = p.b_off + batch * p.b_bs;
    let last_row = p.m - 1u;
    let last_col = p.n - 1u;
    var acc: array<vec4<f32>, RM>;
    for (var i = 0u; i < RM; i = i + 1u) {
        acc[i] = vec4<f32>(0.0);
    }
#if TRANS_B
    // B is [N, K]: each invocation reads its four columns along K (clamped into the matrix;
    // clamped duplicates are discarded at the store).
    let c0 = b_base + min(col, last_col) * p.ldb;
    let c1 = b_base + min(col + 1u, last_col) * p.ldb;
    let c2 = b_base + min(col + 2u, last_col) * p.ldb;
    let c3 = b_base + min(col + 3u, last_col) * p.ldb;
    var k = 0u;
#if B_VEC4
#if A_VEC4
    for (; k + 3u < p.k; k = k + 4u) {
        let b0 = b4(c0 + k);
        let b1 = b4(c1 + k);
        let b2 = b4(c2 + k);
        let b3 = b4(c3 + k);
        for (var i = 0u; i < RM; i = i + 1u) {
            let a = a4(a_base + min(row0 + i, last_row) * p.lda + k);
            acc[i] = acc[i] + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
        }
    }
#endif
#endif
    for (; k < p.k; k = k + 1u) {
        let bv = vec4<f32>(b1(c0 + k), b1(c1 + k), b1(c2 + k), b1(c3 + k));
        for (var i = 0u; i < RM; i = i + 1u) {
            acc[i] = fma(vec4<f32>(a1(a_base + min(row0 + i, last_row) * p.lda + k)), bv, acc[i]);
        }
    }
#else
    // B is [K, N]: four adjacent columns at each depth, clamped into the matrix so the loop
    // has no per-invocation branches.
#if B_VEC4
    let cb = b_base + min(col, p.n - 4u);
    var k = 0u;
#if A_VEC4
    for (; k + 3u < p.k; k = k + 4u) {
        let r0 = b4(cb + k * p.ldb);
        let r1 = b4(cb + (k + 1u) * p.ldb);
        let r2 = b4(cb + (k + 2u) * p.ldb);
        let r3 = b4(cb + (k + 3u) * p.ldb);
        for (var i = 0u; i < RM; i = i + 1u) {
            let a = a4(a_base + min(row0 + i, last_row) * p.lda + k);
            acc[i] = fma(vec4<f32>(a.x), r0, fma(vec4<f32>(a.y), r1, fma(vec4<f32>(a.z), r2, fma(vec4<f32>(a.w), r3, acc[i]))));
        }
    }
#endif
    for (; k < p.k; k = k + 1u) {
        let bv = b4(cb + k * p.ldb);
#else
    let cb0 = b_base + min(col, last_col);
    let cb1 = b_base + min(col + 1u, last_col);
    let cb2 = b_base + min(col + 2u, last_col);
    let cb3 = b_base + min(col + 3u, last_col);
    for (var k = 0u; k < p.k; k = k + 1u) {
        let kk = k * p.ldb;
        let bv = vec4<f32>(b1(cb0 + kk), b1(cb1 + kk), b1(cb2 + kk), b1(cb3 + kk));
#endif
        for (var i = 0u; i < RM; i = i + 1u) {
            acc[i] = fma(vec4<f32>(a1(a_base + min(row0 + i, last_row) * p.lda + k)), bv, acc[i]);
        }
    }
#endif
    let c_base = p.c_off + batch * p.c_bs;
    for (var i = 0u; i < RM; i = i + 1u) {
        let m = row0 + i;
        if (m >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j = j + 1u) {
            let n = col + j;
            if (n < p.n) {
                var v = acc[i][j];
#if BIAS
                v = v + bias[p.bias_off + n];
#endif
                let ci = c_base + m * p.ldc + n;
#if ACCUM
                v = v + c_buf[ci];
#endif
                c_buf[ci] = v;
            }
        }
    }
}
