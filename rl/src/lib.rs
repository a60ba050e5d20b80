//! Reinforcement learning for agents on skillhive's own inference engine.
//!
//! - [`math`]: the exact arithmetic every policy update is made of (group advantages, KL
//!   estimators, the clipped PPO objective, loss aggregation, step metrics), on plain slices
//!   so that it is tested number by number, independently of any tensor library.
//! - [`policy`]: a differentiable Llama forward over a GGUF model with LoRA adapters.
//! - [`trainer`]: one update (clipped objective, AdamW, gradient clipping) and checkpoints.

pub mod grpo;
pub mod math;
pub mod policy;
pub mod publish;
pub mod rollout;
pub mod task;
pub mod trainer;
