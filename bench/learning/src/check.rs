//! Deterministic checks of a task's result: the final answer and the workspace files.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::tasks::is_workspace_path;

/// The most number tokens an answer may hold for `answer_number`: without a limit, an
/// answer that lists many numbers would pass by luck.
pub const MAX_NUMBERS: usize = 3;

/// How close a number in the answer must be to the expected value.
pub const TOLERANCE: f64 = 1e-6;

/// What a task's result must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// The answer holds `value` as a standalone number, and at most [`MAX_NUMBERS`] numbers.
    AnswerNumber { value: f64 },
    /// The answer holds every string of `all` and none of `none`, ignoring case.
    AnswerContains {
        #[serde(default)]
        all: Vec<String>,
        #[serde(default)]
        none: Vec<String>,
    },
    /// The file equals `content`, ignoring trailing whitespace on lines and trailing
    /// newlines, which editors and models add or drop without meaning anything by it.
    FileEquals { path: String, content: String },
    /// The file holds every string of `all` and none of `none`, with case respected,
    /// since in configuration files case is part of the meaning.
    FileContains {
        path: String,
        #[serde(default)]
        all: Vec<String>,
        #[serde(default)]
        none: Vec<String>,
    },
    /// Nothing exists at the path.
    FileAbsent { path: String },
    /// A regular file exists at the path.
    FileExists { path: String },
    /// Every sub-check passes.
    All { checks: Vec<Check> },
}

impl Check {
    /// The workspace paths this check reads, its sub-checks' included.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Check::AnswerNumber { .. } | Check::AnswerContains { .. } => Vec::new(),
            Check::FileEquals { path, .. } | Check::FileContains { path, .. } | Check::FileAbsent { path } | Check::FileExists { path } => {
                vec![path.as_str()]
            }
            Check::All { checks } => checks.iter().flat_map(Check::paths).collect(),
        }
    }
}

/// The outcome of a check, with one sentence that says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    pub detail: String,
}

impl Verdict {
    fn pass(detail: impl Into<String>) -> Self {
        Self { passed: true, detail: detail.into() }
    }
    fn fail(detail: impl Into<String>) -> Self {
        Self { passed: false, detail: detail.into() }
    }
}

/// Judges a result: `answer` is the agent's final answer and `workspace` the directory
/// its files were left in.
pub fn check(task_check: &Check, workspace: &Path, answer: &str) -> Verdict {
    match task_check {
        Check::AnswerNumber { value } => answer_number(*value, answer),
        Check::AnswerContains { all, none } => {
            let lower = answer.to_lowercase();
            if let Some(missing) = all.iter().find(|s| !lower.contains(&s.to_lowercase())) {
                return Verdict::fail(format!("the answer lacks {missing:?}"));
            }
            if let Some(refused) = none.iter().find(|s| lower.contains(&s.to_lowercase())) {
                return Verdict::fail(format!("the answer contains {refused:?}, which it must not"));
            }
            Verdict::pass("the answer holds every required string and no refused one")
        }
        Check::FileEquals { path, content } => match read(workspace, path) {
            Err(verdict) => verdict,
            Ok(actual) => {
                let (actual, expected) = (normalize(&actual), normalize(content));
                match first_difference(&actual, &expected) {
                    None => Verdict::pass(format!("{path} has the expected content")),
                    Some(line) => Verdict::fail(format!("{path} differs from the expected content at line {line}")),
                }
            }
        },
        Check::FileContains { path, all, none } => match read(workspace, path) {
            Err(verdict) => verdict,
            Ok(text) => {
                if let Some(missing) = all.iter().find(|s| !text.contains(s.as_str())) {
                    return Verdict::fail(format!("{path} lacks {missing:?}"));
                }
                if let Some(refused) = none.iter().find(|s| text.contains(s.as_str())) {
                    return Verdict::fail(format!("{path} still contains {refused:?}"));
                }
                Verdict::pass(format!("{path} holds every required string and no refused one"))
            }
        },
        Check::FileAbsent { path } => match resolve(workspace, path) {
            Err(verdict) => verdict,
            Ok(real) if fs::symlink_metadata(&real).is_ok() => Verdict::fail(format!("{path} still exists")),
            Ok(_) => Verdict::pass(format!("{path} does not exist")),
        },
        Check::FileExists { path } => match resolve(workspace, path) {
            Err(verdict) => verdict,
            Ok(real) if real.is_file() => Verdict::pass(format!("{path} exists")),
            Ok(real) if real.exists() => Verdict::fail(format!("{path} exists but is not a regular file")),
            Ok(_) => Verdict::fail(format!("{path} does not exist")),
        },
        Check::All { checks } => {
            for sub in checks {
                let verdict = check(sub, workspace, answer);
                if !verdict.passed {
                    return verdict;
                }
            }
            Verdict::pass(format!("all {} checks pass", checks.len()))
        }
    }
}

