//! Reinforcement learning for agents on skillhive's own inference engine.
//!
//! - [`math`]: the exact arithmetic every policy update is made of (group advantages, KL
//!   estimators, the clipped PPO objective, loss aggregation, step metrics), on plain slices
//!   so that it is tested number by number, independently of any tensor library.
//! - [`policy`]: a differentiable Llama forward over a GGUF model with LoRA adapters.
//! - [`trainer`]: one update (clipped objective, AdamW, gradient clipping) and checkpoints.
//! - [`rollout`]: seeded samples through the shared engine, token in and token out.
//! - [`episode`]: multi-turn agent rollouts with the agent's tools, tool results spliced in
//!   as template-rendered tokens that the loss masks out.
//! - [`task`]: prompts with verifiable rewards; [`evaluate`]: held-out mean reward.
//! - [`grpo`]: the training loop, publishing each update back into an engine.
//! - [`methods`]: ReSum, APPO, Role-Agent and ActGuide-RL on that loop.
//! - [`publish`]: adapters merged into an all-F32 GGUF file the engine loads.
//! - [`registry`]: published policies, the default among them, promotion and rollback.
//! - [`runs`]: a training run's folder: metrics, checkpoint, plot.
//! - [`harvest`]: RL tasks and rated answers from users' sessions, under the evolver's
//!   invariants; [`export`]: rows for verl and TRL; [`peft`]: LoRA adapters in PEFT's
//!   format, in and out.

pub mod episode;
pub mod evaluate;
pub mod export;
pub mod grpo;
pub mod harvest;
pub mod math;
pub mod methods;
pub mod peft;
pub mod policy;
pub mod publish;
pub mod registry;
pub mod rollout;
pub mod runs;
pub mod task;
pub mod trainer;
