//! `kestrel generate`: text generation with a LLaMA-family decoder (GGUF file, Hugging Face
//! directory or Kestrel model file) or a vision-language model (a LLaVA directory, with
//! `--image`), streamed to stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use kestrel::Quant;
use kestrel::{Context, ContextOptions};
use kestrel_models::eve::EveModel;
use kestrel_models::llava::LlavaModel;
use kestrel_models::llm::chat::ChatMessage;
use kestrel_models::llm::decoder::{Decoder, DecoderOptions};
use kestrel_models::llm::generate::{GenerateOptions, Generation, chat_prompt, generate_segments};
use kestrel_models::llm::load::load;
use kestrel_models::llm::sampler::SamplerConfig;
use kestrel_models::llm::tokenizer::Tokenizer;
use kestrel_models::llm::weights::LoadOptions;
use kestrel_models::npy::write_npy_f32;

use crate::vlm_input::{InputArgs, Prompt, eve_prompt, llava_prompt, read_ids, segments};

/// Model and sampling options shared by `generate` and `chat`.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A GGUF file, a Hugging Face model directory (config.json, model.safetensors,
    /// tokenizer.json; a LLaVA-1.5 / NeXT directory for --image) or a Kestrel model file.
    #[arg(long)]
    model: PathBuf,
    /// System prompt (chat).
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample from the K most likely tokens; 0 = all.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling: the smallest set of tokens reaching this probability; 1 = off.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one; 0 = off.
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalty on the last 64 tokens' logits (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Seed of the sampler (default: from the clock). The same seed gives the same text.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when the text contains this (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Positions of the KV cache (default: the model's context, at most 2048).
    #[arg(long)]
    context: Option<usize>,
    /// llama.cpp's vision tower + projector file for a LLaVA GGUF (--model is then the
    /// language model's GGUF).
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// Weight storage: native (as in the file), f16, f32, w8 or w4 (a VLM's vision tower and
    /// projector stay 8-bit under w4).
    #[arg(long, default_value = "native", value_parser = clap::builder::PossibleValuesParser::new(["native", "f16", "f32", "w8", "w4"]))]
    quant: String,
    /// Keep q/k/v and gate/up as separate linears (default: each group stacked into one).
    #[arg(long)]
    separate_projections: bool,
}

impl ModelArgs {
    /// The model path.
    pub fn path(&self) -> &Path {
        &self.model
    }

    /// Whether the model takes images (a LLaVA or Eve directory, or a GGUF with --mmproj).
    fn is_vlm(&self) -> bool {
        self.mmproj.is_some() || LlavaModel::is_llava(&self.model) || EveModel::is_eve(&self.model)
    }
}

/// Arguments of `kestrel generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt. Without --chat it is tokenized exactly as given (special tokens written in it
    /// map to their ids; BOS is added only when the model's metadata says so). With an image it
    /// goes where the prompt says `<image>`, else the model's conversation is built around it
    /// (LLaVA: `USER: <image>\n{prompt} ASSISTANT:`).
    #[arg(long, required_unless_present = "input_ids")]
    prompt: Option<String>,
    /// Wrap the prompt in the model's chat template (with --system) as one user turn.
    #[arg(long)]
    chat: bool,
    /// An image for a vision-language model (PNG, JPEG, WebP, BMP).
    #[arg(long, conflicts_with = "pixel_values")]
    image: Option<PathBuf>,
    /// The image as the processor's pixel values instead of --image: f32 .npy of shape
    /// [tiles, 3, size, size] (LLaVA-1.5: one tile; NeXT: the whole image, then the grid).
    #[arg(long)]
    pixel_values: Option<PathBuf>,
    /// With --pixel-values for LLaVA-NeXT: the original image's HEIGHTxWIDTH (its tile grid and
    /// the padding its features drop follow from it).
    #[arg(long, requires = "pixel_values")]
    image_size: Option<String>,
    /// Token ids (.npy of integers, one row) instead of --prompt and any template; for LLaVA
    /// the image token repeated once per image feature (as transformers' processor writes
    /// them) or once. A model directory then needs no tokenizer (`text` stays empty).
    #[arg(long, conflicts_with_all = ["prompt", "chat"])]
    input_ids: Option<PathBuf>,
    /// Write the logits each generated token was chosen from: f32 .npy [n_generated, vocab].
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    /// Print one JSON object at the end instead of streaming:
    /// {"text", "tokens", "prompt_tokens", "prefill_tok_s", "decode_tok_s", "peak_gpu_bytes"
    /// (generation: weights, KV cache, live set), "load_peak_gpu_bytes", …}.
    #[arg(long)]
    json: bool,
    /// After generating, time this many extra decode steps dispatch by dispatch and print the
    /// per-op table of one step (mean over the steps) to stderr.
    #[arg(long, default_value_t = 0)]
    profile: usize,
}

