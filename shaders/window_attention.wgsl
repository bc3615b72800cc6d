// Softmax attention inside windows (Swin W-MSA / SW-MSA; with one window, plain global
// attention): for window w, head h (channels h·d .. h·d+d) and query t,
//   out[w, t, h·d + c] = Σ_s softmax_s(scale · q_t·k_s + bias[h, t, s] + mask[w mod nm, t, s]) v[s, h·d + c].
// Rows of q are grouped window by window (tq per window), rows of k and v likewise (tk per
// window). q, k and v are column ranges of row-major f32 tensors: element (row, col) of q is
// q[q_off + row·q_stride + col] (likewise k, v), so a fused qkv projection is read in place.
//
// `window_attention` (GPUs; also CPU adapters for windows too long for the CPU kernel's loop
// budget): one 64-invocation workgroup per (window, head, tile of 64 / S queries). The S = p.splits
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
//   ROWS  compile `window_attention_rows` (CPU adapters; described above it) instead; with it:
//     QPL4      four queries per invocation (else two)
//     VEC4      q, k, v and the output are read and written as vec4s (offsets, strides and d
//               are multiples of 4)
//     SUBGROUP  k and v are shared across the 8 invocations with subgroupBroadcast

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
#if VEC4
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#endif
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

#if VEC4
#else
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

#endif
#if ROWS
// ---------------------------------------------------------------------------------------------
// window_attention_rows: the kernel for CPU adapters (see `matmul_rows` in matmul.wgsl: there
// every storage load costs a scalar load per SIMD lane and vector component, so kernels
// maximise arithmetic per loaded component). One workgroup of 8 invocations per (window, head,
// run of 8·QPL queries); invocation `lane` owns queries run·8·QPL + 8u + lane (slots u < QPL)
// with their q, running max, sum and output in registers, and walks every key of the window,
// four at a time, under an online softmax (one rescale per four keys). Each key's k and v are
// loaded a vec4 per invocation and passed round with subgroupBroadcast (SUBGROUP; else loaded
// whole by every invocation, in a loop over its vec4s), so one load serves 8·QPL queries.
// Private arrays are indexed only by constants: the work is spelled out in helpers called with
// literal arguments, and values that arrive in a run-time loop (q, the non-subgroup k and v)
// are selected into place, as are the outputs out of it (a run-time index would leave the
// arrays in per-lane memory). Loops: ⌈tk / 4⌉ steps (without subgroups each with 8 loops over
// the vec4s); the host checks them against llvmpipe's 65535-iteration budget.
#if QPL4
const QPL: u32 = 4u;
#else
const QPL: u32 = 2u;
#endif

// qv[u·D4 + a] and acc[u·D4 + a]: q and the unnormalised output of slot u, channels 4a .. 4a + 3.
var<private> qv: array<vec4<f32>, QPL * D4>;
var<private> acc: array<vec4<f32>, QPL * D4>;
// Running max and sum of each slot, and its query (clamped into the window for loads).
var<private> mx: array<f32, QPL>;
var<private> sm: array<f32, QPL>;
var<private> qi: array<u32, QPL>;
// One key's k, then one key's v, all channels (kb[a]: channels 4a .. 4a + 3).
var<private> kb: array<vec4<f32>, D4>;
// lg[u·4 + j]: logit, then softmax weight, of slot u against key s0 + j of the current four.
var<private> lg: array<f32, QPL * 4u>;
var<private> lane: u32;
var<private> win: u32;
var<private> head: u32;

// Channels 4a .. 4a + 3 of the head vector at element `base` of q, k or v (which = 0, 1, 2);
// zero at channels ≥ d.
fn head4(which: u32, base: u32, a: u32) -> vec4<f32> {
#if VEC4
    let i = (base + min(4u * a, p.d - 4u)) / 4u;
    var x: vec4<f32>;
    if (which == 0u) {
        x = q[i];
    } else if (which == 1u) {
        x = k[i];
    } else {
        x = v[i];
    }
    return select(vec4<f32>(0.0), x, 4u * a < p.d);
#else
    if (which == 0u) {
        return load_q(base, a);
    } else if (which == 1u) {
        return load_k(base, a);
    }
    return load_v(base, a);
#endif
}

