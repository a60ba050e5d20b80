//! The embedded backend: mistral.rs in this process, on a local GGUF file.
//!
//! mistral.rs runs its own engine task. This backend translates [`GenerationRequest`]s into
//! mistral.rs requests, sends them down the engine's channel and translates the responses
//! back. Where the model decodes sequences of different lengths in one step (the patched
//! mistral.rs does so for llama-architecture models on the CPU), requests run concurrently
//! and their tokens are decoded together; elsewhere it admits one request at a time (see
//! [`MistralRsEngine::admit`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use either::Either;
use indexmap::IndexMap;
use mistralrs::core::{
    AutoDeviceMapParams, DefaultSchedulerMethod, DeviceMapSetting, GGUFLoaderBuilder, GGUFSpecificConfig, MistralRs, MistralRsBuilder,
    ModelDType, RequestMessage, SchedulerConfig, TokenSource,
};
use mistralrs::{Constraint, CustomLogitsProcessor, NormalRequest, Request, Response, SamplingParams, StopTokens};
use tokio::sync::mpsc;

use super::seeded::{ForcedContinuation, SeededSampler, StepCounter};
use super::tool_protocol::{self, ParsedReply};
use super::{
    validate_request, Choice, Engine, EngineError, EventStream, FinishReason, Generation, GenerationRequest, ModelInfo, Prompt,
    StreamEvent, TokenLogprob, Usage,
};

/// The activation dtype. Weights stay quantized either way; this is the dtype of
/// activations, the KV cache and the dequantized matmul inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationDType {
    /// Let mistral.rs choose (F16 or BF16 where the device supports them).
    Auto,
    /// 32-bit floats: x86 CPUs have no native f16 arithmetic, so this is the fast choice there.
    F32,
}

#[derive(Debug, Clone)]
pub struct MistralRsOptions {
    pub model_path: PathBuf,
    /// The name clients use for the model.
    pub model_id: String,
    pub dtype: ActivationDType,
    /// How many sequences the scheduler runs in one batch.
    pub max_batch: usize,
    /// How many finished sequences' KV caches are kept for reuse by later prompts that
    /// begin with the same tokens (0 turns the prefix cache off). Each entry holds its
    /// sequence's whole KV cache; a conversation's later turns replace its earlier ones.
    pub prefix_cache_entries: usize,
}

impl MistralRsOptions {
    /// Options for a GGUF file (from [`crate::repack::prepare`], or any path).
    pub fn new(model_path: impl Into<PathBuf>, model_id: impl Into<String>) -> Self {
        Self {
            model_path: model_path.into(),
            model_id: model_id.into(),
            dtype: ActivationDType::F32,
            max_batch: 16,
            prefix_cache_entries: DEFAULT_PREFIX_CACHE_ENTRIES,
        }
    }
}

/// Prefix-cache entries kept by default: a few conversations' worth. For the default model
/// an entry costs ~46 KB per token of its sequence (~330 MB for a 7,000-token agent
/// prompt), so the default bounds the cache to a few GB at most.
pub const DEFAULT_PREFIX_CACHE_ENTRIES: usize = 8;

pub struct MistralRsEngine {
    runner: Arc<MistralRs>,
    /// Admits generations into the engine; see [`MistralRsEngine::admit`].
    admission: Arc<tokio::sync::Semaphore>,
    /// Requests admitted or waiting for admission; once the last one is out and none
    /// came for a moment, the allocator's free memory goes back to the system (see
    /// [`Admission`]).
    in_flight: Arc<AtomicUsize>,
    info: ModelInfo,
    /// End-of-text markers of this model that its chat template does not stop on; see
    /// [`find_special_stops`].
    special_stops: Vec<String>,
}

/// Common end-of-text markers across model families.
const END_MARKERS: &[&str] = &["<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>", "<|end|>", "<eos>", "<end_of_turn>"];

