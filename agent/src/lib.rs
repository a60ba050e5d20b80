//! The agent crate: the inference engine every other part runs on, and (as the runtime
//! grows) the skills format, tools, the agent loop and trajectory types.
//!
//! This crate serves no HTTP and runs no SQL: the server translates between the network,
//! the database and the types defined here.

pub mod agent_loop;
pub mod engine;
pub mod exec;
pub mod import;
pub mod model;
pub mod repack;
pub mod skills;
pub mod trajectory;
pub mod workspace;
