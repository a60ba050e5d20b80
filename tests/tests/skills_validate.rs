//! `skillhive skills validate --strict` agrees with the AgentSkills reference validator
//! (`skills-ref`, PyPI, run as its `agentskills validate` command), rule for rule: each
//! case breaks at most one rule, and both must find the same one (or none). The default,
//! lenient mode is checked where it must differ: OpenClaw-style skills pass it.

use std::path::Path;
use std::process::Command;

use e2e::{repo_root, skillhive_binary};

/// Which of our rules a message of the reference validator reports.
const REFERENCE_MESSAGES: &[(&str, &str)] = &[
    ("must start with YAML frontmatter", "frontmatter"),
    ("not properly closed", "frontmatter"),
    ("flow mapping", "yaml-flow-style"),
    ("flow sequence", "yaml-flow-style"),
    ("Invalid YAML", "yaml"),
    ("Unexpected fields", "fields-unexpected"),
    ("Missing required field in frontmatter: name", "name-required"),
    ("Missing required field in frontmatter: description", "description-required"),
    ("must be lowercase", "name-case"),
    ("exceeds 64 character limit", "name-length"),
    ("Field 'name' must be a non-empty string", "name-length"),
    ("start or end with a hyphen", "name-hyphens"),
    ("consecutive hyphens", "name-hyphens"),
    ("invalid characters", "name-charset"),
    ("must match skill name", "name-folder"),
    ("Description exceeds", "description-length"),
    ("Field 'description' must be a non-empty string", "description-length"),
    ("Compatibility exceeds", "compatibility-length"),
    ("allowed-tools", "allowed-tools-type"),
];

fn reference_rules(dir: &Path) -> Vec<&'static str> {
    let validator = std::env::var("SKILLHIVE_TEST_AGENTSKILLS")
        .unwrap_or_else(|_| repo_root().join(".venv/bin/agentskills").to_string_lossy().into_owned());
    let output = Command::new(&validator)
        .arg("validate")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {validator} ({e}); scripts/test installs skills-ref into .venv"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        return Vec::new();
    }
    // The reference lists one problem per `  - ` line; a YAML error spans several lines,
    // so the first matching phrase of each item names its rule.
    let mut rules: Vec<&str> = text
        .split("\n  - ")
        .skip(1)
        .map(|item| {
            REFERENCE_MESSAGES
                .iter()
                .find(|(phrase, _)| item.contains(phrase))
                .map(|(_, rule)| *rule)
                .unwrap_or_else(|| panic!("an unmapped message of the reference validator: {item}"))
        })
        .collect();
    rules.sort();
    rules.dedup();
    rules
}