/// Which of [`END_MARKERS`] are single special tokens of this model's vocabulary.
///
/// The constrained decoder (llguidance) ends a grammar with the tokenizer's own
/// end-of-text token, which need not be the end-of-turn token the chat template stops on
/// (SmolLM2: `<|endoftext|>` versus `<|im_end|>`). Without stopping on it too, every
/// constrained reply would run on, emitting end-of-text tokens until `max_tokens`.
async fn find_special_stops(runner: &MistralRs) -> Vec<String> {
    let mut stops = Vec::new();
    for marker in END_MARKERS {
        if tokenize(runner, Either::Right(marker.to_string())).await.is_ok_and(|tokens| tokens.len() == 1) {
            stops.push(marker.to_string());
        }
    }
    stops
}

/// The text of one token as the tokenizer decodes it alone (special tokens included), or
/// `None` when the engine cannot say.
async fn token_text(runner: &MistralRs, token: u32) -> Option<String> {
    let engine = runner.get_sender(None).ok()?;
    let (sender, mut receiver) = mpsc::channel(1);
    let request =
        Request::Detokenize(mistralrs::core::DetokenizationRequest { tokens: vec![token], skip_special_tokens: false, response: sender });
    engine.send(request).await.ok()?;
    receiver.recv().await?.ok()
}

/// Tokenizes on the engine: plain text as it is, chat messages through the chat template
/// with the generation prompt, as a request would be.
async fn tokenize(
    runner: &MistralRs,
    text: Either<Vec<IndexMap<String, mistralrs::MessageContent>>, String>,
) -> Result<Vec<u32>, EngineError> {
    let engine = runner.get_sender(None).map_err(|e| EngineError::Unavailable(e.to_string()))?;
    let chat = text.is_left();
    let (sender, mut receiver) = mpsc::channel(1);
    let request = Request::Tokenize(mistralrs::core::TokenizationRequest {
        text,
        tools: None,
        add_generation_prompt: chat,
        add_special_tokens: chat,
        enable_thinking: None,
        reasoning_effort: None,
        response: sender,
    });
    engine.send(request).await.map_err(|_| EngineError::Unavailable("the engine has shut down".into()))?;
    match receiver.recv().await {
        Some(Ok(tokens)) => Ok(tokens),
        Some(Err(e)) => Err(EngineError::InvalidRequest(format!("the prompt cannot be tokenized: {e}"))),
        None => Err(EngineError::Unavailable("the engine dropped a tokenization".into())),
    }
}

/// Sizes the thread pool the engine computes on: candle runs its matrix products, and our
/// CPU attention its softmax, on rayon's global pool, which otherwise takes one thread per
/// core. Call before the first model loads; the pool's size cannot change once it exists.
pub fn set_compute_threads(threads: usize) -> anyhow::Result<()> {
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("engine-{i}"))
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot size the engine's threads: {e}"))?;
    tracing::info!(threads, "engine compute threads");
    Ok(())
}

