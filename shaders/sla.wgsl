// Simplified Linear Attention (SLAB): for every sequence b and head h (channels h·d .. h·d+d),
//   k' = relu(k + pos), q' = relu(q),
//   out_i = (q'_i · KV) / (q'_i · ksum + 1e-6) + dwc(v)_i,
//   KV = Σ_j k'_jᵀ v_j (d×d), ksum = Σ_j k'_j,
// where dwc is a depthwise K×K convolution (padding K/2, weights shared by all heads) over v of
// the head laid out as a height×width image (token i = y·width + x). When the sequence has a
// different number of key/value tokens than query tokens (PVT's spatial reduction), v is first
// resized to the query token count by linear interpolation over the token index (PyTorch
// `F.interpolate(mode = 'linear', align_corners = False)`).
//
// q, k and v are column ranges of row-major f32 tensors: element (row, col) of q is
// q[q_off + row·q_stride + col] (likewise k, v), so a fused qkv projection is read in place.
//
// Three entry points, each compiled alone:
//   KV      sla_kv: one workgroup per (sequence·head, token chunk) sums k'ᵀv and k' over the
//           chunk into a partial [d·d + d] block (KV row-major, then ksum). With one chunk the
//           partial is the final block.
//   REDUCE  sla_reduce: sums the chunk partials of every (sequence·head) block.
//   OUT     sla_out: one workgroup per (sequence·head, tile of 64 query tokens) writes the merged
//           [rows, heads·d] output.
// Defines:
//   D    (KV, OUT) head-dimension capacity (16, 32 or 64): per-head arrays hold D values; the
//        real head dimension p.d ≤ D, the rest are zeros
//   POS  (KV) binding 4 holds the positional encoding [nk, heads·d] added to k
//
// All accumulation is f32. The host keeps every invocation under ~20 k loop iterations (chunks
// of ≤ 1024 tokens, K ≤ 31): llvmpipe silently ends an invocation's loops after 65535
// iterations in total.

struct Params {
    d: u32,
    heads: u32,
    // Output row width: heads·d.
    channels: u32,
    // Query tokens per sequence (= height·width).
    n: u32,
    // Key/value tokens per sequence.
    nk: u32,
    // Sequences × heads.
    bh: u32,
    q_off: u32,
    q_stride: u32,
    k_off: u32,
    k_stride: u32,
    v_off: u32,
    v_stride: u32,
    // Key tokens per chunk (a multiple of the staging tile) and the number of chunks.
    chunk: u32,
    chunks: u32,
    height: u32,
    width: u32,
    // Convolution kernel side (odd).
    ksize: u32,
    // nk / n as f32 (the interpolation's source step).
    interp_scale: f32,
    // Workgroups of the dispatch (bound check of the linear workgroup index).
    groups: u32,
    _pad: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;

// Linear workgroup index (the grid may be split over x and y).
fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}

#if KV
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
#if POS
@group(0) @binding(4) var<storage, read> pos: array<f32>;
#endif

const D: u32 = {{D}}u;
// Tokens staged per step: TS·D = 1024 values of k' and of v.
const TS: u32 = 1024u / D;
// KV entries per invocation: D·D / WG (D ≥ 16).
const R: u32 = (D * D + WG - 1u) / WG;

var<workgroup> ks: array<f32, 1024>;
var<workgroup> vs: array<f32, 1024>;

@compute @workgroup_size(256)
fn sla_kv(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = linear_group(wg, nwg);
    // Uniform per workgroup: every invocation leaves together, before any barrier.
    if (g >= p.groups) {
        return;
    }
    let bh = g / p.chunks;
    let chunk = g % p.chunks;
    let b = bh / p.heads;
    let col = (bh % p.heads) * p.d;
    let begin = chunk * p.chunk;
    let end = min(begin + p.chunk, p.nk);
    var acc: array<f32, R>;
    for (var r = 0u; r < R; r++) {
        acc[r] = 0.0;
    }
    var kacc = 0.0;
    for (var t0 = begin; t0 < end; t0 += TS) {
        for (var i = lid; i < TS * D; i += WG) {
            let tok = t0 + i / D;
            let a = i % D;
            var kval = 0.0;
            var vval = 0.0;
            if (tok < end && a < p.d) {
                let row = b * p.nk + tok;
                kval = k[p.k_off + row * p.k_stride + col + a];
#if POS
                kval += pos[tok * p.channels + col + a];
#endif
                kval = max(kval, 0.0);
                vval = v[p.v_off + row * p.v_stride + col + a];
            }
            ks[i] = kval;
            vs[i] = vval;
        }
        workgroupBarrier();
        for (var t = 0u; t < TS; t++) {
            for (var r = 0u; r < R; r++) {
                let e = lid + r * WG;
                acc[r] += ks[t * D + e / D] * vs[t * D + e % D];
            }
        }
        if (lid < D) {
            for (var t = 0u; t < TS; t++) {
                kacc += ks[t * D + lid];
            }
        }
        workgroupBarrier();
    }
    let block = p.d * p.d + p.d;
    let base = g * block;
    for (var r = 0u; r < R; r++) {
        let e = lid + r * WG;
        let a = e / D;
        let c = e % D;
        if (e < D * D && a < p.d && c < p.d) {
            partial[base + a * p.d + c] = acc[r];
        }
    }
    if (lid < p.d) {
        partial[base + p.d * p.d + lid] = kacc;
    }
}
#endif