#if SUBGROUP
// Vector group g (channels 32g ..): invocation l loaded vec4 8g + l; every invocation takes all.
fn spread(g: u32, x: vec4<f32>) {
    kb[8u * g] = subgroupBroadcast(x, 0u);
    kb[8u * g + 1u] = subgroupBroadcast(x, 1u);
    kb[8u * g + 2u] = subgroupBroadcast(x, 2u);
    kb[8u * g + 3u] = subgroupBroadcast(x, 3u);
    if (D4 > 4u) {
        kb[8u * g + 4u] = subgroupBroadcast(x, 4u);
        kb[8u * g + 5u] = subgroupBroadcast(x, 5u);
        kb[8u * g + 6u] = subgroupBroadcast(x, 6u);
        kb[8u * g + 7u] = subgroupBroadcast(x, 7u);
    }
}

// kb = the head vector at element `base` of k (which = 1) or v (2).
fn fetch(which: u32, base: u32) {
    spread(0u, head4(which, base, lane));
    if (D4 > 8u) {
        spread(1u, head4(which, base, 8u + lane));
    }
}
#else
fn put_k(a: u32, at: u32, x: vec4<f32>) {
    kb[a] = select(kb[a], x, a == at);
}

// kb = the head vector at element `base` of k (which = 1) or v (2), loaded whole by every
// invocation in a run-time loop (one load instruction in the code) and selected into place.
fn fetch(which: u32, base: u32) {
    for (var a = 0u; a < (p.d + 3u) / 4u; a++) {
        let x = head4(which, base, a);
        put_k(0u, a, x);
        put_k(1u, a, x);
        put_k(2u, a, x);
        put_k(3u, a, x);
        if (D4 > 4u) {
            put_k(4u, a, x);
            put_k(5u, a, x);
            put_k(6u, a, x);
            put_k(7u, a, x);
        }
        if (D4 > 8u) {
            put_k(8u, a, x);
            put_k(9u, a, x);
            put_k(10u, a, x);
            put_k(11u, a, x);
            put_k(12u, a, x);
            put_k(13u, a, x);
            put_k(14u, a, x);
            put_k(15u, a, x);
        }
    }
}
#endif

// One term of slot u's q·k: channels 4a .. 4a + 3.
fn qk1(u: u32, a: u32) -> f32 {
    return dot(qv[u * D4 + a], kb[a]);
}

// q·k of slot u (k in kb).
fn qk(u: u32) -> f32 {
    var s = qk1(u, 0u) + qk1(u, 1u) + qk1(u, 2u) + qk1(u, 3u);
    if (D4 > 4u) {
        s += qk1(u, 4u) + qk1(u, 5u) + qk1(u, 6u) + qk1(u, 7u);
    }
    if (D4 > 8u) {
        s += qk1(u, 8u) + qk1(u, 9u) + qk1(u, 10u) + qk1(u, 11u);
        s += qk1(u, 12u) + qk1(u, 13u) + qk1(u, 14u) + qk1(u, 15u);
    }
    return s;
}

// lg[u·4 + j] = logit of slot u against key s (< tk).
fn logit(u: u32, j: u32, s: u32) {
    var x = p.scale * qk(u);
#if BIAS
    x += bias[(head * p.tq + qi[u]) * p.tk + s];
#endif
#if MASK
    x += mask[((win % p.nm) * p.tq + qi[u]) * p.tk + s];
#endif
    lg[u * 4u + j] = x;
}

// Key s0 + j (clamped into the window; past it the weight is zeroed later): every slot's logit.
fn key_logits(j: u32, s0: u32) {
    let s = min(s0 + j, p.tk - 1u);
    fetch(1u, p.k_off + (win * p.tk + s) * p.k_stride + head * p.d);
    logit(0u, j, s);
    logit(1u, j, s);
    if (QPL > 2u) {
        logit(2u, j, s);
        logit(3u, j, s);
    }
}

fn scale_acc(u: u32, f: f32) {
    let o = u * D4;
    acc[o] *= f;
    acc[o + 1u] *= f;
    acc[o + 2u] *= f;
    acc[o + 3u] *= f;
    if (D4 > 4u) {
        acc[o + 4u] *= f;
        acc[o + 5u] *= f;
        acc[o + 6u] *= f;
        acc[o + 7u] *= f;
    }
    if (D4 > 8u) {
        acc[o + 8u] *= f;
        acc[o + 9u] *= f;
        acc[o + 10u] *= f;
        acc[o + 11u] *= f;
        acc[o + 12u] *= f;
        acc[o + 13u] *= f;
        acc[o + 14u] *= f;
        acc[o + 15u] *= f;
    }
}

