//! `kestrel profile` for vision-language architectures with seeded random weights (latency and
//! memory do not depend on the values): `clip-vit-l-14-336` (the CLIP vision tower's encode),
//! `llava-1.5-7b` and `eve-1.8b` (vision encode, prefill of the image's tokens with a short
//! prompt around them, decode). Decode reads every linear weight once per token: its weight
//! bandwidth is compared with the `copy` kernel's, measured just before and after it.

use std::sync::Arc;
use std::time::Instant;

use kestrel::Quant;
use kestrel::bench::{BenchOptions, BenchRecord};
use kestrel::profile::{Profile, op_table};
use kestrel::{Context, ContextOptions, Recorder, Tensor};
use kestrel_models::clip::{VisionConfig, VisionTower};
use kestrel_models::eve::EveModel;
use kestrel_models::eve::config::EveConfig;
use kestrel_models::llava::{LlavaConfig, LlavaModel};
use kestrel_models::llm::decoder::{Decoder, DecoderOptions, Segment};
use kestrel_models::llm::weights::LoadOptions;
use kestrel_models::params::RandomParams;
use serde_json::json;

/// The architectures this module profiles.
pub const NAMES: [&str; 3] = ["clip-vit-l-14-336", "llava-1.5-7b", "eve-1.8b"];

/// Text tokens around the image in the profiled prompt (before, after).
const TEXT_TOKENS: (usize, usize) = (16, 8);

type Error = Box<dyn std::error::Error>;

/// Options of a VLM profile.
pub struct VlmProfileArgs<'a> {
    /// Architecture names from [`NAMES`].
    pub models: &'a [String],
    /// `f32`, `f16`, `w8` or `w4`.
    pub quant: &'a str,
    /// Timed vision encodes (after one warm-up).
    pub iters: usize,
    /// Decode steps timed.
    pub decode_tokens: usize,
    /// Skip the vision encode and the image's prefill: one token, then the decode steps (the
    /// decode bandwidth of a large model without minutes of prefill on a CPU adapter).
    pub decode_only: bool,
    /// One JSON object per model.
    pub json: bool,
}

/// Whether `name` is one of [`NAMES`].
pub fn is_vlm(name: &str) -> bool {
    NAMES.contains(&name)
}

/// The model under measurement.
enum Subject {
    Clip(Box<VisionTower>),
    Llava(Box<LlavaModel>),
    Eve(Box<EveModel>, Box<Decoder>),
}

impl Subject {
    fn load(ctx: &Arc<Context>, name: &str, quant: Quant) -> Result<Subject, Error> {
        let dec = DecoderOptions { context: Some(2048), kv_dtype: None };
        Ok(match name {
            "clip-vit-l-14-336" => {
                Subject::Clip(Box::new(VisionTower::load(ctx, &VisionConfig::clip_vit_l_14_336(), &RandomParams::new(0), quant)?))
            }
            "llava-1.5-7b" => {
                let opts = LoadOptions { quant, ..LoadOptions::default() };
                Subject::Llava(Box::new(LlavaModel::random(ctx, LlavaConfig::llava_15_7b()?, &opts, &dec, 0)?))
            }
            "eve-1.8b" => {
                let m = EveModel::random(ctx, EveConfig::eve_1_8b()?, quant, 0)?;
                let d = m.decoder(&dec)?;
                Subject::Eve(Box::new(m), Box::new(d))
            }
            other => return Err(format!("unknown VLM architecture `{other}` ({})", NAMES.join(", ")).into()),
        })
    }

    /// One vision encode, waited for: (ms, its image tokens on the GPU, profile when asked).
    fn encode(&self, ctx: &Arc<Context>, pixels: &Tensor, profiled: bool) -> Result<(f64, Tensor, Option<Profile>), Error> {
        let start = Instant::now();
        let mut rec = if profiled { Recorder::with_profiling(ctx) } else { Recorder::new(ctx) };
        let out = match self {
            Subject::Clip(t) => t.pooled(&mut rec, pixels)?,
            Subject::Llava(m) => m.record_image(&mut rec, pixels)?,
            Subject::Eve(m, _) => {
                let f = m.record_vision(&mut rec, pixels)?;
                m.record_projector(&mut rec, &f)?
            }
        };
        let profile = rec.finish()?;
        ctx.sync()?;
        Ok((start.elapsed().as_secs_f64() * 1e3, out, profile))
    }