/// A loaded model: a text decoder, or a vision-language model around one.
pub enum Loaded {
    /// A decoder and its tokenizer (absent for a checkpoint without one).
    Text(Box<Decoder>, Option<Box<Tokenizer>>),
    /// LLaVA-1.5 / NeXT.
    Llava(Box<LlavaModel>),
    /// Eve and its decoder.
    Eve(Box<EveModel>, Box<Decoder>),
}

impl Loaded {
    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        match self {
            Loaded::Text(d, _) => d,
            Loaded::Llava(m) => m.decoder(),
            Loaded::Eve(_, d) => d,
        }
    }

    /// The decoder and the tokenizer at once.
    pub fn parts(&mut self) -> (&mut Decoder, Option<&Tokenizer>) {
        match self {
            Loaded::Text(d, t) => (d, t.as_deref()),
            Loaded::Llava(m) => m.decoder_and_tokenizer(),
            Loaded::Eve(m, d) => (d, m.tokenizer()),
        }
    }

    /// The decoder and the tokenizer, which must exist (`path` for the message).
    pub fn with_tokenizer(&mut self, path: &Path) -> Result<(&mut Decoder, &Tokenizer), String> {
        match self.parts() {
            (d, Some(t)) => Ok((d, t)),
            (_, None) => Err(format!("{}: no tokenizer found (tokenizer.json or GGUF metadata)", path.display())),
        }
    }
}

/// A loaded model and the generation options.
pub struct Session {
    /// The model with its KV cache.
    pub model: Loaded,
    /// Generation options from the arguments.
    pub options: GenerateOptions,
    /// The system prompt, if any.
    pub system: Option<String>,
}

/// Loads the model of `args` (with a progress bar) and builds the generation options.
pub fn open_session(args: &ModelArgs) -> Result<Session, Box<dyn std::error::Error>> {
    let quant = Quant::from_name(&args.quant).ok_or_else(|| format!("unknown --quant `{}`", args.quant))?;
    let seed = args.seed.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    let sampler = SamplerConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: 64,
        seed,
    };
    sampler.validate()?;
    if args.stop.iter().any(String::is_empty) {
        return Err("--stop: an empty stop string is not allowed (it would match everywhere)".into());
    }
    let ctx = Context::new(&ContextOptions::from_env())?;
    let started = Instant::now();
    let opts = LoadOptions { quant, fold_repbn: true, fuse_projections: !args.separate_projections };
    let dec_opts = DecoderOptions { context: args.context, kv_dtype: None };
    let (model, format) = if let Some(mmproj) = &args.mmproj {
        let m = with_bar(|progress| LlavaModel::load_gguf(&ctx, &args.model, mmproj, &opts, &dec_opts, progress))?;
        (Loaded::Llava(Box::new(m)), "llava gguf")
    } else if EveModel::is_eve(&args.model) {
        let m = EveModel::load(&ctx, &args.model, quant)?;
        let d = m.decoder(&dec_opts)?;
        (Loaded::Eve(Box::new(m), Box::new(d)), "eve")
    } else if LlavaModel::is_llava(&args.model) {
        let m = with_bar(|progress| LlavaModel::load(&ctx, &args.model, &opts, &dec_opts, progress))?;
        (Loaded::Llava(Box::new(m)), "llava")
    } else {
        let m = with_bar(|progress| load(&ctx, &args.model, &opts, progress))?;
        (Loaded::Text(Box::new(Decoder::new(&ctx, m.config, m.weights, &dec_opts)?), m.tokenizer.map(Box::new)), m.format)
    };
    let decoder = model.decoder();
    eprintln!(
        "kestrel: {} ({format}, {} layers, {} quant, {:.0} MB of linear weights) loaded in {:.1} s; context {}, {} KV cache",
        args.model.display(),
        decoder.config().layers,
        quant.name(),
        decoder.weights().linear_bytes() as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        decoder.context(),
        decoder.kv_dtype().name(),
    );
    let options = GenerateOptions { max_tokens: args.max_tokens, stop: args.stop.clone(), sampler, keep_logits: false };
    Ok(Session { model, options, system: args.system.clone() })
}

