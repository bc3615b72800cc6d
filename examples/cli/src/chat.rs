//! `kestrel chat`: an interactive conversation with a chat model. The KV cache keeps the
//! conversation; each turn runs only the tokens that are new since the last one. With
//! `--image` (LLaVA and Eve models) the first user turn opens with the image: its features are
//! computed once and prefilled with that turn.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use kestrel::Tensor;
use kestrel_models::ModelError;
use kestrel_models::eve::config::IMAGE_TOKEN_INDEX;
use kestrel_models::eve::prompt::tokenizer_image_token;
use kestrel_models::llm::chat::{ChatMessage, ChatTemplate};
use kestrel_models::llm::decoder::Segment;
use kestrel_models::llm::generate::{chat_prompt, generate_segments};
use kestrel_models::vision::{DecodeLimits, load_image};

use crate::generate::{Loaded, ModelArgs, Session, open_session, print_piece, report};

/// Arguments of `kestrel chat`.
#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image the conversation is about (LLaVA and Eve models): the first user turn opens
    /// with it.
    #[arg(long)]
    image: Option<PathBuf>,
}

type Error = Box<dyn std::error::Error>;

/// The id that marks the image's place in a conversation's ids (no tokenizer gives it).
const IMAGE: u32 = u32::MAX;

/// Length of the common prefix of two id sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The image's features for the model, computed once.
fn encode_image(model: &Loaded, path: &std::path::Path) -> Result<Tensor, Error> {
    match model {
        Loaded::Llava(m) => Ok(m.encode(&m.image_input(&load_image(path, &DecodeLimits::default())?)?)?),
        Loaded::Eve(m, _) => Ok(m.image_tokens_of(&m.pixels_from_file(path)?)?),
        Loaded::Text(..) => {
            Err(format!("{}: a text-only model takes no image (--image is for LLaVA and Eve models)", path.display()).into())
        }
    }
}

/// The ids of the conversation so far with an opening assistant turn, the image's place
/// marked by [`IMAGE`]: the tokenizer's chat template (LLaVA: its `<image>` token), or Eve's
/// v1 conversation through `tokenizer_image_token`.
fn conversation_ids(s: &mut Session, history: &[ChatMessage], args: &ChatArgs) -> Result<Vec<u32>, Error> {
    let image_token = match &s.model {
        Loaded::Llava(m) => Some(m.config().image_token),
        _ => None,
    };
    let eve = matches!(s.model, Loaded::Eve(..));
    let (_, tokenizer) = s.model.with_tokenizer(args.model.path())?;
    if eve {
        let eos = tokenizer.eos_ids().first().and_then(|&id| tokenizer.token_text(id)).unwrap_or_default();
        let text = ChatTemplate::Vicuna1.render(history, true, "", &eos)?;
        let ids = tokenizer_image_token(tokenizer, &text)?;
        return Ok(ids.into_iter().map(|id| if id == IMAGE_TOKEN_INDEX { IMAGE } else { id as u32 }).collect());
    }
    let ids = chat_prompt(tokenizer, history)?;
    Ok(ids.into_iter().map(|id| if Some(id) == image_token { IMAGE } else { id }).collect())
}

/// The segments of `ids` with `image` where [`IMAGE`] is.
fn segments<'a>(ids: &'a [u32], image: Option<&'a Tensor>) -> Result<Vec<Segment<'a>>, Error> {
    let mut out = Vec::new();
    for (i, run) in ids.split(|&id| id == IMAGE).enumerate() {
        if i > 0 {
            out.push(Segment::Embeddings(image.ok_or("the prompt has an image token but no --image was given")?));
        }
        if !run.is_empty() {
            out.push(Segment::Tokens(run));
        }
    }
    Ok(out)
}

/// Runs `kestrel chat`: one user turn per line; `/reset` starts over, `/exit` (or end of
/// input) quits.
pub fn run(args: &ChatArgs) -> Result<(), Error> {
    let mut s = open_session(&args.model)?;
    let image = match &args.image {
        Some(path) => Some(encode_image(&s.model, path)?),
        None => None,
    };
    let mut history: Vec<ChatMessage> = s.system.as_deref().map(ChatMessage::system).into_iter().collect();
    let system_len = history.len();
    // The ids the decoder's cache holds, in order ([`IMAGE`] for the image's place).
    let mut cached: Vec<u32> = Vec::new();
    eprintln!("kestrel chat: type a message; /reset starts over, /exit quits");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let Some(line) = lines.next().transpose()? else { break };
        match line.trim() {
            "" => continue,
            "/exit" => break,
            "/reset" => {
                history.truncate(system_len);
                cached.clear();
                s.model.parts().0.reset();
                continue;
            }
            _ => {}
        }
        let opening = history.len() == system_len && image.is_some();
        history.push(ChatMessage::user(if opening { format!("<image>\n{line}") } else { line }));
        let ids = conversation_ids(&mut s, &history, args)?;
        if image.is_some() && !ids.contains(&IMAGE) {
            return Err("the model's vocabulary has no <image> token to place the image in a chat; use kestrel generate --image".into());
        }
        // Reuse the cached prefix; at least one token must run to get logits. The image is
        // one placeholder id but many positions: the prefix is counted in positions.
        let keep = common_prefix(&cached, &ids).min(ids.len().saturating_sub(1));
        let width = image.as_ref().map_or(1, |t| t.shape()[0]);
        let positions = |ids: &[u32]| ids.iter().map(|&id| if id == IMAGE { width } else { 1 }).sum::<usize>();
        let (decoder, tokenizer) = s.model.with_tokenizer(args.model.path())?;
        decoder.rewind(positions(&ids[..keep]));
        cached.truncate(keep);
        let new = segments(&ids[keep..], image.as_ref())?;
        match generate_segments(decoder, Some(tokenizer), &new, &s.options, &mut print_piece) {
            Ok(g) => {
                report(&g);
                cached.extend_from_slice(&ids[keep..]);
                cached.extend_from_slice(&g.tokens);
                while positions(&cached) > decoder.position() {
                    cached.pop();
                }
                history.push(ChatMessage::assistant(g.text));
            }
            Err(e @ ModelError::ContextFull { .. }) => {
                eprintln!("kestrel: {e}; the conversation starts over");
                history.truncate(system_len);
                cached.clear();
                decoder.reset();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
