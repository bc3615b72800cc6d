//! The engine around the kernels: adapter choice errors, profiling, pool reuse, pipeline cache,
//! one submission per pass.

mod common;

use kestrel::ops::elementwise::{self, Unary};
use kestrel::ops::matmul::{MatmulOptions, matmul};
use kestrel::{Context, ContextOptions, KestrelError, Profile, Recorder, Tensor, TimingSource};

#[test]
fn unknown_adapter_filter_is_a_typed_error() {
    let opts = ContextOptions { adapter_filter: Some("no-such-adapter-xyz".into()), ..ContextOptions::from_env() };
    match Context::new(&opts) {
        Err(KestrelError::NoAdapter { filter, .. }) => assert_eq!(filter.as_deref(), Some("no-such-adapter-xyz")),
        other => panic!("expected NoAdapter, got {other:?}"),
    }
}

/// A matmul and a GELU recorded with profiling on `ctx`.
fn profile_two_dispatches(ctx: &std::sync::Arc<Context>) -> Profile {
    let a = Tensor::from_f32(ctx, &[33, 64], &common::rand_vec(33 * 64, 1)).unwrap();
    let b = Tensor::from_f32(ctx, &[64, 65], &common::rand_vec(64 * 65, 2)).unwrap();
    let mut rec = Recorder::with_profiling(ctx);
    let c = matmul(&mut rec, &a, &b, &MatmulOptions::default()).unwrap();
    let _d = elementwise::unary(&mut rec, &c, Unary::GeluErf).unwrap();
    let profile = rec.finish().unwrap().expect("profiling was requested");
    assert_eq!(profile.dispatches.len(), 2);
    assert_eq!(profile.dispatches[0].op, "matmul");
    assert_eq!(profile.dispatches[1].op, "gelu_erf");
    assert_eq!(profile.dispatches[0].flops, 2 * 33 * 64 * 65);
    assert!(profile.wall_ns > 0);
    let gpu = profile.source != TimingSource::CpuWall;
    assert!(profile.dispatches.iter().all(|d| d.gpu_ns.is_some_and(|ns| ns > 0) == gpu), "{profile:?}");
    if gpu {
        let starts: Vec<u64> = profile.dispatches.iter().filter_map(|d| d.gpu_start_ns).collect();
        assert!(starts[0] == 0 && starts[1] >= starts[0], "{profile:?}");
    }
    profile
}

/// Each profiling mode, chosen by the timestamp capabilities, with the features above it hidden:
/// timestamps inside one compute pass, one compute pass per dispatch (Apple GPUs: no
/// timestamps inside passes), CPU wall time (no timestamps). Lavapipe has every timestamp
/// feature, so there each mode runs; elsewhere each runs where the device allows.
#[test]
fn profiling_follows_the_timestamp_capabilities() {
    let env = ContextOptions::from_env;
    let cases = [
        (env(), TimingSource::GpuTimestampsInPass),
        (ContextOptions { disable_timestamps_inside_passes: true, ..env() }, TimingSource::GpuTimestampsPerPass),
        (ContextOptions { disable_timestamps: true, ..env() }, TimingSource::CpuWall),
    ];
    for (opts, best) in cases {
        let ctx = Context::new(&opts).unwrap();
        let caps = ctx.caps();
        assert!(!(opts.disable_timestamps_inside_passes && caps.timestamp_inside_passes));
        assert!(!(opts.disable_timestamps && caps.timestamp));
        let profile = profile_two_dispatches(&ctx);
        assert_eq!(profile.source, TimingSource::for_caps(caps));
        let offered = match best {
            TimingSource::GpuTimestampsInPass => caps.timestamp && caps.timestamp_inside_passes,
            TimingSource::GpuTimestampsPerPass => caps.timestamp,
            TimingSource::CpuWall => true,
        };
        if offered {
            assert_eq!(profile.source, best, "{opts:?}");
        }
    }
}

#[test]
fn a_recorder_without_profiling_returns_no_profile() {
    let ctx = common::fast();
    let x = Tensor::from_f32(&ctx, &[4], &[1.0, -1.0, 2.0, -2.0]).unwrap();
    let mut rec = Recorder::new(&ctx);
    let y = elementwise::unary(&mut rec, &x, Unary::Relu).unwrap();
    assert!(rec.finish().unwrap().is_none());
    assert_eq!(y.to_vec_f32().unwrap(), vec![1.0, 0.0, 2.0, 0.0]);
}

