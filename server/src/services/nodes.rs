//! What keeps server nodes on one database in step: each node's heartbeat, the sweep
//! that frees the sessions of a node that died mid-turn, and the signals between nodes
//! (new skill changes, stale identities, cancels of turns running elsewhere).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::services::skills::SkillRepo;
use crate::services::turns::AgentRuntime;
use crate::storage::{Signal, Store};

/// Records this node alive every `every`, and marks interrupted the sessions of nodes
/// silent for `timeout` (none when `timeout` is zero: a database only this node uses).
pub async fn keep_alive(store: Arc<dyn Store>, node: String, every: Duration, timeout: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(error) = store.heartbeat(&node).await {
            tracing::warn!(%error, "cannot record this node's heartbeat");
        }
        if timeout.is_zero() {
            continue;
        }
        match store.mark_interrupted_sessions(&node, timeout).await {
            Ok(0) => {}
            Ok(interrupted) => tracing::warn!(interrupted, "sessions were running on a node that stopped; marked interrupted"),
            Err(error) => tracing::warn!(%error, "cannot look for the sessions of stopped nodes"),
        }
    }
}

/// Acts on the signals of every node until shutdown.
pub async fn follow_signals(store: Arc<dyn Store>, skills: Arc<SkillRepo>, agent: Arc<AgentRuntime>, shutdown: CancellationToken) {
    let mut signals = store.signals();
    loop {
        let signal = tokio::select! {
            signal = signals.recv() => signal,
            () = shutdown.cancelled() => return,
        };
        match signal {
            Ok(Signal::SkillsChanged) => skills.after_write().await,
            Ok(Signal::AuthChanged) => skills.forget_viewers(),
            Ok(Signal::CancelTurn { session_id }) => {
                if agent.cancel(&session_id) {
                    tracing::info!(%session_id, "turn cancelled at another node's request");
                }
            }
            // Missed signals: whatever they said, the caches may be stale.
            Err(RecvError::Lagged(_)) => {
                skills.forget_viewers();
                skills.after_write().await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}
