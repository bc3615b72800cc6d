// The benchmarks' yardstick: a plain 16×16 shared-memory tiled f32 matmul, one output per
// invocation, C = A·B with A [M, K] and B [K, N]. Not used by models.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn matmul_baseline(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let row = wg.y * 16u + l.y;
    let col = wg.x * 16u + l.x;
    var sum = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + 16u) {
        var av = 0.0;
        var bv = 0.0;
        if (row < p.m && k0 + l.x < p.k) {
            av = a[row * p.k + k0 + l.x];
        }
        if (col < p.n && k0 + l.y < p.k) {
            bv = b[(k0 + l.y) * p.n + col];
        }
        ta[l.y][l.x] = av;
        tb[l.y][l.x] = bv;
        workgroupBarrier();
        for (var k = 0u; k < 16u; k = k + 1u) {
            sum = sum + ta[l.y][k] * tb[k][l.x];
        }
        workgroupBarrier();
    }
    if (row < p.m && col < p.n) {
        c[row * p.n + col] = sum;
    }
}
