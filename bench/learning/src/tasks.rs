//! Tasks: their JSON form, loading and validating the suite, and laying out files.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Component, Path};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::check::{self, Check, Verdict};

/// Which half of a family a task belongs to: skills may be learnt from train tasks, and
/// are measured on heldout ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Heldout,
}

/// One task: a request to the agent, the files its workspace starts with, and how the
/// result is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub id: String,
    pub family: String,
    pub split: Split,
    pub request: String,
    /// The workspace's files before the agent acts, by relative path.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    pub check: Check,
    /// A known good result, which must pass the check.
    pub solution: Solution,
    /// A plausible mistake, which must fail the check.
    pub wrong: Solution,
}

/// A result of a task: the final answer and the changes made to the workspace.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Solution {
    #[serde(default)]
    pub answer: String,
    /// Files to write (`Some`) or to delete (`None`, written `null` in JSON).
    #[serde(default)]
    pub files: BTreeMap<String, Option<String>>,
}

impl Task {
    /// Writes the task's starting files under `dir`, creating directories as needed.
    pub fn materialize(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        for (path, content) in &self.files {
            write_file(dir, path, content)?;
        }
        Ok(())
    }

    /// Judges a final answer and the workspace it left behind.
    pub fn check(&self, workspace: &Path, answer: &str) -> Verdict {
        check::check(&self.check, workspace, answer)
    }
}

impl Solution {
    /// Makes this solution's changes to the workspace in `dir`. Deleting a file that is
    /// already gone is no error, since the outcome is the same.
    pub fn apply(&self, dir: &Path) -> io::Result<()> {
        for (path, content) in &self.files {
            match content {
                Some(content) => write_file(dir, path, content)?,
                None => match fs::remove_file(dir.join(checked(path)?)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

/// Whether `path` names something inside a workspace: relative, not empty, and made of
/// plain names only, so that no task can reach outside the directory it is given.
pub fn is_workspace_path(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)))
}

fn checked(path: &str) -> io::Result<&Path> {
    if is_workspace_path(path) {
        Ok(Path::new(path))
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{path:?} is not a relative path inside the workspace")))
    }
}

fn write_file(dir: &Path, path: &str, content: &str) -> io::Result<()> {
    let target = dir.join(checked(path)?);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(target, content)
}

/// Loads every `*.json` file of `dir` (each an array of tasks of the family that names the
/// file), validates the suite and returns its tasks sorted by id.
///
/// The suite is refused when ids repeat, a task's family differs from its file's name, a
/// family lacks train or heldout tasks, or any path (of a fixture, a solution or a check)
/// is absolute or climbs out with `..`. An unknown split fails to parse.
pub fn load_suite(dir: &Path) -> anyhow::Result<Vec<Task>> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading the task directory {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "json"));
    files.sort();
    if files.is_empty() {
        bail!("{} holds no task files", dir.display());
    }

    let mut tasks = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let family_tasks: Vec<Task> = serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        for task in &family_tasks {
            if task.family != stem {
                bail!(
                    "task {} in {} belongs to family {:?}; a file holds the family it is named after",
                    task.id,
                    file.display(),
                    task.family
                );
            }
        }
        tasks.extend(family_tasks);
    }
    validate(&tasks)?;
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(tasks)
}

fn validate(tasks: &[Task]) -> anyhow::Result<()> {
    let mut ids = HashSet::new();
    let mut splits: BTreeMap<&str, BTreeSet<Split>> = BTreeMap::new();
    for task in tasks {
        if task.id.trim().is_empty() {
            bail!("a task of family {} has an empty id", task.family);
        }
        if !ids.insert(task.id.as_str()) {
            bail!("the task id {} occurs more than once", task.id);
        }
        if task.request.trim().is_empty() {
            bail!("task {} has an empty request", task.id);
        }
        splits.entry(task.family.as_str()).or_default().insert(task.split);
        let paths = task
            .files
            .keys()
            .chain(task.solution.files.keys())
            .chain(task.wrong.files.keys())
            .map(String::as_str)
            .chain(task.check.paths());
        for path in paths {
            if !is_workspace_path(path) {
                bail!("task {} uses the path {path:?}, which is not a relative path inside the workspace", task.id);
            }
        }
    }
    for (family, seen) in splits {
        for split in [Split::Train, Split::Heldout] {
            if !seen.contains(&split) {
                bail!("family {family} has no {split:?} tasks");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, family: &str, split: Split, file: &str) -> Task {
        Task {
            id: id.into(),
            family: family.into(),
            split,
            request: "Count.".into(),
            files: BTreeMap::from([(file.to_string(), "x\n".to_string())]),
            check: Check::AnswerNumber { value: 1.0 },
            solution: Solution { answer: "1".into(), files: BTreeMap::new() },
            wrong: Solution { answer: "2".into(), files: BTreeMap::new() },
        }
    }

    #[test]
    fn workspace_paths_are_plain_relative_names() {
        assert!(is_workspace_path("a.txt"));
        assert!(is_workspace_path("dir/a.txt"));
        assert!(!is_workspace_path(""));
        assert!(!is_workspace_path("/etc/passwd"));
        assert!(!is_workspace_path("../a.txt"));
        assert!(!is_workspace_path("dir/../../a.txt"));
        assert!(!is_workspace_path("./a.txt"));
    }

    #[test]
    fn validation_refuses_repeated_ids_missing_splits_and_escaping_paths() {
        let good = vec![task("f-train-1", "f", Split::Train, "a.txt"), task("f-heldout-1", "f", Split::Heldout, "b.txt")];
        assert!(validate(&good).is_ok());

        let repeated = vec![good[0].clone(), good[0].clone(), good[1].clone()];
        assert!(validate(&repeated).unwrap_err().to_string().contains("more than once"));

        let one_split = vec![good[0].clone()];
        assert!(validate(&one_split).unwrap_err().to_string().contains("no Heldout tasks"));

        let mut escaping = good.clone();
        escaping[1].files = BTreeMap::from([("../b.txt".to_string(), String::new())]);
        assert!(validate(&escaping).unwrap_err().to_string().contains("../b.txt"));

        let mut escaping_check = good.clone();
        escaping_check[0].check = Check::FileExists { path: "/tmp/x".into() };
        assert!(validate(&escaping_check).is_err());
    }

    #[test]
    fn an_unknown_split_does_not_parse() {
        let text = r#"{"id": "a", "family": "f", "split": "test", "request": "r", "check": {"kind": "file_exists", "path": "a"},
                       "solution": {}, "wrong": {}}"#;
        assert!(serde_json::from_str::<Task>(text).is_err());
    }

    #[test]
    fn solutions_write_and_delete_files() {
        let dir = tempfile::tempdir().unwrap();
        task("t", "f", Split::Train, "sub/a.txt").materialize(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("sub/a.txt")).unwrap(), "x\n");
        let solution = Solution {
            answer: String::new(),
            files: BTreeMap::from([("sub/a.txt".to_string(), None), ("b/c.txt".to_string(), Some("new".to_string()))]),
        };
        solution.apply(dir.path()).unwrap();
        assert!(!dir.path().join("sub/a.txt").exists());
        assert_eq!(fs::read_to_string(dir.path().join("b/c.txt")).unwrap(), "new");
        // A second application deletes nothing new and still succeeds.
        solution.apply(dir.path()).unwrap();
    }
}
