//! The models a server serves: its default model id, backed by the base engine or by the
//! promoted RL policy, and every published policy by its own id.
//!
//! The router is itself an [`Engine`]: whatever holds it (agent turns, the evolver, the
//! OpenAI endpoint) reaches the current default, and a promotion or rollback takes effect
//! for all of them at the next request without a restart. Policy engines are loaded on
//! first use and at most [`MAX_LOADED_POLICIES`] besides the default stay in memory (each
//! holds its weights in F32).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use serde::Serialize;

use agent::engine::{Engine, EngineError, EventStream, Generation, GenerationRequest, ModelInfo, Prompt};
use rl::registry::{PolicyRecord, PolicyRegistry, PolicyState};

/// Policy engines kept loaded besides the default.
pub const MAX_LOADED_POLICIES: usize = 2;

/// A policy entry of `/v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServedModel {
    pub id: String,
    /// `policy` for an RL policy.
    pub kind: &'static str,
    pub backend: &'static str,
    pub context_window: Option<usize>,
}

pub struct ModelRouter {
    info: ModelInfo,
    base: Arc<dyn Engine>,
    /// The RL folder (`{data}/rl`) and its published policies; `None` when the backend
    /// cannot load policies (a remote backend).
    rl: Option<(PathBuf, PolicyRegistry)>,
    /// The promoted policy and its engine, when one serves the default id.
    default: RwLock<Option<(String, Arc<dyn Engine>)>>,
    loaded: Mutex<LoadedPolicies>,
}

/// Loaded policy engines by id, with the order of their last use (most recent last).
#[derive(Default)]
struct LoadedPolicies {
    engines: HashMap<String, Arc<dyn Engine>>,
    recency: Vec<String>,
}

impl ModelRouter {
    /// A router serving `base` alone.
    pub fn fixed(base: Arc<dyn Engine>) -> Self {
        Self { info: base.info().clone(), base, rl: None, default: RwLock::new(None), loaded: Mutex::new(LoadedPolicies::default()) }
    }

    /// A router that also serves the policies published under `rl_dir` (`{data}/rl`).
    pub fn with_policies(base: Arc<dyn Engine>, rl_dir: &std::path::Path) -> anyhow::Result<Self> {
        let registry = PolicyRegistry::open(&rl_dir.join("policies"))?;
        Ok(Self { rl: Some((rl_dir.to_path_buf(), registry)), ..Self::fixed(base) })
    }

    /// The RL folder, when this server serves policies.
    pub fn rl_dir(&self) -> Option<&std::path::Path> {
        self.rl.as_ref().map(|(dir, _)| dir.as_path())
    }

    pub fn registry(&self) -> Option<&PolicyRegistry> {
        self.rl.as_ref().map(|(_, registry)| registry)
    }

    /// The engine serving the default id now.
    pub fn current(&self) -> Arc<dyn Engine> {
        match &*self.default.read().unwrap_or_else(|p| p.into_inner()) {
            Some((_, engine)) => engine.clone(),
            None => self.base.clone(),
        }
    }

    /// The promoted policy serving the default id, if any.
    pub fn default_policy(&self) -> Option<String> {
        self.default.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(id, _)| id.clone())
    }

    fn servable_policies(&self) -> Vec<PolicyRecord> {
        let Some(registry) = self.registry() else { return Vec::new() };
        match registry.list() {
            Ok(policies) => policies.into_iter().filter(|p| p.state != PolicyState::Retired).collect(),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot read the policy registry");
                Vec::new()
            }
        }
    }

    /// The published policies this server serves by their own ids.
    pub fn policies(&self) -> Vec<ServedModel> {
        self.servable_policies()
            .into_iter()
            .map(|policy| ServedModel {
                id: policy.id,
                kind: "policy",
                backend: self.info.backend,
                context_window: self.info.context_window,
            })
            .collect()
    }

    /// The engine for a model id, loading a policy on first use; `None` for an id this
    /// server does not serve.
    pub async fn engine_for(&self, id: &str) -> anyhow::Result<Option<Arc<dyn Engine>>> {
        if id == self.info.id {
            return Ok(Some(self.current()));
        }
        if let Some((default_id, engine)) = &*self.default.read().unwrap_or_else(|p| p.into_inner()) {
            if default_id == id {
                return Ok(Some(engine.clone()));
            }
        }
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(engine) = loaded.engines.get(id).cloned() {
                loaded.recency.retain(|used| used != id);
                loaded.recency.push(id.to_string());
                return Ok(Some(engine));
            }
        }
        let Some(record) = self.servable_policies().into_iter().find(|p| p.id == id) else { return Ok(None) };
        let engine = self.load(&record).await?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.engines.insert(id.to_string(), engine.clone());
        loaded.recency.push(id.to_string());
        while loaded.recency.len() > MAX_LOADED_POLICIES {
            let evicted = loaded.recency.remove(0);
            loaded.engines.remove(&evicted);
        }
        Ok(Some(engine))
    }

    async fn load(&self, record: &PolicyRecord) -> anyhow::Result<Arc<dyn Engine>> {
        let registry = self.registry().ok_or_else(|| anyhow::anyhow!("this server loads no policies"))?;
        let path = registry.path_of(record);
        tracing::info!(policy = %record.id, path = %path.display(), "loading policy");
        Ok(Arc::new(rl::publish::load_policy_engine(&path, &record.id).await?))
    }

    /// Re-reads the registry and, if the default policy changed (a promotion or rollback),
    /// loads the new one and switches to it. Requests in flight finish on the engine they
    /// started on.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let Some(registry) = self.registry() else { return Ok(()) };
        let wanted = registry.default_policy()?;
        if wanted.as_ref().map(|p| &p.id) == self.default_policy().as_ref() {
            return Ok(());
        }
        let next = match wanted {
            Some(record) => {
                let engine = match self.engine_for(&record.id).await? {
                    Some(engine) => engine,
                    None => self.load(&record).await?,
                };
                tracing::info!(policy = %record.id, model = %self.info.id, "the promoted policy now serves the default model");
                Some((record.id, engine))
            }
            None => {
                tracing::info!(model = %self.info.id, "the base model serves the default model again");
                None
            }
        };
        *self.default.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// Refreshes every `period` until `shutdown`.
    pub async fn watch(self: Arc<Self>, period: std::time::Duration, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            if let Err(error) = self.refresh().await {
                tracing::warn!(error = %format!("{error:#}"), "cannot switch the default policy");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }
}

#[async_trait]
impl Engine for ModelRouter {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
        self.current().generate(request).await
    }

    async fn generate_stream(&self, request: GenerationRequest) -> Result<EventStream, EngineError> {
        self.current().generate_stream(request).await
    }

    async fn score(&self, prefix: &[u32], continuation: &[u32]) -> Result<Vec<f32>, EngineError> {
        self.current().score(prefix, continuation).await
    }

    async fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        self.current().tokenize(prompt).await
    }

    async fn tokenize_text(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.current().tokenize_text(text).await
    }

    async fn detokenize(&self, tokens: &[u32]) -> Result<String, EngineError> {
        self.current().detokenize(tokens).await
    }
}
