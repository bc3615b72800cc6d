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
// Five entry points, each compiled alone:
//   KV      sla_kv: one workgroup per (sequence·head, token chunk) sums k'ᵀv and k' over the
//           chunk into a partial [d·d + d] block (KV row-major, then ksum). With one chunk the
//           partial is the final block.
//   REDUCE  sla_reduce: sums the chunk partials of every (sequence·head) block.
//   OUT     sla_out: one workgroup per (sequence·head, tile of 64 query tokens) writes the merged
//           [rows, heads·d] output.
//   KV_ROWS, OUT_ROWS  sla_kv_rows, sla_out_rows: the KV and output passes for CPU adapters
//           (8-invocation workgroups with register blocks; see their comments below). The
//           output pass handles kernels of side ≤ 5.
// Defines:
//   D    (all but REDUCE) head-dimension capacity (16, 32 or 64): per-head arrays hold D
//        values; the real head dimension p.d ≤ D, the rest are zeros
//   POS  (KV, KV_ROWS) binding 4 holds the positional encoding [nk, heads·d] added to k
//   CP8  (*_ROWS) 8 channels per invocation (D = 64), else 4
//   VEC4 (*_ROWS) q, k, v, pos and KV are read as vec4s (offsets, strides and d are multiples
//        of 4)
//   INTERP (OUT_ROWS) nk ≠ n: v is interpolated to the query tokens for the conv
//   SUBGROUP (*_ROWS) vectors are shared across the 8 invocations with subgroupBroadcast
//
// All accumulation is f32. The host keeps every invocation under ~20 k loop iterations (chunks
// of ≤ 1024 tokens, K ≤ 31; sla_out_rows: runs of ≤ 1024 image rows, about 21 iterations
// each): llvmpipe silently ends an invocation's loops after 65535 iterations in total.

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
    // (OUT_ROWS) strips of 8 image columns, runs of image rows per strip, rows per run.
    strips: u32,
    runs: u32,
    run_rows: u32,
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

#if KV_ROWS
// ---------------------------------------------------------------------------------------------
// sla_kv_rows: the KV pass for CPU adapters (see `matmul_rows` in matmul.wgsl for why: there,
// every storage load costs a scalar load per SIMD lane and vector component, so the kernel
// maximises multiply-adds per loaded component). One workgroup of 8 invocations per
// (sequence·head, token chunk); invocation `lane` owns KV columns lane·CP .. lane·CP + CP − 1
// (all D rows) in registers. Per key token it loads CP channels of v; k' (and pos) are loaded
// a vec4 per invocation and passed round with subgroupBroadcast (SUBGROUP), or loaded whole
// by every invocation. Private arrays are indexed only by constants (helpers called with
// literal arguments; `if` on constants): a loop around them would leave them in per-lane memory.
#if VEC4
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
#endif
#if VEC4
@group(0) @binding(3) var<storage, read_write> partial: array<vec4<f32>>;
#else
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
#endif
#if POS
#if VEC4
@group(0) @binding(4) var<storage, read> pos: array<vec4<f32>>;
#else
@group(0) @binding(4) var<storage, read> pos: array<f32>;
#endif
#endif

const D: u32 = {{D}}u;
#if CP8
const CP: u32 = 8u;
#else
const CP: u32 = 4u;
#endif
// vec4s per row of an invocation's KV columns; vec4 groups of 32 channels of a head vector.
const CV: u32 = CP / 4u;
const QG: u32 = (D + 31u) / 32u;

// acc[a·CV + j]: KV row a, columns col + 4j .. col + 4j + 3.
var<private> acc: array<vec4<f32>, D * CV>;
// v of the current token, this invocation's columns.
var<private> vv: array<vec4<f32>, CV>;
// Σ k' over the chunk of channels 4(8g + lane) .. + 3 (group g).
var<private> ks: array<vec4<f32>, QG>;
var<private> lane: u32;
// First KV column of this invocation; first channel of the head in a row.
var<private> col: u32;
var<private> head_col: u32;

// Channels ch .. ch + 3 of a head vector whose channel 0 is element `base`; zero at channels ≥ d.
fn k4(base: u32, ch: u32) -> vec4<f32> {
#if VEC4
    return select(vec4<f32>(0.0), k[(base + min(ch, p.d - 4u)) / 4u], ch < p.d);
#else
    let c = vec4<u32>(ch) + vec4<u32>(0u, 1u, 2u, 3u);
    let i = vec4<u32>(base) + min(c, vec4<u32>(p.d - 1u));
    return select(vec4<f32>(0.0), vec4<f32>(k[i.x], k[i.y], k[i.z], k[i.w]), c < vec4<u32>(p.d));
#endif
}

