//! The published policies of a server: which exist, which one is the default, which one a
//! rollback returns to, and which are retired.
//!
//! A policy is an immutable all-F32 GGUF file plus a record. The records live in one JSON
//! document beside the files, rewritten atomically on every change, so that a server
//! reading it never sees half a change. A policy becomes the default only through
//! [`PolicyRegistry::promote`], which takes the verdict of a held-out A/B comparison
//! ([`Gate`]) and refuses a candidate that did worse than the policy it would replace.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Where a policy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyState {
    /// Published and servable by its own id; not the default.
    Candidate,
    /// Serves the server's default model id.
    Default,
    /// The default before the current one: what a rollback restores.
    Previous,
    /// Its file is deleted; the record stays as history.
    Retired,
}

/// The held-out comparison a promotion was decided by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// Tasks × samples each side was scored on.
    pub samples: usize,
    pub candidate_reward: f64,
    /// The reward of the policy it would replace (the base model when none was promoted).
    pub incumbent_reward: f64,
}

impl Gate {
    /// A candidate passes when its held-out reward is not worse than the incumbent's and
    /// it solved something: a tie at 0 is no evidence, and a policy that moved away from
    /// the base with nothing to show for it must not replace what serves every user.
    pub fn passes(&self) -> bool {
        self.candidate_reward > 0.0 && self.candidate_reward >= self.incumbent_reward
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The model id clients address it by.
    pub id: String,
    /// The GGUF file, relative to the registry's folder.
    pub file: String,
    /// The base model it was trained from.
    pub base_model: PathBuf,
    /// The training run and the number of updates behind it.
    pub run: String,
    pub step: u64,
    pub created_at: u64,
    pub state: PolicyState,
    /// The gate of its promotion, once promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryDocument {
    policies: Vec<PolicyRecord>,
}

/// The outcome of a promotion.
#[derive(Debug, Clone, PartialEq)]
pub enum Promotion {
    Promoted {
        id: String,
        gate: Gate,
    },
    /// The candidate did worse on held-out tasks; nothing changed.
    Refused {
        id: String,
        gate: Gate,
    },
}

/// The policies in one folder.
pub struct PolicyRegistry {
    dir: PathBuf,
}

const DOCUMENT: &str = "policies.json";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Ids become file names and URL path segments: letters, digits, `-`, `_` and `.` only.
pub fn check_policy_id(id: &str) -> anyhow::Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        bail!("`{id}` is not a valid policy id: use 1-64 letters, digits, `-`, `_` or `.`, not starting with `.`");
    }
    Ok(())
}

