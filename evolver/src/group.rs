//! Grouping summarized sessions into patterns.
//!
//! Sessions that read a skill are grouped by that skill. Sessions that read none are
//! clustered by the words of their goals (Jaccard similarity of content words). Lexical,
//! not embeddings: the `Engine` trait has no embedding call, the default 135M model's
//! hidden states make poor sentence vectors, and word overlap is deterministic, cheap and
//! explainable in a run report. A group is a pattern only when it spans enough distinct
//! users, so no single user can shape a shared skill.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::SummaryRecord;

/// What a group is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupKey {
    Skill(String),
    /// A cluster of goals, named by its most frequent words.
    Topic(String),
}

#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub key: GroupKey,
    pub members: Vec<&'a SummaryRecord>,
}

impl Group<'_> {
    pub fn distinct_users(&self) -> usize {
        self.members.iter().map(|m| m.user_id.as_str()).collect::<BTreeSet<_>>().len()
    }

    /// Distinct users among the sessions this server observed: claimed (imported)
    /// sessions cannot make a pattern.
    pub fn distinct_observed_users(&self) -> usize {
        self.members.iter().filter(|m| m.observed).map(|m| m.user_id.as_str()).collect::<BTreeSet<_>>().len()
    }

    /// Score of the observed sessions with a known verdict, averaged with older evidence
    /// weighing less (`weight = 0.5^(age / half_life)`); `None` when no verdict is known.
    pub fn weighted_success(&self, now: i64, half_life_days: f64) -> Option<f64> {
        let (mut sum, mut weights) = (0.0, 0.0);
        for member in self.members.iter().filter(|m| m.observed) {
            let Some(score) = member.known_score() else { continue };
            let w = decay_weight(now, member.updated_at, half_life_days);
            sum += w * score;
            weights += w;
        }
        (weights > 0.0).then(|| sum / weights)
    }
}

pub fn decay_weight(now: i64, then: i64, half_life_days: f64) -> f64 {
    let age_days = (now - then).max(0) as f64 / 86_400.0;
    0.5f64.powf(age_days / half_life_days.max(1e-6))
}

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "with", "that", "this", "from", "into", "what", "how", "please", "can", "you", "are", "was", "then", "file",
    "files", "use", "make", "let", "get", "out", "all", "its", "our", "your", "have", "has", "will", "would", "should", "about", "them",
    "their", "there", "here", "which", "when", "one", "two", "some", "any", "need", "want",
];

/// The content words of a goal: lowercase, three letters or more, no stopwords.
pub fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 3 && !STOPWORDS.contains(&w.as_str()) && !w.chars().all(|c| c.is_ascii_digit()))
        .map(|w| w.trim_end_matches('s').to_string())
        .collect()
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// Goals at least this similar join the same topic cluster.
pub const TOPIC_SIMILARITY: f64 = 0.3;

/// Groups every summary: by each skill it read, else by goal cluster.
pub fn group(summaries: &[SummaryRecord]) -> Vec<Group<'_>> {
    let mut by_skill: BTreeMap<String, Vec<&SummaryRecord>> = BTreeMap::new();
    let mut unskilled = Vec::new();
    for record in summaries {
        if record.skills_read.is_empty() {
            unskilled.push(record);
        }
        let slugs: BTreeSet<&str> = record.skills_read.iter().map(|(slug, _)| slug.as_str()).collect();
        for slug in slugs {
            by_skill.entry(slug.to_string()).or_default().push(record);
        }
    }
    let mut groups: Vec<Group<'_>> = by_skill.into_iter().map(|(slug, members)| Group { key: GroupKey::Skill(slug), members }).collect();

    // Greedy clustering in a fixed order: each goal joins the first cluster whose words it
    // shares enough of, else starts one.
    let mut clusters: Vec<(BTreeSet<String>, Vec<&SummaryRecord>)> = Vec::new();
    for record in unskilled {
        let goal = words(&format!("{} {}", record.summary.goal, record.request));
        match clusters.iter_mut().find(|(centre, _)| jaccard(centre, &goal) >= TOPIC_SIMILARITY) {
            Some((centre, members)) => {
                centre.extend(goal);
                members.push(record);
            }
            None => clusters.push((goal, vec![record])),
        }
    }
    for (_, members) in clusters {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for member in &members {
            for word in words(&format!("{} {}", member.summary.goal, member.request)) {
                *counts.entry(word).or_insert(0) += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let name = ranked.iter().take(3).map(|(w, _)| w.as_str()).collect::<Vec<_>>().join("-");
        groups.push(Group { key: GroupKey::Topic(name), members });
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionSummary;

    fn record(user: &str, request: &str, skills: &[&str], score: f64, updated_at: i64) -> SummaryRecord {
        SummaryRecord {
            session_id: format!("{user}-{request}"),
            user_id: user.into(),
            run_id: "r".into(),
            updated_at,
            request: request.into(),
            summary: SessionSummary { goal: request.into(), ..Default::default() },
            skills_read: skills.iter().map(|s| (s.to_string(), "1.0.0".to_string())).collect(),
            score,
            score_source: "signals".into(),
            verdict: if score >= 1.0 { crate::store::Verdict::Success } else { crate::store::Verdict::Failure },
            observed: true,
            summary_discarded: None,
            replay: Default::default(),
        }
    }

    #[test]
    fn sessions_group_by_skill_then_by_goal_words() {
        let summaries = vec![
            record("a", "inspect sales.csv columns", &["csv-inspect"], 1.0, 0),
            record("b", "count rows in data.csv", &["csv-inspect"], 0.0, 0),
            record("a", "convert markdown notes to html", &[], 1.0, 0),
            record("c", "convert my markdown notes into html pages", &[], 1.0, 0),
            record("c", "plan a birthday party", &[], 1.0, 0),
        ];
        let groups = group(&summaries);
        let keys: Vec<(GroupKey, usize, usize)> = groups.iter().map(|g| (g.key.clone(), g.members.len(), g.distinct_users())).collect();
        assert_eq!(keys[0], (GroupKey::Skill("csv-inspect".into()), 2, 2));
        assert_eq!(keys[1].1, 2, "{keys:?}");
        assert_eq!(keys[1].2, 2);
        assert!(matches!(&keys[1].0, GroupKey::Topic(name) if name.contains("markdown")), "{keys:?}");
        assert_eq!((keys[2].1, keys[2].2), (1, 1));
    }

    #[test]
    fn older_evidence_weighs_less() {
        let day = 86_400;
        let summaries = vec![record("a", "x", &["s"], 0.0, 0), record("b", "y", &["s"], 1.0, 14 * day)];
        let groups = group(&summaries);
        // At day 14 with a 14-day half-life the old failure weighs 0.5, the new success 1.
        let success = groups[0].weighted_success(14 * day, 14.0).unwrap();
        assert!((success - 2.0 / 3.0).abs() < 1e-9, "{success}");
    }
}
