// Elementwise kernels: unary activations, binary ops with numpy broadcasting, f32<->f16 casts.
//
// Defines:
//   EXPR        unary: an f32 expression of `x` (and `p.alpha`, `p.beta`), e.g. `max(x, 0.0)`
//   OP          binary: an f32 expression of `a` and `b`, e.g. `a + b`
//   SAME_SHAPE  binary: both operands have the output's shape (no index arithmetic)
//   HALVES      binary: both operands are halves of one input [rows, 2·F] bound twice: a its
//               first F columns, b its last F (`p.shape[0].x` = F); the output is [rows, F]
//
// Large tensors are processed in chunks; each storage binding is a window of its buffer.
// `base` is the global (whole-tensor) index of this chunk's first output element, and
// `*_off` is the global element index where the corresponding window begins.

struct Params {
    n: u32,
    base: u32,
    a_off: u32,
    b_off: u32,
    out_off: u32,
    rank: u32,
    alpha: f32,
    beta: f32,
    shape: array<vec4<u32>, 2>,
    a_strides: array<vec4<u32>, 2>,
    b_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn erf_approx(v: f32) -> f32 {
    // Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7.
    let s = sign(v);
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
    return s * y;
}

fn tanh_stable(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

#if UNARY
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let g = p.base + i;
    let x = src[g - p.a_off];
    dst[g - p.out_off] = {{EXPR}};
}
#endif

#if BINARY
@group(0) @binding(1) var<storage, read> lhs: array<f32>;
@group(0) @binding(2) var<storage, read> rhs: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn operand_indices(g: u32) -> vec2<u32> {
#if SAME_SHAPE
    return vec2<u32>(g, g);
#else
#if HALVES
    let half = p.shape[0].x;
    let a = (g / half) * 2u * half + g % half;
    return vec2<u32>(a, a + half);
#else
    var rem = g;
    var ia = 0u;
    var ib = 0u;
    for (var d = i32(p.rank) - 1; d >= 0; d = d - 1) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let dim = p.shape[q][r];
        let c = rem % dim;
        rem = rem / dim;
        ia = ia + c * p.a_strides[q][r];
        ib = ib + c * p.b_strides[q][r];
    }
    return vec2<u32>(ia, ib);
#endif
#endif
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let g = p.base + i;
    let idx = operand_indices(g);
    let a = lhs[idx.x - p.a_off];
    let b = rhs[idx.y - p.b_off];
    dst[g - p.out_off] = {{OP}};
}
#endif

#if CAST_TO_F16
// Two elements per invocation, packed with pack2x16float (needs no SHADER_F16).
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn cast_f32_to_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = linear_id(wg, nwg, lid);
    let i = 2u * j;
    if (i >= p.n) {
        return;
    }
    let lo = src[i];
    var hi = 0.0;
    if (i + 1u < p.n) {
        hi = src[i + 1u];
    }
    dst[j] = pack2x16float(vec2<f32>(lo, hi));
}
#endif

#if CAST_TO_F32
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn cast_f16_to_f32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let pair = unpack2x16float(src[i / 2u]);
    dst[i] = select(pair.x, pair.y, (i & 1u) == 1u);
}
#endif
