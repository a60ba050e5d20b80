//! Skills in the AgentSkills format: a folder with a `SKILL.md` (YAML frontmatter and a
//! markdown body) and optional `scripts/`, `references/` and `assets/`.

pub mod bundle;
pub mod catalog;
pub mod format;
pub mod placeholders;
pub mod relevance;