fn v4(base: u32, ch: u32) -> vec4<f32> {
#if VEC4
    return select(vec4<f32>(0.0), v[(base + min(ch, p.d - 4u)) / 4u], ch < p.d);
#else
    let c = vec4<u32>(ch) + vec4<u32>(0u, 1u, 2u, 3u);
    let i = vec4<u32>(base) + min(c, vec4<u32>(p.d - 1u));
    return select(vec4<f32>(0.0), vec4<f32>(v[i.x], v[i.y], v[i.z], v[i.w]), c < vec4<u32>(p.d));
#endif
}

#if POS
fn pos4(base: u32, ch: u32) -> vec4<f32> {
#if VEC4
    return select(vec4<f32>(0.0), pos[(base + min(ch, p.d - 4u)) / 4u], ch < p.d);
#else
    let c = vec4<u32>(ch) + vec4<u32>(0u, 1u, 2u, 3u);
    let i = vec4<u32>(base) + min(c, vec4<u32>(p.d - 1u));
    return select(vec4<f32>(0.0), vec4<f32>(pos[i.x], pos[i.y], pos[i.z], pos[i.w]), c < vec4<u32>(p.d));
#endif
}
#endif

// k' = relu(k + pos), channels ch .. ch + 3, of key row `row` (token `tok` of its sequence).
fn kp4(row: u32, tok: u32, ch: u32) -> vec4<f32> {
    var x = k4(p.k_off + row * p.k_stride + head_col, ch);
#if POS
    x += pos4(tok * p.channels + head_col, ch);
#endif
    return max(x, vec4<f32>(0.0));
}

// KV row a += s · v (this invocation's columns).
fn kv_row(a: u32, s: f32) {
    acc[a * CV] = fma(vec4<f32>(s), vv[0], acc[a * CV]);
#if CP8
    acc[a * CV + 1u] = fma(vec4<f32>(s), vv[1], acc[a * CV + 1u]);
#endif
}

// KV rows 4r .. 4r + 3 += x.xyzw · v.
fn kv_rows4(r: u32, x: vec4<f32>) {
    kv_row(4u * r, x.x);
    kv_row(4u * r + 1u, x.y);
    kv_row(4u * r + 2u, x.z);
    kv_row(4u * r + 3u, x.w);
}

#if SUBGROUP
// Group g of k': invocation l holds channels 4(8g + l) .. + 3; every invocation takes all.
fn kv_group(g: u32, x: vec4<f32>) {
    kv_rows4(8u * g, subgroupBroadcast(x, 0u));
    kv_rows4(8u * g + 1u, subgroupBroadcast(x, 1u));
    kv_rows4(8u * g + 2u, subgroupBroadcast(x, 2u));
    kv_rows4(8u * g + 3u, subgroupBroadcast(x, 3u));
    if (D > 16u) {
        kv_rows4(8u * g + 4u, subgroupBroadcast(x, 4u));
        kv_rows4(8u * g + 5u, subgroupBroadcast(x, 5u));
        kv_rows4(8u * g + 6u, subgroupBroadcast(x, 6u));
        kv_rows4(8u * g + 7u, subgroupBroadcast(x, 7u));
    }
}

fn token(row: u32, tok: u32) {
    vv[0] = v4(p.v_off + row * p.v_stride + head_col, col);
#if CP8
    vv[1] = v4(p.v_off + row * p.v_stride + head_col, col + 4u);
#endif
    let x0 = kp4(row, tok, 4u * lane);
    ks[0] += x0;
    kv_group(0u, x0);
#if CP8
    let x1 = kp4(row, tok, 4u * (8u + lane));
    ks[1] += x1;
    kv_group(1u, x1);
#endif
}
#else
// vec4 r of k' (channels 4r .. 4r + 3), loaded by every invocation; the one whose group slot
// it is (lane = r mod 8) also adds it to the key sum.
fn kv_vec(r: u32, row: u32, tok: u32) {
    let x = kp4(row, tok, 4u * r);
    kv_rows4(r, x);
    ks[r / 8u] += select(vec4<f32>(0.0), x, r % 8u == lane);
}

