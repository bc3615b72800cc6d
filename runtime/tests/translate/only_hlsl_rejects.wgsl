// A kernel that naga validates and that its MSL and SPIR-V writers take but its HLSL writer does
// not: loading a whole array of atomics out of a storage buffer. The translation test's proof
// that a failure on one back end is caught (tests/translate/main.rs); not a Kestrel kernel.
@group(0) @binding(0) var<uniform> n: u32;
@group(0) @binding(1) var<storage, read_write> counters: array<atomic<u32>, 4>;
@compute @workgroup_size(1)
fn main() {
    let all = counters;
    atomicAdd(&counters[0], n);
}