impl MistralRsEngine {
    /// Loads the GGUF file (weights, tokenizer and chat template all come from it).
    pub async fn load(options: MistralRsOptions) -> anyhow::Result<Self> {
        crate::model::check_gguf_file(&options.model_path)?;
        let (dir, file) = split_model_path(&options.model_path)?;
        let loader = GGUFLoaderBuilder::new(None, None, dir, vec![file], GGUFSpecificConfig { topology: None }, false, None).build();
        let device = mistralrs::best_device(cfg!(not(feature = "cuda")))?;
        let dtype = match options.dtype {
            ActivationDType::Auto => ModelDType::Auto,
            ActivationDType::F32 => ModelDType::F32,
        };
        let pipeline = loader.load_model_from_hf(
            None,
            TokenSource::None,
            &dtype,
            &device,
            true,
            DeviceMapSetting::Auto(AutoDeviceMapParams::default_text()),
            None,
            None,
        )?;
        // Whether concurrent requests may share the engine (see `admit`).
        let concurrent = pipeline.lock().await.ragged_decode();
        let admitted = if concurrent { options.max_batch.max(1) } else { 1 };
        tracing::info!(concurrent_requests = admitted, "engine admission");
        let scheduler = SchedulerConfig::DefaultScheduler { method: DefaultSchedulerMethod::Fixed(options.max_batch.max(1).try_into()?) };
        // The prefix cache: a prompt that begins with the tokens of a finished sequence
        // (the same system prompt and skill catalog, an earlier turn of the conversation)
        // reads only the tokens after them. The patched mistral.rs keeps at most this many
        // entries on every device (see agent/vendor/README.md).
        let prefix_cache = options.prefix_cache_entries > 0;
        let runner = MistralRsBuilder::new(pipeline, scheduler, false, None)
            .with_no_prefix_cache(!prefix_cache)
            .with_prefix_cache_n(options.prefix_cache_entries.max(1))
            .build()
            .await;
        let context_window = runner.max_sequence_length(None).ok().flatten();
        let special_stops = find_special_stops(&runner).await;
        tracing::debug!(?special_stops, "end-of-text markers");
        Ok(Self {
            runner,
            admission: Arc::new(tokio::sync::Semaphore::new(admitted)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            info: ModelInfo { id: options.model_id, context_window, backend: "mistralrs" },
            special_stops,
        })
    }

    /// Refuses a prompt that, with `max_tokens` more, does not fit the context window, before
    /// the engine spends any time on it (mistral.rs would fail it only once streaming).
    async fn check_context(&self, messages: &RequestMessage, max_tokens: usize) -> Result<(), EngineError> {
        let Some(window) = self.info.context_window else { return Ok(()) };
        let prompt_tokens = match messages {
            RequestMessage::CompletionTokens(tokens) => tokens.len(),
            RequestMessage::Chat { messages, .. } => tokenize(&self.runner, Either::Left(messages.clone())).await?.len(),
            _ => return Ok(()),
        };
        if prompt_tokens + max_tokens > window {
            return Err(EngineError::ContextLength { window, prompt_tokens, max_tokens });
        }
        Ok(())
    }

    /// Puts one request on the engine's channel and returns the receiver of its responses.
    async fn send(&self, outgoing: Outgoing) -> Result<mpsc::Receiver<Response>, EngineError> {
        let (sender, receiver) = mpsc::channel(64);
        let request = NormalRequest {
            messages: outgoing.messages,
            sampling_params: outgoing.sampling,
            response: sender,
            return_logprobs: outgoing.logprobs,
            // Always streamed, also when the caller wants one reply: mistral.rs cancels a
            // streamed sequence whose receiver is gone (an abandoned request stops at
            // its next token), whereas a finished non-streamed reply sent to a dropped
            // receiver ends in a panic of the engine thread that fails every other
            // request in flight.
            is_streaming: true,
            id: self.runner.next_request_id(),
            constraint: outgoing.constraint,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: outgoing.processors,
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        };
        let engine = self.runner.get_sender(None).map_err(|e| EngineError::Unavailable(e.to_string()))?;
        engine.send(Request::Normal(Box::new(request))).await.map_err(|_| EngineError::Unavailable("the engine has shut down".into()))?;
        Ok(receiver)
    }

    /// Builds a generation request and sends it; returns the receiver of its responses, plus the
    /// seeded sampler when one was installed (its picks carry the true log-probabilities).
    /// Waits for a place in the engine, and holds it until the permit is dropped.
    ///
    /// Where the patched mistral.rs decodes sequences of different lengths together, each
    /// in its own KV cache (`Pipeline::ragged_decode`), there are as many places as the
    /// scheduler's batch: every decoding request advances one token per step, and a newly
    /// arrived prompt is read between two steps.
    ///
    /// Elsewhere there is one. mistral.rs 0.8.1's own path corrupts sequences that run
    /// concurrently: its engine loop reloads the running sequences' KV caches into the
    /// model only when the set of decoding sequences changed since the last decode step,
    /// but a prompt step of a newly arrived request in between overwrites the model's
    /// cache, and a user's reply turns into another user's (measured: of four concurrent
    /// greedy chats, two returned another prompt's text). Nor would concurrency buy
    /// throughput there: it batches only sequences of equal length, so two chats of
    /// different lengths alternate step by step, each switch copying both KV caches whole.
    async fn admit(&self) -> Result<Admission, EngineError> {
        // Counted before waiting, so that a request finishing meanwhile sees this one coming.
        let in_flight = InFlight::enter(&self.in_flight);
        let permit =
            self.admission.clone().acquire_owned().await.map_err(|_| EngineError::Unavailable("the engine has shut down".into()))?;
        Ok(Admission { _permit: permit, _in_flight: in_flight })
    }

    async fn submit(&self, request: &GenerationRequest) -> Result<Submitted, EngineError> {
        validate_request(request)?;
        // Logprobs are computed by our own sampler (see `seeded`): mistral.rs's are base-10,
        // and on its greedy path not even of probabilities. One sampler serves one sequence.
        let top_k = request.logprobs.unwrap_or(0);
        if request.logprobs.is_some() && request.n > 1 {
            return Err(EngineError::InvalidRequest("logprobs with n > 1 is not supported by the embedded backend".into()));
        }
        let seeded = match (request.seed, request.is_greedy(), request.logprobs.is_some()) {
            (_, true, true) => Some(SeededSampler::greedy().with_top(top_k)),
            (Some(seed), false, _) => Some(SeededSampler::new(seed, request.temperature.unwrap_or(1.0), request.top_p).with_top(top_k)),
            (None, false, true) => {
                Some(SeededSampler::new(rand::random(), request.temperature.unwrap_or(1.0), request.top_p).with_top(top_k))
            }
            _ => None,
        };
        // A forced beginning is taken by the seeded sampler (validation asked for a seed and
        // a token prompt); the grammar checks those tokens as any others.
        let seeded = seeded.map(|sampler| match &request.prompt {
            Prompt::Tokens(prompt) => Arc::new(sampler.with_forced(prompt.len(), request.forced.clone())),
            Prompt::Messages(_) => Arc::new(sampler),
        });

        let (messages, constraint) = match &request.prompt {
            Prompt::Tokens(tokens) => {
                if !request.tools.is_empty() {
                    return Err(EngineError::InvalidRequest("tools need a chat prompt, not a token prompt".into()));
                }
                (RequestMessage::CompletionTokens(tokens.clone()), request.json_schema.clone().map(json_constraint))
            }
            Prompt::Messages(messages) => {
                if request.offers_tools() {
                    if request.json_schema.is_some() {
                        return Err(EngineError::InvalidRequest(
                            "response_format json_schema cannot be combined with tools on the embedded backend".into(),
                        ));
                    }
                    let rendered = tool_protocol::render_conversation(messages, &request.tools, &request.tool_choice);
                    let schema = tool_protocol::reply_schema(&request.tools, &request.tool_choice);
                    (chat_message(&rendered), Some(json_constraint(schema)))
                } else {
                    (chat_message(messages), request.json_schema.clone().map(json_constraint))
                }
            }
        };

        let mut sampling = SamplingParams::neutral();
        sampling.max_len = Some(request.max_tokens);
        sampling.n_choices = request.n;
        // mistral.rs is asked for no alternatives: its values are replaced by the sampler's.
        sampling.top_n_logprobs = 0;
        let stops: Vec<String> = request.stop.iter().chain(&self.special_stops).cloned().collect();
        if !stops.is_empty() {
            sampling.stop_toks = Some(StopTokens::Seqs(stops));
        }
        // mistral.rs reads a missing temperature as 1.0, so greedy decoding has to be asked
        // for with an explicit 0. With a seeded sampler the engine must also pick greedily:
        // only the chosen token is left finite.
        if seeded.is_none() && !request.is_greedy() {
            sampling.temperature = request.temperature;
            sampling.top_p = request.top_p;
        } else {
            sampling.temperature = Some(0.0);
        }

        self.check_context(&messages, request.max_tokens).await?;
        let counter = Arc::new(StepCounter::default());
        let mut processors: Vec<Arc<dyn CustomLogitsProcessor>> = Vec::new();
        if let Some(sampler) = &seeded {
            processors.push(sampler.clone());
        }
        processors.push(counter.clone());
        let processors = Some(processors);
        let outgoing = Outgoing {
            messages,
            sampling,
            constraint: constraint.unwrap_or(Constraint::None),
            processors,
            logprobs: request.logprobs.is_some(),
        };
        let admitted = self.admit().await?;
        let receiver = self.send(outgoing).await?;
        Ok(Submitted { receiver, seeded, counter, admitted })
    }
}

/// A request's place in the engine, held until the request is done.
struct Admission {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _in_flight: InFlight,
}

/// One request admitted or waiting. When the last one leaves and no other comes within
/// [`IDLE_BEFORE_TRIM`], the engine is idle and the allocator's free memory goes back to
/// the system.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            release_free_memory_when_still_idle(self.0.clone());
        }
    }
}

