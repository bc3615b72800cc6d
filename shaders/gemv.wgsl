// Matrix-vector product for M = 1 (decode): y[n] = Σ_k x[k] · W[n, k] (+ bias[n]).
// W is stored [N, K] (an nn.Linear weight), f32 or f16; x and y are f32.
//
// A workgroup of 256 invocations computes ROWS = 4 outputs, 64 invocations per row. Each
// invocation strides along K (vec4 loads where K allows), then the 64 partial sums are reduced
// either with subgroupAdd + one shared slot per subgroup (SUBGROUP) or with a shared-memory tree.
//
// Defines: F16 (native f16), W_F16 (W stored as f16), W_VEC4 (K and offsets multiples of 4),
//          SUBGROUP (subgroup reduction; subgroups must not straddle 64-invocation rows), BIAS.
#if F16
enable f16;
#endif

struct Params {
    n: u32,
    k: u32,
    w_off: u32,
    y_off: u32,
    bias_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

#if W_VEC4
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x1: array<f32>;
#endif

#if W_F16
#if F16
#if W_VEC4
@group(0) @binding(2) var<storage, read> w_buf: array<vec4<f16>>;
fn w4(i: u32) -> vec4<f32> { return vec4<f32>(w_buf[i / 4u]); }
#else
@group(0) @binding(2) var<storage, read> w_buf: array<f16>;
fn w1(i: u32) -> f32 { return f32(w_buf[i]); }
#endif
#else
#if W_VEC4
@group(0) @binding(2) var<storage, read> w_buf: array<vec2<u32>>;
fn w4(i: u32) -> vec4<f32> { let v = w_buf[i / 4u]; return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)); }
#else
@group(0) @binding(2) var<storage, read> w_buf: array<u32>;
fn w1(i: u32) -> f32 { return unpack2x16float(w_buf[i / 2u])[i % 2u]; }
#endif
#endif
#else
#if W_VEC4
@group(0) @binding(2) var<storage, read> w_buf: array<vec4<f32>>;
fn w4(i: u32) -> vec4<f32> { return w_buf[i / 4u]; }
#else
@group(0) @binding(2) var<storage, read> w_buf: array<f32>;
fn w1(i: u32) -> f32 { return w_buf[i]; }
#endif
#endif

@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif

const ROWS: u32 = 4u;
const LANES: u32 = 64u;

#if SUBGROUP
// One slot per subgroup; 256 invocations / minimum subgroup size 4.
var<workgroup> partial: array<f32, 64>;
#else
var<workgroup> partial: array<f32, 256>;
#endif

fn row_dot(row: u32, lane: u32) -> f32 {
    var sum = 0.0;
    let base = p.w_off + row * p.k;
#if W_VEC4
    for (var k = lane * 4u; k < p.k; k = k + LANES * 4u) {
        sum = sum + dot(x4[k / 4u], w4(base + k));
    }
#else
    for (var k = lane; k < p.k; k = k + LANES) {
        sum = sum + x1[k] * w1(base + k);
    }
#endif
    return sum;
}

@compute @workgroup_size(256)
fn gemv(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#if SUBGROUP
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
) {
    let row = (wg.y * nwg.x + wg.x) * ROWS + lid / LANES;
    let lane = lid % LANES;
    var sum = 0.0;
    if (row < p.n) {
        sum = row_dot(row, lane);
    }
#if SUBGROUP
    let s = subgroupAdd(sum);
    if (sg_lane == 0u) {
        partial[lid / sg_size] = s;
    }
    workgroupBarrier();
    if (lane == 0u && row < p.n) {
        let first = lid / sg_size;
        var total = 0.0;
        for (var i = 0u; i < LANES / sg_size; i = i + 1u) {
            total = total + partial[first + i];
        }
#else
    partial[lid] = sum;
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lane < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
    }
    if (lane == 0u && row < p.n) {
        let total = partial[lid];
#endif
#if BIAS
        y[p.y_off + row] = total + bias[p.bias_off + row];
#else
        y[p.y_off + row] = total;
#endif
    }
}
