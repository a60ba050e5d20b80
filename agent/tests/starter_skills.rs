//! The starter skills in `skills/` are valid per the AgentSkills specification.

use agent::skills::format::parse_skill_md;

#[test]
fn every_starter_skill_is_valid_and_named_after_its_folder() {
    // The checkout being tested (cargo sets this when it runs a test), not the one the
    // binary may have been compiled in.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let root = std::path::Path::new(&manifest).join("../skills");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let folder = entry.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        let folder_name = folder.file_name().unwrap().to_str().unwrap().to_string();
        let file = folder.join("SKILL.md");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("{} has no SKILL.md", folder.display()));
        let skill = parse_skill_md(&file.display().to_string(), Some(&folder_name), &text).unwrap_or_else(|errors| panic!("{errors:?}"));
        assert!(!skill.body.trim().is_empty(), "{folder_name} has no instructions");
        assert!(skill.description.contains("Use when"), "{folder_name} should say when to use it");
        names.push(skill.name);
    }
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
}
