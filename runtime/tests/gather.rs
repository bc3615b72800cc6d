//! Embedding lookup vs the CPU reference (f32 and f16 tables, in-range and clamped ids).
//!
//! Every comparison is exact: the kernel copies f32 values, or widens f16 values to f32 (exact),
//! and the reference uses the same f16-rounded table.

mod common;

use std::sync::Arc;

use common::{all, assert_close, f16_round, rand_vec};
use kestrel::ops::gather::embedding;
use kestrel::reference;
use kestrel::{Context, DType, Recorder, Tensor};

/// Ids for a table of `vocab` rows: in range, plus (when `oob`) a few past the end.
fn make_ids(n: usize, vocab: usize, oob: bool, seed: u64) -> Vec<u32> {
    rand_vec(n, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| match (oob, i % 5) {
            (true, 1) => vocab as u32,
            (true, 3) => u32::MAX - i as u32,
            _ => ((v + 1.0) * 0.5 * vocab as f32) as u32 % vocab as u32,
        })
        .collect()
}

/// Checks one lookup against the reference; returns the number of dispatches it took.
fn check(ctx: &Arc<Context>, cfg: &str, vocab: usize, d: usize, ids_shape: &[usize], dtype: DType, seed: u64) -> usize {
    let table = rand_vec(vocab * d, seed);
    let t = Tensor::from_f32_as(ctx, &[vocab, d], &table, dtype).unwrap();
    let host_table = if dtype == DType::F16 { f16_round(&table) } else { table };
    let n: usize = ids_shape.iter().product();
    let ids = make_ids(n, vocab, true, seed + 1);
    let ti = Tensor::from_u32(ctx, ids_shape, &ids).unwrap();
    let mut rec = Recorder::new(ctx);
    let y = embedding(&mut rec, &t, &ti).unwrap();
    let dispatches = rec.len();
    rec.submit().unwrap();
    let mut want_shape = ids_shape.to_vec();
    want_shape.push(d);
    assert_eq!(y.shape(), want_shape.as_slice());
    let want = reference::gather::embedding(&host_table, vocab, d, &ids);
    assert_close(&y.to_vec_f32().unwrap(), &want, 0.0, 0.0, &format!("{cfg} {dtype:?} V={vocab} D={d} ids={ids_shape:?}"));
    dispatches
}

#[test]
fn embedding_matches_reference() {
    let ids_shapes: &[&[usize]] = &[&[1], &[7], &[2, 5], &[33], &[2, 0]];
    for (cfg, ctx) in all() {
        for dtype in [DType::F32, DType::F16] {
            for &vocab in &[1, 7, 33] {
                for &d in &[1, 3, 4, 7, 33, 64] {
                    for (i, ids_shape) in ids_shapes.iter().enumerate() {
                        check(&ctx, cfg, vocab, d, ids_shape, dtype, (vocab * 100 + d * 10 + i) as u64);
                    }
                }
            }
        }
    }
}

#[test]
fn large_tables_are_looked_up_in_windows() {
    // With a 1 MiB binding limit these tables take 2–3 row windows; one row is exactly 4 KiB
    // (vec4 path) in the first case and an odd 1001 halves (scalar path) in the second.
    let ctx = common::small_bindings();
    assert_eq!(check(&ctx, "windows", 600, 1024, &[3, 33], DType::F32, 1), 3);
    assert_eq!(check(&ctx, "windows", 1200, 1001, &[197], DType::F16, 2), 3);
    assert_eq!(check(&ctx, "windows", 577, 1000, &[64], DType::F16, 3), 2);
}

#[test]
fn bad_inputs_are_errors() {
    let ctx = common::fast();
    let table = Tensor::from_f32(&ctx, &[4, 3], &[0.0; 12]).unwrap();
    let ids = Tensor::from_u32(&ctx, &[2], &[0, 1]).unwrap();
    let fids = Tensor::from_f32(&ctx, &[2], &[0.0, 1.0]).unwrap();
    let utable = Tensor::from_u32(&ctx, &[4, 3], &[0; 12]).unwrap();
    let cube = Tensor::from_f32(&ctx, &[2, 2, 3], &[0.0; 12]).unwrap();
    let empty = Tensor::from_f32(&ctx, &[0, 3], &[]).unwrap();
    let mut rec = Recorder::new(&ctx);
    assert!(embedding(&mut rec, &table, &fids).is_err());
    assert!(embedding(&mut rec, &utable, &ids).is_err());
    assert!(embedding(&mut rec, &cube, &ids).is_err());
    assert!(embedding(&mut rec, &empty, &ids).is_err());
    assert!(rec.is_empty());
}
