//! A skill bundle: the files of one skill version (`SKILL.md` plus optional `scripts/`,
//! `references/` and `assets/`), validated as a whole, hashed and fingerprinted.
//!
//! The fingerprint is ClawHub's: sha256 over the `path:sha256` lines of every file, sorted
//! by path and joined with `\n`. ClawHub's CLI sorts with JavaScript's `localeCompare`,
//! which is Unicode collation, not byte order (`references/` sorts before `SKILL.md`), so
//! the same collation is used here: a fingerprint computed by `clawhub` on an installed
//! folder must equal the one the server stored, or every update would look like a local
//! edit.

use std::collections::BTreeMap;

use icu_collator::options::CollatorOptions;
use icu_collator::{Collator, CollatorBorrowed};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::format::{check_skill_md, parse_skill_md, FormatError, SkillManifest, Strictness};

/// Largest single file in a bundle.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Largest bundle, all files together.
pub const MAX_BUNDLE_BYTES: usize = 8 * 1024 * 1024;
/// Most files in a bundle.
pub const MAX_FILES: usize = 256;

/// The files of one skill version, by relative path (`/`-separated).
pub type Files = BTreeMap<String, Vec<u8>>;

/// One file as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a path inside a bundle: relative, `/`-separated, no empty, `.` or `..` segment,
/// no hidden segment (ClawHub skips those when hashing, so they could never match), and no
/// character that is unsafe in a file name on common systems.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 512 {
        return Err("a file path must be 1 to 512 bytes".into());
    }
    if path.starts_with('/') || path.contains('\\') || path.contains(':') {
        return Err(format!("`{path}` must be a relative path with `/` separators"));
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("`{path}` has an empty, `.` or `..` segment"));
        }
        if segment.starts_with('.') {
            return Err(format!("`{path}` has a hidden segment"));
        }
        if segment.chars().any(|c| c.is_control()) {
            return Err(format!("`{path}` contains a control character"));
        }
    }
    Ok(())
}

/// Validates a whole bundle for the skill `slug`: paths, size caps and `SKILL.md`.
/// Messages name files as `<slug>/<path>`.
pub fn validate_bundle(slug: &str, files: &Files) -> Result<SkillManifest, Vec<FormatError>> {
    let mut errors = Vec::new();
    let error = |file: &str, rule: &'static str, message: String| FormatError { file: format!("{slug}/{file}"), line: 1, rule, message };
    if files.len() > MAX_FILES {
        errors.push(error("", "bundle-files", format!("a bundle has at most {MAX_FILES} files; this one has {}", files.len())));
    }
    let total: usize = files.values().map(Vec::len).sum();
    if total > MAX_BUNDLE_BYTES {
        errors.push(error("", "bundle-size", format!("a bundle is at most {MAX_BUNDLE_BYTES} bytes; this one is {total}")));
    }
    for (path, bytes) in files {
        if let Err(message) = check_path(path) {
            errors.push(error(path, "path", message));
        }
        if bytes.len() > MAX_FILE_BYTES {
            errors.push(error(path, "file-size", format!("a file is at most {MAX_FILE_BYTES} bytes; this one is {}", bytes.len())));
        }
    }
    // Every path must be installable as files in a folder: no path may also be the
    // folder of another (`references` and `references/x.md`), and none may differ from
    // another only in case (one file on case-insensitive disks). Either would make every
    // sync client of the skill's scope fail.
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for path in files.keys() {
        if let Some(other) = seen.insert(path.to_lowercase(), path) {
            errors.push(error(path, "path-case", format!("`{path}` and `{other}` differ only in case")));
        }
        let mut prefix = String::new();
        for segment in path.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(segment);
            if files.contains_key(&prefix) {
                errors.push(error(path, "path-file-and-folder", format!("`{prefix}` is a file and also the folder of `{path}`")));
            }
        }
    }
    let manifest = match files.get("SKILL.md") {
        None => {
            errors.push(error("SKILL.md", "skill-md-required", "a bundle must have a SKILL.md at its root".into()));
            None
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Err(_) => {
                errors.push(error("SKILL.md", "utf8", "SKILL.md must be UTF-8 text".into()));
                None
            }
            Ok(text) => match parse_skill_md(&format!("{slug}/SKILL.md"), Some(slug), text) {
                Ok(manifest) => Some(manifest),
                Err(mut found) => {
                    errors.append(&mut found);
                    None
                }
            },
        },
    };
    match manifest {
        Some(manifest) if errors.is_empty() => Ok(manifest),
        _ => Err(errors),
    }
}

