//! Property-based fuzzing of the parsers that take other people's bytes: `SKILL.md`,
//! skill bundles, imported transcripts and the exec argument rules. Each must answer
//! every input with a value or an error, never a panic. `PROPTEST_CASES` sets how many
//! inputs each property tries (`bench/reliability` runs many more than CI does).

use std::collections::BTreeMap;

use proptest::prelude::*;

use agent::exec::{plan, ExecPolicy};
use agent::skills::bundle::validate_bundle;
use agent::skills::format::parse_skill_md;

const OPENCLAW: &str = include_str!("../../tests/fixtures/openclaw-session.jsonl");
const SKILLCLAW: &str = include_str!("../../tests/fixtures/skillclaw-session.json");

/// Text made of the characters that matter to YAML front matter and Markdown.
fn skill_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("---".to_string()),
        Just("name: my-skill".to_string()),
        Just("description: Does things. Use when asked.".to_string()),
        Just("metadata:".to_string()),
        Just("  openclaw:".to_string()),
        Just("    requires: {bins: [sh], env: [X]}".to_string()),
        "[a-z\\-]{0,12}: [ -~]{0,40}",
        "[ -~\\t]{0,60}",
        "\\PC{0,30}",
    ];
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

/// A transcript with random edits: bytes replaced, lines dropped or repeated, cut short.
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    (prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8), any::<prop::sample::Index>(), 0usize..4).prop_map(
        move |(edits, cut, mode)| {
            let mut bytes = base.as_bytes().to_vec();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            match mode {
                0 => text.clone(),
                1 => text.chars().take(cut.index(text.chars().count().max(1))).collect(),
                2 => lines.iter().step_by(2).copied().collect::<Vec<_>>().join("\n"),
                _ => lines.iter().chain(lines.iter()).copied().collect::<Vec<_>>().join("\n"),
            }
        },
    )
}

proptest! {
    #[test]
    fn skill_md_parsing_never_panics(text in skill_text(), folder in proptest::option::of("[a-z\\-]{0,12}")) {
        let _ = parse_skill_md("x/SKILL.md", folder.as_deref(), &text);
    }

    #[test]
    fn bundle_validation_never_panics(
        skill in skill_text(),
        files in prop::collection::btree_map("[a-zA-Z0-9._ /\\-]{0,24}", prop::collection::vec(any::<u8>(), 0..64), 0..12),
    ) {
        let mut files: BTreeMap<String, Vec<u8>> = files;
        files.insert("SKILL.md".into(), skill.into_bytes());
        let _ = validate_bundle("my-skill", &files);
    }

    #[test]
    fn transcript_import_never_panics(openclaw in mutated(OPENCLAW), skillclaw in mutated(SKILLCLAW), noise in "\\PC{0,200}") {
        let _ = agent::import::parse(&openclaw);
        let _ = agent::import::parse(&skillclaw);
        let _ = agent::import::parse(&noise);
    }

    #[test]
    fn exec_rules_never_panic_and_never_pass_an_absolute_operand(
        program in prop::sample::select(agent::exec::DEFAULT_ALLOWLIST),
        arguments in prop::collection::vec("[-a-zA-Z0-9=./+,]{0,16}", 0..6),
    ) {
        let command = std::iter::once(program.to_string()).chain(arguments).collect::<Vec<_>>();
        let line = shell_words::join(&command);
        if let Ok(argv) = plan(&line, &ExecPolicy::default()) {
            // No operand that was let through names a file outside the workspace.
            let reads_files = ["ls", "cat", "head", "tail", "wc", "grep", "sort", "uniq", "cut", "diff", "stat", "du"];
            if reads_files.contains(&argv[0].as_str()) {
                for pair in argv[1..].windows(2).filter(|pair| !pair[0].starts_with('-') && !pair[1].starts_with('-')) {
                    let operand = &pair[1];
                    prop_assert!(!operand.starts_with('/'), "{line} passed with {operand}");
                    prop_assert!(!operand.split('/').any(|segment| segment == ".."), "{line} passed with {operand}");
                }
            }
        }
    }
}
