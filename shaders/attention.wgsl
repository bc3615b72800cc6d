// Attention for LLaMA-family decoders: rotary position embeddings, KV-cache writes and causal
// grouped-query attention over a KV cache.
//
// Layouts (row-major): activations q, k, v and the attention output are [T, heads, head_dim]
// f32; the KV cache of one layer is k, v [n_kv_heads, capacity, head_dim], f32 or f16. head_dim
// is even, so the cache kernels move (d, d + 1) pairs: one vec2<f32>, one vec2<f16> or one u32
// word of two packed halves. Query head h reads KV head h / group (GQA; K/V are never copied).
//
// Entry points (one define each):
//   ROPE      `rope`: rotates the pairs of the first 2·rot2 dims of each head by pos·inv_freq
//             (RotateHalf pairs (i, i + rot2), Interleaved pairs (2i, 2i + 1)); copies the rest
//   KV_WRITE  `kv_write`: k, v [T, n_kv, head_dim] → cache positions start..start + T
//   ROPE_KV   `rope_kv`: ROPE of q (into a new tensor) and of k, and KV_WRITE of k and v, in one
//             dispatch (a decode step's three). q, k and v are read at token strides and head
//             offsets, so they may be one fused projection's output [T, heads + 2·n_kv, head_dim]
//             bound three times
//   PREFILL   `attn_prefill` (T > 1): flash attention, one workgroup per (16-query block, head),
//             K/V tiles staged in workgroup memory, online softmax — memory does not grow with T²
//   DECODE    `attn_decode` (T = 1): the keys are split into chunks of `chunk`, one workgroup per
//             (head, chunk); inside it every invocation scores its own keys; with one chunk the
//             output is written directly, otherwise the chunk's (o, max, sum) go to a scratch
//             buffer that
//   COMBINE   `attn_combine` merges: o = Σ e^(mᵢ−M) oᵢ / Σ e^(mᵢ−M) lᵢ
//
// Other defines:
//   ROTARY    the parameters and rotation helpers shared by ROPE and ROPE_KV
//   KV_READ   the cache bindings 2 (k) and 3 (v) are read (PREFILL, DECODE)
//   KV_F16    the cache holds f16
//   F16       read the f16 cache as vec2<f16> (`enable f16;`); otherwise as u32 words unpacked
//             with unpack2x16float (no f16 feature needed; also cheaper on CPU adapters)
//   HD_MAX    (PREFILL) the largest head_dim the variant handles: 64, 128 or 256
//   SUBGROUPS (DECODE) max/sum reductions with subgroupMax/subgroupAdd (any subgroup size);
//             otherwise a shared-memory tree
//
// Softmax statistics start from −F32_MAX rather than −inf (WGSL has no infinity literal), and
// masked keys get probability 0 explicitly. All accumulation is f32.
#if F16
enable f16;
#endif

// The largest finite f32.
const F32_MAX: f32 = 3.40282347e38;

#if KV_READ
#if KV_F16
#if F16
@group(0) @binding(2) var<storage, read> k_cache: array<vec2<f16>>;
@group(0) @binding(3) var<storage, read> v_cache: array<vec2<f16>>;
fn k2(i: u32) -> vec2<f32> { return vec2<f32>(k_cache[i]); }
fn v2(i: u32) -> vec2<f32> { return vec2<f32>(v_cache[i]); }
#else
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;
fn k2(i: u32) -> vec2<f32> { return unpack2x16float(k_cache[i]); }
fn v2(i: u32) -> vec2<f32> { return unpack2x16float(v_cache[i]); }
#endif
#else
@group(0) @binding(2) var<storage, read> k_cache: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> v_cache: array<vec2<f32>>;
fn k2(i: u32) -> vec2<f32> { return k_cache[i]; }
fn v2(i: u32) -> vec2<f32> { return v_cache[i]; }
#endif
#endif

