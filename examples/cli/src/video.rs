//! `kestrel video`: Free Video-LLM — a question about a video answered by a LLaVA with the
//! frames and regions the question picks (CLIP scores, selection on the GPU); `kestrel video
//! plan` (which frames a spec takes, no GPU) and `kestrel video frames` (the sampled frames as
//! PNGs).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use kestrel::Quant;
use kestrel::{Context, ContextOptions};
use kestrel_models::clip::ClipModel;
use kestrel_models::llava::{LlavaConfig, LlavaModel};
use kestrel_models::llm::decoder::DecoderOptions;
use kestrel_models::llm::generate::{GenerateOptions, generate_segments};
use kestrel_models::llm::sampler::SamplerConfig;
use kestrel_models::llm::weights::LoadOptions;
use kestrel_models::video::decode::decode;
use kestrel_models::video::{DEFAULT_MAX_FRAMES, DEFAULT_SPEC, PROMPT, Plan, RoiGrid, Spec, encode_video_with, prompt_text, seq_frames};

type Error = Box<dyn std::error::Error>;

/// Arguments of `kestrel video`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct VideoArgs {
    #[command(subcommand)]
    command: Option<VideoCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum VideoCommand {
    /// Which frames a spec takes from a video of N frames (no GPU): JSON with the sampled
    /// frame indices, the middle positions among them and the visual token count.
    Plan(PlanArgs),
    /// Decode the sampled frames of a video at its own size as DIR/frame_NNNNNN.png (the frame
    /// index, six digits) and print the frames, their count, rate and size.
    Frames(FramesArgs),
}

