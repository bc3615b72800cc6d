// Max or sum of one f32 per invocation over the workgroup. Needs `const WG: u32` (the
// workgroup size, a power of two) and `const F32_MAX: f32` (the largest finite f32, the
// identity of max) in the including file; SUBGROUPS selects subgroupMax/Add
// plus one shared slot per subgroup (correct for any subgroup size), otherwise a
// shared-memory tree.

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
    if (sg_lane == 0u) {
        red[sg_id] = s;
    }
    workgroupBarrier();
    var t = select(0.0, -F32_MAX, is_max);
    for (var i = sg_lane; i < sg_count; i += sg_size) {
        t = select(t + red[i], max(t, red[i]), is_max);
    }
    var total: f32;
    if (is_max) {
        total = subgroupMax(t);
    } else {
        total = subgroupAdd(t);
    }
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
