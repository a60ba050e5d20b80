//! Tasks with verifiable rewards: a conversation to answer, the tools and files of an agent
//! task, and a check of the outcome.

use std::collections::BTreeMap;

use agent::engine::{ChatMessage, ToolCall};
use agent::workspace::Workspace;
use serde::{Deserialize, Serialize};

/// How an answer is checked; each gives reward 1 for a pass and less (0 unless stated)
/// otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verifier {
    /// The first integer in the answer lies in `[min, max]`. An answer whose first integer
    /// lies outside earns `other_integer` (a format reward: with it, a model that rarely
    /// hits the range still gets a signal from the answers that are at least numbers).
    IntegerInRange {
        min: i64,
        max: i64,
        #[serde(default)]
        other_integer: f64,
    },
    /// The answer, trimmed and without a final period, is exactly this (case-insensitive).
    ExactAnswer { answer: String },
    /// The answer contains this text (case-insensitive).
    Contains { text: String },
    /// The answer holds the number `value` and at most three numbers in all (an answer
    /// listing many numbers would pass by luck).
    Number { value: f64 },
    /// The episode called this tool at least once, with arguments its schema admits (the
    /// format stage of a curriculum: the tool protocol before any task).
    CalledTool { name: String },
    /// After the episode, the workspace file at `path` contains `text`.
    FileContains { path: String, text: String },
    /// Every one of these passes (reward 1), else the smallest of their rewards.
    All { checks: Vec<Verifier> },
}

/// What an episode left behind for its verifier: the final answer, the tool calls the
/// policy made, and the workspace it acted on.
#[derive(Clone, Copy, Default)]
pub struct Outcome<'a> {
    pub answer: Option<&'a str>,
    pub calls: &'a [ToolCall],
    pub workspace: Option<&'a Workspace>,
}

impl Verifier {
    /// The reward of a bare answer (no tool calls, no workspace).
    pub fn reward(&self, answer: &str) -> f64 {
        self.score(&Outcome { answer: Some(answer), ..Outcome::default() })
    }

    /// The reward of an episode's outcome. An episode that ended without an answer fails
    /// every check of the answer.
    pub fn score(&self, outcome: &Outcome) -> f64 {
        let answer = outcome.answer.unwrap_or("");
        let pass = match self {
            Verifier::IntegerInRange { min, max, other_integer } => match first_integer(answer) {
                Some(n) if (*min..=*max).contains(&n) => true,
                Some(_) => return *other_integer,
                None => false,
            },
            Verifier::ExactAnswer { answer: expected } => answer.trim().trim_end_matches('.').trim().eq_ignore_ascii_case(expected.trim()),
            Verifier::Contains { text } => answer.to_lowercase().contains(&text.to_lowercase()),
            Verifier::Number { value } => {
                let numbers = numbers(answer);
                numbers.len() <= 3 && numbers.iter().any(|n| (n - value).abs() <= 1e-6)
            }
            Verifier::CalledTool { name } => outcome.calls.iter().any(|call| &call.name == name),
            Verifier::FileContains { path, text } => {
                outcome.workspace.and_then(|workspace| workspace.read(path).ok()).is_some_and(|content| content.contains(text.as_str()))
            }
            Verifier::All { checks } => return checks.iter().map(|check| check.score(outcome)).fold(1.0, f64::min),
        };
        if outcome.answer.is_none() && !matches!(self, Verifier::CalledTool { .. } | Verifier::FileContains { .. }) {
            return 0.0;
        }
        if pass {
            1.0
        } else {
            0.0
        }
    }
}

/// The first (optionally signed) integer written in `text`.
pub fn first_integer(text: &str) -> Option<i64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let digits: String = text[start..].chars().take_while(|c| c.is_ascii_digit()).collect();
    let negative = text[..start].ends_with('-');
    let value: i64 = digits.parse().ok()?;
    Some(if negative { -value } else { value })
}

/// The numbers written in `text` (`-3`, `12`, `4.5`), in order.
pub fn numbers(text: &str) -> Vec<f64> {
    let mut found = Vec::new();
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        let continues =
            c.is_ascii_digit() || (c == '.' && !current.is_empty() && !current.contains('.')) || (c == '-' && current.is_empty());
        if continues {
            current.push(c);
        } else {
            if let Ok(n) = current.trim_end_matches('.').parse::<f64>() {
                found.push(n);
            }
            current.clear();
            if c == '-' {
                current.push(c);
            }
        }
    }
    found
}