// Online softmax of slot u over keys s0 .. s0 + 3: new max, rescaled sum and output, the four
// weights in lg (0 past the window; −inf logits give 0).
fn soften(u: u32, s0: u32) {
    let o = u * 4u;
    let live = vec4<u32>(s0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.tk);
    let x = select(vec4<f32>(-F32_MAX), vec4<f32>(lg[o], lg[o + 1u], lg[o + 2u], lg[o + 3u]), live);
    let m = max(mx[u], max(max(x.x, x.y), max(x.z, x.w)));
    let corr = exp(mx[u] - m);
    mx[u] = m;
    let w = select(vec4<f32>(0.0), exp(x - vec4<f32>(m)), live);
    lg[o] = w.x;
    lg[o + 1u] = w.y;
    lg[o + 2u] = w.z;
    lg[o + 3u] = w.w;
    sm[u] = sm[u] * corr + (w.x + w.y + w.z + w.w);
    scale_acc(u, corr);
}

// acc of slot u, channels 4a .. 4a + 3, += w · v (v in kb).
fn add_v1(u: u32, a: u32, w: f32) {
    acc[u * D4 + a] = fma(vec4<f32>(w), kb[a], acc[u * D4 + a]);
}

// acc of slot u += w · v.
fn add_v(u: u32, w: f32) {
    add_v1(u, 0u, w);
    add_v1(u, 1u, w);
    add_v1(u, 2u, w);
    add_v1(u, 3u, w);
    if (D4 > 4u) {
        add_v1(u, 4u, w);
        add_v1(u, 5u, w);
        add_v1(u, 6u, w);
        add_v1(u, 7u, w);
    }
    if (D4 > 8u) {
        add_v1(u, 8u, w);
        add_v1(u, 9u, w);
        add_v1(u, 10u, w);
        add_v1(u, 11u, w);
        add_v1(u, 12u, w);
        add_v1(u, 13u, w);
        add_v1(u, 14u, w);
        add_v1(u, 15u, w);
    }
}

// Value s0 + j (clamped; its weight is 0 past the window) into every slot.
fn key_values(j: u32, s0: u32) {
    let s = min(s0 + j, p.tk - 1u);
    fetch(2u, p.v_off + (win * p.tk + s) * p.v_stride + head * p.d);
    add_v(0u, lg[j]);
    add_v(1u, lg[4u + j]);
    if (QPL > 2u) {
        add_v(2u, lg[8u + j]);
        add_v(3u, lg[12u + j]);
    }
}

// qv of slot u, vec4 a (of D4), where a == at. A select per slot: the loads run in a run-time
// loop (few load instructions in the code) and a run-time index would put `qv` in memory.
fn put_q(u: u32, a: u32, at: u32, x: vec4<f32>) {
    qv[u * D4 + a] = select(qv[u * D4 + a], x, a == at);
}

fn put_q_all(u: u32, at: u32, x: vec4<f32>) {
    put_q(u, 0u, at, x);
    put_q(u, 1u, at, x);
    put_q(u, 2u, at, x);
    put_q(u, 3u, at, x);
    if (D4 > 4u) {
        put_q(u, 4u, at, x);
        put_q(u, 5u, at, x);
        put_q(u, 6u, at, x);
        put_q(u, 7u, at, x);
    }
    if (D4 > 8u) {
        put_q(u, 8u, at, x);
        put_q(u, 9u, at, x);
        put_q(u, 10u, at, x);
        put_q(u, 11u, at, x);
        put_q(u, 12u, at, x);
        put_q(u, 13u, at, x);
        put_q(u, 14u, at, x);
        put_q(u, 15u, at, x);
    }
}

// acc of slot u, vec4 at (chosen at run time).
fn pick_acc(u: u32, at: u32) -> vec4<f32> {
    let o = u * D4;
    var x = acc[o];
    x = select(x, acc[o + 1u], at == 1u);
    x = select(x, acc[o + 2u], at == 2u);
    x = select(x, acc[o + 3u], at == 3u);
    if (D4 > 4u) {
        x = select(x, acc[o + 4u], at == 4u);
        x = select(x, acc[o + 5u], at == 5u);
        x = select(x, acc[o + 6u], at == 6u);
        x = select(x, acc[o + 7u], at == 7u);
    }
    if (D4 > 8u) {
        x = select(x, acc[o + 8u], at == 8u);
        x = select(x, acc[o + 9u], at == 9u);
        x = select(x, acc[o + 10u], at == 10u);
        x = select(x, acc[o + 11u], at == 11u);
        x = select(x, acc[o + 12u], at == 12u);
        x = select(x, acc[o + 13u], at == 13u);
        x = select(x, acc[o + 14u], at == 14u);
        x = select(x, acc[o + 15u], at == 15u);
    }
    return x;
}