#[derive(Args)]
struct FramesArgs {
    /// The video file.
    #[arg(long)]
    video: PathBuf,
    /// Frame budget T.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAMES)]
    max_frames: usize,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Print one JSON object (else a summary line).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PlanArgs {
    /// Frames in the video.
    #[arg(long)]
    frames: usize,
    /// Frame budget T.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAMES)]
    max_frames: usize,
    /// Aggregation spec.
    #[arg(long, default_value = DEFAULT_SPEC)]
    spec: String,
    /// Side of the vision tower's square patch grid (24 for ViT-L/14-336).
    #[arg(long, default_value_t = 24)]
    grid: usize,
    /// Print one JSON object (else a summary line).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    /// LLaVA model directory (Hugging Face layout).
    #[arg(long)]
    model: Option<PathBuf>,
    /// CLIP model directory of the same vision tower (the "double tower").
    #[arg(long)]
    clip: Option<PathBuf>,
    /// The video file.
    #[arg(long)]
    video: Option<PathBuf>,
    /// The question.
    #[arg(long, alias = "question")]
    prompt: Option<String>,
    /// Aggregation spec.
    #[arg(long, default_value = DEFAULT_SPEC)]
    spec: String,
    /// Frame budget T.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAMES)]
    max_frames: usize,
    /// How the RoI reads the pooled scores: `official` (24×12 read as 12×24, as the official
    /// code) or `spatial` (as 24×12, geometrically right; beyond the official code).
    #[arg(long, value_enum, default_value_t = RoiReading::Official)]
    roi_grid: RoiReading,
    /// New tokens at most.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy, the official setting).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Print one JSON object instead of streaming the answer.
    #[arg(long)]
    json: bool,
}

/// `--roi-grid`.
#[derive(Clone, Copy, ValueEnum)]
enum RoiReading {
    /// The official reading.
    Official,
    /// The geometrically right reading.
    Spatial,
}

impl From<RoiReading> for RoiGrid {
    fn from(r: RoiReading) -> RoiGrid {
        match r {
            RoiReading::Official => RoiGrid::Official,
            RoiReading::Spatial => RoiGrid::Spatial,
        }
    }
}

/// Runs `kestrel video`.
pub fn run(args: &VideoArgs) -> Result<(), Error> {
    match &args.command {
        Some(VideoCommand::Plan(p)) => plan(p),
        Some(VideoCommand::Frames(f)) => frames(f),
        None => answer(&args.run),
    }
}

fn plan(p: &PlanArgs) -> Result<(), Error> {
    let spec = Spec::parse(&p.spec)?;
    let frames = seq_frames(p.frames, p.max_frames);
    let plan = Plan::new(&spec, frames.len(), p.grid)?;
    if p.json {
        println!("{}", serde_json::json!({"frames": frames, "middle": plan.middle, "visual_tokens": plan.visual_tokens}));
    } else {
        println!("{} frames sampled: {frames:?}", frames.len());
        println!("middle positions {:?}; {} visual tokens", plan.middle, plan.visual_tokens);
    }
    Ok(())
}

fn frames(f: &FramesArgs) -> Result<(), Error> {
    if f.max_frames == 0 {
        return Err("--max-frames must be at least 1".into());
    }
    let info = kestrel_models::video::decode::probe(&f.video)?;
    let indices = seq_frames(info.n_frames, f.max_frames);
    let video = decode(&f.video, Some(&indices))?;
    std::fs::create_dir_all(&f.out).map_err(|e| format!("{}: {e}", f.out.display()))?;
    for (&k, frame) in indices.iter().zip(&video.frames) {
        let path = f.out.join(format!("frame_{k:06}.png"));
        image::save_buffer(&path, frame.as_bytes(), frame.width() as u32, frame.height() as u32, image::ExtendedColorType::Rgb8)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let i = &video.info;
    if f.json {
        println!("{}", serde_json::json!({"frames": indices, "n_frames": i.n_frames, "fps": i.fps, "width": i.width, "height": i.height}));
    } else {
        println!("{} of {} frames ({}x{}, {:.3} fps) written to {}", indices.len(), i.n_frames, i.width, i.height, i.fps, f.out.display());
    }
    Ok(())
}

fn answer(a: &RunArgs) -> Result<(), Error> {
    let need = |v: &Option<PathBuf>, flag: &str| v.clone().ok_or_else(|| format!("--{flag} is required"));
    let (model_dir, clip_dir, video_path) = (need(&a.model, "model")?, need(&a.clip, "clip")?, need(&a.video, "video")?);
    let question = a.prompt.clone().ok_or("--prompt is required")?;
    let spec = Spec::parse(&a.spec)?;
    if a.max_frames == 0 {
        return Err("--max-frames must be at least 1".into());
    }
    let start = Instant::now();
    let info = kestrel_models::video::decode::probe(&video_path)?;
    let indices = seq_frames(info.n_frames, a.max_frames);
    let video = decode(&video_path, Some(&indices))?;
    let decode_ms = start.elapsed().as_secs_f64() * 1e3;

    // The decoder's context: the visual tokens of the plan, the prompt (at most one token per
    // byte) and the answer.
    let config_path = model_dir.join("config.json");
    let config_text = std::fs::read_to_string(&config_path).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config = LlavaConfig::from_json(&serde_json::from_str(&config_text)?)?;
    let plan = Plan::with_roi_grid(&spec, indices.len(), config.vision.grid(), a.roi_grid.into())?;
    let context = plan.visual_tokens + PROMPT.len() + question.len() + a.max_tokens;

    let ctx = Arc::new(Context::new(&ContextOptions::from_env())?);
    let clip = ClipModel::load(&ctx, &clip_dir, Quant::F32)?;
    let decoder = DecoderOptions { context: Some(context), ..DecoderOptions::default() };
    let mut llava = LlavaModel::load(&ctx, &model_dir, &LoadOptions::default(), &decoder, &mut |_, _| {})?;
    let (tokens, sel, t) = encode_video_with(&llava, &clip, &video.frames, &question, &spec, a.roi_grid.into())?;
    let ids = llava.encode_prompt(&prompt_text(&question))?;
    let segments = llava.segments(&ids, std::slice::from_ref(&tokens))?;
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampler: SamplerConfig { temperature: a.temperature, ..SamplerConfig::default() },
        ..GenerateOptions::default()
    };
    let (dec, tok) = llava.decoder_and_tokenizer();
    let start = Instant::now();
    let json = a.json;
    let g = generate_segments(dec, tok, &segments, &opts, &mut |piece| {
        if !json {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
    })?;
    let gen_ms = start.elapsed().as_secs_f64() * 1e3;
    let prefill_ms = if g.prefill_tok_s > 0.0 { g.prompt_tokens as f64 / g.prefill_tok_s * 1e3 } else { 0.0 };
    if json {
        let roi: Vec<_> = sel
            .roi
            .iter()
            .map(|r| serde_json::json!({"frame": indices[r.frame], "top": r.top, "left": r.left, "height": r.height, "width": r.width}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "text": g.text,
                "tokens": g.tokens,
                "frames": indices,
                "slow": sel.slow.iter().map(|&i| indices[i]).collect::<Vec<_>>(),
                "middle": sel.middle.iter().map(|&i| indices[i]).collect::<Vec<_>>(),
                "roi": roi,
                "visual_tokens": sel.visual_tokens,
                "timings_ms": {"decode": decode_ms, "clip": t.clip, "selection": t.selection, "vision_tower": t.vision_tower, "prefill": prefill_ms, "generation": gen_ms},
            })
        );
    } else {
        println!();
    }
    Ok(())
}
