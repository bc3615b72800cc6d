// 2-D convolution, NCHW, PyTorch semantics: zero padding, out = floor((in + 2p - k) / s) + 1,
// x [B, Cin, H, W] f32, w [Cout, Cin/groups, kh, kw], optional bias [Cout], out f32.
//
// Entry points (one define each):
//   conv_gemm       (GEMM)      groups == 1 as an implicit GEMM: M = B·OH·OW output pixels,
//                               N = Cout, K = Cin·kh·kw. A workgroup computes a 32×32 tile of
//                               (pixels × channels), staging 16-deep slices of the input
//                               (im2col on the fly) and of the weights in workgroup memory; each
//                               invocation accumulates 4 pixels × 4 channels, so every loaded
//                               input feeds 32 channels.
//                               POINTWISE: 1×1, stride 1, no padding (a per-pixel matmul: the
//                               input slice is read directly, no index decomposition);
//                               PATCH: kernel == stride, no padding (patch embedding: no bounds
//                               checks); neither: any kernel, stride and padding.
//   conv_direct     (DIRECT)    any groups: one invocation computes one output pixel for 4
//                               consecutive output channels of one group, each input value
//                               loaded once for all 4.
//   conv_depthwise  (DEPTHWISE) groups == Cin == Cout: one invocation per output value.
//   conv_im2col     (IM2COL)    groups == 1 on CPU adapters: gathers the patches into
//                               col [B·OH·OW, K] (K = Cin·kh·kw, ordered as a weight row, zeros
//                               in the padding), one invocation per element; the product with
//                               the weights is then an ordinary matmul (`matmul_rows`).
//
// Weight storage: W_F16 selects f16 weights (and bias), read as native f16 with F16 or as packed
// u32 pairs through unpack2x16float without it; otherwise f32. BIAS adds the bias binding.
//
// `n` counts invocations (direct, depthwise, im2col) or tiles (gemm); `tiles_m` is the number of tiles
// along M in the gemm.

#if F16
enable f16;
#endif

