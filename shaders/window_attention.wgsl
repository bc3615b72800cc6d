// Softmax attention inside windows (Swin W-MSA / SW-MSA; with one window, plain global
// attention): for window w, head h (channels h·d .. h·d+d) and query t,
//   out[w, t, h·d + c] = Σ_s softmax_s(scale · q_t·k_s + bias[h, t, s] + mask[w mod nm, t, s]) v[s, h·d + c].
// Rows of q are grouped window by window (tq per window), rows of k and v likewise (tk per
// window). q, k and v are column ranges of row-major f32 tensors: element (row, col) of q is
// q[q_off + row·q_stride + col] (likewise k, v), so a fused qkv projection is read in place.
//
// One 64-invocation workgroup per (window, head, tile of 64 / S queries). The S = p.splits
// invocations of a query (adjacent lanes; S a power of two) take every S-th key, so no
// invocation runs more than ⌈tk / S⌉ keys: the host picks S to bound the work per invocation
// (llvmpipe ends every loop of an invocation after 65535 iterations in total) and to spread
// long windows over more workgroups. Keys and values are staged in workgroup memory KT at a
// time; each invocation keeps an online softmax (running max m, sum l, unnormalised output
// acc), and the S partial states of a query are merged through workgroup memory at the end.
// A query whose every logit is −inf outputs zeros. f32 throughout; per-head vectors are vec4.
//
// Defines:
//   D     head-dimension capacity (16, 32 or 64); the real head dimension p.d ≤ D
//   BIAS  binding 5 holds the bias [heads, tq, tk]
//   MASK  binding 6 (5 without BIAS) holds the mask [nm, tq, tk]

struct Params {
    d: u32,
    heads: u32,
    // Output row width: heads·d.
    channels: u32,
    tq: u32,
    tk: u32,
    // Mask windows (window w uses mask w mod nm).
    nm: u32,
    q_off: u32,
    q_stride: u32,
    k_off: u32,
    k_stride: u32,
    v_off: u32,
    v_stride: u32,
    scale: f32,
    // Invocations per query (a power of two ≤ 64).
    splits: u32,
    // Query tiles per (window, head): ⌈tq / (64 / splits)⌉.
    qtiles: u32,
    // Workgroups of the dispatch.
    groups: u32,
}

const D: u32 = {{D}}u;
// vec4s per head vector.
const D4: u32 = D / 4u;
const WG: u32 = 64u;
// Keys staged per step: KT·D = 1024 values of k and of v.
const KT: u32 = 1024u / D;
// The largest finite f32: the initial running max (WGSL has no infinity literal).
const F32_MAX: f32 = 3.40282347e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#if BIAS
@group(0) @binding(5) var<storage, read> bias: array<f32>;
#if MASK
@group(0) @binding(6) var<storage, read> mask: array<f32>;
#endif
#else
#if MASK
@group(0) @binding(5) var<storage, read> mask: array<f32>;
#endif
#endif

// Staged keys and values ([KT][D4]); reused to merge the split states.
var<workgroup> ks: array<vec4<f32>, 256>;
var<workgroup> vs: array<vec4<f32>, 256>;
// Per-invocation running max, then rescaled sum, during the merge.
var<workgroup> stat: array<f32, WG>;

// Components a4·4 .. a4·4+3 of a head vector: the element indices (clamped into the head, so
// always in bounds) and which of them are real channels (< d). No loops: llvmpipe counts every
// loop iteration against its per-invocation limit.
fn head_index(base: u32, a4: u32) -> vec4<u32> {
    return vec4<u32>(base) + min(vec4<u32>(a4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.d - 1u));
}

fn head_mask(a4: u32) -> vec4<bool> {
    return vec4<u32>(a4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.d);
}

fn load_q(base: u32, a4: u32) -> vec4<f32> {
    let i = head_index(base, a4);
    return select(vec4<f32>(0.0), vec4<f32>(q[i.x], q[i.y], q[i.z], q[i.w]), head_mask(a4));
}

fn load_k(base: u32, a4: u32) -> vec4<f32> {
    let i = head_index(base, a4);
    return select(vec4<f32>(0.0), vec4<f32>(k[i.x], k[i.y], k[i.z], k[i.w]), head_mask(a4));
}

fn load_v(base: u32, a4: u32) -> vec4<f32> {
    let i = head_index(base, a4);
    return select(vec4<f32>(0.0), vec4<f32>(v[i.x], v[i.y], v[i.z], v[i.w]), head_mask(a4));
}