fn answer_number(value: f64, answer: &str) -> Verdict {
    let numbers = number_tokens(answer);
    if !numbers.iter().any(|n| (n - value).abs() <= TOLERANCE) {
        return Verdict::fail(format!("the answer has no number {value}"));
    }
    if numbers.len() > MAX_NUMBERS {
        return Verdict::fail(format!("the answer has {} numbers, more than the {MAX_NUMBERS} allowed", numbers.len()));
    }
    Verdict::pass(format!("the answer has the number {value}"))
}

/// The standalone numbers of a text, in order.
///
/// The text is cut into words at every character that cannot belong to a number or a
/// name (anything but letters, digits, `_`, `.`, `-` and `+`). A word, with any
/// sentence-ending dots removed, is a number when it is an optional sign, digits and an
/// optional fraction: so "7", "7.0", "-3.5" and "(7)." are numbers, while "17", "7th",
/// "v7", "orders2.csv" and the date "2024-05-01" are not the number 7. A comma always
/// separates, so "1,234" reads as two numbers: between numbers it more often separates
/// a list than groups digits.
pub fn number_tokens(text: &str) -> Vec<f64> {
    text.split(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '+')))
        .filter_map(|word| parse_number(word.trim_end_matches('.')))
        .collect()
}

fn parse_number(word: &str) -> Option<f64> {
    let unsigned = word.strip_prefix(['-', '+']).unwrap_or(word);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    word.parse().ok()
}

/// Trailing whitespace of each line and trailing newlines removed; line endings unified.
fn normalize(text: &str) -> String {
    let joined: Vec<&str> = text.lines().map(str::trim_end).collect();
    joined.join("\n").trim_end_matches('\n').to_string()
}

/// The 1-based number of the first line where two texts differ, or `None` when equal.
fn first_difference(actual: &str, expected: &str) -> Option<usize> {
    if actual == expected {
        return None;
    }
    let (mut a, mut e) = (actual.lines(), expected.lines());
    let mut line = 1;
    while let (Some(x), Some(y)) = (a.next(), e.next()) {
        if x != y {
            return Some(line);
        }
        line += 1;
    }
    Some(line)
}

fn resolve(workspace: &Path, path: &str) -> Result<std::path::PathBuf, Verdict> {
    if is_workspace_path(path) {
        Ok(workspace.join(path))
    } else {
        Err(Verdict::fail(format!("the check's path {path:?} is not a relative path inside the workspace")))
    }
}