/// How long the engine stays idle before its free memory goes back to the system. An
/// agent's next step arrives a few milliseconds after its last one ended; trimmed in
/// between, it faulted every page of its working set back in (hundreds of MB for a prompt
/// served from the prefix cache).
const IDLE_BEFORE_TRIM: std::time::Duration = std::time::Duration::from_millis(500);

/// Returns free memory to the system if no request entered the engine during
/// [`IDLE_BEFORE_TRIM`], on a blocking thread (a trim of a large heap takes milliseconds).
fn release_free_memory_when_still_idle(in_flight: Arc<AtomicUsize>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        release_free_memory();
        return;
    };
    runtime.spawn(async move {
        tokio::time::sleep(IDLE_BEFORE_TRIM).await;
        if in_flight.load(Ordering::SeqCst) == 0 {
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    });
}

/// Inference allocates and frees tensors of many megabytes per step. glibc keeps freed
/// heap memory with the process (a burst of concurrent requests left the server 1 GiB
/// larger), so it is handed back once the engine goes idle. Doing so per allocation
/// instead (a low mmap threshold, every large tensor in its own mapping) cost a page fault
/// per page of every tensor: a 6,000-token prompt read at 109 tokens/s instead of ~150.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages to the system, under
    // the same arena locks as every allocation. (glibc's allocator has no safe interface;
    // rustix does not cover it.)
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A JSON-schema constraint with llguidance's options set for small models on CPUs:
/// compact JSON (flexible whitespace lets a model spend its token budget on newlines and
/// indentation), and lenient compilation, so that keywords the grammar cannot enforce
/// (`format`, `$comment`, ...) in real clients' schemas are skipped instead of failing.
fn json_constraint(mut schema: serde_json::Value) -> Constraint {
    if let Some(object) = schema.as_object_mut() {
        object.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
                "lenient": true,
            })
        });
    }
    Constraint::JsonSchema(schema)
}

