//! Matrix multiply: batched, optional bias, B transposed or not, f32/f16 storage, f32
//! accumulation; M = 1 goes to [`gemv`]. Operands larger than one storage
//! binding are split into windows over M, N and (for a row-major B) K. Two epilogues save a
//! pass over C: GELU ([`matmul_gelu`]) and accumulation into an existing tensor
//! ([`matmul_accumulate`], a residual connection).

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::gemv::{self, GemvVariant};
use crate::ops::operand::Operand;
use crate::ops::{max_window_elems, param_bytes, window};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Options of [`matmul`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulOptions<'a> {
    /// `[N]` f32 added to every output row.
    pub bias: Option<&'a Tensor>,
    /// B is stored `[N, K]` (a PyTorch `nn.Linear` weight) instead of `[K, N]`.
    pub transpose_b: bool,
}

/// Output block of one workgroup as (rows, columns): `matmul_rows` 8·RG × 8·CP (8 invocations
/// of CP = 4·CV columns each); the tiled kernel 64×64 with 4×4 per invocation, 128×128 with 8×8.
fn block(v: &Variant) -> (usize, usize) {
    match (v.rows, v.tile8) {
        (true, _) => (8 * v.rg as usize, 32 * v.cv as usize),
        (false, true) => (128, 128),
        (false, false) => (64, 64),
    }
}

/// Large products take the 8×8-per-invocation kernel (half the shared-memory loads per
/// multiply-add); small ones the 4×4 kernel, which wastes less of its tile.
fn use_tile8(m: usize, n: usize) -> bool {
    m >= 128 && n >= 128
}

/// Largest K of `matmul_rows`: one loop iteration per 4 of K, and llvmpipe silently ends an
/// invocation's loops after 65535 iterations in total.
pub(crate) const ROWS_MAX_K: usize = 4 * 60_000;

/// The `matmul_rows` tile as (row groups of 8, vec4s of columns per invocation): the one that
/// spends the least estimated time on its padded product. Per 4-deep K step an invocation
/// loads RG vec4s of A (shared through subgroupBroadcast) and CP = 4·CV of B for 32·RG·CP
/// multiply-adds; with loads the dominant cost, time per multiply-add ≈
/// c + (RG + CP) / (32·RG·CP), c = 0.0046 fitted to lavapipe ([512, 512]·[512, 512]ᵀ: 64 rows ×
/// 8 columns 1.0, 64 × 4 and 32 × 8 0.76 as fast, 64 × 16 1.1–1.15). E.g. N = 32 takes
/// 32-column blocks rather than wasting half of 64, N = 192 or 576 (ViT widths) 96-column
/// blocks (12 per invocation) rather than 128 (a third / a ninth wasted; 5–15 % faster on
/// lavapipe at M = 196), and M = 196 56-row blocks (224 rows) rather than 64 (256). Without
/// subgroups every invocation loads every row of A itself, so more rows save nothing and only
/// cost compile time: 32 rows, at most 8 columns.
pub(crate) fn rows_tile(m: usize, n: usize, subgroup: bool) -> (u32, u32) {
    let (groups, vecs) = rows_choices(subgroup);
    let cost = |rg: u32, cv: u32| {
        let (rm, cp) = (8 * rg as usize, 4 * cv as usize);
        let padded = (m.div_ceil(rm) * rm * n.div_ceil(8 * cp) * 8 * cp) as f64;
        padded * (0.0046 + f64::from(rg + 4 * cv) / (128.0 * f64::from(rg * cv)))
    };
    let mut best = (4, 2, f64::INFINITY);
    for &rg in groups {
        for &cv in vecs {
            let c = cost(rg, cv);
            if c < best.2 {
                best = (rg, cv, c);
            }
        }
    }
    (best.0, best.1)
}

