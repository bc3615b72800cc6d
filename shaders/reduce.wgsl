// Reductions and pooling over f32 tensors.
//
// Defines (one entry point each):
//   MEAN_TOKENS          `mean_tokens`: [B, N, C] -> [B, C], one invocation per output
//   MAX_POOL1D           `max_pool1d`: [B, C, L] -> [B, C, Lout], one invocation per output
//   ADAPTIVE_AVG_POOL2D  `adaptive_avg_pool2d`: [B, C, H, W] -> [B, C, OH, OW], one per output
//   ARGMAX               `argmax`: [.., n] -> u32 [..], one workgroup per row
//   TOP_K                `top_k`: [.., n] -> f32 [.., k] + u32 [.., k], one workgroup per row
//   SUBGROUPS            argmax / top_k reduce with subgroupMax / subgroupMin (device has
//                        SUBGROUP); otherwise a shared-memory tree
//
// Each dispatch covers `rows` consecutive rows (batches for mean_tokens, [B·C] planes for the
// pools, rows of the last dimension for argmax / top_k); every storage binding is a window of
// its buffer and the `*_base` fields are window indices of the dispatch's first element.
// `d0..d4` are the op's dimensions, named at the top of each entry point.
//
// argmax / top_k rank elements by an order-preserving u32 key of the f32 bits (−0 = +0; −inf
// ranks lowest of the non-NaN values) and break ties by the lower index. top_k runs k rounds;
// round r picks the best element ranked strictly after round r−1's pick, so each round is one
// pass over the row and one workgroup argmax: O(k·n) reads per row.

struct Params {
    rows: u32,
    x_base: u32,
    out_base: u32,
    out2_base: u32,
    d0: u32,
    d1: u32,
    d2: u32,
    d3: u32,
    d4: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;

const WG: u32 = 256u;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

#if MEAN_TOKENS
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn mean_tokens(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tokens = p.d0;
    let channels = p.d1;
    let i = linear_id(wg, nwg, lid);
    if (i >= p.rows * channels) {
        return;
    }
    let b = i / channels;
    let c = i % channels;
    var at = p.x_base + b * tokens * channels + c;
    var sum = 0.0;
    for (var t = 0u; t < tokens; t++) {
        sum += x[at];
        at += channels;
    }
    y[p.out_base + i] = sum / f32(tokens);
}
#endif

#if MAX_POOL1D
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn max_pool1d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let len = p.d0;
    let out_len = p.d1;
    let kernel = p.d2;
    let stride = p.d3;
    let padding = p.d4;
    let i = linear_id(wg, nwg, lid);
    if (i >= p.rows * out_len) {
        return;
    }
    let r = i / out_len;
    let o = i % out_len;
    let start = i32(o * stride) - i32(padding);
    let xr = p.x_base + r * len;
    // Padding counts as −inf, so only in-range positions take part; every window has one
    // (padding ≤ kernel / 2).
    var m = 0.0;
    var found = false;
    for (var k = 0u; k < kernel; k++) {
        let pos = start + i32(k);
        if (pos >= 0 && pos < i32(len)) {
            let v = x[xr + u32(pos)];
            if (!found || v > m) {
                m = v;
                found = true;
            }
        }
    }
    y[p.out_base + i] = m;
}
#endif

#if ADAPTIVE_AVG_POOL2D
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn adaptive_avg_pool2d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = p.d0;
    let w = p.d1;
    let oh = p.d2;
    let ow = p.d3;
    let i = linear_id(wg, nwg, lid);
    if (i >= p.rows * oh * ow) {
        return;
    }
    let plane = i / (oh * ow);
    let oy = (i / ow) % oh;
    let ox = i % ow;
    // PyTorch's bins: [floor(o·H/OH), ceil((o+1)·H/OH)).
    let y0 = oy * h / oh;
    let y1 = ((oy + 1u) * h + oh - 1u) / oh;
    let x0 = ox * w / ow;
    let x1 = ((ox + 1u) * w + ow - 1u) / ow;
    let xp = p.x_base + plane * h * w;
    var sum = 0.0;
    for (var yy = y0; yy < y1; yy++) {
        for (var xx = x0; xx < x1; xx++) {
            sum += x[xp + yy * w + xx];
        }
    }
    y[p.out_base + i] = sum / f32((y1 - y0) * (x1 - x0));
}
#endif