#[test]
fn freed_buffers_are_reused_and_pipelines_compiled_once() {
    // A private context so other tests' traffic does not disturb the counters.
    let ctx = Context::new(&ContextOptions::from_env()).unwrap();
    let x = Tensor::from_f32(&ctx, &[1000], &common::rand_vec(1000, 3)).unwrap();
    let step = || {
        let mut rec = Recorder::new(&ctx);
        let y = elementwise::unary(&mut rec, &x, Unary::Silu).unwrap();
        rec.submit().unwrap();
        y.to_vec_f32().unwrap()
    };
    let first = step();
    let compiled = ctx.pipelines().len();
    let allocs = ctx.pool().stats().allocations;
    for _ in 0..5 {
        assert_eq!(step(), first);
    }
    assert_eq!(ctx.pipelines().len(), compiled, "no pipeline is compiled twice");
    let stats = ctx.pool().stats();
    assert_eq!(stats.allocations, allocs, "outputs and parameter buffers come from the pool");
    assert!(stats.reuses >= 10);
}

#[test]
fn shape_errors_record_nothing() {
    let ctx = common::fast();
    let x = Tensor::from_f32(&ctx, &[2, 3], &[0.0; 6]).unwrap();
    assert!(x.reshape(&[4, 2]).is_err());
    assert!(Tensor::from_f32(&ctx, &[2, 3], &[0.0; 5]).is_err());
    let ids = Tensor::from_u32(&ctx, &[3], &[1, 2, 3]).unwrap();
    assert!(ids.to_vec_f32().is_err());
    let mut rec = Recorder::new(&ctx);
    assert!(elementwise::unary(&mut rec, &ids, Unary::Relu).is_err());
    assert!(rec.is_empty());
}

