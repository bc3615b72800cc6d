// The register block of the CPU-adapter matmul kernels (`matmul_rows`, `qmatmul_rows`): each
// invocation of an 8-invocation workgroup holds rows row0 .. row0 + 8·RG of C, CV vec4s of
// columns, in `acc` (indexed by literals only). The including file defines RG, CV, `acc`,
// `row0`, `lane`, `fma_v(i, v, a)` (C row i, vec4 v += a · the loaded B), `a_row4(m, k)` (four
// depths of row m of A) and `store_v(m, g, r, v)`; SUBGROUP shares A rows by broadcast.

// C row i += a · B (a: row i of A at the current four depths).
fn fma_row(i: u32, a: vec4<f32>) {
    fma_v(i, 0u, a);
    if (CV > 1u) {
        fma_v(i, 1u, a);
    }
    if (CV > 2u) {
        fma_v(i, 2u, a);
    }
    if (CV > 3u) {
        fma_v(i, 3u, a);
    }
}

// Rows 8g .. 8g + 7 of the block at the current four depths k.
fn rows8(g: u32, k: u32) {
#if SUBGROUP
    // Lane j loads row 8g + j; every lane takes all eight from the registers.
    let a = a_row4(row0 + 8u * g + lane, k);
    fma_row(8u * g, subgroupBroadcast(a, 0u));
    fma_row(8u * g + 1u, subgroupBroadcast(a, 1u));
    fma_row(8u * g + 2u, subgroupBroadcast(a, 2u));
    fma_row(8u * g + 3u, subgroupBroadcast(a, 3u));
    fma_row(8u * g + 4u, subgroupBroadcast(a, 4u));
    fma_row(8u * g + 5u, subgroupBroadcast(a, 5u));
    fma_row(8u * g + 6u, subgroupBroadcast(a, 6u));
    fma_row(8u * g + 7u, subgroupBroadcast(a, 7u));
#else
    fma_row(8u * g, a_row4(row0 + 8u * g, k));
    fma_row(8u * g + 1u, a_row4(row0 + 8u * g + 1u, k));
    fma_row(8u * g + 2u, a_row4(row0 + 8u * g + 2u, k));
    fma_row(8u * g + 3u, a_row4(row0 + 8u * g + 3u, k));
    fma_row(8u * g + 4u, a_row4(row0 + 8u * g + 4u, k));
    fma_row(8u * g + 5u, a_row4(row0 + 8u * g + 5u, k));
    fma_row(8u * g + 6u, a_row4(row0 + 8u * g + 6u, k));
    fma_row(8u * g + 7u, a_row4(row0 + 8u * g + 7u, k));
#endif
}

// vec4 v of row 8g + r of the block, the group g chosen at run time (a select per group: a
// run-time index would put `acc` in per-lane memory).
fn pick_acc(g: u32, r: u32, v: u32) -> vec4<f32> {
    var x = acc[r * CV + v];
    x = select(x, acc[(8u + r) * CV + v], g == 1u);
    x = select(x, acc[(16u + r) * CV + v], g == 2u);
    x = select(x, acc[(24u + r) * CV + v], g == 3u);
    if (RG > 4u) {
        x = select(x, acc[(32u + r) * CV + v], g == 4u);
    }
    if (RG > 5u) {
        x = select(x, acc[(40u + r) * CV + v], g == 5u);
    }
    if (RG > 6u) {
        x = select(x, acc[(48u + r) * CV + v], g == 6u);
    }
    if (RG > 7u) {
        x = select(x, acc[(56u + r) * CV + v], g == 7u);
    }
    return x;
}

// Row 8g + r of the block.
fn store_row(g: u32, r: u32) {
    let m = row0 + 8u * g + r;
    if (m < p.m) {
        store_v(m, g, r, 0u);
        if (CV > 1u) {
            store_v(m, g, r, 1u);
        }
        if (CV > 2u) {
            store_v(m, g, r, 2u);
        }
        if (CV > 3u) {
            store_v(m, g, r, 3u);
        }
    }
}
