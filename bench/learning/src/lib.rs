//! The learning task suite: small workspace tasks in families, each split into train and
//! heldout tasks, used to measure whether shared skills make an agent better.
//!
//! The tasks live as JSON in `bench/tasks/` (written by `bench/tasks/generate.py`). This
//! crate loads and validates them ([`tasks::load_suite`]), lays out a task's files in a
//! workspace ([`tasks::Task::materialize`]) and decides deterministically whether a
//! final answer and the workspace it left behind solve the task ([`check::check`]).

use std::path::{Path, PathBuf};

pub mod check;
pub mod client;
pub mod experiment;
pub mod stats;
pub mod tasks;

pub use check::{Check, Verdict};
pub use tasks::{load_suite, Solution, Split, Task};

/// The directory of the task suite, `bench/tasks`, found next to this crate's directory.
pub fn suite_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The crate sits at bench/learning, so its parent is bench/; joining there instead of
    // appending `..` keeps the path free of parent components in messages.
    manifest.parent().unwrap_or(manifest).join("tasks")
}
