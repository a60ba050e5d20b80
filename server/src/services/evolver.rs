//! The evolver inside the server: its store on the server's database (either backend), its configuration,
//! and its scheduler (a timer and a count of waiting sessions).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::engine::Engine;
use evolver::{Evolver, EvolverConfig, RunError};

use crate::services::skills::SkillRepo;
use crate::storage::evolver::{EvolverRecords, RepoEvolverStore};

/// The evolver's store and configuration, shared by the scheduler and the API.
pub struct EvolverService {
    /// The evolver's tables, for the API's listings.
    pub records: Arc<dyn EvolverRecords>,
    /// What the evolver works on: those tables and the skill repository.
    pub store: Arc<RepoEvolverStore>,
    pub config: EvolverConfig,
    /// Minutes between timed runs (0: none) and waiting sessions that start a run (0: none).
    pub every_minutes: u64,
    pub after_sessions: i64,
}

impl EvolverService {
    pub fn new(records: Arc<dyn EvolverRecords>, skills: &SkillRepo, config: EvolverConfig) -> Arc<Self> {
        Arc::new(Self {
            store: Arc::new(RepoEvolverStore { records: records.clone(), skills: skills.store.clone() }),
            records,
            config,
            every_minutes: 0,
            after_sessions: 0,
        })
    }

    /// The service with the schedule and configuration given on the command line.
    pub fn scheduled(
        records: Arc<dyn EvolverRecords>,
        skills: &SkillRepo,
        args: &crate::config::EvolverArgs,
        sandbox: agent::exec::Sandbox,
    ) -> Arc<Self> {
        // Replays run users' requests again: under the same sandbox as users' turns.
        let config = EvolverConfig { replay_sandbox: sandbox, ..args.config() };
        Arc::new(Self {
            store: Arc::new(RepoEvolverStore { records: records.clone(), skills: skills.store.clone() }),
            records,
            config,
            every_minutes: args.evolve_every_minutes,
            after_sessions: args.evolve_after_sessions,
        })
    }

    pub fn evolver(&self, engine: Arc<dyn Engine>) -> Evolver {
        Evolver { engine, store: self.store.clone(), config: self.config.clone() }
    }

    /// Runs the evolver whenever the timer expires or enough sessions wait, forever.
    pub async fn schedule(self: Arc<Self>, engine: Arc<dyn Engine>, skills: Arc<SkillRepo>, shutdown: tokio_util::sync::CancellationToken) {
        if self.every_minutes == 0 && self.after_sessions <= 0 {
            return;
        }
        let mut last = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
                () = shutdown.cancelled() => return,
            }
            let timer = self.every_minutes > 0 && last.elapsed() >= Duration::from_secs(self.every_minutes * 60);
            let pending = self.records.pending_sessions().await.unwrap_or(0);
            let count = self.after_sessions > 0 && pending >= self.after_sessions;
            if !(timer || count) {
                continue;
            }
            let trigger = if count { "sessions" } else { "timer" };
            run_and_announce(self.evolver(engine.clone()), &skills, trigger).await;
            last = Instant::now();
        }
    }
}

/// One run, logged; its publications then reach the manifest and the feed at once.
pub async fn run_and_announce(evolver: Evolver, skills: &SkillRepo, trigger: &str) {
    match evolver.run_once(trigger).await {
        Ok((run_id, report)) => tracing::info!(%run_id, published = report.published, "evolver run finished"),
        Err(RunError::Busy) => tracing::debug!("an evolver run is already going"),
        Err(e) => tracing::warn!(error = %e, "evolver run failed"),
    }
    if let Err(e) = skills.refresh().await {
        tracing::warn!(error = %e, "cannot read the skill change log");
    }
}