fn read(workspace: &Path, path: &str) -> Result<String, Verdict> {
    let real = resolve(workspace, path)?;
    fs::read_to_string(&real).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Verdict::fail(format!("{path} does not exist")),
        _ => Verdict::fail(format!("{path} cannot be read as text: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(value: f64, answer: &str) -> Verdict {
        check(&Check::AnswerNumber { value }, Path::new("/nonexistent"), answer)
    }

    #[test]
    fn a_standalone_number_passes_in_any_usual_form() {
        for answer in ["7", "7.0", "7.000", "There are 7 rows.", "(7)", "rows: 7", "7.", "**7**", "+7", "7\n"] {
            assert!(number(7.0, answer).passed, "{answer:?}");
        }
    }

    #[test]
    fn a_number_that_merely_contains_the_digits_fails() {
        for answer in ["17", "70", "7.5", "77", "7th", "v7", "orders7.csv", "2024-07-01", "0.7", ""] {
            let verdict = number(7.0, answer);
            assert!(!verdict.passed, "{answer:?}");
            assert_eq!(verdict.detail, "the answer has no number 7");
        }
    }

    #[test]
    fn decimals_compare_with_a_tolerance() {
        assert!(number(3.25, "3.25").passed);
        assert!(number(3.25, "The total is 3.250.").passed);
        assert!(number(0.1 + 0.2, "0.3").passed);
        assert!(!number(3.25, "3.2").passed);
        assert!(!number(3.25, "3.26").passed);
        assert!(!number(3.0, "3.000002").passed);
    }

    #[test]
    fn negative_numbers_keep_their_sign() {
        assert!(number(-4.0, "-4").passed);
        assert!(number(-4.0, "The change was -4.").passed);
        assert!(number(-2.5, "-2.5").passed);
        assert!(!number(-4.0, "4").passed);
        assert!(!number(4.0, "-4").passed);
        // A dash that stands alone, as in a list, is no sign.
        assert!(number(4.0, "- 4").passed);
    }

    #[test]
    fn too_many_numbers_fail_even_when_one_is_right() {
        assert!(number(7.0, "rows 5, 6 and 7").passed);
        let verdict = number(7.0, "maybe 5, 6, 7 or 8");
        assert!(!verdict.passed);
        assert_eq!(verdict.detail, "the answer has 4 numbers, more than the 3 allowed");
        assert!(!number(3.0, "1 2 3 4 5 6 7 8 9").passed);
    }

    #[test]
    fn number_tokens_skip_names_and_dates() {
        assert_eq!(number_tokens("file2.csv has 12 rows on 2024-05-01, and 1,5 more."), vec![12.0, 1.0, 5.0]);
        assert_eq!(number_tokens("version 1.2.3 and 4."), vec![4.0]);
    }

    #[test]
    fn answer_contains_ignores_case() {
        let c = Check::AnswerContains { all: vec!["Lisbon".into()], none: vec!["oslo".into()] };
        assert!(check(&c, Path::new("."), "The region is LISBON.").passed);
        assert_eq!(check(&c, Path::new("."), "porto").detail, "the answer lacks \"Lisbon\"");
        assert!(!check(&c, Path::new("."), "lisbon or Oslo").passed);
    }

    #[test]
    fn file_checks_read_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        fs::write(ws.join("report.md"), "- a  \n- b\n\n\n").unwrap();
        let equals = |content: &str| check(&Check::FileEquals { path: "report.md".into(), content: content.into() }, ws, "");
        assert!(equals("- a\n- b").passed);
        assert!(equals("- a\n- b\n").passed);
        assert_eq!(equals("- a\n- c\n").detail, "report.md differs from the expected content at line 2");
        assert_eq!(equals("- a\n- b\n- c\n").detail, "report.md differs from the expected content at line 3");
        let missing = check(&Check::FileEquals { path: "other.md".into(), content: String::new() }, ws, "");
        assert_eq!(missing.detail, "other.md does not exist");

        let contains = |all: &[&str], none: &[&str]| {
            let c = Check::FileContains {
                path: "report.md".into(),
                all: all.iter().map(|s| s.to_string()).collect(),
                none: none.iter().map(|s| s.to_string()).collect(),
            };
            check(&c, ws, "")
        };
        assert!(contains(&["- b\n"], &["- c"]).passed);
        assert!(!contains(&["- A"], &[]).passed);
        assert_eq!(contains(&[], &["- b"]).detail, "report.md still contains \"- b\"");

        assert!(check(&Check::FileExists { path: "report.md".into() }, ws, "").passed);
        assert!(!check(&Check::FileAbsent { path: "report.md".into() }, ws, "").passed);
        assert!(check(&Check::FileAbsent { path: "gone.md".into() }, ws, "").passed);
        assert!(!check(&Check::FileExists { path: "gone.md".into() }, ws, "").passed);
        assert!(!check(&Check::FileExists { path: "../report.md".into() }, ws, "").passed);
    }

    #[test]
    fn all_reports_the_first_failure() {
        let c = Check::All { checks: vec![Check::AnswerNumber { value: 2.0 }, Check::FileExists { path: "x.txt".into() }] };
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(&c, dir.path(), "2").detail, "x.txt does not exist");
        assert_eq!(check(&c, dir.path(), "3").detail, "the answer has no number 2");
        fs::write(dir.path().join("x.txt"), "").unwrap();
        assert_eq!(check(&c, dir.path(), "2"), Verdict::pass("all 2 checks pass"));
    }

    #[test]
    fn checks_parse_from_their_json_form() {
        let c: Check = serde_json::from_str(
            r#"{"kind": "all", "checks": [{"kind": "answer_number", "value": 7},
            {"kind": "file_contains", "path": "a", "all": ["x"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Check::All {
                checks: vec![
                    Check::AnswerNumber { value: 7.0 },
                    Check::FileContains { path: "a".into(), all: vec!["x".into()], none: vec![] }
                ]
            }
        );
        assert!(serde_json::from_str::<Check>(r#"{"kind": "answer_number", "value": 7, "extra": 1}"#).is_err());
        assert!(serde_json::from_str::<Check>(r#"{"kind": "guess"}"#).is_err());
    }
}