fn token(row: u32, tok: u32) {
    vv[0] = v4(p.v_off + row * p.v_stride + head_col, col);
#if CP8
    vv[1] = v4(p.v_off + row * p.v_stride + head_col, col + 4u);
#endif
    kv_vec(0u, row, tok);
    kv_vec(1u, row, tok);
    kv_vec(2u, row, tok);
    kv_vec(3u, row, tok);
    if (D > 16u) {
        kv_vec(4u, row, tok);
        kv_vec(5u, row, tok);
        kv_vec(6u, row, tok);
        kv_vec(7u, row, tok);
    }
    if (D > 32u) {
        kv_vec(8u, row, tok);
        kv_vec(9u, row, tok);
        kv_vec(10u, row, tok);
        kv_vec(11u, row, tok);
        kv_vec(12u, row, tok);
        kv_vec(13u, row, tok);
        kv_vec(14u, row, tok);
        kv_vec(15u, row, tok);
    }
}
#endif

// Elements c .. c + 3 of a row of the partial block (from element `base`), up to column d.
fn write4(base: u32, c: u32, x: vec4<f32>) {
#if VEC4
    if (c < p.d) {
        partial[(base + c) / 4u] = x;
    }
#else
    if (c < p.d) {
        partial[base + c] = x.x;
    }
    if (c + 1u < p.d) {
        partial[base + c + 1u] = x.y;
    }
    if (c + 2u < p.d) {
        partial[base + c + 2u] = x.z;
    }
    if (c + 3u < p.d) {
        partial[base + c + 3u] = x.w;
    }
#endif
}

// vec4 j of KV row 4r + e, the row chosen at run time: a select per candidate (a run-time
// index would put `acc` in per-lane memory).
fn pick4(r: u32, e: u32, at: u32, j: u32, x: vec4<f32>) -> vec4<f32> {
    return select(x, acc[(4u * r + e) * CV + j], 4u * r + e == at);
}

fn pick16(r: u32, at: u32, j: u32, x: vec4<f32>) -> vec4<f32> {
    var y = pick4(r, 0u, at, j, x);
    y = pick4(r, 1u, at, j, y);
    y = pick4(r, 2u, at, j, y);
    y = pick4(r, 3u, at, j, y);
    y = pick4(r + 1u, 0u, at, j, y);
    y = pick4(r + 1u, 1u, at, j, y);
    y = pick4(r + 1u, 2u, at, j, y);
    y = pick4(r + 1u, 3u, at, j, y);
    y = pick4(r + 2u, 0u, at, j, y);
    y = pick4(r + 2u, 1u, at, j, y);
    y = pick4(r + 2u, 2u, at, j, y);
    y = pick4(r + 2u, 3u, at, j, y);
    y = pick4(r + 3u, 0u, at, j, y);
    y = pick4(r + 3u, 1u, at, j, y);
    y = pick4(r + 3u, 2u, at, j, y);
    return pick4(r + 3u, 3u, at, j, y);
}

fn kv_row_at(a: u32, j: u32) -> vec4<f32> {
    var x = pick16(0u, a, j, vec4<f32>(0.0));
    if (D > 16u) {
        x = pick16(4u, a, j, x);
    }
    if (D > 32u) {
        x = pick16(8u, a, j, x);
        x = pick16(12u, a, j, x);
    }
    return x;
}

@compute @workgroup_size(8)
fn sla_kv_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUP
    @builtin(subgroup_invocation_id) sid: u32,
#endif
    @builtin(local_invocation_index) lid: u32,
) {
    let g = linear_group(wg, nwg);
    if (g >= p.groups) {
        return;
    }
#if SUBGROUP
    lane = sid;
#else
    lane = lid;
#endif
    let bh = g / p.chunks;
    let chunk = g % p.chunks;
    let b = bh / p.heads;
    head_col = (bh % p.heads) * p.d;
    col = lane * CP;
    let begin = chunk * p.chunk;
    let end = min(begin + p.chunk, p.nk);
    for (var t = begin; t < end; t++) {
        token(b * p.nk + t, t);
    }
    let base = g * (p.d * p.d + p.d);
    // Rows in a run-time loop: keeps the stores few in the code.
    for (var a = 0u; a < p.d; a++) {
        write4(base + a * p.d, col, kv_row_at(a, 0u));
#if CP8
        write4(base + a * p.d, col + 4u, kv_row_at(a, 1u));
#endif
    }
    write4(base + p.d * p.d, 4u * lane, ks[0]);
#if CP8
    write4(base + p.d * p.d, 4u * (8u + lane), ks[1]);
#endif
}
#endif