/// The rules a bundle is checked against, with what each asks, in the order an author
/// meets them; every [`FormatError::rule`] is one of these.
pub const RULES: &[(&str, &str)] = &[
    ("skill-md-required", "a SKILL.md at the root"),
    ("utf8", "SKILL.md is UTF-8 text"),
    ("size", "SKILL.md is at most 64 KiB (not in strict mode)"),
    ("frontmatter", "SKILL.md opens with `---` YAML frontmatter, closed by `---`, holding a mapping"),
    ("yaml", "the frontmatter is valid YAML"),
    ("yaml-flow-style", "block-style YAML only (strict mode)"),
    ("fields-unexpected", "only the specification's frontmatter keys (strict mode)"),
    ("type", "text fields are strings"),
    ("name-required", "a `name`"),
    ("name-length", "`name` is 1 to 64 characters"),
    ("name-case", "`name` is lowercase (strict mode)"),
    ("name-charset", "`name` has only lowercase letters, digits and `-`"),
    ("name-hyphens", "`name` does not start or end with `-` or contain `--`"),
    ("name-folder", "`name` equals the skill's folder (its slug)"),
    ("description-required", "a `description`"),
    ("description-length", "`description` is 1 to 1024 characters"),
    ("compatibility-length", "`compatibility` is at most 500 characters"),
    ("metadata-type", "`metadata` is a mapping"),
    ("allowed-tools-type", "`allowed-tools` is a space-delimited string (or, strictly, a list of strings)"),
    ("path", "file paths are relative, with no hidden or `..` segment"),
    ("path-case", "no two paths differ only in case"),
    ("path-file-and-folder", "no path is both a file and a folder"),
    ("file-size", "each file is at most 1 MiB"),
    ("bundle-files", "at most 256 files"),
    ("bundle-size", "at most 8 MiB in all"),
];

/// Every problem of a skill folder's files under the given rules. Strict mode is the
/// AgentSkills reference validator's check: its `SKILL.md` rules (it also finds a
/// lowercase `skill.md`), none about other files.
pub fn check_bundle(slug: &str, files: &Files, strictness: Strictness) -> Vec<FormatError> {
    if strictness == Strictness::Lenient {
        return validate_bundle(slug, files).err().unwrap_or_default();
    }
    let Some((name, bytes)) = ["SKILL.md", "skill.md"].iter().find_map(|name| files.get(*name).map(|bytes| (*name, bytes))) else {
        let message = "a skill folder must have a SKILL.md".to_string();
        return vec![FormatError { file: format!("{slug}/SKILL.md"), line: 1, rule: "skill-md-required", message }];
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => check_skill_md(&format!("{slug}/{name}"), Some(slug), text, strictness),
        Err(_) => {
            vec![FormatError { file: format!("{slug}/{name}"), line: 1, rule: "utf8", message: "SKILL.md must be UTF-8 text".into() }]
        }
    }
}

/// Each file's path, sha256 and size, in path order.
pub fn file_entries(files: &Files) -> Vec<FileEntry> {
    files.iter().map(|(path, bytes)| FileEntry { path: path.clone(), sha256: sha256_hex(bytes), size: bytes.len() as u64 }).collect()
}

