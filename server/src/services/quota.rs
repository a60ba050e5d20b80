//! Per-user rate limits and quotas: requests per minute, tokens per day and generations
//! at once. A user past a limit gets 429 with `Retry-After`; other users are not slowed.
//! Counts live in this process's memory (a restart forgets the day's tokens), which is
//! what a single server needs; a limit of 0 turns that limit off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent::engine::{Engine, EngineError, EventStream, Generation, GenerationRequest, ModelInfo, Prompt, StreamEvent};
use futures::StreamExt;

/// The limits every user has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageLimits {
    /// Authenticated requests per minute (a bucket of this size, refilled evenly).
    pub requests_per_minute: u32,
    /// Prompt plus completion tokens per UTC day.
    pub tokens_per_day: u64,
    /// Chat completions and agent turns running at once.
    pub concurrent_generations: usize,
}

impl UsageLimits {
    pub const UNLIMITED: UsageLimits = UsageLimits { requests_per_minute: 0, tokens_per_day: 0, concurrent_generations: 0 };
}

#[derive(Debug)]
struct UserUsage {
    /// Requests left in the bucket, and when it was last refilled.
    bucket: f64,
    refilled: Instant,
    /// The UTC day `tokens` counts, as days since the epoch.
    day: u64,
    tokens: u64,
    running: usize,
}

/// The limits and each user's usage.
#[derive(Debug)]
pub struct Quotas {
    limits: UsageLimits,
    users: Mutex<HashMap<String, UserUsage>>,
    /// Interactive generations (chat completions, agent turns) running now, of all
    /// users: background work waits for this to be zero (see [`YieldingEngine`]).
    interactive: tokio::sync::watch::Sender<usize>,
}

impl Default for Quotas {
    fn default() -> Self {
        Self::new(UsageLimits::UNLIMITED)
    }
}

fn today() -> (u64, Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    (now / 86_400, Duration::from_secs(86_400 - now % 86_400))
}

/// A user past one of their limits; they may try again after `retry_after_secs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OverLimit {
    pub message: String,
    pub retry_after_secs: u64,
}

fn too_many(message: String, retry_after: Duration) -> OverLimit {
    OverLimit { message, retry_after_secs: retry_after.as_secs().max(1) }
}

impl Quotas {
    pub fn new(limits: UsageLimits) -> Self {
        Self { limits, users: Mutex::new(HashMap::new()), interactive: tokio::sync::watch::channel(0).0 }
    }

    pub fn limits(&self) -> UsageLimits {
        self.limits
    }

    fn with_user<T>(&self, user_id: &str, f: impl FnOnce(&mut UserUsage) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let usage = users.entry(user_id.to_string()).or_insert_with(|| UserUsage {
            bucket: self.limits.requests_per_minute as f64,
            refilled: Instant::now(),
            day: today().0,
            tokens: 0,
            running: 0,
        });
        f(usage)
    }

    /// Takes one request from the user's bucket, or says when the next one is there.
    pub fn admit_request(&self, user_id: &str) -> Result<(), OverLimit> {
        let per_minute = self.limits.requests_per_minute;
        if per_minute == 0 {
            return Ok(());
        }
        self.with_user(user_id, |usage| {
            let per_second = per_minute as f64 / 60.0;
            let now = Instant::now();
            usage.bucket = (usage.bucket + now.duration_since(usage.refilled).as_secs_f64() * per_second).min(per_minute as f64);
            usage.refilled = now;
            if usage.bucket >= 1.0 {
                usage.bucket -= 1.0;
                Ok(())
            } else {
                let wait = Duration::from_secs_f64((1.0 - usage.bucket) / per_second).max(Duration::from_secs(1));
                Err(too_many(format!("more than {per_minute} requests a minute; slow down"), wait))
            }
        })
    }

    /// Starts a generation for the user: refused while the day's tokens are spent or
    /// too many of the user's generations run. The permit ends it when dropped.
    pub fn begin_generation(self: &Arc<Self>, user_id: &str) -> Result<GenerationPermit, OverLimit> {
        let limits = self.limits;
        self.with_user(user_id, |usage| {
            let (day, until_midnight) = today();
            if usage.day != day {
                usage.day = day;
                usage.tokens = 0;
            }
            if limits.tokens_per_day > 0 && usage.tokens >= limits.tokens_per_day {
                return Err(too_many(format!("the daily allowance of {} tokens is used up", limits.tokens_per_day), until_midnight));
            }
            if limits.concurrent_generations > 0 && usage.running >= limits.concurrent_generations {
                return Err(too_many(
                    format!("{} of your generations are running; wait for one to finish", usage.running),
                    Duration::from_secs(1),
                ));
            }
            usage.running += 1;
            Ok(())
        })?;
        self.interactive.send_modify(|running| *running += 1);
        Ok(GenerationPermit { quotas: self.clone(), user_id: user_id.to_string() })
    }

    /// Interactive generations running now.
    pub fn interactive(&self) -> usize {
        *self.interactive.borrow()
    }

    /// Returns once no interactive generation runs.
    pub async fn wait_until_idle(&self) {
        let mut running = self.interactive.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = running.wait_for(|n| *n == 0).await;
    }

    /// Counts tokens a generation used.
    pub fn add_tokens(&self, user_id: &str, tokens: u64) {
        self.with_user(user_id, |usage| {
            let day = today().0;
            if usage.day != day {
                usage.day = day;
                usage.tokens = 0;
            }
            usage.tokens = usage.tokens.saturating_add(tokens);
        });
    }
}