#if OUT_ROWS
// ---------------------------------------------------------------------------------------------
// sla_out_rows: the output pass for CPU adapters (kernels of side K ≤ 5; see sla_kv_rows).
// One workgroup of 8 invocations per (sequence·head, strip of 8 image columns, run of rows);
// invocation `lane` owns channels lane·CP .. lane·CP + CP − 1 of the head and keeps its columns
// of KV, its conv weights (a 5×5 window; smaller kernels sit centred in it with zeros around)
// and a sliding window of 5 image rows × 12 columns of v in registers. Per image row of the
// run it loads the next row of v (12 pixels), computes the conv of the strip's 8 tokens from
// the window, then per token loads q' a vec4 per invocation, passes it round with
// subgroupBroadcast (SUBGROUP; else every invocation loads it whole) and stores
// out = q'·KV / (q'·ksum + 1e-6) + bias + conv once.
// Private arrays are indexed only by constants. Values that arrive in a run-time loop (KV rows,
// weights, pixels) are put in place with a select per slot, and the conv sum of a token is
// picked the same way: the loops keep the code, and the number of load instructions (each a
// loop over the SIMD lanes in the compiled code), small, which keeps compile time down.
#if VEC4
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kv: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> kv: array<f32>;
#endif
@group(0) @binding(4) var<storage, read> dwc_w: array<f32>;
@group(0) @binding(5) var<storage, read> dwc_b: array<f32>;
#if VEC4
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;
#else
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
#endif

const D: u32 = {{D}}u;
#if CP8
const CP: u32 = 8u;
#else
const CP: u32 = 4u;
#endif
const CV: u32 = CP / 4u;
// Strip width (tokens per row), tap window side, pixels per window row.
const TW: u32 = 8u;
const KW: u32 = 5u;
const PW: u32 = TW + KW - 1u;

// kvr[a·CV + j]: KV row a, this invocation's channels col + 4j .. + 3.
var<private> kvr: array<vec4<f32>, D * CV>;
#if SUBGROUP
// ksum, channels 4(8g + lane) .. + 3 (group g).
var<private> ksl: array<vec4<f32>, (D + 31u) / 32u>;
#else
// ksum, channels 4r .. 4r + 3.
var<private> ksa: array<vec4<f32>, D / 4u>;
#endif
// wr[(ty·5 + tx)·CV + j]: tap (ty, tx) of the 5×5 window, this invocation's channels.
var<private> wr: array<vec4<f32>, KW * KW * CV>;
var<private> bias4: array<vec4<f32>, CV>;
// win[(ry·PW + i)·CV + j]: v at window row ry (0 = top), image column x0 + i − 2.
var<private> win: array<vec4<f32>, KW * PW * CV>;
// cv[ox·CV + j]: conv sum of the current row's token x0 + ox.
var<private> cv: array<vec4<f32>, TW * CV>;
// Attention numerator of the current token.
var<private> num: array<vec4<f32>, CV>;
var<private> lane: u32;
var<private> col: u32;
var<private> head_col: u32;
var<private> seq: u32;
var<private> x0: u32;

fn sel4(ch: u32, x: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), x, ch < p.d);
}

// Channels ch .. ch + 3 of a head vector whose channel 0 is element `base`; zero at channels ≥ d.
fn q4(base: u32, ch: u32) -> vec4<f32> {
#if VEC4
    return sel4(ch, q[(base + min(ch, p.d - 4u)) / 4u]);
#else
    let c = vec4<u32>(ch) + vec4<u32>(0u, 1u, 2u, 3u);
    let i = vec4<u32>(base) + min(c, vec4<u32>(p.d - 1u));
    return select(vec4<f32>(0.0), vec4<f32>(q[i.x], q[i.y], q[i.z], q[i.w]), c < vec4<u32>(p.d));
#endif
}

