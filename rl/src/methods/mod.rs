//! The agentic RL methods built on the core, each its exact arithmetic here and its
//! rollout strategy in [`crate::grpo`]:
//! - [`resum`]: self-summarization points, their contrastive and matched branches, and the
//!   paired advantage;
//! - [`appo`]: branching at uncertain, since-favoured tokens, with dual-group advantages
//!   and procedure-level scaling;
//! - [`role_agent`]: the agent predicting its observations (reward shaping) and failure-
//!   driven task sampling;
//! - [`actguide`]: reference plans shown only to hard groups, as short as a binary search
//!   finds enough, trained as the unguided policy's samples.

pub mod actguide;
pub mod appo;
pub mod resum;
pub mod role_agent;
