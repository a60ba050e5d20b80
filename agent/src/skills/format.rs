//! Parsing and validating `SKILL.md` per the AgentSkills specification.
//!
//! Every problem is reported, not only the first, and each names the file, the line and
//! the rule it breaks, so that an author fixes a skill in one pass.

use std::fmt;

use serde_json::{Map, Value};

/// Longest name, description and compatibility text the specification allows.
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
pub const MAX_COMPATIBILITY_CHARS: usize = 500;
/// Largest `SKILL.md` accepted; a skill is read into a model's context, which is small.
pub const MAX_SKILL_MD_BYTES: usize = 64 * 1024;

/// The keys the specification defines; any other key is kept in [`SkillManifest::extra`].
const KNOWN_KEYS: &[&str] = &["name", "description", "license", "compatibility", "metadata", "allowed-tools"];

/// A valid `SKILL.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct SkillManifest {
    pub name: String,
    pub description: String,
    pub license: Option<String>,
    pub compatibility: Option<String>,
    /// Free-form metadata (`metadata.openclaw` drives gating), kept as written.
    pub metadata: Map<String, Value>,
    /// Tools the skill expects, from the space-delimited `allowed-tools`.
    pub allowed_tools: Vec<String>,
    /// Frontmatter keys the specification does not define, kept so nothing is lost.
    pub extra: Map<String, Value>,
    /// The markdown after the frontmatter.
    pub body: String,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub file: String,
    /// 1-based line in the file.
    pub line: usize,
    /// Short identifier of the rule, stable for programs: `name-charset`, ...
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: [{}] {}", self.file, self.line, self.rule, self.message)
    }
}

/// Which rules a `SKILL.md` is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// What this server accepts: OpenClaw-style skills pass (flow-style `metadata`, extra
    /// frontmatter keys), names are ASCII (they become slugs and folder names), and the
    /// file is size-capped (it is read into a small model's context).
    Lenient,
    /// The AgentSkills reference validator's rules (`skills-ref validate`): only the
    /// specification's keys, block-style YAML whose scalars are all text, Unicode
    /// lowercase names, `allowed-tools` as a string or a list of strings, no size cap.
    Strict,
}

/// Parses `text`, the content of `file` (a path for messages) inside a folder named
/// `folder` (the skill's name must equal it; `None` skips that check).
pub fn parse_skill_md(file: &str, folder: Option<&str>, text: &str) -> Result<SkillManifest, Vec<FormatError>> {
    parse_skill_md_with(file, folder, text, Strictness::Lenient)
}

/// Every problem of a `SKILL.md` under the given rules (empty when it is valid).
pub fn check_skill_md(file: &str, folder: Option<&str>, text: &str, strictness: Strictness) -> Vec<FormatError> {
    parse_skill_md_with(file, folder, text, strictness).err().unwrap_or_default()
}

/// The frontmatter keys whose value starts a flow-style collection (`key: {..}` or
/// `key: [..]`, at any depth), with their 1-based line in the frontmatter. The reference
/// validator reads YAML with strictyaml, which refuses flow style.
fn flow_style_lines(yaml: &str) -> Vec<usize> {
    yaml.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start().trim_start_matches("- ");
            let value = match line.split_once(':') {
                Some((key, value)) if !key.starts_with('#') && !key.starts_with('"') && !key.starts_with('\'') => value,
                _ if line.starts_with('[') || line.starts_with('{') => line,
                _ => return false,
            };
            value.trim_start().starts_with(['{', '['])
        })
        .map(|(index, _)| index + 1)
        .collect()
}

