//! Tasks with verifiable rewards: a conversation to answer and a check of the answer.

use agent::engine::ChatMessage;
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
}

impl Verifier {
    pub fn reward(&self, answer: &str) -> f64 {
        let pass = match self {
            Verifier::IntegerInRange { min, max, other_integer } => match first_integer(answer) {
                Some(n) if (*min..=*max).contains(&n) => true,
                Some(_) => return *other_integer,
                None => false,
            },
            Verifier::ExactAnswer { answer: expected } => answer.trim().trim_end_matches('.').trim().eq_ignore_ascii_case(expected.trim()),
            Verifier::Contains { text } => answer.to_lowercase().contains(&text.to_lowercase()),
        };
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

/// A prompt and the check of its answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub messages: Vec<ChatMessage>,
    pub verifier: Verifier,
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
        }
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
    }
}
