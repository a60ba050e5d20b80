//! ReSum's arithmetic: where a rollout summarizes itself, the two branches compared there,
//! and the paired advantage between a branch and the rollout it left.
//!
//! A *natural point* is where the policy wrote the summarization phrase on its own; its
//! contrastive branch removes the phrase and samples again from just before it. An
//! *artifact point* is a position where the policy did not summarize; its matched branch
//! inserts the phrase there and continues. Each branch is scored against its partner: the
//! side with the summary gains what the side without it lost (antisymmetric).

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;

use crate::rollout::PrefixEdit;

/// The phrase ReSum's branches use by default: the one the runtime's compaction starts its
/// summaries with.
pub const DEFAULT_PHRASE: &str = agent::agent_loop::SUMMARY_PHRASE;

/// Positions where `phrase` starts in `tokens`, left to right, not overlapping.
pub fn natural_points(tokens: &[u32], phrase: &[u32]) -> Vec<usize> {
    let mut points = Vec::new();
    if phrase.is_empty() {
        return points;
    }
    let mut t = 0;
    while t + phrase.len() <= tokens.len() {
        if tokens[t..t + phrase.len()] == *phrase {
            points.push(t);
            t += phrase.len();
        } else {
            t += 1;
        }
    }
    points
}

/// Up to `count` distinct artifact points in `start..len` (seeded), none inside a natural
/// occurrence of the phrase, in ascending order.
pub fn artifact_points(start: usize, len: usize, naturals: &[usize], phrase_len: usize, count: usize, seed: u64) -> Vec<usize> {
    let allowed: Vec<usize> = (start..len).filter(|t| !naturals.iter().any(|n| (*n..n + phrase_len.max(1)).contains(t))).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut picked: Vec<usize> = sample(&mut rng, allowed.len(), count.min(allowed.len())).into_iter().map(|i| allowed[i]).collect();
    picked.sort_unstable();
    picked
}

/// Whether a tool-protocol reply that begins with `text` has stopped inside the text of
/// its answer (`{"answer": "...`), where the grammar admits any phrase without quotes: the
/// one place of an agent's reply where ReSum can inject its phrase.
pub fn inside_answer_text(text: &str) -> bool {
    let Some(rest) = text.strip_prefix(r#"{"answer": ""#) else {
        return false;
    };
    let mut escaped = false;
    for c in rest.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return false,
            _ => {}
        }
    }
    !escaped
}

/// The contrastive branch's prefix at a natural point: everything before the phrase.
pub fn mask_phrase(at: usize, phrase_len: usize) -> PrefixEdit {
    PrefixEdit::Delete { start: at, end: at + phrase_len }
}

/// The matched branch's edit at an artifact point: the phrase inserted there.
pub fn inject_phrase(at: usize, phrase: &[u32]) -> PrefixEdit {
    PrefixEdit::Insert { at, tokens: phrase.to_vec() }
}

/// An edit applied to tokens and their sampled-mask together: inserted tokens were not
/// sampled by the policy, so they are masked out of the loss.
pub fn edit_with_mask(tokens: &[u32], sampled: &[bool], edit: &PrefixEdit) -> anyhow::Result<(Vec<u32>, Vec<bool>)> {
    anyhow::ensure!(tokens.len() == sampled.len(), "one mask entry per token");
    let edited = edit.apply(tokens)?;
    let mut mask = sampled.to_vec();
    match edit {
        PrefixEdit::Keep => {}
        PrefixEdit::Insert { at, tokens: inserted } => {
            mask.splice(*at..*at, std::iter::repeat_n(false, inserted.len()));
        }
        PrefixEdit::Delete { start, end } => {
            mask.drain(*start..*end);
        }
    }
    Ok((edited, mask))
}

/// The summarization-aware advantages of a pair: `(with, without)`, where `with` is the
/// side holding the summary. Antisymmetric: what one side gains the other loses.
pub fn paired_advantage(reward_with: f64, reward_without: f64) -> (f64, f64) {
    let gain = reward_with - reward_without;
    (gain, -gain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phrase_is_injected_only_inside_an_answer_text() {
        assert!(inside_answer_text(r#"{"answer": ""#));
        assert!(inside_answer_text(r#"{"answer": "four lines"#));
        assert!(inside_answer_text(r#"{"answer": "a \"quoted\" word"#), "escaped quotes stay inside");
        assert!(!inside_answer_text(r#"{"answer": "done\"#), "right after a backslash the phrase would be an escape");
        assert!(!inside_answer_text(r#"{"answer": "done""#), "the text has ended");
        assert!(!inside_answer_text(r#"{"answer"#));
        assert!(!inside_answer_text(r#"{"tool": "read", "arguments": {"path": "po"#), "a tool call has no free text");
    }

    #[test]
    fn resum_finds_edits_and_pairs_exactly() {
        let phrase = [7, 8];
        let tokens = [1, 7, 8, 2, 7, 3, 7, 8];
        assert_eq!(natural_points(&tokens, &phrase), [1, 6]);
        assert!(natural_points(&tokens, &[]).is_empty());

        // Insert then delete is the identity on ids and masks.
        let sampled = [false, true, true, true, true, true, true, true];
        for at in 0..=tokens.len() {
            let (inserted, mask) = edit_with_mask(&tokens, &sampled, &inject_phrase(at, &phrase)).unwrap();
            assert_eq!(&inserted[at..at + 2], &phrase);
            assert_eq!(&mask[at..at + 2], &[false, false], "injected tokens are not trained on");
            let (back, back_mask) = edit_with_mask(&inserted, &mask, &mask_phrase(at, phrase.len())).unwrap();
            assert_eq!((back.as_slice(), back_mask.as_slice()), (&tokens[..], &sampled[..]));
        }
        let (cut, cut_mask) = edit_with_mask(&tokens, &sampled, &mask_phrase(1, 2)).unwrap();
        assert_eq!((cut, cut_mask), (vec![1, 2, 7, 3, 7, 8], vec![false, true, true, true, true, true]));

        // Artifact points avoid the natural occurrences and are reproducible.
        let naturals = natural_points(&tokens, &phrase);
        let points = artifact_points(1, tokens.len(), &naturals, phrase.len(), 3, 5);
        assert_eq!(points.len(), 3);
        assert!(points.iter().all(|p| ![1, 2, 6, 7].contains(p) && *p >= 1), "{points:?}");
        assert_eq!(points, artifact_points(1, tokens.len(), &naturals, phrase.len(), 3, 5));
        assert_eq!(artifact_points(1, tokens.len(), &naturals, phrase.len(), 10, 5), [3, 4, 5]);

        // The paired advantage is antisymmetric.
        for (a, b) in [(1.0, 0.0), (0.0, 1.0), (0.25, 0.75), (1.0, 1.0)] {
            let (with, without) = paired_advantage(a, b);
            assert_eq!(with, -without);
            assert_eq!(paired_advantage(b, a), (without, with));
        }
        assert_eq!(paired_advantage(1.0, 0.0), (1.0, -1.0));
    }
}
