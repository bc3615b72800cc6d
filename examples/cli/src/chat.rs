//! `kestrel chat`: an interactive conversation with a chat model. The KV cache keeps the
//! conversation; each turn runs only the tokens that are new since the last one.

use std::io::{BufRead, Write};

use kestrel_models::ModelError;
use kestrel_models::llm::chat::ChatMessage;
use kestrel_models::llm::generate::{chat_prompt, generate};

use crate::generate::{ModelArgs, open_session, print_piece, report};

/// Arguments of `kestrel chat`.
#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
}

/// Length of the common prefix of two id sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Runs `kestrel chat`: one user turn per line; `/reset` starts over, `/exit` (or end of
/// input) quits.
pub fn run(args: &ChatArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut s = open_session(&args.model)?;
    let mut history: Vec<ChatMessage> = s.system.as_deref().map(ChatMessage::system).into_iter().collect();
    let system_len = history.len();
    // The ids the decoder's cache holds, in order.
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
        history.push(ChatMessage::user(line));
        let (decoder, tokenizer) = s.model.with_tokenizer(args.model.path())?;
        let ids = chat_prompt(tokenizer, &history)?;
        // Reuse the cached prefix; at least one token must run to get logits.
        let keep = common_prefix(&cached, &ids).min(ids.len().saturating_sub(1));
        decoder.rewind(keep);
        cached.truncate(keep);
        match generate(decoder, tokenizer, &ids[keep..], &s.options, &mut print_piece) {
            Ok(g) => {
                report(&g);
                cached.extend_from_slice(&ids[keep..]);
                cached.extend_from_slice(&g.tokens);
                cached.truncate(decoder.position());
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