/// The tiles `rows_tile` may pick (also those of `qmatmul_rows`): row groups of 8 and column
/// vec4s per invocation.
pub(crate) fn rows_choices(subgroup: bool) -> (&'static [u32], &'static [u32]) {
    if subgroup { (&[4, 5, 6, 7, 8], &[1, 2, 3, 4]) } else { (&[4], &[1, 2]) }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    bias_off: u32,
    a_bs: u32,
    b_bs: u32,
    c_bs: u32,
    pad: [u32; 3],
}

/// Which kernel variant a product needs.
#[derive(Clone, Copy, Debug)]
struct Variant {
    native_f16: bool,
    a_f16: bool,
    b_f16: bool,
    a_vec4: bool,
    b_vec4: bool,
    trans_b: bool,
    bias: bool,
    accum: bool,
    /// GELU (erf) of the stored value.
    gelu: bool,
    tile8: bool,
    /// The CPU-adapter kernel `matmul_rows` instead of the tiled one.
    rows: bool,
    /// `matmul_rows`: row groups of 8 per workgroup (4 to 8).
    rg: u32,
    /// `matmul_rows`: vec4s of columns per invocation (1 to 4).
    cv: u32,
    /// `matmul_rows`: A rows shared through subgroupBroadcast.
    subgroup: bool,
    /// `matmul_rows`: C rows, offset and N multiples of 4 (vec4 stores).
    c_vec4: bool,
    /// B is a [`DenseTexture`].
    tex: bool,
}

impl Variant {
    fn entry(self) -> &'static str {
        if self.rows { "matmul_rows" } else { "matmul" }
    }

    fn key(self) -> KernelKey {
        KernelKey {
            family: "matmul",
            entry: self.entry(),
            defines: Defines::new()
                .flag("F16", self.native_f16 && (self.a_f16 || self.b_f16))
                .flag("A_F16", self.a_f16)
                .flag("B_F16", self.b_f16)
                .flag("A_VEC4", self.a_vec4)
                .flag("B_VEC4", self.b_vec4)
                .flag("TRANS_B", self.trans_b)
                .flag("BIAS", self.bias)
                .flag("ACCUM", self.accum)
                .flag("GELU", self.gelu)
                .flag("TILE8", self.tile8 && !self.rows)
                .flag("ROWS", self.rows)
                .flag("TEX", self.tex)
                .set("RG", if self.rows { self.rg } else { 4 })
                .set("CV", if self.rows { self.cv } else { 1 })
                .flag("SUBGROUP", self.rows && self.subgroup)
                .flag("C_VEC4", self.rows && self.c_vec4),
        }
    }
}

fn float_operand(op: &'static str, dtype: DType) -> Result<bool> {
    match dtype {
        DType::F32 => Ok(false),
        DType::F16 => Ok(true),
        d => Err(KestrelError::UnsupportedDtype { op, dtype: d }),
    }
}

fn shape_err(detail: String) -> KestrelError {
    KestrelError::Shape { op: "matmul", detail }
}

/// `C = A·B (+ bias)`. A is `[..batch, M, K]`; B is `[K, N]` (or `[N, K]` with
/// `transpose_b`), either shared by all batches or with A's batch dimensions. C is f32
/// `[..batch, M, N]`. A and B may each be f32 or f16.
pub fn matmul<'b>(rec: &mut Recorder, a: &Tensor, b: impl Into<Operand<'b>>, opts: &MatmulOptions) -> Result<Tensor> {
    product(rec, a, b.into(), opts, false, None)
}

/// `GELU(A·B (+ bias))` with the erf GELU (PyTorch's default, as
/// [`Unary::GeluErf`](crate::ops::elementwise::Unary::GeluErf)), applied as the product is
/// stored: no separate activation pass. Operands as in [`matmul`].
pub fn matmul_gelu<'b>(rec: &mut Recorder, a: &Tensor, b: impl Into<Operand<'b>>, opts: &MatmulOptions) -> Result<Tensor> {
    product(rec, a, b.into(), opts, true, None)
}

