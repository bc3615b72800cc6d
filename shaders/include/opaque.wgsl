// `x`, hidden from lavapipe's uniform inlining: llvmpipe compiles a variant of a kernel for
// every value of a uniform that bounds a loop, i.e. one per matrix shape (seconds each for a
// large kernel). `nwg` is the dispatch's num_workgroups, never 0 — but the compiler cannot know.
fn opaque(x: u32, nwg: vec3<u32>) -> u32 {
    return select(x, 0u, nwg.x == 0u);
}