fn v4(base: u32, ch: u32) -> vec4<f32> {
#if VEC4
    return sel4(ch, v[(base + min(ch, p.d - 4u)) / 4u]);
#else
    let c = vec4<u32>(ch) + vec4<u32>(0u, 1u, 2u, 3u);
    let i = vec4<u32>(base) + min(c, vec4<u32>(p.d - 1u));
    return select(vec4<f32>(0.0), vec4<f32>(v[i.x], v[i.y], v[i.z], v[i.w]), c < vec4<u32>(p.d));
#endif
}

fn kv4(base: u32, ch: u32) -> vec4<f32> {
#if VEC4
    return sel4(ch, kv[(base + min(ch, p.d - 4u)) / 4u]);
#else
    let c = vec4<u32>(ch) + vec4<u32>(0u, 1u, 2u, 3u);
    let i = vec4<u32>(base) + min(c, vec4<u32>(p.d - 1u));
    return select(vec4<f32>(0.0), vec4<f32>(kv[i.x], kv[i.y], kv[i.z], kv[i.w]), c < vec4<u32>(p.d));
#endif
}

// Output channels ch .. ch + 3 of token `tok` of the sequence (stores skip channels ≥ d).
fn out_index(tok: u32, ch: u32) -> u32 {
    return (seq * p.n + tok) * p.channels + head_col + ch;
}

fn out_store(tok: u32, ch: u32, x: vec4<f32>) {
    if (ch >= p.d) {
        return;
    }
    let i = out_index(tok, ch);
#if VEC4
    out[i / 4u] = x;
#else
    out[i] = x.x;
    if (ch + 1u < p.d) {
        out[i + 1u] = x.y;
    }
    if (ch + 2u < p.d) {
        out[i + 2u] = x.z;
    }
    if (ch + 3u < p.d) {
        out[i + 3u] = x.w;
    }
#endif
}

// Channels c .. c + 3 of a per-channel vector: element c·stride + t of `dwc_w` (which = 0) or
// `dwc_b` (1, t = 0, stride 1); zero at channels ≥ d.
fn chan4(which: u32, c: u32, stride: u32, t: u32) -> vec4<f32> {
    let cc = vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u);
    let i = min(cc, vec4<u32>(p.d - 1u)) * stride + vec4<u32>(t);
    var x: vec4<f32>;
    if (which == 0u) {
        x = vec4<f32>(dwc_w[i.x], dwc_w[i.y], dwc_w[i.z], dwc_w[i.w]);
    } else {
        x = vec4<f32>(dwc_b[i.x], dwc_b[i.y], dwc_b[i.z], dwc_b[i.w]);
    }
    return select(vec4<f32>(0.0), x, cc < vec4<u32>(p.d));
}

// ---- setup: KV columns, ksum, weights, bias (run-time loops, selects into place) ----

fn put_kv(a: u32, at: u32, x0v: vec4<f32>, x1v: vec4<f32>) {
    kvr[a * CV] = select(kvr[a * CV], x0v, a == at);
#if CP8
    kvr[a * CV + 1u] = select(kvr[a * CV + 1u], x1v, a == at);
#endif
}

fn put_kv4(r: u32, at: u32, x0v: vec4<f32>, x1v: vec4<f32>) {
    put_kv(4u * r, at, x0v, x1v);
    put_kv(4u * r + 1u, at, x0v, x1v);
    put_kv(4u * r + 2u, at, x0v, x1v);
    put_kv(4u * r + 3u, at, x0v, x1v);
}

// kvr row `at` = (x0v, x1v).
fn put_kv_row(at: u32, x0v: vec4<f32>, x1v: vec4<f32>) {
    put_kv4(0u, at, x0v, x1v);
    put_kv4(1u, at, x0v, x1v);
    put_kv4(2u, at, x0v, x1v);
    put_kv4(3u, at, x0v, x1v);
    if (D > 16u) {
        put_kv4(4u, at, x0v, x1v);
        put_kv4(5u, at, x0v, x1v);
        put_kv4(6u, at, x0v, x1v);
        put_kv4(7u, at, x0v, x1v);
    }
    if (D > 32u) {
        put_kv4(8u, at, x0v, x1v);
        put_kv4(9u, at, x0v, x1v);
        put_kv4(10u, at, x0v, x1v);
        put_kv4(11u, at, x0v, x1v);
        put_kv4(12u, at, x0v, x1v);
        put_kv4(13u, at, x0v, x1v);
        put_kv4(14u, at, x0v, x1v);
        put_kv4(15u, at, x0v, x1v);
    }
}

