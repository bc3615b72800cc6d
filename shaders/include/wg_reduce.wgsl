// Max or sum of one f32 per invocation over the workgroup. Needs `const WG: u32` (the
// workgroup size, a power of two) and `const F32_MAX: f32` (the largest finite f32, the
// identity of max) in the including file; SUBGROUPS selects subgroupMax/Add plus one shared
// slot per subgroup, indexed by subgroup id (correct for any subgroup size and any placement
// of the subgroups over the local indices), otherwise a shared-memory tree.

#include subgroup_ids

// One slot per invocation (the tree) or per subgroup.
var<workgroup> red: array<f32, WG>;

// Max (`is_max`) or sum of `v` over the workgroup, returned to every invocation. Call in
// uniform control flow.
fn wg_reduce(v: f32, is_max: bool) -> f32 {
#if SUBGROUPS
    var s: f32;
    if (is_max) {
        s = subgroupMax(v);
    } else {
        s = subgroupAdd(v);
    }
    if (sg_leader) {
        red[sg_id] = s;
    }
    workgroupBarrier();
    // Tiled subgroups: the lanes of each subgroup split the slots and combine them; otherwise
    // (a lane may be missing from its subgroup) every invocation reads every slot.
    let tiled = sg_tiled();
    var t = select(0.0, -F32_MAX, is_max);
    for (var i = select(0u, sg_lane, tiled); i < sg_count; i += select(1u, sg_size, tiled)) {
        t = select(t + red[i], max(t, red[i]), is_max);
    }
    var c: f32;
    if (is_max) {
        c = subgroupMax(t);
    } else {
        c = subgroupAdd(t);
    }
    let total = select(t, c, tiled);
#else
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            let o = red[lid + s];
            red[lid] = select(red[lid] + o, max(red[lid], o), is_max);
        }
        workgroupBarrier();
    }
    let total = red[0];
#endif
    // `red` is reused by the next reduction.
    workgroupBarrier();
    return total;
}