#if ROTARY
// ROPE and ROPE_KV: x [rows = (token, head), dim] → y, one invocation per slot of a row.
struct Params {
    // ROPE: invocations (rows of this dispatch × slots); ROPE_KV: the q invocations.
    n: u32,
    // rot2 rotated pairs + (dim − 2·rot2) copied elements per row.
    slots: u32,
    heads: u32,
    dim: u32,
    rot2: u32,
    start: u32,
    // Global index of the dispatch's first row (rows are (token, head)).
    row_base: u32,
    x_base: u32,
    out_base: u32,
    interleaved: u32,
    // ROPE_KV: (k, v) pair invocations after the q ones, KV heads, cache capacity.
    nkv: u32,
    kv_heads: u32,
    cap: u32,
    // ROPE_KV: elements per token of the q input and of the k/v inputs, and where the k and v
    // heads of the dispatch's first token start in their windows (x_base: its q heads).
    q_stride: u32,
    kv_stride: u32,
    k_off: u32,
    v_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    // inv_freq[i] (scaling folded in), i < rot2.
    inv_freq: array<vec4<f32>, 64>,
}

@group(0) @binding(0) var<uniform> p: Params;

// 2π as a head with 8 significant bits (k·HI is exact for |k| < 2¹⁶) and an f32 tail.
const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 1.9353071795864769e-3;
const INV_TWO_PI: f32 = 0.15915494309189535;

// The angle reduced to [−π, π] (Cody–Waite): WGSL guarantees sin/cos accuracy only there, and
// angles reach position × 1 rad.
fn reduce_angle(a: f32) -> f32 {
    let k = round(a * INV_TWO_PI);
    return (a - k * TWO_PI_HI) - k * TWO_PI_LO;
}

// (cos, sin) of pair j's angle at position pos (as HF: the f32 product of the f32 position and
// the f32 frequency).
fn rotation(pos: u32, j: u32) -> vec2<f32> {
    let a = reduce_angle(f32(pos) * p.inv_freq[j / 4u][j % 4u]);
    return vec2<f32>(cos(a), sin(a));
}

// Slot i of the rows: rotates pair j < rot2 of its row (RotateHalf pairs (j, j + rot2),
// Interleaved (2j, 2j + 1)), or copies element 2·rot2 + (j − rot2).
fn rope_slot(i: u32) {
    let row = i / p.slots;
    let j = i % p.slots;
#if ROPE_KV
    let xr = p.x_base + (row / p.heads) * p.q_stride + (row % p.heads) * p.dim;
#else
    let xr = p.x_base + row * p.dim;
#endif
    let yr = p.out_base + row * p.dim;
    if (j < p.rot2) {
        let cs = rotation(p.start + (p.row_base + row) / p.heads, j);
        var ia = j;
        var ib = j + p.rot2;
        if (p.interleaved != 0u) {
            ia = 2u * j;
            ib = ia + 1u;
        }
        let xa = x[xr + ia];
        let xb = x[xr + ib];
        y[yr + ia] = xa * cs.x - xb * cs.y;
        y[yr + ib] = xb * cs.x + xa * cs.y;
    } else {
        let e = p.rot2 + j;
        y[yr + e] = x[xr + e];
    }
}
#endif

#if ROPE
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (i < p.n) {
        rope_slot(i);
    }
}
#endif

#if ROPE_KV
// x = q, y = the rotated q.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> k_in: array<f32>;
@group(0) @binding(3) var<storage, read> v_in: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#if KV_F16
@group(0) @binding(5) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<u32>;
#else
@group(0) @binding(5) var<storage, read_write> k_cache: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<vec2<f32>>;
#endif

// Element e of the k row at `base` after RoPE at position pos (as rope_slot computes it).
fn k_rotated(base: u32, e: u32, pos: u32) -> f32 {
    if (e >= 2u * p.rot2) {
        return k_in[base + e];
    }
    var j = e % p.rot2;
    var first = e < p.rot2;
    var partner = select(e - p.rot2, e + p.rot2, first);
    if (p.interleaved != 0u) {
        j = e / 2u;
        first = e % 2u == 0u;
        partner = e ^ 1u;
    }
    let cs = rotation(pos, j);
    let xe = k_in[base + e];
    let xp = k_in[base + partner];
    return select(xe * cs.x + xp * cs.y, xe * cs.x - xp * cs.y, first);
}