#[test]
fn driver_pipeline_cache_is_persisted_where_supported() {
    let dir = std::env::temp_dir().join(format!("kestrel-cache-test-{}", std::process::id()));
    let opts = ContextOptions { cache_dir: Some(dir.clone()), ..ContextOptions::from_env() };
    let ctx = Context::new(&opts).unwrap();
    let x = Tensor::from_f32(&ctx, &[8], &[1.0; 8]).unwrap();
    let mut rec = Recorder::new(&ctx);
    let y = elementwise::unary(&mut rec, &x, Unary::Sigmoid).unwrap();
    rec.submit().unwrap();
    y.to_vec_f32().unwrap();
    ctx.save_pipeline_cache();
    match ctx.pipelines().cache_file() {
        Some(file) => {
            let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0, "cache file {} is empty", file.display());
            // A second context starts from the saved data.
            let again = Context::new(&opts).unwrap();
            assert_eq!(again.pipelines().cache_file(), Some(file));
        }
        None => assert!(!ctx.caps().pipeline_cache, "a device with PIPELINE_CACHE must persist it"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn uploads_fill_host_mappable_buffers_in_place_on_cpu_vulkan() {
    let ctx = common::fast();
    let a = ctx.adapter();
    // lavapipe (a Vulkan CPU adapter) offers MAPPABLE_PRIMARY_BUFFERS; GL does not, and there
    // uploads go through the queue — both paths are covered by running the suite on each.
    if a.backend == "vulkan" && ctx.caps().cpu {
        assert!(ctx.pool().mappable_storage(), "a CPU Vulkan adapter uploads in place");
    }
    // Odd sizes (tails not a multiple of 4 bytes or 16) round-trip on either path.
    for n in [1usize, 7, 33, 197, 577] {
        let data = common::rand_vec(n, n as u64);
        assert_eq!(Tensor::from_f32(&ctx, &[n], &data).unwrap().to_vec_f32().unwrap(), data);
        let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        let back = Tensor::from_f16(&ctx, &[n], &h).unwrap().to_vec_f32().unwrap();
        assert_eq!(back, h.iter().map(|v| v.to_f32()).collect::<Vec<_>>());
    }
}

#[test]
fn the_memory_meter_counts_buffers_and_textures_until_trimmed() {
    use kestrel::pool::size_class;
    use kestrel::texture::{TEXTURE_WIDTH, TexelKind, WordTexture};
    // A context of its own: the other tests of this binary allocate concurrently.
    let ctx = Context::new(&ContextOptions::from_env()).unwrap();
    let m = ctx.memory().clone();
    assert_eq!((m.held(), m.peak()), (0, 0));
    let n = 300_000;
    let t = Tensor::empty(&ctx, &[n], kestrel::DType::F32).unwrap();
    let buffer = size_class(4 * n as u64);
    assert_eq!((m.held(), m.peak()), (buffer, buffer));
    drop(t);
    assert_eq!(m.held(), buffer, "a freed buffer stays pooled, and held");
    let again = Tensor::empty(&ctx, &[n], kestrel::DType::F32).unwrap();
    assert_eq!((m.held(), ctx.peak_gpu_bytes()), (buffer, buffer), "the pooled buffer is reused");
    drop(again);
    ctx.trim();
    assert_eq!((m.held(), ctx.peak_gpu_bytes()), (0, buffer), "trim releases it; the peak stays");
    m.reset_peak();
    assert_eq!(m.peak(), 0);
    // Two rows of Vec4 texels: 2 · 4096 texels of 16 bytes.
    let words = 4 * TEXTURE_WIDTH + 4;
    let tex = WordTexture::from_le_bytes(&ctx, &vec![0u8; words * 4], TexelKind::Vec4).unwrap();
    let texture = (2 * TEXTURE_WIDTH * 16) as u64;
    assert_eq!(m.held(), texture);
    drop(tex);
    assert_eq!((m.held(), m.peak()), (0, texture));
}

#[test]
fn a_pass_reuses_the_buffers_of_dropped_intermediates() {
    // A context of its own, so that its memory meter sees only this test.
    let ctx = Context::new(&ContextOptions::from_env()).unwrap();
    let n = 100_000;
    let data = common::rand_vec(n, 7);
    let x = Tensor::from_f32(&ctx, &[n], &data).unwrap();
    let mut rec = Recorder::new(&ctx);
    // h ← 2h + 1 eight times; each step's input is dropped once the next output is recorded.
    let step = Unary::Scale { alpha: 2.0, beta: 1.0 };
    let mut h = elementwise::unary(&mut rec, &x, step).unwrap();
    for _ in 0..7 {
        h = elementwise::unary(&mut rec, &h, step).unwrap();
    }
    // Outputs 3..8 each take the buffer of the intermediate two steps back.
    assert_eq!(rec.reused_buffers(), 6);
    rec.finish().unwrap();
    let want: Vec<f32> = data.iter().map(|&v| (0..8).fold(v, |a, _| 2.0 * a + 1.0)).collect();
    assert_eq!(h.to_vec_f32().unwrap(), want);
    // x, and three intermediates at most (in use, just dropped, being written), not eight.
    let buffer = kestrel::pool::size_class(4 * n as u64);
    assert!(ctx.peak_gpu_bytes() <= 4 * buffer, "peak {} for buffers of {buffer}", ctx.peak_gpu_bytes());
}

#[test]
fn tensor_sizes_that_overflow_are_errors_not_panics() {
    let ctx = Context::new(&ContextOptions::from_env()).unwrap();
    // Element counts or byte sizes past 64 bits, and sizes that only overflow when padded to 16.
    let shapes: [&[usize]; 4] = [&[usize::MAX, 2], &[1 << 32, 1 << 32], &[usize::MAX], &[(1 << 62) - 1]];
    for shape in shapes {
        for dtype in [kestrel::DType::F32, kestrel::DType::F16, kestrel::DType::U32] {
            match Tensor::empty(&ctx, shape, dtype) {
                Err(KestrelError::BufferTooLarge { requested, limit }) => assert!(requested > limit, "{shape:?} {dtype:?}"),
                other => panic!("{shape:?} {dtype:?}: {other:?}"),
            }
        }
    }
    assert!(matches!(Tensor::from_f32(&ctx, &[usize::MAX, 2], &[0.0; 2]), Err(KestrelError::InvalidArgument { .. })));
    assert_eq!(Tensor::empty(&ctx, &[3, 5], kestrel::DType::F32).unwrap().shape(), &[3, 5]);
}