/// `c += A·B (+ bias)` in place: `c` is an f32 tensor of the product's shape (e.g. a
/// transformer's residual stream), which must not share a buffer with A, B or the bias. Every
/// clone of `c` sees the sum. Operands as in [`matmul`].
pub fn matmul_accumulate<'b>(rec: &mut Recorder, a: &Tensor, b: impl Into<Operand<'b>>, opts: &MatmulOptions, c: &Tensor) -> Result<()> {
    product(rec, a, b.into(), opts, false, Some(c)).map(drop)
}

/// [`matmul`] with its epilogues: `gelu` applies GELU to the stored value; `into` accumulates
/// into that tensor (returned) instead of a new one.
fn product(rec: &mut Recorder, a: &Tensor, b: Operand, opts: &MatmulOptions, gelu: bool, into: Option<&Tensor>) -> Result<Tensor> {
    let a_f16 = float_operand("matmul", a.dtype())?;
    let b_f16 = float_operand("matmul", b.dtype())?;
    let tex = matches!(b, Operand::Texture(_));
    let (ash, bsh) = (a.shape(), b.shape());
    if tex && !opts.transpose_b {
        return Err(KestrelError::InvalidArgument {
            op: "matmul",
            detail: "a texture operand is a weight [N, K]: transpose_b only".into(),
        });
    }
    if ash.is_empty() || bsh.len() < 2 {
        return Err(shape_err(format!("A {ash:?} needs rank >= 1 and B {bsh:?} rank >= 2")));
    }
    let (m, k) = if ash.len() == 1 { (1, ash[0]) } else { (ash[ash.len() - 2], ash[ash.len() - 1]) };
    let batch_dims = if ash.len() > 2 { &ash[..ash.len() - 2] } else { &[][..] };
    let batch: usize = batch_dims.iter().product();
    let (kb, n) = if opts.transpose_b { (bsh[bsh.len() - 1], bsh[bsh.len() - 2]) } else { (bsh[bsh.len() - 2], bsh[bsh.len() - 1]) };
    if kb != k {
        return Err(shape_err(format!("A {ash:?} and B {bsh:?} (transpose_b={}) disagree on K", opts.transpose_b)));
    }
    let b_batched = bsh.len() > 2;
    if b_batched && bsh[..bsh.len() - 2] != *batch_dims {
        return Err(shape_err(format!("B {bsh:?} batch dims differ from A {ash:?}")));
    }
    if let Some(bias) = opts.bias
        && (bias.dtype() != DType::F32 || bias.shape() != [n])
    {
        return Err(shape_err(format!("bias {:?} ({}) must be f32 [{n}]", bias.shape(), bias.dtype().name())));
    }
    let mut out_shape: Vec<usize> = ash[..ash.len().saturating_sub(1)].to_vec();
    out_shape.push(n);
    for (what, v) in [("M", m), ("N", n), ("K", k), ("batch", batch)] {
        if v == 0 || v > u32::MAX as usize / 4 {
            return Err(KestrelError::InvalidArgument { op: "matmul", detail: format!("{what} = {v} out of range") });
        }
    }
    if m == 1 && batch == 1 && opts.transpose_b && !gelu {
        // The GEMV accumulates into the accumulator's [n] view (same buffer).
        let into = into.map(|c| c.reshape(&[n])).transpose()?;
        let y = gemv::gemv_into(rec, &a.reshape(&[k])?, b, opts.bias, GemvVariant::Auto, into.as_ref())?;
        return y.reshape(&out_shape);
    }
    let out = match into {
        Some(c) => {
            if c.dtype() != DType::F32 || c.shape() != out_shape.as_slice() {
                return Err(shape_err(format!("accumulator {:?} ({}) must be f32 {out_shape:?}", c.shape(), c.dtype().name())));
            }
            let shared = |t: &Tensor| Arc::ptr_eq(t.pooled(), c.pooled());
            if shared(a) || matches!(b, Operand::Tensor(t) if shared(t)) || opts.bias.is_some_and(shared) {
                return Err(KestrelError::InvalidArgument {
                    op: "matmul",
                    detail: "the accumulator shares a buffer with an operand".into(),
                });
            }
            c.clone()
        }
        None => rec.output(&out_shape, DType::F32)?,
    };
    let caps = rec.context().caps().clone();
    let (ea, eb) = (a.dtype().size(), b.dtype().size());
    let (rg, cv) = rows_tile(m, n, rows_subgroup(&caps));
    let variant = Variant {
        native_f16: caps.read_f16_natively(),
        a_f16,
        b_f16,
        a_vec4: k % 4 == 0,
        b_vec4: if opts.transpose_b { k % 4 == 0 } else { n % 4 == 0 },
        trans_b: opts.transpose_b,
        bias: opts.bias.is_some(),
        accum: into.is_some(),
        gelu,
        tile8: use_tile8(m, n),
        rows: caps.cpu,
        rg,
        cv,
        subgroup: rows_subgroup(&caps),
        c_vec4: n.is_multiple_of(4),
        tex,
    };
    if variant.rows && k > ROWS_MAX_K {
        return Err(KestrelError::InvalidArgument {
            op: "matmul",
            detail: format!("K = {k} exceeds {ROWS_MAX_K}, the most the CPU-adapter kernel's loop may run"),
        });
    }
    let (tm, tn) = block(&variant);
    let flops_per_batch = 2 * (m * n * k) as u64;
    let epilogue = match (gelu, into.is_some()) {
        (true, _) => " gelu",
        (false, true) => " +=",
        (false, false) => "",
    };
    let shape_label = format!("{ash:?}x{bsh:?}{}{epilogue}", if opts.transpose_b { "^T" } else { "" });
    let b_elems = k * n;

    let fits = |elems: usize, esize: usize| elems <= max_window_elems(&caps, esize);
    let single = fits(batch * m * k, ea)
        && (tex || fits(if b_batched { batch } else { 1 } * b_elems, eb))
        && fits(batch * m * n, 4)
        && batch <= caps.max_workgroups_per_dim as usize;
    if single {
        let params = Params {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            lda: k as u32,
            ldb: if opts.transpose_b { k } else { n } as u32,
            ldc: n as u32,
            a_bs: (m * k) as u32,
            b_bs: if b_batched { b_elems as u32 } else { 0 },
            c_bs: (m * n) as u32,
            ..Default::default()
        };
        let mut bindings = vec![Binding::whole(a), b.bind(&caps, 0, bsh.iter().product()).0, Binding::whole(&out)];
        if let Some(bias) = opts.bias {
            bindings.push(Binding::whole(bias));
        }
        rec.dispatch(Dispatch {
            kernel: rec.kernel("matmul", variant.entry(), variant.key().defines)?,
            bindings,
            params: param_bytes(&params),
            workgroups: [n.div_ceil(tn) as u32, m.div_ceil(tm) as u32, batch as u32],
            op: "matmul",
            shape: shape_label,
            flops: flops_per_batch * batch as u64,
            bytes: ((batch * m * k) * ea + b_elems * eb + batch * m * n * 4) as u64,
        })?;
        return Ok(out);
    }

    // Windowed: one batch at a time; M rows of A and C, N rows of a transposed B, or K rows of
    // a row-major B (accumulating into C) per window.
    let too_big = |what: &str| KestrelError::InvalidArgument { op: "matmul", detail: format!("one {what} exceeds a storage binding") };
    let mc = (max_window_elems(&caps, ea) / k).min(max_window_elems(&caps, 4) / n).min(m);
    if mc == 0 {
        return Err(too_big("row of A or C"));
    }
    let (nc, kc) = if tex {
        (n, k)
    } else if opts.transpose_b {
        (max_window_elems(&caps, eb) / k, k)
    } else if fits(b_elems, eb) {
        (n, k)
    } else {
        (n, (max_window_elems(&caps, eb) / n) / 4 * 4)
    };
    if nc == 0 || kc == 0 {
        return Err(too_big("row of B"));
    }
    let nc = nc.min(n);
    for bi in 0..batch {
        let bb = if b_batched { bi } else { 0 };
        for m0 in (0..m).step_by(mc) {
            let mcur = mc.min(m - m0);
            let a_start = bi * m * k + m0 * k;
            let wa = window(&caps, a_start, mcur * k, ea);
            let c_start = bi * m * n + m0 * n;
            let wc = window(&caps, c_start, mcur * n, 4);
            for n0 in (0..n).step_by(nc) {
                let ncur = nc.min(n - n0);
                for k0 in (0..k).step_by(kc) {
                    let kcur = kc.min(k - k0);
                    let (b_start, b_count) =
                        if opts.transpose_b { (bb * b_elems + n0 * k, ncur * k) } else { (bb * b_elems + k0 * n, kcur * n) };
                    let (b_binding, wb) = b.bind(&caps, b_start, b_count);
                    let params = Params {
                        m: mcur as u32,
                        n: ncur as u32,
                        k: kcur as u32,
                        lda: k as u32,
                        ldb: if opts.transpose_b { k } else { n } as u32,
                        ldc: n as u32,
                        a_off: (a_start - wa.elem_start + k0) as u32,
                        b_off: (b_start - wb.elem_start) as u32,
                        c_off: (c_start - wc.elem_start + n0) as u32,
                        bias_off: n0 as u32,
                        ..Default::default()
                    };
                    let c_vec4 = variant.c_vec4 && ncur.is_multiple_of(4) && params.c_off.is_multiple_of(4);
                    let v = Variant {
                        bias: opts.bias.is_some() && k0 == 0,
                        accum: into.is_some() || k0 > 0,
                        gelu: gelu && k0 + kcur == k,
                        c_vec4,
                        ..variant
                    };
                    let mut bindings = vec![
                        Binding::window(a, wa.byte_offset, wa.byte_size),
                        b_binding,
                        Binding::window(&out, wc.byte_offset, wc.byte_size),
                    ];
                    if let (Some(bias), true) = (opts.bias, v.bias) {
                        bindings.push(Binding::whole(bias));
                    }
                    rec.dispatch(Dispatch {
                        kernel: rec.kernel("matmul", v.entry(), v.key().defines)?,
                        bindings,
                        params: param_bytes(&params),
                        workgroups: grid_2d(ncur, mcur, (tm, tn), &caps)?,
                        op: "matmul",
                        shape: shape_label.clone(),
                        flops: 2 * (mcur * ncur * kcur) as u64,
                        bytes: (mcur * kcur * ea + ncur * kcur * eb + mcur * ncur * 4) as u64,
                    })?;
                }
            }
        }
    }
    Ok(out)
}