#if REDUCE
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> kv: array<f32>;

@compute @workgroup_size(256)
fn sla_reduce(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let block = p.d * p.d + p.d;
    let i = linear_group(wg, nwg) * WG + lid;
    if (i >= p.bh * block) {
        return;
    }
    let bh = i / block;
    let e = i % block;
    var s = 0.0;
    for (var c = 0u; c < p.chunks; c++) {
        s += partial[(bh * p.chunks + c) * block + e];
    }
    kv[i] = s;
}
#endif

#if OUT
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> kv: array<f32>;
@group(0) @binding(4) var<storage, read> dwc_w: array<f32>;
@group(0) @binding(5) var<storage, read> dwc_b: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const D: u32 = {{D}}u;
// Query tokens per workgroup; WG / D rows of tokens are processed at a time.
const TILE: u32 = 64u;

var<workgroup> ksum: array<f32, D>;

// Channel `col` of token `tok` (of the height×width image) of v in sequence `b`, linearly
// interpolated from the nk key/value tokens when nk ≠ n.
fn v_image(b: u32, tok: u32, col: u32) -> f32 {
    if (p.nk == p.n) {
        return v[p.v_off + (b * p.nk + tok) * p.v_stride + col];
    }
    // PyTorch's area_pixel_compute_source_index (align_corners = False, clamped at 0).
    let src = max(p.interp_scale * (f32(tok) + 0.5) - 0.5, 0.0);
    let j0 = min(u32(src), p.nk - 1u);
    let j1 = min(j0 + 1u, p.nk - 1u);
    let l1 = src - f32(j0);
    let row = p.v_off + b * p.nk * p.v_stride + col;
    return (1.0 - l1) * v[row + j0 * p.v_stride] + l1 * v[row + j1 * p.v_stride];
}

@compute @workgroup_size(256)
fn sla_out(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = linear_group(wg, nwg);
    if (g >= p.groups) {
        return;
    }
    let tiles = (p.n + TILE - 1u) / TILE;
    let bh = g / tiles;
    let tile = g % tiles;
    let b = bh / p.heads;
    let col = (bh % p.heads) * p.d;
    let block = p.d * p.d + p.d;
    let kv_base = bh * block;
    let c = lid % D;
    if (lid < D) {
        ksum[lid] = select(0.0, kv[kv_base + p.d * p.d + min(lid, p.d - 1u)], lid < p.d);
    }
    // Column c of KV, zero past d.
    var kv_col: array<f32, D>;
    for (var a = 0u; a < D; a++) {
        kv_col[a] = 0.0;
        if (a < p.d && c < p.d) {
            kv_col[a] = kv[kv_base + a * p.d + c];
        }
    }
    workgroupBarrier();
    if (c >= p.d) {
        return;
    }
    let pad = p.ksize / 2u;
    let bias = dwc_b[c];
    for (var t = lid / D; t < TILE; t += WG / D) {
        let i = tile * TILE + t;
        if (i >= p.n) {
            break;
        }
        let q_row = p.q_off + (b * p.n + i) * p.q_stride + col;
        var num = 0.0;
        var den = 0.0;
        for (var a = 0u; a < D; a++) {
            if (a < p.d) {
                let qa = max(q[q_row + a], 0.0);
                num += qa * kv_col[a];
                den += qa * ksum[a];
            }
        }
        var acc = bias;
        let y = i / p.width;
        let x = i % p.width;
        for (var ky = 0u; ky < p.ksize; ky++) {
            // Image row y + ky − pad, skipped outside [0, height).
            let yy = y + ky;
            if (yy < pad || yy - pad >= p.height) {
                continue;
            }
            for (var kx = 0u; kx < p.ksize; kx++) {
                let xx = x + kx;
                if (xx < pad || xx - pad >= p.width) {
                    continue;
                }
                let w = dwc_w[(c * p.ksize + ky) * p.ksize + kx];
                acc += w * v_image(b, (yy - pad) * p.width + xx - pad, col + c);
            }
        }
        out[(b * p.n + i) * p.channels + col + c] = num / (den + 1e-6) + acc;
    }
}
#endif