fn collator() -> CollatorBorrowed<'static> {
    Collator::try_new(Default::default(), CollatorOptions::default()).expect("the root collation is compiled in")
}

/// ClawHub's fingerprint over `(path, sha256)` pairs.
pub fn fingerprint<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let collator = collator();
    let mut entries: Vec<(&str, &str)> = entries.into_iter().collect();
    entries.sort_by(|a, b| collator.compare(a.0, b.0).then_with(|| a.0.cmp(b.0)));
    let payload = entries.iter().map(|(path, sha)| format!("{path}:{sha}")).collect::<Vec<_>>().join("\n");
    sha256_hex(payload.as_bytes())
}

/// The fingerprint of a bundle's files.
pub fn fingerprint_files(files: &Files) -> String {
    let entries = file_entries(files);
    fingerprint(entries.iter().map(|e| (e.path.as_str(), e.sha256.as_str())))
}

/// What a skill needs from the machine its commands run on, from `metadata.openclaw`
/// (`requires.bins`, `requires.env`, `os`), as OpenClaw gates skills.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    pub bins: Vec<String>,
    pub env: Vec<String>,
    pub os: Vec<String>,
}

impl Requirements {
    pub fn of(manifest: &SkillManifest) -> Self {
        let openclaw = manifest.metadata.get("openclaw");
        let list = |value: Option<&Value>| -> Vec<String> {
            match value {
                Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                Some(Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            }
        };
        let requires = openclaw.and_then(|o| o.get("requires"));
        Self {
            bins: list(requires.and_then(|r| r.get("bins"))),
            env: list(requires.and_then(|r| r.get("env"))),
            os: list(openclaw.and_then(|o| o.get("os"))),
        }
    }

    /// The first unmet requirement on this host, or `None` when the skill is eligible.
    pub fn unmet_on_this_host(&self) -> Option<String> {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            "windows" => "win32",
            other => other,
        };
        if !self.os.is_empty() && !self.os.iter().any(|o| o == os) {
            return Some(format!("os {os} is not one of {:?}", self.os));
        }
        if let Some(bin) = self.bins.iter().find(|bin| !binary_on_path(bin)) {
            return Some(format!("binary `{bin}` is not on PATH"));
        }
        if let Some(var) = self.env.iter().find(|var| std::env::var_os(var).is_none()) {
            return Some(format!("environment variable `{var}` is not set"));
        }
        None
    }
}