@compute @workgroup_size(64)
fn window_attention(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wg.y * nwg.x + wg.x;
    // Uniform per workgroup: every invocation leaves together, before any barrier.
    if (g >= p.groups) {
        return;
    }
    let splits = p.splits;
    let per_tile = WG / splits;
    let wh = g / p.qtiles;
    let t = (g % p.qtiles) * per_tile + lid / splits;
    let split = lid % splits;
    let w = wh / p.heads;
    let h = wh % p.heads;
    let col = h * p.d;
    let live = t < p.tq;

    var qv: array<vec4<f32>, D4>;
    var acc: array<vec4<f32>, D4>;
    let q_base = p.q_off + (w * p.tq + min(t, p.tq - 1u)) * p.q_stride + col;
    for (var a4 = 0u; a4 < D4; a4++) {
        qv[a4] = load_q(q_base, a4);
        acc[a4] = vec4<f32>(0.0);
    }
    var m = -F32_MAX;
    var l = 0.0;
#if BIAS
    let bias_row = (h * p.tq + t) * p.tk;
#endif
#if MASK
    let mask_row = ((w % p.nm) * p.tq + t) * p.tk;
#endif
    for (var s0 = 0u; s0 < p.tk; s0 += KT) {
        for (var i = lid; i < KT * D4; i += WG) {
            let s = s0 + i / D4;
            let a4 = i % D4;
            var kval = vec4<f32>(0.0);
            var vval = vec4<f32>(0.0);
            if (s < p.tk) {
                let row = w * p.tk + s;
                kval = load_k(p.k_off + row * p.k_stride + col, a4);
                vval = load_v(p.v_off + row * p.v_stride + col, a4);
            }
            ks[i] = kval;
            vs[i] = vval;
        }
        workgroupBarrier();
        if (live) {
            let n = min(KT, p.tk - s0);
            for (var j = split; j < n; j += splits) {
                var qk = 0.0;
                for (var a4 = 0u; a4 < D4; a4++) {
                    qk += dot(qv[a4], ks[j * D4 + a4]);
                }
                var logit = p.scale * qk;
#if BIAS
                logit += bias[bias_row + s0 + j];
#endif
#if MASK
                logit += mask[mask_row + s0 + j];
#endif
                if (logit > m) {
                    // New running max: rescale what was accumulated under the old one.
                    let corr = exp(m - logit);
                    l *= corr;
                    for (var a4 = 0u; a4 < D4; a4++) {
                        acc[a4] *= corr;
                    }
                    m = logit;
                }
                // −inf (and anything that underflows) contributes nothing.
                let e = exp(logit - m);
                l += e;
                for (var a4 = 0u; a4 < D4; a4++) {
                    acc[a4] += e * vs[j * D4 + a4];
                }
            }
        }
        workgroupBarrier();
    }

    // Merge the splits of each query: common max M, f = exp(m − M), L = Σ l·f, out = Σ acc·f / L.
    let first = lid - split;
    stat[lid] = m;
    workgroupBarrier();
    var big = -F32_MAX;
    for (var s = 0u; s < splits; s++) {
        big = max(big, stat[first + s]);
    }
    let f = exp(m - big);
    workgroupBarrier();
    stat[lid] = l * f;
    workgroupBarrier();
    var total = 0.0;
    for (var s = 0u; s < splits; s++) {
        total += stat[first + s];
    }
    var inv = 0.0;
    if (total > 0.0) {
        inv = 1.0 / total;
    }
    let o = (w * p.tq + t) * p.channels + col;
    // Four vec4s (16 channels) of every invocation per round through `ks` (D4 is a multiple of 4).
    for (var r = 0u; r < D4; r += 4u) {
        for (var i = 0u; i < 4u; i++) {
            ks[lid * 4u + i] = acc[r + i] * f;
        }
        workgroupBarrier();
        if (live && split == 0u) {
            for (var i = 0u; i < 4u; i++) {
                var sum = vec4<f32>(0.0);
                for (var s = 0u; s < splits; s++) {
                    sum += ks[(first + s) * 4u + i];
                }
                for (var e = 0u; e < 4u; e++) {
                    let a = (r + i) * 4u + e;
                    if (a < p.d) {
                        out[o + a] = sum[e] * inv;
                    }
                }
            }
        }
        workgroupBarrier();
    }
}
