//! Redaction: secrets, e-mail addresses and the user's identity are replaced before any
//! trajectory text can reach the engine or become evidence that other users may see.
//!
//! Patterns are deliberately broad: a false positive costs a word of evidence, a false
//! negative leaks a credential into a shared skill.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

/// What kind of thing was redacted, and its pattern.
static PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    let p = |kind, pattern: &str| (kind, Regex::new(pattern).expect("redaction patterns compile"));
    vec![
        p("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)"),
        p("api_key", r"\b(sk|rk|pk)-(proj-|live-|test-)?[A-Za-z0-9_\-]{16,}"),
        p("api_key", r"\bsh-[0-9a-f]{64}\b"),
        p("api_key", r"\bAKIA[0-9A-Z]{16}\b"),
        p("api_key", r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
        p("api_key", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
        p("api_key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
        p("token", r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{16,}=*"),
        p(
            "password",
            r#"(?i)\b(password|passwd|pwd|passphrase|secret|api[_-]?key|access[_-]?token|auth[_-]?token|token)\b(\s*[:=]\s*|\s+is\s+)["']?[^\s"',;]{4,}"#,
        ),
        p("email", r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"),
    ]
});

/// The text with every match replaced by `[REDACTED:<kind>]`, and counts per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    pub counts: BTreeMap<String, usize>,
}

/// Redacts secrets, e-mail addresses, and the given identities (user name, user id).
pub fn redact(text: &str, identities: &[&str]) -> Redacted {
    Redactor::new(identities).redact(text)
}

/// A redactor for one user: the identity patterns are compiled once and reused for every
/// text of that user's session.
pub struct Redactor {
    identities: Vec<Regex>,
}

impl Redactor {
    pub fn new(identities: &[&str]) -> Self {
        let identities = identities
            .iter()
            .filter(|i| i.chars().count() >= 3)
            .map(|identity| Regex::new(&format!(r"(?i)\b{}\b", regex::escape(identity))).expect("escaped identity"))
            .collect();
        Self { identities }
    }

    pub fn redact(&self, text: &str) -> Redacted {
        let mut out = text.to_string();
        let mut counts = BTreeMap::new();
        for (kind, pattern) in PATTERNS.iter() {
            let found = pattern.find_iter(&out).count();
            if found > 0 {
                *counts.entry(kind.to_string()).or_insert(0) += found;
                out = pattern.replace_all(&out, format!("[REDACTED:{kind}]").as_str()).into_owned();
            }
        }
        for pattern in &self.identities {
            let found = pattern.find_iter(&out).count();
            if found > 0 {
                *counts.entry("identity".into()).or_insert(0) += found;
                out = pattern.replace_all(&out, "[REDACTED:identity]").into_owned();
            }
        }
        Redacted { text: out, counts }
    }
}

/// Whether the text contains anything [`redact`] would remove (identities aside).
pub fn contains_secret(text: &str) -> Option<&'static str> {
    PATTERNS.iter().find(|(kind, pattern)| *kind != "email" && pattern.is_match(text)).map(|(kind, _)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_emails_and_identity_are_replaced_and_counted() {
        let text = "I am alice (alice@example.com). My key is sk-proj-abcdefghijklmnopqrstuv and \
                    password: hunter22; AWS AKIAABCDEFGHIJKLMNOP; header Bearer abcdefghijklmnopqrstuvwxyz.\n\
                    -----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\nAlice's notes.";
        let redacted = redact(text, &["alice", "u-123"]);
        for secret in ["sk-proj", "hunter22", "AKIA", "abcdefghijklmnopqrstuvwxyz", "AAAA", "alice", "Alice", "example.com"] {
            assert!(!redacted.text.contains(secret), "{secret} survived: {}", redacted.text);
        }
        assert_eq!(redacted.counts["api_key"], 2);
        assert_eq!(redacted.counts["password"], 1);
        assert_eq!(redacted.counts["token"], 1);
        assert_eq!(redacted.counts["private_key"], 1);
        assert_eq!(redacted.counts["email"], 1);
        assert_eq!(redacted.counts["identity"], 2);
        assert!(redacted.text.contains("[REDACTED:api_key]"));
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let text = "Read data.csv, count rows with wc -l, then summarize the columns.";
        assert_eq!(redact(text, &["bob"]).text, text);
        assert_eq!(contains_secret(text), None);
        assert_eq!(contains_secret("export OPENAI_API_KEY=sk-abcdefghijklmnopqrstu"), Some("api_key"));
    }
}