/// Whether the CPU-adapter kernels (`matmul_rows`, `sla_*_rows`, …) may share data across
/// their 8-invocation workgroups with subgroupBroadcast: the workgroup is exactly one subgroup
/// (every subgroup has 8 invocations), so its lanes are 0..7. In a wider subgroup the 8
/// invocations would be a partial subgroup whose lane numbers nothing fixes.
pub(crate) fn rows_subgroup(caps: &crate::caps::Capabilities) -> bool {
    caps.subgroups && caps.subgroup_min_size == 8 && caps.subgroup_max_size == 8
}

fn grid_2d(n: usize, m: usize, (tm, tn): (usize, usize), caps: &crate::caps::Capabilities) -> Result<[u32; 3]> {
    let (x, y) = (n.div_ceil(tn), m.div_ceil(tm));
    if x.max(y) > caps.max_workgroups_per_dim as usize {
        return grid(u64::MAX, 0);
    }
    Ok([x as u32, y as u32, 1])
}

/// The 16×16 shared-memory tiled f32 kernel used as the benchmarks' yardstick
/// (`A [M, K] · B [K, N]`, one output per invocation, no vectorisation).
pub fn matmul_baseline(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op: "matmul_baseline", dtype: DType::F16 });
    }
    let (&[m, k], &[kb, n]) = (a.shape(), b.shape()) else {
        return Err(shape_err(format!("baseline takes 2-D operands, got {:?} and {:?}", a.shape(), b.shape())));
    };
    if k != kb {
        return Err(shape_err(format!("{:?} x {:?}", a.shape(), b.shape())));
    }
    let caps = rec.context().caps().clone();
    if a.byte_size().max(b.byte_size()).max((m * n * 4) as u64) > caps.max_storage_binding {
        return Err(KestrelError::InvalidArgument { op: "matmul_baseline", detail: "operands exceed one binding".into() });
    }
    let out = rec.output(&[m, n], DType::F32)?;
    let params: [u32; 4] = [m as u32, n as u32, k as u32, 0];
    rec.dispatch(Dispatch {
        kernel: rec.kernel("matmul_baseline", "matmul_baseline", Defines::new())?,
        bindings: vec![Binding::whole(a), Binding::whole(b), Binding::whole(&out)],
        params: param_bytes(&params),
        workgroups: [n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1],
        op: "matmul_baseline",
        shape: format!("{:?}x{:?}", a.shape(), b.shape()),
        flops: 2 * (m * n * k) as u64,
        bytes: ((m * k + k * n + m * n) * 4) as u64,
    })?;
    Ok(out)
}

