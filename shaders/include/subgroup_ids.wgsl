// An invocation's place in its workgroup, as module-scope privates so helper functions can use
// them: `lid` (local invocation index) and, with SUBGROUPS, the subgroup builtins. An entry
// point takes the builtins with `#include subgroup_params` in its parameter list and calls
// `set_ids(...)` first (the arguments as listed there).
//
// Nothing relates `lid` to the subgroups: a subgroup need not be a contiguous block of local
// indices (the Vulkan spec gives no such relation), so subgroup reductions index by `sg_lane`
// and `sg_id` alone. PERMUTE_LID (kernel tests, runtime/src/context.rs SubgroupLayoutTest)
// checks that: `lid` is bit-reversed within the workgroup (`const WG: u32`, a power of two, in
// the including file), as on a device whose subgroups are scattered over the local indices.

var<private> lid: u32;

fn local_index(local: u32) -> u32 {
#if PERMUTE_LID
    return reverseBits(local) >> (32u - countTrailingZeros(WG));
#else
    return local;
#endif
}

#if SUBGROUPS
var<private> sg_lane: u32;
var<private> sg_size: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;
// The subgroup's lowest active lane (lane 0 in a full subgroup), which stores the subgroup's
// result.
var<private> sg_leader: bool;

// Call first, in uniform control flow.
fn set_ids(local: u32, lane: u32, size: u32, id: u32, count: u32) {
    lid = local_index(local);
    sg_lane = lane;
    sg_size = size;
    sg_id = id;
    sg_count = count;
    sg_leader = lane == subgroupMin(lane);
}

// Whether the subgroups tile the workgroup: all full and of one size, so (sg_id, sg_lane)
// covers 0..sg_count × 0..sg_size exactly. Every known device's are (the workgroup sizes are
// multiples of every subgroup size); where they are not, reductions take a slower path that
// needs no tiling (UNTILED forces it in kernel tests).
fn sg_tiled() -> bool {
#if UNTILED
    return false;
#else
    return sg_size * sg_count == WG;
#endif
}
#else
fn set_ids(local: u32) {
    lid = local_index(local);
}
#endif