/// A request in the engine: its responses, its sampler (whose picks carry the true
/// log-probabilities) if one was installed, the count of tokens it generated, and the
/// engine's admission, held until the request is done.
struct Submitted {
    receiver: mpsc::Receiver<Response>,
    seeded: Option<Arc<SeededSampler>>,
    counter: Arc<StepCounter>,
    admitted: Admission,
}

/// The parts of a mistral.rs request that differ between our calls.
struct Outgoing {
    messages: RequestMessage,
    sampling: SamplingParams,
    constraint: Constraint,
    processors: Option<Vec<Arc<dyn CustomLogitsProcessor>>>,
    logprobs: bool,
}

fn split_model_path(path: &Path) -> anyhow::Result<(String, String)> {
    let file =
        path.file_name().and_then(|f| f.to_str()).ok_or_else(|| anyhow::anyhow!("model path {} has no file name", path.display()))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_string_lossy().into_owned(),
        _ => ".".to_string(),
    };
    Ok((dir, file.to_string()))
}

fn chat_message(messages: &[super::ChatMessage]) -> RequestMessage {
    let messages = messages
        .iter()
        .map(|message| {
            let mut entry: IndexMap<String, mistralrs::MessageContent> = IndexMap::new();
            entry.insert("role".into(), Either::Left(message.role().as_str().to_string()));
            entry.insert("content".into(), Either::Left(message.content.clone()));
            entry
        })
        .collect();
    RequestMessage::Chat { messages, enable_thinking: None, reasoning_effort: None }
}

fn response_error(response: Response) -> EngineError {
    match response {
        Response::ValidationError(e) => EngineError::InvalidRequest(e.to_string()),
        Response::InternalError(e) => EngineError::Backend(e.to_string()),
        Response::ModelError(message, _) | Response::CompletionModelError(message, _) => EngineError::Backend(message),
        _ => EngineError::Backend("unexpected response kind from the engine".into()),
    }
}

fn convert_logprob(logprob: mistralrs::core::ResponseLogprob) -> TokenLogprob {
    TokenLogprob {
        token: logprob.token,
        logprob: logprob.logprob,
        top: logprob.top_logprobs.into_iter().map(|top| (top.bytes.unwrap_or_else(|| top.token.to_string()), top.logprob)).collect(),
    }
}