struct Params {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    groups: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    cin_g: u32,
    cout_g: u32,
    n: u32,
    tiles_m: u32,
    k: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
#if IM2COL
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
#else
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
#endif

// The weights (not bound by conv_im2col, whose output takes binding 2).
#if IM2COL
#else
#if W_F16
#if F16
@group(0) @binding(2) var<storage, read> wts: array<f16>;

fn wt(i: u32) -> f32 {
    return f32(wts[i]);
}

#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f16>;

fn bias_at(c: u32) -> f32 {
    return f32(bias[c]);
}
#endif
#else
@group(0) @binding(2) var<storage, read> wts: array<u32>;

fn half_of(word: u32, i: u32) -> f32 {
    let pair = unpack2x16float(word);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

fn wt(i: u32) -> f32 {
    return half_of(wts[i >> 1u], i);
}

#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<u32>;

fn bias_at(c: u32) -> f32 {
    return half_of(bias[c >> 1u], c);
}
#endif
#endif
#else
@group(0) @binding(2) var<storage, read> wts: array<f32>;

fn wt(i: u32) -> f32 {
    return wts[i];
}

#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;

fn bias_at(c: u32) -> f32 {
    return bias[c];
}
#endif
#endif

#endif

#if BIAS
#else
fn bias_at(c: u32) -> f32 {
    return 0.0;
}
#endif

// x[b, c, iy, ix], or 0 in the padding.
fn x_at(plane: u32, iy: i32, ix: i32) -> f32 {
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return x[plane + u32(iy) * p.w + u32(ix)];
}

#if IM2COL
// col[m, kk] = x[b, ci, oy·sh + ky - ph, ox·sw + kx - pw] with m = (b·OH + oy)·OW + ox and
// kk = (ci·kh + ky)·kw + kx.
@compute @workgroup_size(64)
fn conv_im2col(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (i >= p.n) {
        return;
    }
    let m = i / p.k;
    let kk = i % p.k;
    let npix = p.oh * p.ow;
    let pix = m % npix;
    let ksz = p.kh * p.kw;
    let kr = kk % ksz;
    let iy = i32((pix / p.ow) * p.sh + kr / p.kw) - i32(p.ph);
    let ix = i32((pix % p.ow) * p.sw + kr % p.kw) - i32(p.pw);
    dst[i] = x_at(((m / npix) * p.cin + kk / ksz) * p.h * p.w, iy, ix);
}
#endif

#if DEPTHWISE
@compute @workgroup_size(64)
fn conv_depthwise(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (i >= p.n) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let bc = i / (p.ow * p.oh);
    let c = bc % p.cout;
    let plane = bc * p.h * p.w;
    let iy0 = i32(oy * p.sh) - i32(p.ph);
    let ix0 = i32(ox * p.sw) - i32(p.pw);
    let w0 = c * p.kh * p.kw;
    var acc = 0.0;
    for (var ky = 0u; ky < p.kh; ky = ky + 1u) {
        for (var kx = 0u; kx < p.kw; kx = kx + 1u) {
            acc = acc + wt(w0 + ky * p.kw + kx) * x_at(plane, iy0 + i32(ky), ix0 + i32(kx));
        }
    }
    dst[i] = acc + bias_at(c);
}
#endif

#if DIRECT
@compute @workgroup_size(64)
fn conv_direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (i >= p.n) {
        return;
    }
    let npix = p.oh * p.ow;
    let pix = i % npix;
    let rest = i / npix;
    let tiles_per_group = (p.cout_g + 3u) / 4u;
    let tile = rest % (p.groups * tiles_per_group);
    let b = rest / (p.groups * tiles_per_group);
    let g = tile / tiles_per_group;
    let first = (tile % tiles_per_group) * 4u;
    let co0 = g * p.cout_g + first;
    let last = g * p.cout_g + p.cout_g - 1u;
    let ksz = p.kh * p.kw;
    let wrow = p.cin_g * ksz;
    // Lanes past the group's last channel re-read its weights; their sums are not stored.
    let w0 = vec4<u32>(co0, min(co0 + 1u, last), min(co0 + 2u, last), min(co0 + 3u, last)) * wrow;
    let oy = pix / p.ow;
    let ox = pix % p.ow;
    let iy0 = i32(oy * p.sh) - i32(p.ph);
    let ix0 = i32(ox * p.sw) - i32(p.pw);
    var acc = vec4<f32>(0.0);
    for (var ci = 0u; ci < p.cin_g; ci = ci + 1u) {
        let plane = (b * p.cin + g * p.cin_g + ci) * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky = ky + 1u) {
            for (var kx = 0u; kx < p.kw; kx = kx + 1u) {
                let v = x_at(plane, iy0 + i32(ky), ix0 + i32(kx));
                let k = ci * ksz + ky * p.kw + kx;
                acc = acc + v * vec4<f32>(wt(w0.x + k), wt(w0.y + k), wt(w0.z + k), wt(w0.w + k));
            }
        }
    }
    let count = min(4u, p.cout_g - first);
    for (var j = 0u; j < count; j = j + 1u) {
        dst[((b * p.cout + co0 + j) * npix) + pix] = acc[j] + bias_at(co0 + j);
    }
}
#endif

#if GEMM
const TM: u32 = 32u;
const TN: u32 = 32u;
const TK: u32 = 16u;
// Row stride of the staged tiles: one padding column keeps the column-wise stores of the
// staging loops on distinct banks.
const RS: u32 = 33u;

// a_tile[k][m]: input values (im2col), b_tile[k][n]: weights, for one TK-deep slice.
var<workgroup> a_tile: array<f32, 528>;
var<workgroup> b_tile: array<f32, 528>;

@compute @workgroup_size(64)
fn conv_gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tile = wg.y * nwg.x + wg.x;
    // Workgroup-uniform: the whole group leaves before any barrier.
    if (tile >= p.n) {
        return;
    }
    let m0 = (tile % p.tiles_m) * TM;
    let n0 = (tile / p.tiles_m) * TN;
    let npix = p.oh * p.ow;
    let m_total = p.batch * npix;