fn binary_on_path(name: &str) -> bool {
    if name.contains('/') {
        return std::path::Path::new(name).is_file();
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_the_validator_breaks_is_listed_for_authors() {
        // One bundle breaking each rule; a rule missing from RULES would fail a publish
        // without the author seeing its verdict.
        let skill = |frontmatter: &str| format!("---\n{frontmatter}\n---\nbody\n");
        let md = |frontmatter: &str| Files::from([("SKILL.md".to_string(), skill(frontmatter).into_bytes())]);
        let with = |extra: &[(&str, Vec<u8>)]| {
            let mut files = md("name: s\ndescription: d");
            files.extend(extra.iter().map(|(path, bytes)| (path.to_string(), bytes.clone())));
            files
        };
        let mib = vec![b'x'; MAX_FILE_BYTES];
        let cases: Vec<(Files, Strictness)> = vec![
            (Files::new(), Strictness::Lenient),
            (Files::from([("SKILL.md".to_string(), vec![0xff])]), Strictness::Lenient),
            (
                Files::from([(
                    "SKILL.md".to_string(),
                    format!("{}{}", skill("name: s\ndescription: d"), "x".repeat(64 * 1024)).into_bytes(),
                )]),
                Strictness::Lenient,
            ),
            (Files::from([("SKILL.md".to_string(), b"# no frontmatter".to_vec())]), Strictness::Lenient),
            (md("name: [unclosed"), Strictness::Lenient),
            (md("name: s\ndescription: d\nmetadata: {a: b}\nx-extra: 1"), Strictness::Strict),
            (md("name: [s]\ndescription: d"), Strictness::Lenient),
            (md("description: d"), Strictness::Lenient),
            (md(&format!("name: {}\ndescription: d", "a".repeat(65))), Strictness::Lenient),
            (md("name: S\ndescription: d"), Strictness::Strict),
            (md("name: s_x\ndescription: d"), Strictness::Lenient),
            (md("name: -s\ndescription: d"), Strictness::Lenient),
            (md("name: other"), Strictness::Lenient),
            (md(&format!("name: s\ndescription: {}", "d".repeat(1025))), Strictness::Lenient),
            (md(&format!("name: s\ndescription: d\ncompatibility: {}", "c".repeat(501))), Strictness::Lenient),
            (md("name: s\ndescription: d\nmetadata: [1]\nallowed-tools: [read]"), Strictness::Lenient),
            (
                with(&[("../x", vec![1]), ("a.md", vec![1]), ("A.md", vec![1]), ("refs", vec![1]), ("refs/x.md", vec![1])]),
                Strictness::Lenient,
            ),
            (with(&[("big", vec![b'x'; MAX_FILE_BYTES + 1])]), Strictness::Lenient),
            (
                with(&(0..9).map(|i| (["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8"][i], mib.clone())).collect::<Vec<_>>()),
                Strictness::Lenient,
            ),
            (
                (0..MAX_FILES + 1)
                    .map(|i| (format!("f{i}"), vec![1]))
                    .chain([("SKILL.md".to_string(), skill("name: s\ndescription: d").into_bytes())])
                    .collect(),
                Strictness::Lenient,
            ),
        ];
        let listed: Vec<&str> = RULES.iter().map(|(rule, _)| *rule).collect();
        let mut broken = std::collections::BTreeSet::new();
        for (files, strictness) in &cases {
            for problem in check_bundle("s", files, *strictness) {
                assert!(listed.contains(&problem.rule), "rule `{}` is not in RULES", problem.rule);
                broken.insert(problem.rule);
            }
        }
        let never: Vec<&&str> = listed.iter().filter(|rule| !broken.contains(*rule)).collect();
        assert!(never.is_empty(), "no case breaks {never:?}");
    }

    use super::*;

    fn bundle(entries: &[(&str, &str)]) -> Files {
        entries.iter().map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())).collect()
    }

    const SKILL: &str = "---\nname: demo\ndescription: A demo. Use when testing.\n---\nDo it.\n";

    #[test]
    fn fingerprint_matches_one_computed_by_hand() {
        let files = bundle(&[("SKILL.md", SKILL), ("references/notes.md", "notes\n")]);
        // Collation puts `references/…` before `SKILL.md` (case is compared last).
        let payload = format!("references/notes.md:{}\nSKILL.md:{}", sha256_hex(b"notes\n"), sha256_hex(SKILL.as_bytes()));
        assert_eq!(fingerprint_files(&files), sha256_hex(payload.as_bytes()));
    }

    #[test]
    fn collation_orders_paths_as_javascript_locale_compare_does() {
        // Orders taken from Node's `localeCompare` on the same strings.
        let mut paths = vec![
            "SKILL.md",
            "scripts/run.sh",
            "references/a.md",
            "assets/x.png",
            "a_b.md",
            "a-b.md",
            "a.md",
            "A.md",
            "b1.md",
            "b10.md",
            "b2.md",
        ];
        let collator = collator();
        paths.sort_by(|a, b| collator.compare(a, b));
        assert_eq!(
            paths,
            vec![
                "a_b.md",
                "a-b.md",
                "a.md",
                "A.md",
                "assets/x.png",
                "b1.md",
                "b10.md",
                "b2.md",
                "references/a.md",
                "scripts/run.sh",
                "SKILL.md"
            ]
        );
    }

    #[test]
    fn paths_that_cannot_be_installed_side_by_side_are_refused() {
        let rules = |files: &Files| validate_bundle("demo", files).unwrap_err().into_iter().map(|e| e.rule).collect::<Vec<_>>();
        let file_and_folder = bundle(&[("SKILL.md", SKILL), ("references", "x"), ("references/x.md", "y")]);
        assert_eq!(rules(&file_and_folder), vec!["path-file-and-folder"]);
        let deeper = bundle(&[("SKILL.md", SKILL), ("a/b", "x"), ("a/b/c/d.md", "y")]);
        assert_eq!(rules(&deeper), vec!["path-file-and-folder"]);
        let case = bundle(&[("SKILL.md", SKILL), ("Notes.md", "x"), ("notes.md", "y")]);
        assert_eq!(rules(&case), vec!["path-case"]);
        assert!(validate_bundle("demo", &bundle(&[("SKILL.md", SKILL), ("references/a.md", "x"), ("references/b.md", "y")])).is_ok());
    }

    #[test]
    fn bundle_rules_name_the_file_and_rule() {
        let ok = bundle(&[("SKILL.md", SKILL), ("scripts/run.sh", "echo hi\n")]);
        assert_eq!(validate_bundle("demo", &ok).unwrap().name, "demo");

        let rules = |files: &Files| validate_bundle("demo", files).unwrap_err().into_iter().map(|e| (e.file, e.rule)).collect::<Vec<_>>();
        assert_eq!(rules(&bundle(&[("README.md", "x")])), vec![("demo/SKILL.md".to_string(), "skill-md-required")]);
        assert_eq!(
            rules(&bundle(&[("SKILL.md", SKILL), ("../evil", "x"), (".hidden", "x")])),
            vec![("demo/../evil".to_string(), "path"), ("demo/.hidden".to_string(), "path")]
        );
        let big = "x".repeat(MAX_FILE_BYTES + 1);
        assert_eq!(
            rules(&bundle(&[("SKILL.md", SKILL), ("assets/big.txt", &big)])),
            vec![("demo/assets/big.txt".to_string(), "file-size")]
        );
        let many: Files = (0..=MAX_FILES)
            .map(|i| (format!("assets/{i}.txt"), b"x".to_vec()))
            .chain([("SKILL.md".to_string(), SKILL.as_bytes().to_vec())])
            .collect();
        assert_eq!(rules(&many), vec![("demo/".to_string(), "bundle-files")]);
        let total: Files = (0..9)
            .map(|i| (format!("assets/{i}.bin"), vec![0u8; MAX_FILE_BYTES]))
            .chain([("SKILL.md".to_string(), SKILL.as_bytes().to_vec())])
            .collect();
        assert_eq!(rules(&total), vec![("demo/".to_string(), "bundle-size")]);
        // The name must equal the slug the bundle is published under.
        assert_eq!(validate_bundle("other", &ok).unwrap_err()[0].rule, "name-folder");
    }

    #[test]
    fn requirements_come_from_metadata_openclaw() {
        let text = "---\nname: demo\ndescription: d\nmetadata:\n  openclaw:\n    requires:\n      bins: [sh, no-such-binary-xyz]\n      env: [HOME]\n    os: [linux, darwin]\n---\n";
        let manifest = parse_skill_md("SKILL.md", None, text).unwrap();
        let requirements = Requirements::of(&manifest);
        assert_eq!(requirements.bins, vec!["sh", "no-such-binary-xyz"]);
        assert_eq!(requirements.unmet_on_this_host().unwrap(), "binary `no-such-binary-xyz` is not on PATH");
        let met = Requirements { bins: vec!["sh".into()], env: vec!["PATH".into()], os: vec![] };
        assert_eq!(met.unmet_on_this_host(), None);
        let other_os = Requirements { os: vec!["win32".into()], ..Default::default() };
        assert!(other_os.unmet_on_this_host().unwrap().starts_with("os "));
    }
}