fn usage_of(usage: &mistralrs::Usage) -> Usage {
    Usage { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens }
}

/// Turns a constrained tool-protocol reply into text or a tool call.
fn interpret_tool_reply(choice: &mut Choice) {
    match tool_protocol::parse_reply(&choice.text) {
        ParsedReply::Call(call) => {
            choice.text.clear();
            choice.tool_calls = vec![call];
            choice.finish_reason = Some(FinishReason::ToolCalls);
        }
        ParsedReply::Answer(answer) => choice.text = answer,
        ParsedReply::Unparsed(_) => {}
    }
}

#[async_trait]
impl Engine for MistralRsEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
        // One retry when the engine itself went away mid-request (its thread panicked on
        // another request and was rebooted): nothing was returned yet, so nothing repeats.
        match self.collect(&request).await {
            Err(EngineError::Backend(detail)) if detail == ENGINE_WENT_AWAY => {
                tracing::warn!("the engine restarted during a request; trying it once more");
                self.collect(&request).await
            }
            result => result,
        }
    }

    async fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        match prompt {
            Prompt::Tokens(tokens) => Ok(tokens.clone()),
            Prompt::Messages(messages) => match chat_message(messages) {
                RequestMessage::Chat { messages, .. } => tokenize(&self.runner, Either::Left(messages)).await,
                _ => unreachable!("chat_message builds a chat request"),
            },
        }
    }

    async fn tokenize_text(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        tokenize(&self.runner, Either::Right(text.to_string())).await
    }

    async fn detokenize(&self, tokens: &[u32]) -> Result<String, EngineError> {
        let engine = self.runner.get_sender(None).map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let (sender, mut receiver) = mpsc::channel(1);
        let request = Request::Detokenize(mistralrs::core::DetokenizationRequest {
            tokens: tokens.to_vec(),
            skip_special_tokens: true,
            response: sender,
        });
        engine.send(request).await.map_err(|_| EngineError::Unavailable("the engine has shut down".into()))?;
        match receiver.recv().await {
            Some(Ok(text)) => Ok(text),
            Some(Err(e)) => Err(EngineError::InvalidRequest(format!("the tokens cannot be decoded: {e}"))),
            None => Err(EngineError::Unavailable("the engine dropped a detokenization".into())),
        }
    }

    async fn score(&self, prefix: &[u32], continuation: &[u32]) -> Result<Vec<f32>, EngineError> {
        if prefix.is_empty() {
            return Err(EngineError::InvalidRequest("scoring needs a non-empty prefix".into()));
        }
        let mut scored: Vec<f32> = Vec::with_capacity(continuation.len());
        // The engine stops a sequence at an end-of-turn token even when more tokens were
        // given; scoring then resumes after it (on an accelerator the prefix cache keeps
        // that cheap).
        while scored.len() < continuation.len() {
            let context: Vec<u32> = prefix.iter().chain(&continuation[..scored.len()]).copied().collect();
            let remaining = continuation[scored.len()..].to_vec();
            let forced = Arc::new(ForcedContinuation::new(context.len(), remaining.clone()));
            let mut sampling = SamplingParams::neutral();
            sampling.max_len = Some(remaining.len());
            sampling.temperature = Some(0.0);
            let _admitted = self.admit().await?;
            let mut receiver = self
                .send(Outgoing {
                    messages: RequestMessage::CompletionTokens(context),
                    sampling,
                    constraint: Constraint::None,
                    processors: Some(vec![forced.clone() as Arc<dyn CustomLogitsProcessor>]),
                    logprobs: false,
                })
                .await?;
            // The request streams (see `send`); it is done when a chunk carries a finish reason.
            loop {
                match receiver.recv().await {
                    Some(Response::CompletionChunk(chunk)) if chunk.choices.iter().all(|c| c.finish_reason.is_none()) => {}
                    Some(Response::Chunk(chunk)) if chunk.choices.iter().all(|c| c.finish_reason.is_none()) => {}
                    Some(Response::CompletionChunk(_) | Response::Chunk(_) | Response::CompletionDone(_) | Response::Done(_)) => break,
                    Some(other) => return Err(response_error(other)),
                    // Ended on an incomplete character (see `StepCounter`): done once it
                    // forced at least one token.
                    None if !forced.picks().is_empty() => break,
                    None => return Err(EngineError::Backend(ENGINE_WENT_AWAY.into())),
                }
            }
            let picks = forced.picks();
            let matching = picks.iter().zip(&remaining).take_while(|(pick, &token)| pick.token == token).count();
            if matching == 0 {
                return Err(EngineError::InvalidRequest(format!(
                    "token id {} could not be scored (outside the vocabulary?)",
                    remaining[0]
                )));
            }
            scored.extend(picks[..matching].iter().map(|pick| pick.logprob));
        }
        Ok(scored)
    }

    async fn generate_stream(&self, request: GenerationRequest) -> Result<EventStream, EngineError> {
        Ok(self.events(&request).await?.0)
    }
}

