// Embedding lookup: out[t, :] = table[clamp(ids[t]), :] as f32.
//
// Out-of-range ids are clamped to the last row (vocab - 1), so no id ever reads outside the
// table; the host does not inspect ids (they live on the GPU).
//
// A table larger than one storage binding is processed as row windows [row0, row1), one
// dispatch each: every dispatch scans all ids and writes only the outputs whose (clamped) row
// lies in its window, so each output is written exactly once overall.
//
// Defines:
//   TAB_F16   the table is f16 (else f32)
//   F16       with TAB_F16: read it as native f16 (`enable f16;`); without: packed u32 pairs
//             unpacked with unpack2x16float
//   VEC4      rows hold a multiple of 4 values: one invocation writes 4 outputs (an "item");
//             else one output per invocation (an item is one value)
//   OT        the output item type: f32 or vec4<f32>
//
// `n` counts output items, `d` is the row length in items and `tab_off` is the item index (in
// the whole table) at which the bound table window begins.

#if F16
enable f16;
#endif

struct Params {
    n: u32,
    d: u32,
    vocab: u32,
    row0: u32,
    row1: u32,
    tab_off: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<{{OT}}>;

#if TAB_F16
#if F16
#if VEC4
@group(0) @binding(2) var<storage, read> tab: array<vec4<f16>>;
#else
@group(0) @binding(2) var<storage, read> tab: array<f16>;
#endif

fn item(j: u32) -> {{OT}} {
    return {{OT}}(tab[j]);
}
#else
@group(0) @binding(2) var<storage, read> tab: array<u32>;

#if VEC4
fn item(j: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(tab[2u * j]), unpack2x16float(tab[2u * j + 1u]));
}
#else
fn item(j: u32) -> f32 {
    // The window starts on a 4-byte boundary, so the half's parity is that of its index.
    let pair = unpack2x16float(tab[j >> 1u]);
    return select(pair.x, pair.y, (j & 1u) == 1u);
}
#endif
#endif
#else
@group(0) @binding(2) var<storage, read> tab: array<{{OT}}>;

fn item(j: u32) -> {{OT}} {
    return tab[j];
}
#endif

@compute @workgroup_size(256)
fn embedding(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let row = min(ids[i / p.d], p.vocab - 1u);
    if (row < p.row0 || row >= p.row1) {
        return;
    }
    dst[i] = item(row * p.d + i % p.d - p.tab_off);
}