// Element of slot u's query row (query clamped into the window) where its head starts.
fn q_base(u: u32) -> u32 {
    return p.q_off + (win * p.tq + qi[u]) * p.q_stride + head * p.d;
}

// Element of slot u's output row where its head starts.
fn out_base(u: u32) -> u32 {
    return (win * p.tq + qi[u]) * p.channels + head * p.d;
}

// Channels 4a .. 4a + 3 (those < d) of an output head vector from element `base`.
fn store4(base: u32, a: u32, x: vec4<f32>) {
    let c = 4u * a;
    if (c >= p.d) {
        return;
    }
#if VEC4
    out[(base + c) / 4u] = x;
#else
    out[base + c] = x.x;
    if (c + 1u < p.d) {
        out[base + c + 1u] = x.y;
    }
    if (c + 2u < p.d) {
        out[base + c + 2u] = x.z;
    }
    if (c + 3u < p.d) {
        out[base + c + 3u] = x.w;
    }
#endif
}

// 1 / (softmax sum) of slot u; 0 when every key was masked.
fn inv_sum(u: u32) -> f32 {
    return select(0.0, 1.0 / sm[u], sm[u] > 0.0);
}

@compute @workgroup_size(8)
fn window_attention_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUP
    @builtin(subgroup_invocation_id) sid: u32,
#endif
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wg.y * nwg.x + wg.x;
    if (g >= p.groups) {
        return;
    }
#if SUBGROUP
    lane = sid;
#else
    lane = lid;
#endif
    let wh = g / p.qtiles;
    win = wh / p.heads;
    head = wh % p.heads;
    let t0 = (g % p.qtiles) * 8u * QPL + lane;
    mx[0] = -F32_MAX;
    mx[1] = -F32_MAX;
    qi[0] = min(t0, p.tq - 1u);
    qi[1] = min(t0 + 8u, p.tq - 1u);
#if QPL4
    mx[2] = -F32_MAX;
    mx[3] = -F32_MAX;
    qi[2] = min(t0 + 16u, p.tq - 1u);
    qi[3] = min(t0 + 24u, p.tq - 1u);
#endif
    let d4 = (p.d + 3u) / 4u;
    for (var a = 0u; a < d4; a++) {
        put_q_all(0u, a, head4(0u, q_base(0u), a));
        put_q_all(1u, a, head4(0u, q_base(1u), a));
        if (QPL > 2u) {
            put_q_all(2u, a, head4(0u, q_base(2u), a));
            put_q_all(3u, a, head4(0u, q_base(3u), a));
        }
    }
    // The key count is hidden from lavapipe's uniform inlining (which would compile a variant
    // per window size); num_workgroups is never 0, but the compiler cannot know it.
    let tk = select(p.tk, 0u, nwg.x == 0u);
    for (var s0 = 0u; s0 < tk; s0 += 4u) {
        key_logits(0u, s0);
        key_logits(1u, s0);
        key_logits(2u, s0);
        key_logits(3u, s0);
        soften(0u, s0);
        soften(1u, s0);
        if (QPL > 2u) {
            soften(2u, s0);
            soften(3u, s0);
        }
        key_values(0u, s0);
        key_values(1u, s0);
        key_values(2u, s0);
        key_values(3u, s0);
    }
    // Queries past the window write nothing; one with every key masked writes zeros.
    let live = vec4<u32>(t0) + vec4<u32>(0u, 8u, 16u, 24u) < vec4<u32>(p.tq);
    for (var a = 0u; a < d4; a++) {
        if (live.x) {
            store4(out_base(0u), a, pick_acc(0u, a) * inv_sum(0u));
        }
        if (live.y) {
            store4(out_base(1u), a, pick_acc(1u, a) * inv_sum(1u));
        }
        if (QPL > 2u) {
            if (live.z) {
                store4(out_base(2u), a, pick_acc(2u, a) * inv_sum(2u));
            }
            if (live.w) {
                store4(out_base(3u), a, pick_acc(3u, a) * inv_sum(3u));
            }
        }
    }
}
#else
// Staged keys and values ([KT][D4]); reused to merge the split states.
var<workgroup> ks: array<vec4<f32>, 256>;
var<workgroup> vs: array<vec4<f32>, 256>;
// Per-invocation running max, then rescaled sum, during the merge.
var<workgroup> stat: array<f32, WG>;

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
#endif