/// Why a stream ended without finishing: the engine dropped its sender.
const ENGINE_WENT_AWAY: &str = "the engine ended the stream early";

impl MistralRsEngine {
    /// Runs a request to the end and gathers its stream into one reply.
    async fn collect(&self, request: &GenerationRequest) -> Result<Generation, EngineError> {
        let (mut events, seeded) = self.events(request).await?;
        let mut choices = vec![Choice::default(); request.n];
        let mut usage = Usage::default();
        while let Some(event) = futures::StreamExt::next(&mut events).await {
            match event? {
                StreamEvent::Delta { index, text, logprobs } => {
                    let choice = &mut choices[index];
                    choice.text.push_str(&text);
                    if request.logprobs.is_some() {
                        choice.logprobs.get_or_insert_with(Vec::new).extend(logprobs);
                    }
                }
                StreamEvent::ToolCalls { index, calls } => choices[index].tool_calls.extend(calls),
                StreamEvent::Finish { index, reason } => choices[index].finish_reason = Some(reason),
                StreamEvent::Usage(u) => usage = u,
                StreamEvent::Preview { .. } => {}
            }
        }
        for choice in &mut choices {
            // As mistral.rs's own non-streamed replies: no leading whitespace.
            let trimmed = choice.text.trim_start().len();
            choice.text.drain(..choice.text.len() - trimmed);
        }
        if let (Some(sampler), [choice]) = (&seeded, choices.as_mut_slice()) {
            let picks = sampler.picks();
            choice.token_ids = picks.iter().map(|p| p.token).collect();
            choice.token_logprobs = picks.iter().map(|p| p.logprob).collect();
            choice.token_entropies = picks.iter().map(|p| p.entropy).collect();
        }
        Ok(Generation { choices, usage })
    }