fn our_rules(dir: &Path, strict: bool) -> Vec<String> {
    let mut command = Command::new(skillhive_binary());
    command.args(["skills", "validate"]).arg(dir);
    if strict {
        command.arg("--strict");
    }
    let output = command.output().expect("run skillhive skills validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut rules: Vec<String> = stdout
        .lines()
        .filter_map(|line| line.split_once("] ").and_then(|(head, _)| head.rsplit_once('[')).map(|(_, rule)| rule.to_string()))
        .collect();
    rules.sort();
    rules.dedup();
    assert_eq!(output.status.success(), rules.is_empty(), "exit status and problems disagree: {stdout}");
    rules
}

#[test]
fn strict_validation_agrees_with_the_reference_validator_rule_for_rule() {
    let long_name = "a".repeat(65);
    let long_description = format!("name: csv-tools\ndescription: {}", "d".repeat(1025));
    let long_compatibility = format!("name: csv-tools\ndescription: d\ncompatibility: {}", "c".repeat(501));
    let big_body = format!("---\nname: csv-tools\ndescription: Count rows.\n---\n{}", "x".repeat(70 * 1024));
    let frontmatter = |yaml: &str| format!("---\n{yaml}\n---\n# Body\n\nRead the header first.\n");
    // (folder, SKILL.md, the rule it breaks or "" when valid)
    let cases: Vec<(&str, String, &str)> = vec![
        ("csv-tools", frontmatter("name: csv-tools\ndescription: Count rows of a CSV file."), ""),
        (
            "csv-tools",
            frontmatter("name: csv-tools\ndescription: d\nlicense: MIT\ncompatibility: Needs python3.\nallowed-tools: Read Bash"),
            "",
        ),
        ("csv-tools", frontmatter("name: csv-tools\ndescription: d\nmetadata:\n  author: me\n  version: 1.0"), ""),
        ("csv-tools", frontmatter("name: csv-tools\ndescription: d\nallowed-tools:\n  - Read\n  - Bash"), ""),
        ("csv-tools", frontmatter("name: csv-tools\ndescription: 42"), ""),
        ("csv-tools", frontmatter("name: csv-tools\ndescription: d\ncompatibility: \"\""), ""),
        ("café-tools", frontmatter("name: café-tools\ndescription: Unicode lowercase letters are letters."), ""),
        ("csv-tools", "---\rname: csv-tools\rdescription: Old Mac line ends.\r---\rbody\r".to_string(), ""),
        ("csv-tools", "---\r\nname: csv-tools\r\ndescription: Windows line ends.\r\n---\r\nbody\r\n".to_string(), ""),
        ("csv-tools", big_body, ""),
        ("csv-tools", "# No frontmatter\n".to_string(), "frontmatter"),
        ("csv-tools", frontmatter("name: csv-tools\ndescription: d\nmetadata: {\"openclaw\": {\"emoji\": \"x\"}}"), "yaml-flow-style"),
        ("csv-tools", frontmatter("name: csv-tools\ndescription: d\nallowed-tools: [Read, Bash]"), "yaml-flow-style"),
        ("csv-tools", frontmatter("name: csv-tools\ndescription: d\nuser-invocable: true"), "fields-unexpected"),
        ("csv-tools", frontmatter("name: csv-tools\nname: again\ndescription: d"), "yaml"),
        ("csv-tools", frontmatter("description: d"), "name-required"),
        ("csv-tools", frontmatter("name: csv-tools"), "description-required"),
        ("Csv-tools", frontmatter("name: Csv-tools\ndescription: d"), "name-case"),
        (long_name.as_str(), frontmatter(&format!("name: {long_name}\ndescription: d")), "name-length"),
        ("csv--tools", frontmatter("name: csv--tools\ndescription: d"), "name-hyphens"),
        ("-csv", frontmatter("name: -csv\ndescription: d"), "name-hyphens"),
        ("csv_tools", frontmatter("name: csv_tools\ndescription: d"), "name-charset"),
        ("csv-tools", frontmatter("name: other-tools\ndescription: d"), "name-folder"),
        ("csv-tools", frontmatter(&long_description), "description-length"),
        ("csv-tools", frontmatter("name: csv-tools\ndescription: \"\""), "description-length"),
        ("csv-tools", frontmatter(&long_compatibility), "compatibility-length"),
    ];
    let root = tempfile::tempdir().unwrap();
    let mut disagreements = Vec::new();
    for (index, (folder, skill_md, expected)) in cases.iter().enumerate() {
        let dir = root.path().join(index.to_string()).join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("SKILL.md"), skill_md).unwrap();
        let reference = reference_rules(&dir);
        let ours = our_rules(&dir, true);
        let expected: Vec<&str> = if expected.is_empty() { vec![] } else { vec![*expected] };
        if reference != expected || ours != expected {
            disagreements.push(format!("case {index} ({folder}): expected {expected:?}, reference {reference:?}, ours {ours:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[test]
fn the_default_mode_accepts_openclaw_skills_that_strict_mode_refuses() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("csv-tools");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("SKILL.md"),
        "---\nname: csv-tools\ndescription: Count rows.\nmetadata: {\"openclaw\": {\"requires\": {\"bins\": [\"wc\"]}}}\nuser-invocable: true\n---\nRun wc -l.\n",
    )
    .unwrap();
    assert!(our_rules(&dir, false).is_empty(), "OpenClaw style passes by default");
    assert_eq!(our_rules(&dir, true), ["fields-unexpected", "yaml-flow-style"]);
    assert!(!reference_rules(&dir).is_empty(), "and the reference refuses it too");
}