    fn decoder(&mut self) -> Option<&mut Decoder> {
        match self {
            Subject::Clip(_) => None,
            Subject::Llava(m) => Some(m.decoder_mut()),
            Subject::Eve(_, d) => Some(d),
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted.get(((sorted.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(f64::NAN)
}

/// The best `copy` bandwidth (GB/s) of the kernel benchmarks, measured now.
fn copy_gbps(ctx: &Arc<Context>) -> Result<f64, Error> {
    let opts = BenchOptions { op: Some("copy".into()), runs: 5, quick: false };
    let records = kestrel::bench::run(ctx, &opts, |_: &BenchRecord| {})?;
    Ok(records.iter().map(|r| r.gbps).fold(0.0, f64::max))
}

/// Runs the profile of every model in `args`, one after the other (each loaded alone).
pub fn run(args: &VlmProfileArgs) -> Result<(), Error> {
    let quant = Quant::from_name(args.quant).ok_or_else(|| format!("unknown --quant `{}`", args.quant))?;
    let ctx = Context::new(&ContextOptions::from_env())?;
    for name in args.models {
        ctx.trim();
        ctx.memory().reset_peak();
        let started = Instant::now();
        let mut s = Subject::load(&ctx, name, quant)?;
        let load_s = started.elapsed().as_secs_f64();
        let load_peak = ctx.peak_gpu_bytes();
        ctx.trim();
        ctx.memory().reset_peak();
        profile_one(&ctx, name, &mut s, args, load_s, load_peak)?;
    }
    Ok(())
}

fn profile_one(ctx: &Arc<Context>, name: &str, s: &mut Subject, args: &VlmProfileArgs, load_s: f64, load_peak: u64) -> Result<(), Error> {
    let side = 336;
    let pixels: Vec<f32> = (0..3 * side * side).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let pixels = Tensor::from_f32(ctx, &[1, 3, side, side], &pixels)?;
    let mut out = json!({
        "model": name, "quant": args.quant, "adapter": ctx.adapter().name, "backend": ctx.adapter().backend, "load_s": load_s,
    });
    let mut image = None;
    if !args.decode_only || matches!(s, Subject::Clip(_)) {
        let mut times = Vec::new();
        s.encode(ctx, &pixels, false)?;
        for _ in 0..args.iters.max(1) {
            let (ms, tokens, _) = s.encode(ctx, &pixels, false)?;
            times.push(ms);
            image = Some(tokens);
        }
        times.sort_by(f64::total_cmp);
        let (_, _, profile) = s.encode(ctx, &pixels, true)?;
        out["vision_ms"] = json!({"p50": percentile(&times, 0.5), "p90": percentile(&times, 0.9)});
        out["vision_ops"] = json!(op_table(&profile.into_iter().collect::<Vec<_>>()));
    }
    if let Some(dec) = s.decoder() {
        let vocab = dec.config().vocab as u32;
        let before: Vec<u32> = (0..TEXT_TOKENS.0 as u32).map(|i| (i * 131 + 7) % vocab).collect();
        let after: Vec<u32> = (0..TEXT_TOKENS.1 as u32).map(|i| (i * 137 + 11) % vocab).collect();
        let segments = match &image {
            Some(image) => vec![Segment::Tokens(&before), Segment::Embeddings(image), Segment::Tokens(&after)],
            None => vec![Segment::Tokens(&before[..1])],
        };
        out["image_tokens"] = json!(image.as_ref().map_or(0, |t| t.shape()[0]));
        let prefill_tokens: usize = segments.iter().map(Segment::len).sum();
        let start = Instant::now();
        let mut id = dec.prefill_segments(&segments)?.argmax()?;
        let prefill_s = start.elapsed().as_secs_f64();
        let steps = args.decode_tokens.max(1);
        // The copy kernel's bandwidth just before and just after the decode steps (the better
        // of the two): the ratio compares like with like on a machine whose load changes.
        let copy_before = copy_gbps(ctx)?;
        let start = Instant::now();
        for _ in 0..steps {
            id = dec.decode_step(id)?.argmax()?;
        }
        let decode_tok_s = steps as f64 / start.elapsed().as_secs_f64();
        let copy = copy_before.max(copy_gbps(ctx)?);
        let weight_bytes = dec.weights().linear_bytes();
        let gbps = weight_bytes as f64 * decode_tok_s / 1e9;
        out["prefill_tokens"] = json!(prefill_tokens);
        out["prefill_tok_s"] = json!(prefill_tokens as f64 / prefill_s);
        out["decode_tokens"] = json!(steps);
        out["decode_tok_s"] = json!(decode_tok_s);
        out["context"] = json!(dec.context());
        out["kv_dtype"] = json!(dec.kv_dtype().name());
        out["weight_bytes"] = json!(weight_bytes);
        out["decode_weight_gbps"] = json!(gbps);
        out["copy_gbps"] = json!(copy);
        out["decode_fraction_of_copy"] = json!(gbps / copy);
    }
    out["peak_gpu_bytes"] = json!(ctx.peak_gpu_bytes());
    out["load_peak_gpu_bytes"] = json!(load_peak);
    if args.json {
        println!("{out}");
    } else {
        print_table(&out);
    }
    Ok(())
}

/// The human-readable summary of one model's JSON object.
fn print_table(v: &serde_json::Value) {
    println!("{} ({}) on {} ({})", v["model"], v["quant"], v["adapter"], v["backend"]);
    if let Some(p50) = v["vision_ms"]["p50"].as_f64() {
        println!("vision encode: p50 {p50:.1} ms, p90 {:.1} ms", v["vision_ms"]["p90"].as_f64().unwrap_or(f64::NAN));
    }
    if let Some(t) = v["prefill_tok_s"].as_f64() {
        println!(
            "prefill: {} tokens ({} of them the image's) at {t:.1} tok/s; decode: {:.2} tok/s, {:.2} GB/s of weights = {:.0}% of copy ({:.2} GB/s)",
            v["prefill_tokens"],
            v["image_tokens"],
            v["decode_tok_s"].as_f64().unwrap_or(f64::NAN),
            v["decode_weight_gbps"].as_f64().unwrap_or(f64::NAN),
            100.0 * v["decode_fraction_of_copy"].as_f64().unwrap_or(f64::NAN),
            v["copy_gbps"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!(
        "peak GPU memory {:.1} MB running, {:.1} MB loading",
        v["peak_gpu_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        v["load_peak_gpu_bytes"].as_f64().unwrap_or(0.0) / 1e6
    );
}