@compute @workgroup_size(256)
fn rope_kv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (i < p.n) {
        rope_slot(i);
        return;
    }
    if (i >= p.n + p.nkv) {
        return;
    }
    // k (rotated) and v: the pair (2m, 2m + 1) of one (token, kv head), stored as KV_WRITE does.
    let hd2 = p.dim / 2u;
    let pr = i - p.n;
    let t = pr / (p.kv_heads * hd2);
    let h = (pr / hd2) % p.kv_heads;
    let m = pr % hd2;
    let head = t * p.kv_stride + h * p.dim;
    let k_row = head + p.k_off;
    let pos = p.start + t;
    let kk = vec2<f32>(k_rotated(k_row, 2u * m, pos), k_rotated(k_row, 2u * m + 1u, pos));
    let vv = v_in[(head + p.v_off) / 2u + m];
    let dst = (h * p.cap + pos) * hd2 + m;
#if KV_F16
    k_cache[dst] = pack2x16float(kk);
    v_cache[dst] = pack2x16float(vv);
#else
    k_cache[dst] = kk;
    v_cache[dst] = vv;
#endif
}
#endif

#if KV_WRITE
struct Params {
    // Pairs to write: T · n_kv · hd2.
    n: u32,
    // Pairs per token: n_kv · hd2.
    token_pairs: u32,
    hd2: u32,
    cap: u32,
    start: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k_in: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> v_in: array<vec2<f32>>;
#if KV_F16
@group(0) @binding(3) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<u32>;
#else
@group(0) @binding(3) var<storage, read_write> k_cache: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec2<f32>>;
#endif

@compute @workgroup_size(256)
fn kv_write(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let t = i / p.token_pairs;
    let r = i % p.token_pairs;
    let dst = ((r / p.hd2) * p.cap + p.start + t) * p.hd2 + r % p.hd2;
#if KV_F16
    k_cache[dst] = pack2x16float(k_in[i]);
    v_cache[dst] = pack2x16float(v_in[i]);
#else
    k_cache[dst] = k_in[i];
    v_cache[dst] = v_in[i];
#endif
}
#endif

#if PREFILL
struct Params {
    // Query tokens.
    t: u32,
    n_heads: u32,
    // Query heads per KV head.
    group: u32,
    // head_dim / 2.
    hd2: u32,
    cap: u32,
    start: u32,
    // Query blocks: ceil(t / BQ).
    q_blocks: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec2<f32>>;

const WG: u32 = 64u;
// Lanes per query row: lane l owns the pairs l, l + L, l + 2L, … of its row's q and output.
const L: u32 = 4u;
// Query rows per workgroup.
const BQ: u32 = WG / L;
// Pair slots of one K/V row in workgroup memory, and pairs per lane.
const HD2: u32 = {{HD_MAX}}u / 2u;
const PPL: u32 = HD2 / L;
// Keys per tile: the K and V tiles take 8 KiB together whatever HD_MAX.
const BK: u32 = 1024u / {{HD_MAX}}u;

var<workgroup> k_s: array<vec2<f32>, BK * HD2>;
var<workgroup> v_s: array<vec2<f32>, BK * HD2>;
// Partial dot products: [row][key][lane].
var<workgroup> part: array<f32, WG * BK>;

@compute @workgroup_size(64)
fn attn_prefill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wid = wg.y * nwg.x + wg.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (wid >= p.n_heads * p.q_blocks) {
        return;
    }
    let h = wid / p.q_blocks;
    let t0 = (wid % p.q_blocks) * BQ;
    let r = lid / L;
    let lane = lid % L;
    // Rows past the last token repeat it and are not written.
    let t = min(t0 + r, p.t - 1u);
    let qpos = p.start + t;
    // Keys visible to some row of the block.
    let n_keys = p.start + min(t0 + BQ, p.t);
    let kv_base = (h / p.group) * p.cap * p.hd2;
    let q_base = (t * p.n_heads + h) * p.hd2;

