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

/// The directory of the task suite, `bench/tasks`, in the checkout being run.
///
/// Cargo sets `CARGO_MANIFEST_DIR` for the tests and examples it runs, to the package being
/// run; the suite is found from there, upwards. The path compiled in is only the fallback:
/// a build shared between checkouts (one target directory) may have been compiled in
/// another one, which may since be gone.
pub fn suite_dir() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    let running = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    for start in running.iter().map(PathBuf::as_path).chain([compiled]) {
        if let Some(found) = start.ancestors().map(|dir| dir.join("bench/tasks")).find(|dir| dir.is_dir()) {
            return found;
        }
    }
    // The crate sits at bench/learning, so its parent is bench/; joining there instead of
    // appending `..` keeps the path free of parent components in messages.
    compiled.parent().unwrap_or(compiled).join("tasks")
}