/// Runs `load` with a progress bar over the layers it uploads.
fn with_bar<T>(load: impl FnOnce(&mut dyn FnMut(usize, usize)) -> kestrel_models::Result<T>) -> Result<T, Box<dyn std::error::Error>> {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("loading {elapsed_precise} [{bar:40}] {pos}/{len}")
            .map_err(|e| format!("progress bar: {e}"))?
            .progress_chars("=> "),
    );
    let model = load(&mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    Ok(model?)
}

/// The messages of one chat turn: the system prompt (if any) and `user`.
pub fn turn(system: Option<&str>, user: &str) -> Vec<ChatMessage> {
    system.map(ChatMessage::system).into_iter().chain([ChatMessage::user(user)]).collect()
}

/// Prints the speed line to stderr.
pub fn report(g: &Generation) {
    eprintln!(
        "\nprefill: {} tokens, {:.1} tok/s; decode: {} tokens, {:.1} tok/s ({})",
        g.prompt_tokens,
        g.prefill_tok_s,
        g.tokens.len(),
        g.decode_tok_s,
        g.finish.name()
    );
}

/// Writes a streamed piece to stdout at once.
pub fn print_piece(piece: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) must not abort the generation's bookkeeping.
    let _ = out.write_all(piece.as_bytes()).and_then(|()| out.flush());
}

/// The prompt of `args` for the loaded model, with any image encoded.
fn prompt(args: &GenerateArgs, s: &mut Session) -> Result<Prompt, Box<dyn std::error::Error>> {
    let input = InputArgs {
        image: args.image.as_deref(),
        pixel_values: args.pixel_values.as_deref(),
        image_size: args.image_size.as_deref(),
        input_ids: args.input_ids.as_deref(),
    };
    let text = args.prompt.as_deref().unwrap_or_default();
    let system = s.system.clone();
    let chat = |model: &mut Loaded, text: &str| -> Result<Vec<u32>, Box<dyn std::error::Error>> {
        let (_, tokenizer) = model.with_tokenizer(&args.model.model)?;
        Ok(chat_prompt(tokenizer, &turn(system.as_deref(), text))?)
    };
    // LLaVA in the tokenizer's chat template: the image (if any) opens the user turn.
    let llava_chat = matches!(s.model, Loaded::Llava(_)) && args.chat && input.input_ids.is_none();
    let chat_ids = match llava_chat {
        true => Some(chat(&mut s.model, &if input.has_image() { format!("<image>\n{text}") } else { text.to_string() })?),
        false => None,
    };
    match &s.model {
        Loaded::Llava(m) => llava_prompt(&input, m, text, chat_ids),
        Loaded::Eve(m, _) => eve_prompt(&input, m, text),
        Loaded::Text(..) => match input.input_ids {
            Some(path) => Ok(Prompt::Ids(read_ids(path)?, Vec::new())),
            None if args.chat => Ok(Prompt::Ids(chat(&mut s.model, text)?, Vec::new())),
            None => {
                let (_, tokenizer) = s.model.with_tokenizer(&args.model.model)?;
                Ok(Prompt::Ids(tokenizer.encode(text, true)?, Vec::new()))
            }
        },
    }
}

