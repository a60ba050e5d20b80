//! Reinforcement learning for agents on skillhive's own inference engine.
//!
//! This crate starts with [`math`]: the exact, allocation-light arithmetic every policy
//! update is made of (group advantages, KL estimators, the clipped PPO objective, loss
//! aggregation and the metrics a run is watched by), on plain slices so that it is tested
//! number by number, independently of any tensor library.

pub mod math;