/// A YAML scalar as the text strictyaml would read: every scalar is a string there.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_skill_md_with(file: &str, folder: Option<&str>, text: &str, strictness: Strictness) -> Result<SkillManifest, Vec<FormatError>> {
    let strict = strictness == Strictness::Strict;
    let error = |line: usize, rule: &'static str, message: String| FormatError { file: file.to_string(), line, rule, message };
    // An oversized file is reported with whatever else is wrong with it, so that an author
    // fixes everything in one pass.
    let mut errors = Vec::new();
    if !strict && text.len() > MAX_SKILL_MD_BYTES {
        errors.push(error(1, "size", format!("SKILL.md is {} bytes; the limit is {MAX_SKILL_MD_BYTES}", text.len())));
    }
    // Line endings as Python reads text (universal newlines): `\r\n` and a lone `\r` both
    // end a line, so a file saved with old Mac line endings parses as the reference's does.
    let normalized;
    let text = if text.contains('\r') {
        normalized = text.replace("\r\n", "\n").replace('\r', "\n");
        normalized.as_str()
    } else {
        text
    };
    let fail = |mut errors: Vec<FormatError>, last: FormatError| {
        errors.push(last);
        Err(errors)
    };
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some("---") {
        return fail(errors, error(1, "frontmatter", "SKILL.md must start with a `---` line opening the YAML frontmatter".into()));
    }
    let mut yaml = String::new();
    let mut closing_line = None;
    let mut consumed = text.split_inclusive('\n').next().map(str::len).unwrap_or(0);
    for (index, line) in lines.enumerate() {
        consumed += line.len();
        if line.trim_end() == "---" {
            closing_line = Some(index + 2);
            break;
        }
        yaml.push_str(line);
    }
    if closing_line.is_none() {
        return fail(errors, error(1, "frontmatter", "the frontmatter is never closed by a `---` line".into()));
    }
    let body = text[consumed..].trim_start_matches(['\r', '\n']).to_string();

    // Line of a top-level key, for messages: frontmatter line n is file line n + 1.
    let key_line = |key: &str| {
        yaml.lines().position(|l| l.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with(':'))).map(|i| i + 2).unwrap_or(1)
    };

    let value: Value = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml) {
        Ok(parsed) => match serde_json::to_value(parsed) {
            Ok(v) => v,
            Err(e) => return fail(errors, error(2, "yaml", format!("the frontmatter cannot be represented as data: {e}"))),
        },
        Err(e) => {
            let line = e.location().map(|l| l.line() + 1).unwrap_or(2);
            return fail(errors, error(line, "yaml", format!("the frontmatter is not valid YAML: {e}")));
        }
    };
    let Value::Object(mut fields) = value else {
        return fail(errors, error(2, "frontmatter", "the frontmatter must be a mapping of keys to values".into()));
    };

    if strict {
        for line in flow_style_lines(&yaml) {
            errors.push(error(line + 1, "yaml-flow-style", "flow-style YAML (`{...}` or `[...]`) is not allowed; use block style".into()));
        }
        let mut unexpected: Vec<&String> = fields.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())).collect();
        unexpected.sort();
        if !unexpected.is_empty() {
            let names: Vec<&str> = unexpected.iter().map(|k| k.as_str()).collect();
            errors.push(error(
                key_line(unexpected[0]),
                "fields-unexpected",
                format!("unexpected frontmatter keys: {}; only {} are allowed", names.join(", "), KNOWN_KEYS.join(", ")),
            ));
        }
    }
    let text_field = |fields: &Map<String, Value>, key: &str, errors: &mut Vec<FormatError>| -> Option<String> {
        match fields.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) if strict && scalar_text(other).is_some() => scalar_text(other),
            Some(_) => {
                errors.push(error(key_line(key), "type", format!("`{key}` must be a string")));
                None
            }
        }
    };

    let name = text_field(&fields, "name", &mut errors);
    match &name {
        None if !errors.iter().any(|e| e.message.contains("`name`")) => {
            errors.push(error(1, "name-required", "the frontmatter has no `name`".into()))
        }
        None => {}
        Some(name) if strict => {
            // The reference's name rules: NFKC-normalized, trimmed, Unicode letters and
            // digits in lower case, and hyphens.
            use unicode_normalization::UnicodeNormalization;
            let line = key_line("name");
            let name: String = name.trim().nfkc().collect();
            if name.is_empty() {
                errors.push(error(line, "name-length", "`name` must be a non-empty string".into()));
            } else {
                if name.chars().count() > MAX_NAME_CHARS {
                    errors.push(error(line, "name-length", format!("`name` must be at most {MAX_NAME_CHARS} characters")));
                }
                if name != name.to_lowercase() {
                    errors.push(error(line, "name-case", format!("`name` `{name}` must be lowercase")));
                }
                if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
                    errors.push(error(line, "name-hyphens", format!("`name` `{name}` must not start or end with `-` or contain `--`")));
                }
                if !name.chars().all(|c| c.is_alphanumeric() || c == '-') {
                    errors.push(error(line, "name-charset", format!("`name` `{name}` may only contain letters, digits and `-`")));
                }
            }
            if let Some(folder) = folder {
                let folder: String = folder.nfkc().collect();
                if folder != name {
                    errors.push(error(line, "name-folder", format!("`name` `{name}` must equal its folder's name `{folder}`")));
                }
            }
        }
        Some(name) => {
            let line = key_line("name");
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                errors.push(error(line, "name-length", format!("`name` must be 1 to {MAX_NAME_CHARS} characters")));
            }
            if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                errors.push(error(line, "name-charset", format!("`name` `{name}` may only contain a-z, 0-9 and `-`")));
            }
            if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
                errors.push(error(line, "name-hyphens", format!("`name` `{name}` must not start or end with `-` or contain `--`")));
            }
            if let Some(folder) = folder {
                if folder != name {
                    errors.push(error(line, "name-folder", format!("`name` `{name}` must equal its folder's name `{folder}`")));
                }
            }
        }
    }

    let description = text_field(&fields, "description", &mut errors);
    match &description {
        None if !errors.iter().any(|e| e.message.contains("`description`")) => {
            errors.push(error(1, "description-required", "the frontmatter has no `description`".into()))
        }
        Some(d) if d.trim().is_empty() || d.chars().count() > MAX_DESCRIPTION_CHARS => errors.push(error(
            key_line("description"),
            "description-length",
            format!("`description` must be 1 to {MAX_DESCRIPTION_CHARS} characters of text"),
        )),
        _ => {}
    }

    let license = text_field(&fields, "license", &mut errors);
    let compatibility = text_field(&fields, "compatibility", &mut errors);
    // The reference lets `compatibility` be empty; it only caps its length.
    if compatibility.as_ref().is_some_and(|c| (!strict && c.is_empty()) || c.chars().count() > MAX_COMPATIBILITY_CHARS) {
        errors.push(error(
            key_line("compatibility"),
            "compatibility-length",
            format!("`compatibility` must be 1 to {MAX_COMPATIBILITY_CHARS} characters"),
        ));
    }

    let metadata = match fields.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        // The reference does not check `metadata` beyond reading it.
        Some(_) if strict => Map::new(),
        Some(_) => {
            errors.push(error(key_line("metadata"), "metadata-type", "`metadata` must be a mapping".into()));
            Map::new()
        }
    };

    let allowed_tools = match fields.get("allowed-tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(items)) if strict && items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        Some(other) if strict && scalar_text(other).is_some() => {
            scalar_text(other).unwrap_or_default().split_whitespace().map(str::to_string).collect()
        }
        Some(_) if strict => {
            errors.push(error(
                key_line("allowed-tools"),
                "allowed-tools-type",
                "`allowed-tools` must be a string or a list of strings".into(),
            ));
            Vec::new()
        }
        Some(_) => {
            errors.push(error(key_line("allowed-tools"), "allowed-tools-type", "`allowed-tools` must be a space-delimited string".into()));
            Vec::new()
        }
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    fields.retain(|key, _| !KNOWN_KEYS.contains(&key.as_str()));
    Ok(SkillManifest {
        name: name.unwrap_or_default(),
        description: description.unwrap_or_default(),
        license,
        compatibility,
        metadata,
        allowed_tools,
        extra: fields,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SkillManifest, Vec<FormatError>> {
        parse_skill_md("skills/csv-inspect/SKILL.md", Some("csv-inspect"), text)
    }

    fn rules(text: &str) -> Vec<(&'static str, usize)> {
        parse(text).unwrap_err().into_iter().map(|e| (e.rule, e.line)).collect()
    }

    #[test]
    fn a_valid_skill_keeps_every_field_and_unknown_keys() {
        let skill = parse(
            "---\nname: csv-inspect\ndescription: Inspect a CSV file. Use when asked about columns.\nlicense: MIT\n\
             compatibility: Needs python3.\nmetadata:\n  openclaw:\n    requires:\n      bins: [python3]\n\
             allowed-tools: read exec\nx-origin: starter\n---\n\n# CSV\nRead the header first.\n",
        )
        .unwrap();
        assert_eq!(skill.name, "csv-inspect");
        assert_eq!(skill.license.as_deref(), Some("MIT"));
        assert_eq!(skill.compatibility.as_deref(), Some("Needs python3."));
        assert_eq!(skill.metadata["openclaw"]["requires"]["bins"][0], "python3");
        assert_eq!(skill.allowed_tools, vec!["read", "exec"]);
        assert_eq!(skill.extra["x-origin"], "starter");
        assert_eq!(skill.body, "# CSV\nRead the header first.\n");
    }

    #[test]
    fn each_name_rule_is_named_with_its_line() {
        assert_eq!(rules("---\ndescription: d\nname: CSV_inspect\n---\n"), vec![("name-charset", 3), ("name-folder", 3)]);
        assert_eq!(rules("---\nname: -csv--inspect\ndescription: d\n---\n")[0], ("name-hyphens", 2));
        assert_eq!(rules(&format!("---\nname: {}\ndescription: d\n---\n", "a".repeat(65)))[0], ("name-length", 2));
        assert_eq!(rules("---\ndescription: d\n---\n"), vec![("name-required", 1)]);
        assert_eq!(rules("---\nname: [a]\ndescription: d\n---\n"), vec![("type", 2)]);
        let error = parse("---\nname: other\ndescription: d\n---\n").unwrap_err().remove(0);
        assert_eq!(
            error.to_string(),
            "skills/csv-inspect/SKILL.md:2: [name-folder] `name` `other` must equal its folder's name `csv-inspect`"
        );
    }

    #[test]
    fn description_compatibility_metadata_and_tools_rules() {
        assert_eq!(rules("---\nname: csv-inspect\n---\n"), vec![("description-required", 1)]);
        assert_eq!(rules("---\nname: csv-inspect\ndescription: \"  \"\n---\n"), vec![("description-length", 3)]);
        let long = "d".repeat(1025);
        assert_eq!(rules(&format!("---\nname: csv-inspect\ndescription: {long}\n---\n")), vec![("description-length", 3)]);
        let long = "c".repeat(501);
        assert_eq!(
            rules(&format!("---\nname: csv-inspect\ndescription: d\ncompatibility: {long}\n---\n")),
            vec![("compatibility-length", 4)]
        );
        assert_eq!(rules("---\nname: csv-inspect\ndescription: d\nmetadata: [1]\n---\n"), vec![("metadata-type", 4)]);
        assert_eq!(rules("---\nname: csv-inspect\ndescription: d\nallowed-tools: [read]\n---\n"), vec![("allowed-tools-type", 4)]);
    }

    #[test]
    fn broken_frontmatter_is_reported_where_it_breaks() {
        assert_eq!(rules("# no frontmatter\n"), vec![("frontmatter", 1)]);
        assert_eq!(rules("---\nname: csv-inspect\n"), vec![("frontmatter", 1)]);
        assert_eq!(rules("---\n- a list\n---\n"), vec![("frontmatter", 2)]);
        let (rule, line) = rules("---\nname: csv-inspect\ndescription: [unclosed\n---\n")[0];
        assert_eq!(rule, "yaml");
        assert!(line >= 3, "line {line}");
        assert_eq!(rules(&format!("---\nname: csv-inspect\ndescription: d\n---\n{}", "x".repeat(MAX_SKILL_MD_BYTES))), vec![("size", 1)]);
    }

    fn strict_rules(text: &str) -> Vec<(&'static str, usize)> {
        check_skill_md("csv-inspect/SKILL.md", Some("csv-inspect"), text, Strictness::Strict)
            .into_iter()
            .map(|e| (e.rule, e.line))
            .collect()
    }

    #[test]
    fn an_oversized_file_still_reports_its_other_problems() {
        let long = "d".repeat(1025);
        let text = format!("---\nname: csv-inspect\ndescription: {long}\n---\n{}", "x".repeat(MAX_SKILL_MD_BYTES));
        assert_eq!(rules(&text), vec![("size", 1), ("description-length", 3)]);
        // The reference has no size cap; its description rule still holds.
        assert_eq!(strict_rules(&text), vec![("description-length", 3)]);
    }

    #[test]
    fn lone_carriage_returns_end_lines_as_in_the_reference() {
        let text = "---\rname: csv-inspect\rdescription: Inspect a CSV file.\r---\r# CSV\rRead the header.\r";
        let skill = parse(text).unwrap();
        assert_eq!(skill.description, "Inspect a CSV file.");
        assert_eq!(skill.body, "# CSV\nRead the header.\n");
        assert!(strict_rules(text).is_empty());
        assert!(parse("---\r\nname: csv-inspect\r\ndescription: d\r\n---\r\nbody\r\n").is_ok());
    }

    #[test]
    fn strict_mode_holds_skills_to_the_reference_validators_rules() {
        // OpenClaw style: flow-style metadata and an extra key pass by default, not strictly.
        let openclaw = "---\nname: csv-inspect\ndescription: d\nmetadata: {\"openclaw\": {\"requires\": {\"bins\": [\"python3\"]}}}\nuser-invocable: true\n---\n";
        assert!(parse(openclaw).is_ok());
        assert_eq!(strict_rules(openclaw), vec![("yaml-flow-style", 4), ("fields-unexpected", 5)]);
        let block = "---\nname: csv-inspect\ndescription: d\nmetadata:\n  author: me\n  version: 1.0\n---\n";
        assert!(strict_rules(block).is_empty());
        // strictyaml reads every scalar as text, so a numeric description is a description.
        assert!(strict_rules("---\nname: csv-inspect\ndescription: 42\n---\n").is_empty());
        assert_eq!(rules("---\nname: csv-inspect\ndescription: 42\n---\n"), vec![("type", 3)]);
        // allowed-tools may be a block list of strings.
        assert!(strict_rules("---\nname: csv-inspect\ndescription: d\nallowed-tools:\n  - Read\n  - Bash\n---\n").is_empty());
        // Names: Unicode lowercase letters pass, upper case does not, hyphens as before.
        let named = |name: &str| {
            check_skill_md("x/SKILL.md", Some(name), &format!("---\nname: {name}\ndescription: d\n---\n"), Strictness::Strict)
                .into_iter()
                .map(|e| e.rule)
                .collect::<Vec<_>>()
        };
        assert!(named("café-tools").is_empty());
        assert_eq!(named("Csv"), vec!["name-case"]);
        assert_eq!(named("csv--x"), vec!["name-hyphens"]);
        assert_eq!(named("csv_x"), vec!["name-charset"]);
        // An empty compatibility passes the reference; a long one does not.
        assert!(strict_rules("---\nname: csv-inspect\ndescription: d\ncompatibility: \"\"\n---\n").is_empty());
        assert_eq!(
            strict_rules(&format!("---\nname: csv-inspect\ndescription: d\ncompatibility: {}\n---\n", "c".repeat(501))),
            vec![("compatibility-length", 4)]
        );
        assert_eq!(strict_rules("---\nname: other\ndescription: d\n---\n"), vec![("name-folder", 2)]);
        assert_eq!(strict_rules("---\ndescription: d\n---\n"), vec![("name-required", 1)]);
    }
}
