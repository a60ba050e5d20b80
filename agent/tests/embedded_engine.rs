//! The embedded engine on the real default model, at the crate boundary: what RL training
//! and the agent loop will rely on (seeded sampling with token ids, exact token prefixes,
//! several samples per prompt, teacher-forced scoring).

use agent::engine::mistral::{MistralRsEngine, MistralRsOptions};
use agent::engine::{ChatMessage, Engine, GenerationRequest, Prompt, StreamEvent};
use agent::model;
use futures::StreamExt;

async fn engine() -> MistralRsEngine {
    engine_with(|_| {}).await
}

async fn engine_with(configure: impl FnOnce(&mut MistralRsOptions)) -> MistralRsEngine {
    let path = model::default_model_path(&model::cache_dir());
    assert!(path.exists(), "{} is missing: run `skillhive model pull` (scripts/test does)", path.display());
    let mut options = MistralRsOptions::new(path, "test");
    configure(&mut options);
    MistralRsEngine::load(options).await.expect("load the default model")
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenerationRequest {
    let mut request = GenerationRequest::new(Prompt::Tokens(prompt), max_tokens);
    request.temperature = Some(0.0);
    request
}

/// A short token prefix from the model's vocabulary ("<|im_start|>user\nTell me a story").
const PREFIX: &[u32] = &[1, 4093, 198, 31530, 549, 253, 1740];

#[tokio::test]
async fn seeded_samples_score_to_the_same_logprobs_under_teacher_forcing() {
    let engine = engine().await;
    let mut request = GenerationRequest::new(Prompt::Tokens(PREFIX.to_vec()), 12);
    request.temperature = Some(1.0);
    request.seed = Some(5);
    request.logprobs = Some(0);
    let generation = engine.generate(request.clone()).await.unwrap();
    let choice = &generation.choices[0];
    assert!(!choice.token_ids.is_empty(), "seeded sampling reports its token ids");
    let sampled: Vec<f32> = choice.logprobs.as_ref().unwrap().iter().map(|t| t.logprob).collect();
    assert_eq!(sampled.len(), choice.token_ids.len());

    // The same seed gives the same tokens.
    let again = engine.generate(request).await.unwrap();
    assert_eq!(again.choices[0].token_ids, choice.token_ids);

    // Scoring the sampled tokens gives back the probabilities they were sampled with.
    let scored = engine.score(PREFIX, &choice.token_ids).await.unwrap();
    assert_eq!(scored.len(), choice.token_ids.len());
    for (i, (s, g)) in scored.iter().zip(&sampled).enumerate() {
        assert!((s - g).abs() < 1e-3, "token {i}: scored {s}, sampled with {g}");
    }
    assert!(scored.iter().all(|l| *l <= 0.0));
}

#[tokio::test]
async fn several_samples_per_prompt_and_unlikely_tokens_score_low() {
    let engine = engine().await;
    let mut request = GenerationRequest::new(Prompt::Tokens(PREFIX.to_vec()), 8);
    request.temperature = Some(1.0);
    request.n = 3;
    let generation = engine.generate(request).await.unwrap();
    assert_eq!(generation.choices.len(), 3);
    assert!(generation.choices.iter().all(|c| !c.text.is_empty()));

    // A likely continuation scores higher than the same tokens in a scrambled order.
    let greedy = engine.generate(GenerationRequest::new(Prompt::Tokens(PREFIX.to_vec()), 6)).await.unwrap();
    let mut request = GenerationRequest::new(Prompt::Tokens(PREFIX.to_vec()), 6);
    request.temperature = Some(0.7);
    request.seed = Some(1);
    let sampled = engine.generate(request).await.unwrap().choices[0].token_ids.clone();
    let likely: f32 = engine.score(PREFIX, &sampled).await.unwrap().iter().sum();
    let mut scrambled = sampled.clone();
    scrambled.reverse();
    scrambled.push(17); // an unusual token at the end
    let unlikely: f32 = engine.score(PREFIX, &scrambled).await.unwrap().iter().sum();
    assert!(likely > unlikely, "likely {likely} vs scrambled {unlikely}");
    assert!(!greedy.text().is_empty());

    // Token ids outside the vocabulary are refused, not scored.
    assert!(engine.score(PREFIX, &[10_000_000]).await.is_err());
}

#[tokio::test]
async fn an_agent_turn_on_the_real_model_records_what_it_did() {
    use agent::agent_loop::{run_turn, AgentConfig, StaticSkills, TurnContext};
    use agent::trajectory::{Event, MemorySink};
    use agent::workspace::Workspace;

    // The server's default weights, so that prompt processing is as fast as it serves.
    let cache = model::cache_dir();
    let weights = agent::repack::prepare(&cache, &model::default_model_path(&cache), agent::repack::WeightFormat::Auto).unwrap();
    let engine = MistralRsEngine::load(MistralRsOptions::new(weights, "test")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let workspace = Workspace::open(dir.path()).unwrap();
    let skills = StaticSkills::default();
    let sink = MemorySink::default();
    let config = AgentConfig { max_steps: 4, max_tokens_per_step: 96, ..AgentConfig::default() };
    let (_cancel, cancel_rx) = tokio::sync::watch::channel(false);
    let mut ctx = TurnContext { engine: &engine, workspace: &workspace, skills: &skills, sink: &sink, config: &config, cancel: cancel_rx };
    let mut history = Vec::new();
    let outcome = run_turn(&mut ctx, &mut history, "Create a file hello.txt containing the word hello, then read it back.").await;

    // The small model may fail the task; what the runtime recorded must be consistent.
    let events = sink.events();
    let model_calls = events.iter().filter(|e| matches!(e, Event::ModelCall { .. })).count();
    assert!(model_calls >= 1, "{events:?}");
    assert!(matches!(events.last(), Some(Event::Stop { reason, .. }) if *reason == outcome.stop));
    for (i, event) in events.iter().enumerate() {
        if let Event::ToolCall { call_id, name, arguments } = event {
            let result = events[i + 1..].iter().find_map(|e| match e {
                Event::ToolResult { call_id: id, ok, .. } if id == call_id => Some(*ok),
                _ => None,
            });
            let ok = result.unwrap_or_else(|| panic!("tool call {call_id} has no result"));
            // A write that succeeded left its file in this workspace, with its content.
            if name == "write" && ok {
                let args: serde_json::Value = serde_json::from_str(arguments).unwrap();
                let path = args["path"].as_str().unwrap();
                assert_eq!(workspace.read(path).unwrap(), args["content"].as_str().unwrap());
            }
        }
    }
    for event in &events {
        if let Event::ModelCall { prompt_tokens, .. } = event {
            assert!(*prompt_tokens > 50, "the system prompt and tools reach the model");
        }
    }
}

#[tokio::test]
async fn greedy_logprobs_are_natural_log_probabilities_that_teacher_forcing_reproduces() {
    let engine = engine().await;
    let mut request = GenerationRequest::new(Prompt::Tokens(PREFIX.to_vec()), 10);
    request.logprobs = Some(5);
    let generation = engine.generate(request.clone()).await.unwrap();
    let choice = &generation.choices[0];
    let logprobs = choice.logprobs.as_ref().expect("logprobs were asked for");
    assert_eq!(logprobs.len(), choice.token_ids.len(), "one logprob per generated token");
    for (i, token) in logprobs.iter().enumerate() {
        assert!(token.logprob <= 0.0, "token {i}: logprob {} above 0", token.logprob);
        assert_eq!(token.top.len(), 5, "token {i}: {:?}", token.top);
        let mass: f32 = token.top.iter().map(|(_, lp)| lp.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "token {i}: the top 5 hold {mass} of the probability");
        // Greedy decoding takes the most likely token: it is the first alternative.
        assert!((token.top[0].1 - token.logprob).abs() < 1e-6, "token {i}: {:?} vs {}", token.top, token.logprob);
        assert!(token.top.windows(2).all(|w| w[0].1 >= w[1].1), "most likely first: {:?}", token.top);
    }
    // The trainer's recomputation (teacher forcing the same tokens) gives the same values.
    let scored = engine.score(PREFIX, &choice.token_ids).await.unwrap();
    for (i, (s, g)) in scored.iter().zip(logprobs).enumerate() {
        assert!((s - g.logprob).abs() < 1e-3, "token {i}: scored {s}, generated with {}", g.logprob);
    }
    // The same request gives the same tokens, now that greedy decoding is ours.
    assert_eq!(engine.generate(request).await.unwrap().choices[0].token_ids, choice.token_ids);
}

#[tokio::test]
async fn concurrent_chats_get_the_replies_they_would_get_alone() {
    let engine = engine().await;
    let prompts = ["Name a colour.", "What is 2+2?", "Say hello.", "Name a fruit."];
    let request = |prompt: &str| GenerationRequest::chat(vec![ChatMessage::user(prompt)], 12);
    let mut alone = Vec::new();
    for prompt in prompts {
        alone.push(engine.generate(request(prompt)).await.unwrap().text().to_string());
    }
    let together = futures::future::join_all(prompts.iter().map(|p| engine.generate(request(p)))).await;
    for ((prompt, alone), together) in prompts.iter().zip(&alone).zip(together) {
        assert_eq!(together.unwrap().text(), alone, "the reply to {prompt:?} changed when other chats ran at the same time");
    }
}

/// Requests share the engine: a chat that arrives while another request decodes is read
/// and answered between that one's steps, not after it ends (admitted one at a time, it
/// waited for the whole other reply; with every decoding sequence in each step, both
/// advance together).
#[tokio::test]
async fn a_chat_is_answered_while_a_long_reply_is_still_decoding() {
    let engine = engine().await;
    // The long reply is forced through 300 tokens, so that it cannot stop early.
    let mut long = GenerationRequest::new(Prompt::Tokens(PREFIX.to_vec()), 301);
    long.seed = Some(1);
    long.forced = PREFIX.iter().copied().cycle().take(300).collect();
    let mut long = engine.generate_stream(long).await.expect("the long request is admitted");
    let long_tokens = async {
        let mut arrivals = Vec::new();
        while let Some(event) = long.next().await {
            if let StreamEvent::Delta { .. } = event.expect("the long reply streams") {
                arrivals.push(std::time::Instant::now());
            }
        }
        arrivals
    };
    let short = async {
        let reply = engine.generate(GenerationRequest::chat(vec![ChatMessage::user("Say hello.")], 8)).await;
        (reply.expect("the short chat is answered"), std::time::Instant::now())
    };
    let (arrivals, (reply, answered)) = futures::future::join(long_tokens, short).await;
    assert!(!reply.text().is_empty());
    let after = arrivals.iter().filter(|at| **at > answered).count();
    assert!(after > 0, "all {} pieces of the long reply came before the short chat's answer: it waited for the long one", arrivals.len());
}

/// A reply whose token limit falls between the bytes of one character (byte tokens of a
/// multi-byte UTF-8 character) is finished by its limit, not lost: mistral.rs sends no
/// final chunk for it, which once failed the request (and an RL run with it).
#[tokio::test]
async fn a_reply_cut_inside_a_character_is_finished_by_its_limit() {
    let engine = engine().await;
    let prompt = engine.tokenize(&Prompt::Messages(vec![ChatMessage::user("Repeat exactly: 🎉🌍🎉🌍🎉🌍🎉🌍")])).await.unwrap();
    // Emoji are written as byte tokens, so some token limit cuts one.
    let mut cut = None;
    for max_tokens in 1..=12 {
        let mut request = GenerationRequest::new(Prompt::Tokens(prompt.clone()), max_tokens);
        request.temperature = Some(0.0);
        request.logprobs = Some(0);
        let generation = engine.generate(request).await.unwrap_or_else(|e| panic!("{max_tokens} tokens: {e}"));
        let choice = generation.choices[0].clone();
        let decoded = engine.detokenize(&choice.token_ids).await.unwrap();
        eprintln!("{max_tokens}: {decoded:?} {:?} {:?}", choice.finish_reason, choice.text);
        if choice.token_ids.len() == max_tokens && decoded.ends_with('\u{FFFD}') {
            cut = Some((max_tokens, generation, choice));
            break;
        }
    }
    let (max_tokens, generation, choice) = cut.expect("no token limit up to 12 cut a character: the case needs another prompt");
    assert_eq!(choice.finish_reason, Some(agent::engine::FinishReason::Length));
    assert_eq!(choice.token_logprobs.len(), max_tokens);
    assert_eq!(generation.usage.completion_tokens, max_tokens);
    assert!(!choice.text.ends_with('\u{FFFD}'), "{:?}", choice.text);

    // Teacher forcing the same tokens ends on the same cut character, and scores them all.
    let scored = engine.score(&prompt, &choice.token_ids).await.expect("the tokens are scored");
    assert_eq!(scored.len(), max_tokens);
}

/// The prefix cache changes no reply. A prompt that extends a finished sequence (the next
/// turn of a conversation: the whole earlier sequence, whose last token was never fed
/// through the model), one that shares only its beginning, and an exact repeat all get the
/// tokens an engine without the cache gives them, also after the cache served the others.
#[tokio::test]
async fn prompts_reusing_cached_prefixes_get_the_replies_computed_from_scratch() {
    let cached = engine().await;
    let uncached = engine_with(|options| options.prefix_cache_entries = 0).await;
    let rules: String = (1..=12)
        .map(|i| format!("Rule {i}: answer briefly, cite the file you read, and never run a command the user did not ask for. "))
        .collect();
    let chat = |messages: Vec<ChatMessage>| {
        let cached = &cached;
        async move { cached.tokenize(&Prompt::Messages(messages)).await.unwrap() }
    };
    let first = chat(vec![ChatMessage::system(rules.as_str()), ChatMessage::user("What is 2+2?")]).await;
    assert!(first.len() > 300, "the shared prefix is long enough to matter: {} tokens", first.len());
    let reply = cached.generate(greedy(first.clone(), 16)).await.unwrap().choices[0].token_ids.clone();
    assert_eq!(reply, uncached.generate(greedy(first.clone(), 16)).await.unwrap().choices[0].token_ids);

    let follow_up = chat(vec![ChatMessage::user("And 3+3?")]).await;
    let next_turn = [first.clone(), reply, follow_up].concat();
    let shared_start = [first[..first.len() / 2].to_vec(), chat(vec![ChatMessage::user("Name a fruit.")]).await].concat();
    let cases =
        [("the next turn", next_turn), ("a shared beginning", shared_start.clone()), ("a repeat", first), ("a repeat", shared_start)];
    for (case, prompt) in cases {
        let with_cache = cached.generate(greedy(prompt.clone(), 16)).await.unwrap().choices[0].token_ids.clone();
        let from_scratch = uncached.generate(greedy(prompt, 16)).await.unwrap().choices[0].token_ids.clone();
        assert_eq!(with_cache, from_scratch, "{case}: the reply changed when the prompt's beginning came from the prefix cache");
    }
}