    var qv: array<vec2<f32>, PPL>;
    var acc: array<vec2<f32>, PPL>;
    for (var i = 0u; i < PPL; i++) {
        let c = lane + L * i;
        qv[i] = vec2<f32>(0.0);
        if (c < p.hd2) {
            qv[i] = q[q_base + c] * p.scale;
        }
        acc[i] = vec2<f32>(0.0);
    }
    var m = -F32_MAX;
    var l = 0.0;
    let tile_pairs = BK * p.hd2;
    for (var k0 = 0u; k0 < n_keys; k0 += BK) {
        for (var e = lid; e < tile_pairs; e += WG) {
            let j = e / p.hd2;
            let c = e % p.hd2;
            var kk = vec2<f32>(0.0);
            var vv = vec2<f32>(0.0);
            if (k0 + j < n_keys) {
                let g = kv_base + (k0 + j) * p.hd2 + c;
                kk = k2(g);
                vv = v2(g);
            }
            k_s[j * HD2 + c] = kk;
            v_s[j * HD2 + c] = vv;
        }
        workgroupBarrier();
        for (var j = 0u; j < BK; j++) {
            var d = vec2<f32>(0.0);
            for (var i = 0u; i < PPL; i++) {
                let c = lane + L * i;
                if (c < p.hd2) {
                    d += qv[i] * k_s[j * HD2 + c];
                }
            }
            part[(r * BK + j) * L + lane] = d.x + d.y;
        }
        workgroupBarrier();
        // Every lane of a row sums the same partials in the same order, so all four hold
        // identical scores, max and sum.
        var sc: array<f32, BK>;
        var m_new = m;
        for (var j = 0u; j < BK; j++) {
            let b = (r * BK + j) * L;
            sc[j] = (part[b] + part[b + 1u]) + (part[b + 2u] + part[b + 3u]);
            if (k0 + j <= qpos) {
                m_new = max(m_new, sc[j]);
            }
        }
        let alpha = exp(m - m_new);
        l *= alpha;
        for (var i = 0u; i < PPL; i++) {
            acc[i] *= alpha;
        }
        for (var j = 0u; j < BK; j++) {
            if (k0 + j <= qpos) {
                let pj = exp(sc[j] - m_new);
                l += pj;
                for (var i = 0u; i < PPL; i++) {
                    let c = lane + L * i;
                    if (c < p.hd2) {
                        acc[i] += pj * v_s[j * HD2 + c];
                    }
                }
            }
        }
        m = m_new;
        // The next tile overwrites k_s, v_s and part.
        workgroupBarrier();
    }
    if (t0 + r < p.t) {
        // Key 0 is visible to every query, so l ≥ 1.
        let inv = 1.0 / l;
        let o_base = ((t0 + r) * p.n_heads + h) * p.hd2;
        for (var i = 0u; i < PPL; i++) {
            let c = lane + L * i;
            if (c < p.hd2) {
                out[o_base + c] = acc[i] * inv;
            }
        }
    }
}
#endif

#if DECODE
struct Params {
    n_heads: u32,
    group: u32,
    hd2: u32,
    cap: u32,
    // Keys: start + 1.
    kv_len: u32,
    // Keys per workgroup (≤ MAX_CHUNK).
    chunk: u32,
    // Chunks per head: 1 writes the output directly, more write partials for COMBINE.
    splits: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec2<f32>>;
// splits = 1: the output [n_heads, hd2] pairs; otherwise partials [n_heads, splits, hd2 + 1]:
// the chunk's unnormalised output pairs, then (max, sum).
@group(0) @binding(4) var<storage, read_write> out: array<vec2<f32>>;

const WG: u32 = 64u;
const MAX_CHUNK: u32 = 1024u;
const MAX_HD2: u32 = 128u;

var<workgroup> q_s: array<vec2<f32>, MAX_HD2>;
// Scores, then probabilities, of the chunk's keys.
var<workgroup> s_s: array<f32, MAX_CHUNK>;
// Per key-group output pairs: [key group][pair]; at most max(WG, MAX_HD2) pairs in all.
var<workgroup> o_s: array<vec2<f32>, MAX_HD2>;
#include wg_reduce

@compute @workgroup_size(64)
fn attn_decode(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
#include subgroup_params
) {
#if SUBGROUPS
    set_ids(local, lane, size, id, count);
#else
    set_ids(local);
#endif
    let wid = wg.y * nwg.x + wg.x;
    if (wid >= p.n_heads * p.splits) {
        return;
    }
    let h = wid / p.splits;
    let split = wid % p.splits;
    let k_begin = split * p.chunk;
    let k_end = min(k_begin + p.chunk, p.kv_len);
    let kv_base = (h / p.group) * p.cap * p.hd2;
    for (var c = lid; c < p.hd2; c += WG) {
        q_s[c] = q[h * p.hd2 + c] * p.scale;
    }
    workgroupBarrier();

    // Scores: each invocation takes keys lid, lid + WG, … of the chunk.
    var m = -F32_MAX;
    for (var j = k_begin + lid; j < k_end; j += WG) {
        let kb = kv_base + j * p.hd2;
        var d = vec2<f32>(0.0);
        for (var c = 0u; c < p.hd2; c++) {
            d += q_s[c] * k2(kb + c);
        }
        let s = d.x + d.y;
        s_s[j - k_begin] = s;
        m = max(m, s);
    }
    let mx = wg_reduce(m, true);
    var l = 0.0;
    for (var j = k_begin + lid; j < k_end; j += WG) {
        let e = exp(s_s[j - k_begin] - mx);
        s_s[j - k_begin] = e;
        l += e;
    }
    // The reduction's barrier also publishes s_s.
    let sum = wg_reduce(l, false);

    // P·V: `ncol` invocations cover the pairs of a row; the WG / ncol key groups take keys
    // kg, kg + nkg, … and are summed afterwards.
    let ncol = min(p.hd2, WG);
    let nkg = WG / ncol;
    let kg = lid / ncol;
    if (kg < nkg) {
        for (var c = lid % ncol; c < p.hd2; c += ncol) {
            var a = vec2<f32>(0.0);
            for (var j = k_begin + kg; j < k_end; j += nkg) {
                a += s_s[j - k_begin] * v2(kv_base + j * p.hd2 + c);
            }
            o_s[kg * p.hd2 + c] = a;
        }
    }
    workgroupBarrier();
    let stride = p.hd2 + 1u;
    for (var c = lid; c < p.hd2; c += WG) {
        var o = vec2<f32>(0.0);
        for (var g = 0u; g < nkg; g++) {
            o += o_s[g * p.hd2 + c];
        }
        if (p.splits == 1u) {
            out[h * p.hd2 + c] = o / sum;
        } else {
            out[(h * p.splits + split) * stride + c] = o;
        }
    }
    if (p.splits > 1u && lid == 0u) {
        out[(h * p.splits + split) * stride + p.hd2] = vec2<f32>(mx, sum);
    }
}
#endif

#if COMBINE
struct Params {
    n_heads: u32,
    hd2: u32,
    splits: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// [n_heads, splits, hd2 + 1] pairs from `attn_decode`.
@group(0) @binding(1) var<storage, read> part: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec2<f32>>;

@compute @workgroup_size(64)
fn attn_combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.y * nwg.x + wg.x;
    if (h >= p.n_heads) {
        return;
    }
    let stride = p.hd2 + 1u;
    let base = h * p.splits * stride;
    var mx = -F32_MAX;
    for (var s = 0u; s < p.splits; s++) {
        mx = max(mx, part[base + s * stride + p.hd2].x);
    }
    var den = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        let ml = part[base + s * stride + p.hd2];
        den += exp(ml.x - mx) * ml.y;
    }
    let inv = 1.0 / den;
    for (var c = lid; c < p.hd2; c += 64u) {
        var o = vec2<f32>(0.0);
        for (var s = 0u; s < p.splits; s++) {
            o += exp(part[base + s * stride + p.hd2].x - mx) * part[base + s * stride + c];
        }
        out[h * p.hd2 + c] = o * inv;
    }
}
#endif
