// An invocation's place in its workgroup, as module-scope privates so helper functions can use
// them: `lid` (local invocation index) and, with SUBGROUPS, the subgroup builtins. An entry
// point takes the builtins with `#include subgroup_params` in its parameter list and calls
// `set_ids(...)` first (the arguments as listed there).

var<private> lid: u32;

#if SUBGROUPS
var<private> sg_lane: u32;
var<private> sg_size: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;

fn set_ids(local: u32, lane: u32, size: u32, id: u32, count: u32) {
    lid = local;
    sg_lane = lane;
    sg_size = size;
    sg_id = id;
    sg_count = count;
}
#else
fn set_ids(local: u32) {
    lid = local;
}
#endif