    /// Submits a request and returns its events, plus the seeded sampler if one was installed.
    async fn events(&self, request: &GenerationRequest) -> Result<(EventStream, Option<Arc<SeededSampler>>), EngineError> {
        let Submitted { mut receiver, seeded, counter, admitted } = self.submit(request).await?;
        let max_tokens = request.max_tokens;
        let sampler = seeded.clone();
        let runner = self.runner.clone();
        let buffer_for_tools = request.offers_tools();
        let choices = request.n;
        let prompt_tokens_known = match &request.prompt {
            Prompt::Tokens(tokens) => Some(tokens.len()),
            Prompt::Messages(_) => None,
        };
        let stream = async_stream::stream! {
            // The engine stays this request's until the stream ends or is dropped.
            let _admitted = admitted;
            // Tool-protocol replies are JSON that only means something once complete, so
            // they are buffered and sent as one event at the end of each choice.
            let mut buffered: Vec<String> = vec![String::new(); choices];
            // How much of each choice's answer was shown as a preview.
            let mut previewed: Vec<usize> = vec![0; choices];
            let mut finished = vec![false; choices];
            let mut usage: Option<Usage> = None;
            let mut tokens_seen = 0usize;
            let mut position = 0usize;
            // Texts of the alternative tokens named so far.
            let mut token_texts: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
            let mut closed_without_finish = false;
            loop {
                // Each chunk is (choice index, text, logprob, finish reason).
                let pieces: Vec<(usize, String, Option<mistralrs::core::ResponseLogprob>, Option<String>)> = match receiver.recv().await {
                    Some(Response::Chunk(chunk)) => {
                        if let Some(u) = &chunk.usage {
                            usage = Some(usage_of(u));
                        }
                        chunk.choices.into_iter()
                            .map(|c| (c.index, c.delta.content.unwrap_or_default(), c.logprobs, c.finish_reason))
                            .collect()
                    }
                    Some(Response::CompletionChunk(chunk)) => chunk.choices.into_iter()
                        .map(|c| (c.index, c.text, c.logprobs, c.finish_reason))
                        .collect(),
                    Some(other) => {
                        yield Err(response_error(other));
                        return;
                    }
                    // A single choice that generated tokens and then lost its final chunk
                    // ended on an incomplete character (see `StepCounter`): it is finished,
                    // at the token limit or by end-of-text or a stop string, and its text is
                    // complete up to that partial character.
                    None if choices == 1 && !finished[0] && !closed_without_finish && counter.steps() > 0 => {
                        closed_without_finish = true;
                        tracing::debug!(steps = counter.steps(), "the engine ended a reply on an incomplete character");
                        let reason = if counter.steps() >= max_tokens { FinishReason::Length } else { FinishReason::Stop };
                        vec![(0, String::new(), None, Some(reason.as_str().to_string()))]
                    }
                    None => break,
                };
                for (index, text, logprob, finish_reason) in pieces {
                    if index >= choices {
                        continue;
                    }
                    if !closed_without_finish {
                        tokens_seen += 1;
                    }
                    if buffer_for_tools {
                        buffered[index].push_str(&text);
                        // An answer is shown as it is written; a tool call only once whole.
                        if let Some(answer) = tool_protocol::partial_answer(&buffered[index]) {
                            if answer.len() > previewed[index] {
                                let text = answer[previewed[index]..].to_string();
                                previewed[index] = answer.len();
                                yield Ok(StreamEvent::Preview { index, text });
                            }
                        }
                    } else if !text.is_empty() || logprob.is_some() {
                        let mut logprobs: Vec<TokenLogprob> = logprob.into_iter().map(convert_logprob).collect();
                        if let (Some(sampler), Some(token)) = (&seeded, logprobs.first_mut()) {
                            if let Some(pick) = sampler.pick(position) {
                                token.logprob = pick.logprob;
                                token.top.clear();
                                for (id, logprob) in pick.top {
                                    if let std::collections::hash_map::Entry::Vacant(slot) = token_texts.entry(id) {
                                        slot.insert(token_text(&runner, id).await.unwrap_or_default());
                                    }
                                    token.top.push((token_texts[&id].clone(), logprob));
                                }
                            }
                        }
                        yield Ok(StreamEvent::Delta { index, text, logprobs });
                    }
                    if index == 0 {
                        position += 1;
                    }
                    if let Some(reason) = finish_reason {
                        let mut reason = FinishReason::parse(&reason);
                        if buffer_for_tools {
                            let mut choice = Choice { text: std::mem::take(&mut buffered[index]), finish_reason: Some(reason.clone()), ..Default::default() };
                            interpret_tool_reply(&mut choice);
                            if !choice.tool_calls.is_empty() {
                                yield Ok(StreamEvent::ToolCalls { index, calls: choice.tool_calls });
                            } else if !choice.text.is_empty() {
                                yield Ok(StreamEvent::Delta { index, text: choice.text, logprobs: Vec::new() });
                            }
                            reason = choice.finish_reason.unwrap_or(reason);
                        }
                        finished[index] = true;
                        yield Ok(StreamEvent::Finish { index, reason });
                    }
                }
                if finished.iter().all(|&f| f) {
                    break;
                }
            }
            if !finished.iter().all(|&f| f) {
                yield Err(EngineError::Backend(ENGINE_WENT_AWAY.into()));
                return;
            }
            let usage = usage.unwrap_or(Usage {
                prompt_tokens: prompt_tokens_known.unwrap_or(0),
                completion_tokens: if closed_without_finish { counter.steps() } else { tokens_seen },
            });
            yield Ok(StreamEvent::Usage(usage));
        };
        Ok((Box::pin(stream), sampler))
    }
}