fn put_w(t: u32, at: u32, x0v: vec4<f32>, x1v: vec4<f32>) {
    wr[t * CV] = select(wr[t * CV], x0v, t == at);
#if CP8
    wr[t * CV + 1u] = select(wr[t * CV + 1u], x1v, t == at);
#endif
}

fn put_w5(ty: u32, at: u32, x0v: vec4<f32>, x1v: vec4<f32>) {
    put_w(ty * KW, at, x0v, x1v);
    put_w(ty * KW + 1u, at, x0v, x1v);
    put_w(ty * KW + 2u, at, x0v, x1v);
    put_w(ty * KW + 3u, at, x0v, x1v);
    put_w(ty * KW + 4u, at, x0v, x1v);
}

#if SUBGROUP
#else
fn put_ks(r: u32, at: u32, x: vec4<f32>) {
    ksa[r] = select(ksa[r], x, r == at);
}

fn put_ks4(g: u32, at: u32, x: vec4<f32>) {
    put_ks(4u * g, at, x);
    put_ks(4u * g + 1u, at, x);
    put_ks(4u * g + 2u, at, x);
    put_ks(4u * g + 3u, at, x);
}
#endif

fn setup(kv_base: u32) {
    for (var a = 0u; a < p.d; a++) {
        let row = kv_base + a * p.d;
        let x = kv4(row, col);
#if CP8
        put_kv_row(a, x, kv4(row, col + 4u));
#else
        put_kv_row(a, x, x);
#endif
    }
    let ks_base = kv_base + p.d * p.d;
#if SUBGROUP
    ksl[0] = kv4(ks_base, 4u * lane);
#if CP8
    ksl[1] = kv4(ks_base, 4u * (8u + lane));
#endif
#else
    for (var r = 0u; r < (p.d + 3u) / 4u; r++) {
        let x = kv4(ks_base, 4u * r);
        put_ks4(0u, r, x);
        if (D > 16u) {
            put_ks4(1u, r, x);
        }
        if (D > 32u) {
            put_ks4(2u, r, x);
            put_ks4(3u, r, x);
        }
    }
#endif
    // Tap t = ty·5 + tx of the window is kernel tap (ty − o, tx − o), o = 2 − K/2.
    let o = 2u - p.ksize / 2u;
    let kk = p.ksize * p.ksize;
    for (var t = 0u; t < KW * KW; t++) {
        let ty = t / KW;
        let tx = t % KW;
        if (ty >= o && tx >= o && ty - o < p.ksize && tx - o < p.ksize) {
            let kt = (ty - o) * p.ksize + tx - o;
            let w0 = chan4(0u, col, kk, kt);
#if CP8
            let w1 = chan4(0u, col + 4u, kk, kt);
#else
            let w1 = w0;
#endif
            put_w5(0u, t, w0, w1);
            put_w5(1u, t, w0, w1);
            put_w5(2u, t, w0, w1);
            put_w5(3u, t, w0, w1);
            put_w5(4u, t, w0, w1);
        }
    }
    bias4[0] = chan4(1u, col, 1u, 0u);
#if CP8
    bias4[1] = chan4(1u, col + 4u, 1u, 0u);
#endif
}

// ---- attention of one token ----

// num += s · KV row a.
fn num_row(a: u32, s: f32) {
    num[0] = fma(vec4<f32>(s), kvr[a * CV], num[0]);
#if CP8
    num[1] = fma(vec4<f32>(s), kvr[a * CV + 1u], num[1]);
#endif
}

fn num_rows4(r: u32, x: vec4<f32>) {
    num_row(4u * r, x.x);
    num_row(4u * r + 1u, x.y);
    num_row(4u * r + 2u, x.z);
    num_row(4u * r + 3u, x.w);
}

#if SUBGROUP
// Group g of q': invocation l holds channels 4(8g + l) .. + 3; every invocation takes all.
fn num_group(g: u32, x: vec4<f32>) {
    num_rows4(8u * g, subgroupBroadcast(x, 0u));
    num_rows4(8u * g + 1u, subgroupBroadcast(x, 1u));
    num_rows4(8u * g + 2u, subgroupBroadcast(x, 2u));
    num_rows4(8u * g + 3u, subgroupBroadcast(x, 3u));
    if (D > 16u) {
        num_rows4(8u * g + 4u, subgroupBroadcast(x, 4u));
        num_rows4(8u * g + 5u, subgroupBroadcast(x, 5u));
        num_rows4(8u * g + 6u, subgroupBroadcast(x, 6u));
        num_rows4(8u * g + 7u, subgroupBroadcast(x, 7u));
    }
}

