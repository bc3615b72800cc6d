// Scores for prompt-guided selection (Free Video-LLM): cosine similarity of every row of x
// with one vector y, as torch.nn.functional.cosine_similarity computes it (each side divided
// by max(‖·‖, eps) before the dot product, eps = 1e-8).
//
// One invocation per row; each loops over the row in f32 (three passes: ‖x‖, then the dot of
// the normalised sides; ‖y‖ is recomputed per invocation, as y is short). No subgroup or
// workgroup-shared state, so nothing depends on the device's subgroup size or layout.
//
// Rows are numbered over a 2-D grid of workgroups (`wg.y * nwg.x + wg.x`) for large counts.

struct Params {
    rows: u32,
    d: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

const EPS: f32 = 1e-8;

@compute @workgroup_size(256)
fn cosine_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.d;
    var xx = 0.0;
    var yy = 0.0;
    for (var i = 0u; i < p.d; i++) {
        let a = x[base + i];
        let b = y[i];
        xx += a * a;
        yy += b * b;
    }
    let nx = max(sqrt(xx), EPS);
    let ny = max(sqrt(yy), EPS);
    var dot = 0.0;
    for (var i = 0u; i < p.d; i++) {
        dot += (x[base + i] / nx) * (y[i] / ny);
    }
    dst[r] = dot;
}
