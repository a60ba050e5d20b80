//! How relevant a skill is to a request, by the words they share.
//!
//! A lexical score, on purpose: it costs microseconds and no model call, it is the same
//! for every backend, and a person can see why a skill was chosen. Each word of the
//! request that also appears in a skill's name or description counts by its rarity
//! across the catalog (inverse document frequency), so that "file" matching every skill
//! says little and "csv" matching one says a lot.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::CatalogEntry;

/// Words that say nothing about which skill fits.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "by", "at", "as", "is", "are", "be", "it", "its", "this", "that",
    "these", "those", "from", "into", "when", "what", "which", "who", "how", "do", "does", "use", "using", "user", "asks", "about",
    "please", "can", "you", "your", "me", "my", "i", "we", "our", "all", "any", "each", "there", "then", "than", "so", "if", "not", "no",
    "yes", "only", "just", "give", "tell", "answer", "file", "files",
];

/// The content words of a text: lower-cased, split at anything but letters and digits,
/// stop words dropped, and a plural `s` cut so that "lines" meets "line".
pub fn terms(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|word| word.chars().count() >= 2 && !STOPWORDS.contains(&word.as_str()))
        .map(|word| match word.strip_suffix('s') {
            Some(stem) if stem.chars().count() >= 3 && !stem.ends_with('s') => stem.to_string(),
            _ => word,
        })
        .collect()
}

fn entry_terms(entry: &CatalogEntry) -> BTreeSet<String> {
    let mut words = terms(&entry.slug);
    words.extend(terms(&entry.description));
    words
}

/// Each entry's score for `query`, in the entries' order. Zero means no shared word.
pub fn scores(entries: &[CatalogEntry], query: &str) -> Vec<f64> {
    let query = terms(query);
    let per_entry: Vec<BTreeSet<String>> = entries.iter().map(entry_terms).collect();
    let mut document_frequency: BTreeMap<&str, usize> = BTreeMap::new();
    for words in &per_entry {
        for word in words {
            *document_frequency.entry(word.as_str()).or_insert(0) += 1;
        }
    }
    // One more than the number of skills, so that a word in a one-skill catalog still
    // counts as rare.
    let total = entries.len() as f64 + 1.0;
    per_entry
        .iter()
        .map(|words| {
            query
                .iter()
                .filter(|word| words.contains(*word))
                .map(|word| (1.0 + total / document_frequency[word.as_str()] as f64).ln())
                .sum()
        })
        .collect()
}

/// The entries ordered from most to least relevant to `query`; equal scores keep their
/// order, so an empty query changes nothing.
pub fn rank(entries: &[CatalogEntry], query: &str) -> Vec<(CatalogEntry, f64)> {
    let mut ranked: Vec<(CatalogEntry, f64)> = entries.iter().cloned().zip(scores(entries, query)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(slug: &str, description: &str) -> CatalogEntry {
        CatalogEntry { slug: slug.into(), version: "1.0.0".into(), description: description.into() }
    }

    #[test]
    fn the_skill_sharing_rare_words_ranks_first() {
        let entries = vec![
            entry("workspace-files", "List, read and write files in the workspace."),
            entry("csv-inspect", "Inspect a CSV file's columns, row count and sample rows."),
            entry("search-text", "Find lines that contain a word in text files."),
        ];
        let ranked = rank(&entries, "How many rows does sales.csv have?");
        assert_eq!(ranked[0].0.slug, "csv-inspect");
        assert!(ranked[0].1 > 0.0);
        assert_eq!(ranked[2].1, 0.0, "{ranked:?}");
        let ranked = rank(&entries, "Which lines mention the word timeout?");
        assert_eq!(ranked[0].0.slug, "search-text");
    }

    #[test]
    fn a_query_with_no_content_words_keeps_the_order() {
        let entries = vec![entry("b", "Second."), entry("a", "First.")];
        let ranked = rank(&entries, "please tell me");
        assert_eq!(ranked.iter().map(|(e, _)| e.slug.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert!(ranked.iter().all(|(_, score)| *score == 0.0));
    }

    #[test]
    fn plurals_meet_singulars() {
        assert!(terms("count the lines").contains("line"));
        assert!(terms("process").contains("process"), "a word ending in ss keeps it");
    }
}