// q'·ksum and the numerator of token `tok`.
fn attend(tok: u32) -> f32 {
    let base = p.q_off + (seq * p.n + tok) * p.q_stride + head_col;
    let x0 = max(q4(base, 4u * lane), vec4<f32>(0.0));
    var part = dot(x0, ksl[0]);
    num_group(0u, x0);
#if CP8
    let x1 = max(q4(base, 4u * (8u + lane)), vec4<f32>(0.0));
    part += dot(x1, ksl[1]);
    num_group(1u, x1);
#endif
    return subgroupAdd(part);
}
#else
fn num_vec(base: u32, r: u32) -> f32 {
    let x = max(q4(base, 4u * r), vec4<f32>(0.0));
    num_rows4(r, x);
    return dot(x, ksa[r]);
}

fn attend(tok: u32) -> f32 {
    let base = p.q_off + (seq * p.n + tok) * p.q_stride + head_col;
    var den = num_vec(base, 0u) + num_vec(base, 1u) + num_vec(base, 2u) + num_vec(base, 3u);
    if (D > 16u) {
        den += num_vec(base, 4u) + num_vec(base, 5u) + num_vec(base, 6u) + num_vec(base, 7u);
    }
    if (D > 32u) {
        den += num_vec(base, 8u) + num_vec(base, 9u) + num_vec(base, 10u) + num_vec(base, 11u);
        den += num_vec(base, 12u) + num_vec(base, 13u) + num_vec(base, 14u) + num_vec(base, 15u);
    }
    return den;
}
#endif

// ---- the convolution ----

// Channels of v at image pixel (y, x) of the sequence (zero outside the image); INTERP: linearly
// interpolated from the nk key/value tokens (nk ≠ n).
fn v_pixel(y: u32, x: u32, ch: u32) -> vec4<f32> {
    if (y >= p.height || x >= p.width) {
        return vec4<f32>(0.0);
    }
    let tok = y * p.width + x;
    let head = p.v_off + seq * p.nk * p.v_stride + head_col;
#if INTERP
    // PyTorch's area_pixel_compute_source_index (align_corners = False, clamped at 0).
    let src = max(p.interp_scale * (f32(tok) + 0.5) - 0.5, 0.0);
    let j0 = min(u32(src), p.nk - 1u);
    let j1 = min(j0 + 1u, p.nk - 1u);
    let l1 = src - f32(j0);
    return (1.0 - l1) * v4(head + j0 * p.v_stride, ch) + l1 * v4(head + j1 * p.v_stride, ch);
#else
    return v4(head + tok * p.v_stride, ch);
#endif
}

fn put_px(i: u32, at: u32, x0v: vec4<f32>, x1v: vec4<f32>) {
    let o = ((KW - 1u) * PW + i) * CV;
    win[o] = select(win[o], x0v, i == at);
#if CP8
    win[o + 1u] = select(win[o + 1u], x1v, i == at);
#endif
}

// Window rows move up one: row ry takes row ry + 1.
fn shift_px(ry: u32, i: u32) {
    win[(ry * PW + i) * CV] = win[((ry + 1u) * PW + i) * CV];
#if CP8
    win[(ry * PW + i) * CV + 1u] = win[((ry + 1u) * PW + i) * CV + 1u];
#endif
}

fn shift_row(ry: u32) {
    shift_px(ry, 0u);
    shift_px(ry, 1u);
    shift_px(ry, 2u);
    shift_px(ry, 3u);
    shift_px(ry, 4u);
    shift_px(ry, 5u);
    shift_px(ry, 6u);
    shift_px(ry, 7u);
    shift_px(ry, 8u);
    shift_px(ry, 9u);
    shift_px(ry, 10u);
    shift_px(ry, 11u);
}