#if ARGMAX_FAMILY
// "No element": ranks after every real (key, index) pair.
const NONE: u32 = 0xffffffffu;

#include subgroup_ids

// One slot per invocation (the tree) or per subgroup (indexed by subgroup id; WG slots hold
// any number of subgroups).
var<workgroup> red_key: array<u32, WG>;
var<workgroup> red_idx: array<u32, WG>;

// An order-preserving u32 key of an f32 (−0 and +0 share a key).
fn key_of(v: f32) -> u32 {
    var b = bitcast<u32>(v);
    if (b == 0x80000000u) {
        b = 0u;
    }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// (ka, ia) ranks before (kb, ib): a larger key, then a smaller index.
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// The best (key, index) pair of the workgroup, returned to every invocation. Call in uniform
// control flow.
fn wg_argmax(key: u32, idx: u32) -> vec2<u32> {
#if SUBGROUPS
    let km = subgroupMax(key);
    let im = subgroupMin(select(NONE, idx, key == km));
    if (sg_leader) {
        red_key[sg_id] = km;
        red_idx[sg_id] = im;
    }
    workgroupBarrier();
    var bk = 0u;
    var bi = NONE;
    // Tiled subgroups: the lanes of each subgroup split the slots; otherwise every invocation
    // reads every slot (max and min of equal values are those values).
    let tiled = sg_tiled();
    for (var s = select(0u, sg_lane, tiled); s < sg_count; s += select(1u, sg_size, tiled)) {
        if (before(red_key[s], red_idx[s], bk, bi)) {
            bk = red_key[s];
            bi = red_idx[s];
        }
    }
    let k2 = subgroupMax(bk);
    let best = vec2<u32>(k2, subgroupMin(select(NONE, bi, bk == k2)));
#else
    red_key[lid] = key;
    red_idx[lid] = idx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s && before(red_key[lid + s], red_idx[lid + s], red_key[lid], red_idx[lid])) {
            red_key[lid] = red_key[lid + s];
            red_idx[lid] = red_idx[lid + s];
        }
        workgroupBarrier();
    }
    let best = vec2<u32>(red_key[0], red_idx[0]);
#endif
    // The slots are reused by the next reduction.
    workgroupBarrier();
    return best;
}
#endif

#if ARGMAX
@group(0) @binding(2) var<storage, read_write> out_idx: array<u32>;

@compute @workgroup_size(256)
fn argmax(
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
    let n = p.d0;
    let row = wg.y * nwg.x + wg.x;
    if (row >= p.rows) {
        return;
    }
    let xr = p.x_base + row * n;
    var bk = 0u;
    var bi = NONE;
    for (var j = lid; j < n; j += WG) {
        let k = key_of(x[xr + j]);
        if (before(k, j, bk, bi)) {
            bk = k;
            bi = j;
        }
    }
    let best = wg_argmax(bk, bi);
    if (lid == 0u) {
        out_idx[p.out_base + row] = best.y;
    }
}
#endif

#if TOP_K
@group(0) @binding(2) var<storage, read_write> out_val: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_idx: array<u32>;

@compute @workgroup_size(256)
fn top_k(
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
    let n = p.d0;
    let k = p.d1;
    let row = wg.y * nwg.x + wg.x;
    if (row >= p.rows) {
        return;
    }
    let xr = p.x_base + row * n;
    // The previous round's pick; NONE before the first round.
    var pk = 0u;
    var pi = NONE;
    for (var r = 0u; r < k; r++) {
        var bk = 0u;
        var bi = NONE;
        for (var j = lid; j < n; j += WG) {
            let key = key_of(x[xr + j]);
            if ((pi == NONE || before(pk, pi, key, j)) && before(key, j, bk, bi)) {
                bk = key;
                bi = j;
            }
        }
        let best = wg_argmax(bk, bi);
        pk = best.x;
        pi = best.y;
        if (lid == 0u) {
            out_val[p.out_base + row * k + r] = x[xr + pi];
            out_idx[p.out2_base + row * k + r] = pi;
        }
    }
}
#endif