/// A prompt and the check of its answers. A task that names tools is an agent task: the
/// policy acts in a fresh workspace holding `files` until it answers (see [`crate::episode`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub messages: Vec<ChatMessage>,
    pub verifier: Verifier,
    /// The agent tools offered (of read, write, edit, ls and exec); none: one plain reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The workspace's files when the episode starts, by relative path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Tool calls that solved the task before (in other users' sessions): ActGuide-RL's
    /// guidance, shown only when the policy cannot solve it alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<crate::methods::actguide::Action>,
}

impl Task {
    /// The toy task of the RL demo. Measured on the default model (48 samples, at most 8
    /// tokens): about half of its answers contain a number, and only 2-4 % a number from
    /// 2 to 9, so the format reward of 0.2 is what first gives the groups variance.
    pub fn pick_a_number() -> Self {
        Task {
            id: "pick-a-number".into(),
            messages: vec![ChatMessage::user("Pick a number from 1 to 10. Reply with the number only.")],
            verifier: Verifier::IntegerInRange { min: 2, max: 9, other_integer: 0.2 },
            tools: Vec::new(),
            files: BTreeMap::new(),
            actions: Vec::new(),
        }
    }

    /// Whether the policy acts with tools (several turns) or replies once.
    pub fn is_agentic(&self) -> bool {
        !self.tools.is_empty()
    }

    /// The task with `hint` appended to its last user message (empty: unchanged).
    pub fn with_hint(&self, hint: &str) -> Task {
        let mut task = self.clone();
        if hint.is_empty() {
            return task;
        }
        match task.messages.iter_mut().rev().find(|m| m.role() == agent::engine::Role::User) {
            Some(message) => message.content = format!("{}\n\n{hint}", message.content),
            None => task.messages.push(ChatMessage::user(hint)),
        }
        task
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_check_answers_as_written() {
        let range = Verifier::IntegerInRange { min: 2, max: 9, other_integer: 0.2 };
        assert_eq!(range.reward("7"), 1.0);
        assert_eq!(range.reward("I pick 9!"), 1.0);
        assert_eq!(range.reward("10"), 0.2);
        assert_eq!(range.reward("1, then 5"), 0.2);
        assert_eq!(range.reward("-3"), 0.2);
        assert_eq!(range.reward("seven"), 0.0);
        let exact = Verifier::ExactAnswer { answer: "Paris".into() };
        assert_eq!(exact.reward(" paris. "), 1.0);
        assert_eq!(exact.reward("Paris, France"), 0.0);
        assert_eq!(Verifier::Contains { text: "ok".into() }.reward("It is OK"), 1.0);
        let number = Verifier::Number { value: 13.0 };
        assert_eq!(number.reward("13 rows"), 1.0);
        assert_eq!(number.reward("It has 13."), 1.0);
        assert_eq!(number.reward("12 or 13 or 14 or 15"), 0.0, "four numbers pass by luck");
        assert_eq!(number.reward("130"), 0.0);
        assert_eq!(numbers("-3, 4.5 and 7."), vec![-3.0, 4.5, 7.0]);
    }

    #[test]
    fn outcome_checks_see_calls_and_files_and_need_an_answer_for_answer_checks() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(dir.path()).unwrap();
        workspace.write("out.txt", "total: 42\n").unwrap();
        let call = ToolCall { id: "c".into(), name: "exec".into(), arguments: "{}".into() };
        let calls = [call];
        let ended = Outcome { answer: None, calls: &calls, workspace: Some(&workspace) };
        assert_eq!(Verifier::CalledTool { name: "exec".into() }.score(&ended), 1.0);
        assert_eq!(Verifier::CalledTool { name: "read".into() }.score(&ended), 0.0);
        assert_eq!(Verifier::FileContains { path: "out.txt".into(), text: "42".into() }.score(&ended), 1.0);
        assert_eq!(Verifier::FileContains { path: "missing.txt".into(), text: "42".into() }.score(&ended), 0.0);
        assert_eq!(Verifier::Contains { text: "".into() }.score(&ended), 0.0, "no answer fails an answer check");
        let both =
            Verifier::All { checks: vec![Verifier::CalledTool { name: "exec".into() }, Verifier::ExactAnswer { answer: "42".into() }] };
        assert_eq!(both.score(&Outcome { answer: Some("42"), ..ended }), 1.0);
        assert_eq!(both.score(&Outcome { answer: Some("41"), ..ended }), 0.0);
    }
}