/// Runs `kestrel generate`.
pub fn run(args: &GenerateArgs) -> Result<(), Box<dyn std::error::Error>> {
    let image_given = args.image.is_some() || args.pixel_values.is_some();
    if image_given && !args.model.is_vlm() {
        return Err(format!(
            "{}: a text-only model takes no image (--image / --pixel-values are for LLaVA and Eve models)",
            args.model.model.display()
        )
        .into());
    }
    let mut s = open_session(&args.model)?;
    // Loading leaves converted and staging buffers in the pool; generation needs the weights,
    // the KV cache and each step's live set.
    let gpu = s.model.decoder().gpu().clone();
    let load_peak = gpu.peak_gpu_bytes();
    gpu.trim();
    gpu.memory().reset_peak();
    let vision_start = Instant::now();
    let prompt = prompt(args, &mut s)?;
    let image_tokens = prompt.image_tokens();
    let vision_ms = if image_tokens > 0 {
        gpu.sync()?;
        Some(vision_start.elapsed().as_secs_f64() * 1e3)
    } else {
        None
    };
    let segments = segments(
        &prompt,
        match &s.model {
            Loaded::Llava(m) => Some(m),
            _ => None,
        },
    )?;
    let mut sink = |piece: &str| {
        if !args.json {
            print_piece(piece);
        }
    };
    let options = GenerateOptions { keep_logits: args.dump_logits.is_some(), ..s.options.clone() };
    let (decoder, tokenizer) = s.model.parts();
    let g = generate_segments(decoder, tokenizer, &segments, &options, &mut sink)?;
    if let Some(path) = &args.dump_logits {
        let vocab = decoder.config().vocab;
        let flat: Vec<f32> = g.logits.iter().flatten().copied().collect();
        write_npy_f32(path, &[g.logits.len(), vocab], &flat)?;
    }
    // Every decode step reads each linear weight (head included) once.
    let weight_bytes = decoder.weights().linear_bytes();
    if args.json {
        let obj = serde_json::json!({
            "text": g.text,
            "tokens": g.tokens,
            "prompt_tokens": g.prompt_tokens,
            "image_tokens": image_tokens,
            "vision_ms": vision_ms,
            "prefill_tok_s": g.prefill_tok_s,
            "decode_tok_s": g.decode_tok_s,
            "weight_bytes": weight_bytes,
            "decode_weight_gbps": weight_bytes as f64 * g.decode_tok_s / 1e9,
            "peak_gpu_bytes": gpu.peak_gpu_bytes(),
            "load_peak_gpu_bytes": load_peak,
        });
        println!("{obj}");
    } else {
        println!();
    }
    report(&g);
    if args.profile > 0 {
        profile_decode(decoder, g.tokens.last().copied().unwrap_or(0), args.profile)?;
    }
    Ok(())
}

/// Times `steps` decode steps (feeding `id` each time) and prints the per-op table.
fn profile_decode(decoder: &mut Decoder, id: u32, steps: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut profiles = Vec::new();
    for _ in 0..steps {
        if decoder.position() >= decoder.context() {
            break;
        }
        let (_, p) = decoder.profile_step(id)?;
        profiles.extend(p);
    }
    let Some(first) = profiles.first() else {
        eprintln!("profile: no timings (context full, or the device cannot time dispatches)");
        return Ok(());
    };
    let total: f64 =
        profiles.iter().filter_map(kestrel::Profile::gpu_total_ns).map(|v| v as f64 / 1e6).sum::<f64>() / profiles.len() as f64;
    eprintln!(
        "decode step profile ({:?}, {} dispatches, {total:.2} ms per step over {} steps):",
        first.source,
        first.dispatches.len(),
        profiles.len()
    );
    eprintln!("{:>8} {:>6} {:>6}  {:<10} shape", "ms/step", "share", "calls", "op");
    for r in kestrel::profile::op_table(&profiles) {
        eprintln!("{:>8.3} {:>5.1}% {:>6}  {:<10} {}", r.total_ms, r.share * 100.0, r.calls, r.op, r.shape);
    }
    let host = host_us_per_step(decoder, id, steps)?;
    let dispatches = first.dispatches.len();
    eprintln!(
        "host time per decode step (record + encode + submit, GPU excluded): {host:.0} µs, {:.1} µs per dispatch",
        host / dispatches as f64
    );
    Ok(())
}

/// Mean host time of `steps` unprofiled decode steps: from the start of recording to the
/// return of the submission, each step waited for afterwards (outside the timing).
fn host_us_per_step(decoder: &mut Decoder, id: u32, steps: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let mut total = 0.0;
    let mut n = 0;
    for _ in 0..steps {
        if decoder.position() >= decoder.context() {
            break;
        }
        let start = std::time::Instant::now();
        let logits = decoder.decode_step(id)?;
        total += start.elapsed().as_secs_f64() * 1e6;
        n += 1;
        logits.argmax()?;
    }
    Ok(total / n.max(1) as f64)
}
