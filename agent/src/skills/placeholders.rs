//! A skill's placeholders filled in for one request.
//!
//! Steps that worked for many users are written with `FILE` and `WORD` in place of one
//! user's file names and words (the evolver generalizes them so; the starter skills use
//! `FILE` too). A small model copies a concrete command from its prompt far more reliably
//! than it fills in a template, so when the request names exactly one file of the
//! workspace, or exactly one word stands out, the skill the prompt shows says it.
//! Anything ambiguous is left as it is.

/// `text` with `FILE` replaced by the one workspace file the request names, and `WORD`
/// by the one word it quotes (or, failing that, the one word it writes in capitals).
pub fn fill(text: &str, request: &str, files: &[String]) -> String {
    let mut filled = text.to_string();
    if let Some(file) = named_file(request, files) {
        filled = replace_word(&filled, "FILE", &file);
    }
    if let Some(word) = named_word(request) {
        filled = replace_word(&filled, "WORD", &word);
    }
    filled
}

/// Words of `text` with the punctuation around them taken off (but not inside them, so
/// `data/a.csv` and `.env` stay whole).
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace()
        .map(|word| word.trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | ',' | '?' | '!' | ':' | ';' | '(' | ')')))
        .map(|word| word.trim_end_matches('.'))
        .filter(|word| !word.is_empty())
}

fn looks_like_file(word: &str) -> bool {
    word.rsplit_once('.').is_some_and(|(_, ext)| !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric()))
        && word.chars().any(|c| c.is_alphabetic())
}

/// The workspace file the request names when it names exactly one file-like word and
/// that word is a file there (by its path, or by a name only one file has).
fn named_file(request: &str, files: &[String]) -> Option<String> {
    let mut named: Vec<&str> = tokens(request).filter(|word| looks_like_file(word)).collect();
    named.dedup();
    let [only] = named.as_slice() else { return None };
    let only = only.trim_start_matches("./");
    if files.iter().any(|file| file == only) {
        return Some(only.to_string());
    }
    let mut by_name = files.iter().filter(|file| file.rsplit('/').next() == Some(only));
    match (by_name.next(), by_name.next()) {
        (Some(file), None) => Some(file.clone()),
        _ => None,
    }
}

/// The one word the request quotes, or else the one word it writes in capitals.
fn named_word(request: &str) -> Option<String> {
    let mut quoted: Vec<&str> =
        request.split('"').skip(1).step_by(2).filter(|q| !q.is_empty() && !q.contains(char::is_whitespace)).collect();
    quoted.dedup();
    if let [only] = quoted.as_slice() {
        return Some(only.to_string());
    }
    if !quoted.is_empty() {
        return None;
    }
    let mut capitals: Vec<&str> = tokens(request)
        .filter(|word| word.chars().count() >= 2 && word.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !looks_like_file(word))
        .collect();
    capitals.sort_unstable();
    capitals.dedup();
    match capitals.as_slice() {
        [only] => Some(only.to_string()),
        _ => None,
    }
}

/// `text` with every whole-word `placeholder` replaced by `value`.
fn replace_word(text: &str, placeholder: &str, value: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(placeholder) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + placeholder.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            out.push_str(placeholder);
        } else {
            out.push_str(value);
        }
        rest = &rest[at + placeholder.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::fill;

    fn check(text: &str, request: &str, files: &[&str], expect: &str) {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        assert_eq!(fill(text, request, &files), expect, "{request}");
    }

    #[test]
    fn fills_what_the_request_names_unambiguously() {
        let step = "Run `grep -c WORD FILE` with exec.";
        check(
            step,
            "Count the ERROR lines in app.log. Answer with the number only.",
            &["app.log"],
            "Run `grep -c ERROR app.log` with exec.",
        );
        check(
            step,
            "How many lines of notes.txt contain the word \"invoice\"?",
            &["notes.txt"],
            "Run `grep -c invoice notes.txt` with exec.",
        );
        check("`wc -l FILE`", "Count the rows of data/orders.csv", &["data/orders.csv"], "`wc -l data/orders.csv`");
        check("`wc -l FILE`", "Count the rows of orders.csv", &["data/orders.csv"], "`wc -l data/orders.csv`");
        check("Change PORT in FILE.", "Set PORT in .env to 8263", &[".env"], "Change PORT in .env.");
    }

    #[test]
    fn leaves_anything_ambiguous_or_absent() {
        let step = "Run `cp FILE FILE` with exec.";
        check(step, "Make final.txt a copy of draft.txt.", &["draft.txt"], step);
        check("`wc -l FILE`", "Count the rows of orders.csv", &["a/orders.csv", "b/orders.csv"], "`wc -l FILE`");
        check("`wc -l FILE`", "Count the rows of missing.csv", &["orders.csv"], "`wc -l FILE`");
        check("`grep -c WORD FILE`", "Count ERROR and WARN lines in app.log", &["app.log"], "`grep -c WORD app.log`");
        // Only whole words are placeholders.
        check("FILES and FILE_NAME", "Count the rows of orders.csv", &["orders.csv"], "FILES and FILE_NAME");
    }
}