#if POINTWISE
    // Staging of a_tile: this invocation's pixel is fixed and consecutive invocations take
    // consecutive pixels (contiguous in x); it fills depth rows a_row, a_row + 2, …
    let am = lid % TM;
    let a_row = lid / TM;
    let m_ok = m0 + am < m_total;
    let mc = min(m0 + am, m_total - 1u);
    let x_pix = (mc / npix) * p.cin * npix + mc % npix;
#else
    // Staging of a_tile: this invocation's depth row is fixed and consecutive invocations take
    // consecutive depths (kernel columns, contiguous in x); it fills pixels a_col + 4i, whose
    // input origins are computed once here so the K loop decomposes only its depth index.
    let ksz = p.kh * p.kw;
    let a_k = lid % TK;
    let a_col = lid / TK;
    var x_base: array<u32, 8>;
    var iy0: array<i32, 8>;
    var ix0: array<i32, 8>;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let mc = min(m0 + a_col + 4u * i, m_total - 1u);
        let pix = mc % npix;
        x_base[i] = (mc / npix) * p.cin * p.h * p.w;
        iy0[i] = i32((pix / p.ow) * p.sh) - i32(p.ph);
        ix0[i] = i32((pix % p.ow) * p.sw) - i32(p.pw);
    }
#endif
    // Staging of b_tile: depth b_k of channels n0 + b_col + 4i (consecutive depths are
    // contiguous in a weight row).
    let b_k = lid % TK;
    let b_col = lid / TK;

    let tx = lid % 8u;
    let ty = lid / 8u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k0 = 0u; k0 < p.k; k0 = k0 + TK) {
#if POINTWISE
        for (var r = a_row; r < TK; r = r + 2u) {
            let kk = k0 + r;
            var v = 0.0;
            if (m_ok && kk < p.k) {
                v = x[x_pix + kk * npix];
            }
            a_tile[r * RS + am] = v;
        }
#else
        let kk = k0 + a_k;
        let ci = kk / ksz;
        let kr = kk % ksz;
        let ky = i32(kr / p.kw);
        let kx = i32(kr % p.kw);
        let plane = ci * p.h * p.w;
        for (var i = 0u; i < 8u; i = i + 1u) {
            let am = a_col + 4u * i;
            var v = 0.0;
            if (kk < p.k && m0 + am < m_total) {
#if PATCH
                v = x[x_base[i] + plane + u32(iy0[i] + ky) * p.w + u32(ix0[i] + kx)];
#else
                v = x_at(x_base[i] + plane, iy0[i] + ky, ix0[i] + kx);
#endif
            }
            a_tile[a_k * RS + am] = v;
        }
#endif
        for (var c = b_col; c < TN; c = c + 4u) {
            let kk = k0 + b_k;
            let n = n0 + c;
            var v = 0.0;
            if (n < p.cout && kk < p.k) {
                v = wt(n * p.k + kk);
            }
            b_tile[b_k * RS + c] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk = kk + 1u) {
            let a = vec4<f32>(a_tile[kk * RS + tx], a_tile[kk * RS + tx + 8u], a_tile[kk * RS + tx + 16u], a_tile[kk * RS + tx + 24u]);
            let b = vec4<f32>(b_tile[kk * RS + ty], b_tile[kk * RS + ty + 8u], b_tile[kk * RS + ty + 16u], b_tile[kk * RS + ty + 24u]);
            for (var i = 0u; i < 4u; i = i + 1u) {
                acc[i] = acc[i] + a[i] * b;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let mo = m0 + tx + 8u * i;
        if (mo >= m_total) {
            continue;
        }
        let ob = mo / npix;
        let opix = mo % npix;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let n = n0 + ty + 8u * j;
            if (n < p.cout) {
                dst[(ob * p.cout + n) * npix + opix] = acc[i][j] + bias_at(n);
            }
        }
    }
}
#endif