impl PolicyRegistry {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self) -> anyhow::Result<RegistryDocument> {
        match std::fs::read(self.dir.join(DOCUMENT)) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", self.dir.join(DOCUMENT).display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistryDocument::default()),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&self, document: &RegistryDocument) -> anyhow::Result<()> {
        let staged = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::fs::write(staged.path(), serde_json::to_vec_pretty(document)?)?;
        staged.persist(self.dir.join(DOCUMENT)).map_err(|e| e.error)?;
        Ok(())
    }

    /// Every policy, oldest first.
    pub fn list(&self) -> anyhow::Result<Vec<PolicyRecord>> {
        Ok(self.read()?.policies)
    }

    pub fn get(&self, id: &str) -> anyhow::Result<Option<PolicyRecord>> {
        Ok(self.list()?.into_iter().find(|p| p.id == id))
    }

    /// The path of a policy's file.
    pub fn path_of(&self, record: &PolicyRecord) -> PathBuf {
        self.dir.join(&record.file)
    }

    pub fn default_policy(&self) -> anyhow::Result<Option<PolicyRecord>> {
        Ok(self.list()?.into_iter().find(|p| p.state == PolicyState::Default))
    }

    /// Adds a published policy file (moved into the registry's folder) as a candidate.
    pub fn register(&self, source: &Path, id: &str, base_model: &Path, run: &str, step: u64) -> anyhow::Result<PolicyRecord> {
        check_policy_id(id)?;
        let mut document = self.read()?;
        if document.policies.iter().any(|p| p.id == id) {
            bail!("a policy `{id}` already exists; policies are immutable, publish under a new id");
        }
        let file = format!("{id}.gguf");
        let target = self.dir.join(&file);
        if std::fs::rename(source, &target).is_err() {
            std::fs::copy(source, &target).with_context(|| format!("cannot copy {} into the registry", source.display()))?;
        }
        let record = PolicyRecord {
            id: id.to_string(),
            file,
            base_model: base_model.to_path_buf(),
            run: run.to_string(),
            step,
            created_at: now(),
            state: PolicyState::Candidate,
            gate: None,
        };
        document.policies.push(record.clone());
        self.write(&document)?;
        Ok(record)
    }

    /// Makes `id` the default if `gate` passes; the old default becomes the previous one.
    pub fn promote(&self, id: &str, gate: Gate) -> anyhow::Result<Promotion> {
        let mut document = self.read()?;
        let Some(index) = document.policies.iter().position(|p| p.id == id) else { bail!("no policy `{id}`") };
        match document.policies[index].state {
            PolicyState::Retired => bail!("policy `{id}` is retired; its file is gone"),
            PolicyState::Default => bail!("policy `{id}` is already the default"),
            PolicyState::Candidate | PolicyState::Previous => {}
        }
        if !gate.passes() {
            return Ok(Promotion::Refused { id: id.to_string(), gate });
        }
        for policy in &mut document.policies {
            match policy.state {
                PolicyState::Previous => policy.state = PolicyState::Candidate,
                PolicyState::Default => policy.state = PolicyState::Previous,
                _ => {}
            }
        }
        document.policies[index].state = PolicyState::Default;
        document.policies[index].gate = Some(gate.clone());
        self.write(&document)?;
        Ok(Promotion::Promoted { id: id.to_string(), gate })
    }

    /// Restores the previous default; the current one becomes a candidate. With no
    /// previous policy, the base model serves the default id again. Returns the default
    /// after the rollback (`None`: the base model).
    pub fn rollback(&self) -> anyhow::Result<Option<String>> {
        let mut document = self.read()?;
        let current = document.policies.iter().position(|p| p.state == PolicyState::Default);
        let Some(current) = current else { bail!("no policy is the default; there is nothing to roll back") };
        document.policies[current].state = PolicyState::Candidate;
        let restored = document.policies.iter_mut().find(|p| p.state == PolicyState::Previous).map(|p| {
            p.state = PolicyState::Default;
            p.id.clone()
        });
        self.write(&document)?;
        Ok(restored)
    }

    /// Retires all candidates but the newest `keep`, deleting their files; the default and
    /// the previous policy are never retired. Returns the retired ids.
    pub fn retire_old(&self, keep: usize) -> anyhow::Result<Vec<String>> {
        let mut document = self.read()?;
        let mut candidates: Vec<usize> =
            document.policies.iter().enumerate().filter(|(_, p)| p.state == PolicyState::Candidate).map(|(i, _)| i).collect();
        // Newest first; records are appended, so a later index is newer within a second.
        candidates.sort_by_key(|i| std::cmp::Reverse((document.policies[*i].created_at, *i)));
        let mut retired = Vec::new();
        for &index in candidates.iter().skip(keep) {
            let policy = &mut document.policies[index];
            policy.state = PolicyState::Retired;
            let _ = std::fs::remove_file(self.dir.join(&policy.file));
            retired.push(policy.id.clone());
        }
        self.write(&document)?;
        Ok(retired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(registry: &PolicyRegistry, id: &str) -> PolicyRecord {
        let source = registry.dir().join(format!("staged-{id}"));
        std::fs::write(&source, id).unwrap();
        registry.register(&source, id, Path::new("base.gguf"), "run", 1).unwrap()
    }

    fn gate(candidate: f64, incumbent: f64) -> Gate {
        Gate { samples: 8, candidate_reward: candidate, incumbent_reward: incumbent }
    }

    #[test]
    fn promotion_goes_through_the_gate_and_rollback_restores_the_previous_default() {
        let dir = tempfile::tempdir().unwrap();
        let registry = PolicyRegistry::open(dir.path()).unwrap();
        publish(&registry, "a");
        publish(&registry, "b");
        assert!(registry.register(&dir.path().join("x"), "a", Path::new("b"), "r", 1).is_err(), "ids are unique");
        assert!(registry.register(&dir.path().join("x"), "../evil", Path::new("b"), "r", 1).is_err());

        // Worse on held-out tasks: refused, nothing changes.
        assert!(matches!(registry.promote("a", gate(0.2, 0.3)).unwrap(), Promotion::Refused { .. }));
        // Nothing solved on either side: no evidence, refused.
        assert!(matches!(registry.promote("a", gate(0.0, 0.0)).unwrap(), Promotion::Refused { .. }));
        assert_eq!(registry.default_policy().unwrap(), None);

        assert!(matches!(registry.promote("a", gate(0.5, 0.3)).unwrap(), Promotion::Promoted { .. }));
        assert!(matches!(registry.promote("b", gate(0.6, 0.5)).unwrap(), Promotion::Promoted { .. }));
        let states: Vec<(String, PolicyState)> = registry.list().unwrap().into_iter().map(|p| (p.id, p.state)).collect();
        assert_eq!(states, vec![("a".into(), PolicyState::Previous), ("b".into(), PolicyState::Default)]);

        assert_eq!(registry.rollback().unwrap(), Some("a".into()));
        assert_eq!(registry.default_policy().unwrap().unwrap().id, "a");
        assert_eq!(registry.rollback().unwrap(), None, "with no previous policy the base model serves again");
        assert!(registry.rollback().is_err());
    }

    #[test]
    fn retiring_keeps_the_newest_candidates_and_never_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let registry = PolicyRegistry::open(dir.path()).unwrap();
        for id in ["p1", "p2", "p3"] {
            publish(&registry, id);
        }
        registry.promote("p1", gate(1.0, 0.0)).unwrap();
        let retired = registry.retire_old(1).unwrap();
        assert_eq!(retired, vec!["p2".to_string()], "p3 is the newest candidate");
        let p1 = registry.get("p1").unwrap().unwrap();
        assert_eq!(p1.state, PolicyState::Default);
        assert!(registry.path_of(&p1).exists());
        let gone = registry.get(&retired[0]).unwrap().unwrap();
        assert!(!registry.path_of(&gone).exists());
        assert!(registry.promote(&retired[0], gate(1.0, 0.0)).is_err());
    }
}
