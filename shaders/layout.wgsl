// Strided copies: permute/transpose, slice and concat are all "item i of a copy shape reads
// src[src_off + Σ c_d·src_strides_d] and writes dst[dst_off + Σ c_d·dst_strides_d]", with the
// multi-index c of i taken row-major over `shape` (innermost dimension last). The host merges
// dimensions that are contiguous on both sides first, so most copies have rank 1–3 here.
//
// Entry points / defines:
//   strided_copy     (STRIDED, T = u32 or vec4<u32>): one item per invocation; with vec4<u32>
//                    the host has expressed the copy in 16-byte units (innermost dimension
//                    contiguous on both sides and every extent, stride and offset a multiple of 4).
//   transpose_tiled  (TRANSPOSE): 32-bit items; shape[0] is contiguous in the source and
//                    shape[1] contiguous in the destination; 32×32 tiles go through workgroup
//                    memory so both the reads and the writes are coalesced. Dimensions 2.. are
//                    batch dimensions. `n` counts workgroups (tiles × batch).
//   f16_pairs        (PAIR): 16-bit elements, contiguous destination. Each invocation assembles
//                    one destination word from two source halves, so no word is written twice
//                    and no read-modify-write is needed. `dst_off` is in words; the upper half of
//                    a final odd word is written as 0 (it lies in the buffer's padding).
//
// f32, u32 and f16 data are all moved as raw bits (f16 pairs as u32 words): no conversion.

struct Params {
    n: u32,
    rank: u32,
    src_off: u32,
    dst_off: u32,
    shape: array<vec4<u32>, 2>,
    src_strides: array<vec4<u32>, 2>,
    dst_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;

fn extent(d: u32) -> u32 {
    return p.shape[d / 4u][d % 4u];
}

fn src_stride(d: u32) -> u32 {
    return p.src_strides[d / 4u][d % 4u];
}

fn dst_stride(d: u32) -> u32 {
    return p.dst_strides[d / 4u][d % 4u];
}

// Source (x) and destination (y) indices of item `g` over dimensions [first, rank).
fn offsets(g: u32, first: u32) -> vec2<u32> {
    var rem = g;
    var s = p.src_off;
    var t = p.dst_off;
    for (var d = p.rank; d > first; d = d - 1u) {
        let e = extent(d - 1u);
        let c = rem % e;
        rem = rem / e;
        s = s + c * src_stride(d - 1u);
        t = t + c * dst_stride(d - 1u);
    }
    return vec2<u32>(s, t);
}

#if STRIDED
@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> dst: array<{{T}}>;

@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (g >= p.n) {
        return;
    }
    let o = offsets(g, 0u);
    dst[o.y] = src[o.x];
}
#endif

#if TRANSPOSE
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

const TILE: u32 = 32u;
// One padding column so the column reads of the second phase hit distinct banks.
var<workgroup> tile: array<u32, 1056>;

@compute @workgroup_size(256)
fn transpose_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = wg.y * nwg.x + wg.x;
    // Workgroup-uniform: the whole group leaves before any barrier.
    if (id >= p.n) {
        return;
    }
    let ea = extent(0u);
    let eb = extent(1u);
    let tiles_a = (ea + TILE - 1u) / TILE;
    let tiles_b = (eb + TILE - 1u) / TILE;
    let a0 = (id % tiles_a) * TILE;
    let rest = id / tiles_a;
    let b0 = (rest % tiles_b) * TILE;
    let base = offsets(rest / tiles_b, 2u);
    let sb = src_stride(1u);
    let da = dst_stride(0u);
    let x = lid % TILE;
    let y = lid / TILE;
    // Read: consecutive invocations walk dimension a, contiguous in the source.
    for (var i = 0u; i < TILE; i = i + 8u) {
        let a = a0 + x;
        let b = b0 + y + i;
        if (a < ea && b < eb) {
            tile[(y + i) * (TILE + 1u) + x] = src[base.x + a + b * sb];
        }
    }
    workgroupBarrier();
    // Write: consecutive invocations walk dimension b, contiguous in the destination.
    for (var i = 0u; i < TILE; i = i + 8u) {
        let b = b0 + x;
        let a = a0 + y + i;
        if (a < ea && b < eb) {
            dst[base.y + a * da + b] = tile[x * (TILE + 1u) + y + i];
        }
    }
}
#endif

#if PAIR
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// The 16 bits of source element `e` of the copy (zero-extended).
fn half_bits(e: u32) -> u32 {
    let i = offsets(e, 0u).x;
    return (src[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
}

@compute @workgroup_size(256)
fn f16_pairs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = (wg.y * nwg.x + wg.x) * 256u + lid;
    let e = 2u * k;
    if (e >= p.n) {
        return;
    }
    var word = half_bits(e);
    if (e + 1u < p.n) {
        word = word | (half_bits(e + 1u) << 16u);
    }
    dst[p.dst_off + k] = word;
}
#endif