// Shifts the window and loads image row y (wrapped values below 0 read as outside) into its
// bottom row.
fn next_row(y: u32) {
    shift_row(0u);
    shift_row(1u);
    shift_row(2u);
    shift_row(3u);
    for (var i = 0u; i < PW; i++) {
        let x = x0 + i - 2u;
        let a = v_pixel(y, x, col);
#if CP8
        let b = v_pixel(y, x, col + 4u);
#else
        let b = a;
#endif
        put_px(0u, i, a, b);
        put_px(1u, i, a, b);
        put_px(2u, i, a, b);
        put_px(3u, i, a, b);
        put_px(4u, i, a, b);
        put_px(5u, i, a, b);
        put_px(6u, i, a, b);
        put_px(7u, i, a, b);
        put_px(8u, i, a, b);
        put_px(9u, i, a, b);
        put_px(10u, i, a, b);
        put_px(11u, i, a, b);
    }
}

// The five taps of window row ry for channel vec4 j of token ox.
fn taps5(ox: u32, ry: u32, j: u32, s: vec4<f32>) -> vec4<f32> {
    let w = ry * KW * CV + j;
    let x = (ry * PW + ox) * CV + j;
    var r = fma(wr[w], win[x], s);
    r = fma(wr[w + CV], win[x + CV], r);
    r = fma(wr[w + 2u * CV], win[x + 2u * CV], r);
    r = fma(wr[w + 3u * CV], win[x + 3u * CV], r);
    return fma(wr[w + 4u * CV], win[x + 4u * CV], r);
}

fn conv_j(ox: u32, j: u32) {
    var s = taps5(ox, 0u, j, vec4<f32>(0.0));
    s = taps5(ox, 1u, j, s);
    s = taps5(ox, 2u, j, s);
    s = taps5(ox, 3u, j, s);
    cv[ox * CV + j] = taps5(ox, 4u, j, s);
}

// Conv sum of token x0 + ox of the window's middle row.
fn conv_px(ox: u32) {
    conv_j(ox, 0u);
#if CP8
    conv_j(ox, 1u);
#endif
}

// cv of token ox (chosen at run time), channel vec4 j.
fn pick_cv(ox: u32, j: u32) -> vec4<f32> {
    var c = cv[j];
    c = select(c, cv[CV + j], ox == 1u);
    c = select(c, cv[2u * CV + j], ox == 2u);
    c = select(c, cv[3u * CV + j], ox == 3u);
    c = select(c, cv[4u * CV + j], ox == 4u);
    c = select(c, cv[5u * CV + j], ox == 5u);
    c = select(c, cv[6u * CV + j], ox == 6u);
    return select(c, cv[7u * CV + j], ox == 7u);
}

@compute @workgroup_size(8)
fn sla_out_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUP
    @builtin(subgroup_invocation_id) sid: u32,
#endif
    @builtin(local_invocation_index) lid: u32,
) {
    let g = linear_group(wg, nwg);
    if (g >= p.groups) {
        return;
    }
#if SUBGROUP
    lane = sid;
#else
    lane = lid;
#endif
    // p.strips strips of 8 columns × p.runs runs of p.run_rows image rows per head.
    let per_head = p.strips * p.runs;
    let bh = g / per_head;
    let strip = g % per_head % p.strips;
    let run = g % per_head / p.strips;
    seq = bh / p.heads;
    head_col = (bh % p.heads) * p.d;
    col = lane * CP;
    x0 = strip * TW;
    setup(bh * (p.d * p.d + p.d));
    let y_begin = run * p.run_rows;
    let y_end = min(y_begin + p.run_rows, p.height);
    // Input row r − 2 enters the window; output row r − 4 is then complete (unsigned
    // wrap-around below 0 reads as outside the image).
    for (var r = y_begin; r < y_end + 4u; r++) {
        next_row(r - 2u);
        if (r >= y_begin + 4u) {
            let y = r - 4u;
            conv_px(0u);
            conv_px(1u);
            conv_px(2u);
            conv_px(3u);
            conv_px(4u);
            conv_px(5u);
            conv_px(6u);
            conv_px(7u);
            for (var ox = 0u; ox < min(TW, p.width - x0); ox++) {
                let tok = y * p.width + x0 + ox;
                num[0] = vec4<f32>(0.0);
#if CP8
                num[1] = vec4<f32>(0.0);
#endif
                let z = 1.0 / (attend(tok) + 1e-6);
                out_store(tok, col, num[0] * z + bias4[0] + pick_cv(ox, 0u));
#if CP8
                out_store(tok, col + 4u, num[1] * z + bias4[1] + pick_cv(ox, 1u));
#endif
            }
        }
    }
}
#endif