/// One running generation of a user; dropping it frees the slot.
#[derive(Debug)]
pub struct GenerationPermit {
    quotas: Arc<Quotas>,
    user_id: String,
}

impl GenerationPermit {
    pub fn add_tokens(&self, tokens: u64) {
        self.quotas.add_tokens(&self.user_id, tokens);
    }
}

impl Drop for GenerationPermit {
    fn drop(&mut self) {
        self.quotas.with_user(&self.user_id, |usage| usage.running = usage.running.saturating_sub(1));
        self.quotas.interactive.send_modify(|running| *running = running.saturating_sub(1));
    }
}

/// An engine that counts every token it serves against a user's daily allowance; an
/// agent turn runs on one, so that all its model calls are counted.
pub struct MeteredEngine {
    inner: Arc<dyn Engine>,
    quotas: Arc<Quotas>,
    user_id: String,
}

impl MeteredEngine {
    pub fn new(inner: Arc<dyn Engine>, quotas: Arc<Quotas>, user_id: &str) -> Self {
        Self { inner, quotas, user_id: user_id.to_string() }
    }
}

#[async_trait::async_trait]
impl Engine for MeteredEngine {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
        let generation = self.inner.generate(request).await?;
        self.quotas.add_tokens(&self.user_id, generation.usage.total_tokens() as u64);
        Ok(generation)
    }

    async fn generate_stream(&self, request: GenerationRequest) -> Result<EventStream, EngineError> {
        let events = self.inner.generate_stream(request).await?;
        let (quotas, user_id) = (self.quotas.clone(), self.user_id.clone());
        Ok(Box::pin(events.inspect(move |event| {
            if let Ok(StreamEvent::Usage(usage)) = event {
                quotas.add_tokens(&user_id, usage.total_tokens() as u64);
            }
        })))
    }

    async fn score(&self, prefix: &[u32], continuation: &[u32]) -> Result<Vec<f32>, EngineError> {
        let scores = self.inner.score(prefix, continuation).await?;
        self.quotas.add_tokens(&self.user_id, (prefix.len() + continuation.len()) as u64);
        Ok(scores)
    }

    async fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        self.inner.tokenize(prompt).await
    }

    async fn tokenize_text(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.inner.tokenize_text(text).await
    }

    async fn detokenize(&self, tokens: &[u32]) -> Result<String, EngineError> {
        self.inner.detokenize(tokens).await
    }
}

/// An engine for background work (the evolver): each call first waits until no user's
/// generation runs, so that on a machine with few cores an evolver run never slows a
/// user's chat or turn; it goes on in the pauses between them.
pub struct YieldingEngine {
    inner: Arc<dyn Engine>,
    quotas: Arc<Quotas>,
}

impl YieldingEngine {
    pub fn new(inner: Arc<dyn Engine>, quotas: Arc<Quotas>) -> Self {
        Self { inner, quotas }
    }
}

#[async_trait::async_trait]
impl Engine for YieldingEngine {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
        self.quotas.wait_until_idle().await;
        self.inner.generate(request).await
    }

    async fn generate_stream(&self, request: GenerationRequest) -> Result<EventStream, EngineError> {
        self.quotas.wait_until_idle().await;
        self.inner.generate_stream(request).await
    }

    async fn score(&self, prefix: &[u32], continuation: &[u32]) -> Result<Vec<f32>, EngineError> {
        self.quotas.wait_until_idle().await;
        self.inner.score(prefix, continuation).await
    }

    async fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        self.inner.tokenize(prompt).await
    }

    async fn tokenize_text(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.inner.tokenize_text(text).await
    }

    async fn detokenize(&self, tokens: &[u32]) -> Result<String, EngineError> {
        self.inner.detokenize(tokens).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(error: OverLimit) -> u64 {
        error.retry_after_secs
    }

    #[test]
    fn each_limit_refuses_with_a_wait_and_other_users_go_on() {
        let quotas = Arc::new(Quotas::new(UsageLimits { requests_per_minute: 3, tokens_per_day: 100, concurrent_generations: 2 }));
        for _ in 0..3 {
            quotas.admit_request("a").unwrap();
        }
        let wait = retry_after(quotas.admit_request("a").unwrap_err());
        assert!((1..=20).contains(&wait), "{wait}");
        quotas.admit_request("b").unwrap();

        let first = quotas.begin_generation("a").unwrap();
        let second = quotas.begin_generation("a").unwrap();
        assert_eq!(retry_after(quotas.begin_generation("a").unwrap_err()), 1);
        drop(second);
        let third = quotas.begin_generation("a").unwrap();
        first.add_tokens(60);
        third.add_tokens(60);
        drop((first, third));
        let wait = retry_after(quotas.begin_generation("a").unwrap_err());
        assert!(wait <= 86_400);
        assert!(quotas.begin_generation("b").is_ok(), "another user's allowance is their own");
    }

    #[tokio::test]
    async fn background_work_waits_for_interactive_generations() {
        let quotas = Arc::new(Quotas::default());
        let turn = quotas.begin_generation("a").unwrap();
        assert_eq!(quotas.interactive(), 1);
        let waiting = tokio::spawn({
            let quotas = quotas.clone();
            async move { quotas.wait_until_idle().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the evolver waits while a user's turn runs");
        drop(turn);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("it goes on once the turn ends").unwrap();
        assert_eq!(quotas.interactive(), 0);
    }
}