/// Every matmul kernel variant.
pub fn variants() -> Vec<KernelKey> {
    let mut v = Vec::new();
    for bits in 0u32..1u32 << 13 {
        let on = |i: u32| bits & (1 << i) != 0;
        // A texture operand is a transposed weight.
        if on(12) && !on(5) {
            continue;
        }
        let var = Variant {
            native_f16: on(0),
            a_f16: on(1),
            b_f16: on(2),
            a_vec4: on(3),
            b_vec4: on(4),
            trans_b: on(5),
            bias: on(6),
            accum: on(7),
            tile8: on(8),
            rows: on(9),
            rg: 4,
            cv: 1,
            subgroup: false,
            c_vec4: on(10),
            gelu: on(11),
            tex: on(12),
        };
        // `matmul_rows` runs on CPU adapters, which read f16 packed; its tile bits only exist there.
        let impossible =
            var.native_f16 && !(var.a_f16 || var.b_f16) || var.rows && (var.tile8 || var.native_f16) || !var.rows && var.c_vec4;
        if impossible {
            continue;
        }
        if !var.rows {
            v.push(var.key());
            continue;
        }
        for cv in [1, 2] {
            v.push(Variant { cv, ..var }.key());
        }
        for rg in 4..=8 {
            for cv in 1..=4 {
                v.push(Variant { rg, cv, subgroup: true, ..var }.key());
            }
        }
    }
    v.push(KernelKey { family: "matmul_baseline", entry: "matmul_baseline", defines: Defines::new() });
    v
}

#[cfg(test)]
mod tests {
    use super::rows_tile;

    #[test]
    fn rows_tile_fits_the_matrix() {
        // N = 32: one 32-column block rather than half of 64 or a quarter of 128.
        assert_eq!(rows_tile(3136, 32, true).1, 1);
        // Square products take the biggest tile; without subgroups, 32 rows and 8 columns.
        assert_eq!(rows_tile(512, 512, true), (8, 4));
        assert_eq!(rows_tile(512, 512, false), (4, 2));
        // M = 196: 56-row blocks (224 rows) rather than 64 (256).
        assert_eq!(rows_tile(196, 768, true).0, 7);
        // N = 192 / 576: 96-column blocks (12 columns per invocation), no padding.
        assert_eq!(rows_tile(196, 192, true), (7, 3));
        assert_eq!(rows_tile(196, 576, true), (7, 3));
    }
}
