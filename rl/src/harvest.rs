//! RL tasks from live multi-user traffic, under the evolver's invariants.
//!
//! The input is what the evolver recorded of finished sessions ([`SummaryRecord`]: the
//! user's first request, redacted, the verdict of the user's rating, and what the session
//! answered), read through the evolver's storage trait. The rules:
//! - only sessions this server observed, with a verdict from a verifiable signal;
//! - a pattern is one request (compared case- and space-insensitively) asked by at least
//!   `min_users` distinct users; a request fewer users asked is dropped, so that no text
//!   in the exported data is one user's: every prompt was written by `min_users` users,
//!   and every answer given in `min_users` users' sessions;
//! - a task's check is the answer that `min_users` distinct users' successful sessions
//!   agree on; without such an answer the pattern gives feedback rows only;
//! - everything is redacted again, and a row with anything the redactor would remove is
//!   dropped rather than cleaned;
//! - a task gets a workspace only where `min_users` distinct users' successful sessions
//!   started from the same files, and reference actions (ActGuide's plan) only where that
//!   many of them also took the same tool calls: a plan one user took is that user's, and
//!   the policy is shared.

use std::collections::{BTreeMap, BTreeSet};

use agent::engine::ChatMessage;
use evolver::pipeline::REPLAY_CASES_KEY;
use evolver::redact::contains_secret;
use evolver::store::{CandidateRecord, ReplayComparison, SummaryRecord, Verdict};
use serde::Serialize;

use crate::methods::actguide::Action;
use crate::task::{Task, Verifier};

/// A request or answer as compared across users: lower case, single spaces, no final
/// punctuation.
pub fn normalize(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.join(" ").to_lowercase().trim_end_matches(['.', '!', '?']).trim().to_string()
}

/// A feedback row (TRL's unpaired preference format, KTO): an answer the users rated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatedAnswer {
    pub prompt: String,
    pub answer: String,
    /// Whether most of the sessions that gave this answer were rated a success.
    pub desirable: bool,
    pub users: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HarvestedTask {
    pub task: Task,
    /// Distinct users who asked it, and of them, who were answered as the check says.
    pub users: usize,
    pub agreeing_users: usize,
}

/// What a harvest found, and what it dropped and why (counts of sessions).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Harvest {
    pub tasks: Vec<HarvestedTask>,
    pub rated: Vec<RatedAnswer>,
    pub dropped: BTreeMap<&'static str, usize>,
}

struct Pattern<'a> {
    /// The request as the earliest session wrote it (every user wrote it, up to case and
    /// spacing).
    text: &'a str,
    sessions: Vec<&'a SummaryRecord>,
}

pub fn harvest(records: &[SummaryRecord], min_users: usize) -> Harvest {
    let min_users = min_users.max(2);
    let mut out = Harvest::default();
    let mut patterns: BTreeMap<String, Pattern<'_>> = BTreeMap::new();
    for record in records {
        let reason = if !record.observed {
            Some("not observed by this server")
        } else if record.verdict == Verdict::Unknown {
            Some("no verifiable verdict")
        } else if record.request.trim().is_empty() {
            Some("no request")
        } else {
            None
        };
        if let Some(reason) = reason {
            *out.dropped.entry(reason).or_default() += 1;
            continue;
        }
        let key = normalize(&record.request);
        patterns.entry(key).or_insert_with(|| Pattern { text: record.request.trim(), sessions: Vec::new() }).sessions.push(record);
    }
    for (id, pattern) in patterns.values().enumerate() {
        let users: BTreeSet<&str> = pattern.sessions.iter().map(|s| s.user_id.as_str()).collect();
        if users.len() < min_users {
            *out.dropped.entry("asked by fewer than min_users users").or_default() += pattern.sessions.len();
            continue;
        }
        if contains_secret(pattern.text).is_some() {
            *out.dropped.entry("request holds a secret").or_default() += pattern.sessions.len();
            continue;
        }
        // Answers by the distinct users who gave them, split by verdict.
        let mut answers: BTreeMap<String, (String, BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
        for session in &pattern.sessions {
            let Some(answer) = session.replay.answer.as_deref().map(str::trim).filter(|a| !a.is_empty()) else { continue };
            let entry = answers.entry(normalize(answer)).or_insert_with(|| (answer.to_string(), BTreeSet::new(), BTreeSet::new()));
            match session.verdict {
                Verdict::Success => entry.1.insert(session.user_id.as_str()),
                _ => entry.2.insert(session.user_id.as_str()),
            };
        }
        let mut agreed: Option<(String, usize)> = None;
        for (answer, succeeded, failed) in answers.values() {
            let givers: BTreeSet<&str> = succeeded.union(failed).copied().collect();
            if givers.len() < min_users {
                continue;
            }
            if contains_secret(answer).is_some() {
                *out.dropped.entry("answer holds a secret").or_default() += givers.len();
                continue;
            }
            out.rated.push(RatedAnswer {
                prompt: pattern.text.to_string(),
                answer: answer.clone(),
                desirable: succeeded.len() > failed.len(),
                users: givers.len(),
            });
            if succeeded.len() >= min_users && agreed.as_ref().is_none_or(|(_, n)| succeeded.len() > *n) {
                agreed = Some((answer.clone(), succeeded.len()));
            }
        }
        match agreed {
            Some((answer, agreeing_users)) => {
                let successes: Vec<&SummaryRecord> = pattern
                    .sessions
                    .iter()
                    .copied()
                    .filter(|s| {
                        s.verdict == Verdict::Success && s.replay.answer.as_deref().is_some_and(|a| normalize(a) == normalize(&answer))
                    })
                    .collect();
                let work = match shared_work(&successes, min_users) {
                    Ok(work) => work,
                    Err(reason) => {
                        *out.dropped.entry(reason).or_default() += successes.len();
                        None
                    }
                };
                let (tools, files, actions) = match work {
                    Some(work) => (agent_tool_names(), work.files, work.actions),
                    None => (Vec::new(), BTreeMap::new(), Vec::new()),
                };
                out.tasks.push(HarvestedTask {
                    task: Task {
                        id: format!("harvested-{id}"),
                        messages: vec![ChatMessage::user(pattern.text)],
                        verifier: Verifier::ExactAnswer { answer },
                        tools,
                        files,
                        actions,
                    },
                    users: users.len(),
                    agreeing_users,
                })
            }
            None => *out.dropped.entry("no answer that enough users' successes agree on").or_default() += pattern.sessions.len(),
        }
    }
    out
}

/// The workspace and plan shared by the successful sessions of one request.
#[derive(Debug, Clone, Default, PartialEq)]
struct SharedWork {
    files: BTreeMap<String, String>,
    actions: Vec<Action>,
}

/// The input files that the most distinct users' `successes` started from, if at least
/// `min_users` did, with the tool calls that the most of those users took, if at least
/// `min_users` took them. `None` when no workspace is shared or nothing would make the
/// task an agent task (no files and no plan); an error names why a shared one is unusable.
fn shared_work(successes: &[&SummaryRecord], min_users: usize) -> Result<Option<SharedWork>, &'static str> {
    let most_shared = |keys: Vec<(String, &str)>| -> Option<String> {
        let mut users: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for (key, user) in keys {
            users.entry(key).or_default().insert(user);
        }
        // The most users; among equals, the first key, so that the choice is reproducible.
        let (key, by) = users.into_iter().max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(&a.0)))?;
        (by.len() >= min_users).then_some(key)
    };
    let key_of_inputs = |s: &SummaryRecord| serde_json::to_string(&s.replay.inputs).unwrap_or_default();
    let Some(inputs) = most_shared(successes.iter().map(|s| (key_of_inputs(s), s.user_id.as_str())).collect()) else {
        return Ok(None);
    };
    let from_inputs: Vec<&&SummaryRecord> = successes.iter().filter(|s| key_of_inputs(s) == inputs).collect();
    let files = from_inputs[0].replay.inputs.clone();
    if files.iter().any(|(path, content)| contains_secret(path).is_some() || contains_secret(content).is_some()) {
        return Err("shared workspace holds a secret");
    }
    let plans = from_inputs
        .iter()
        .filter(|s| !s.replay.procedure.is_empty())
        .map(|s| (serde_json::to_string(&s.replay.procedure).unwrap_or_default(), s.user_id.as_str()))
        .collect();
    let actions: Vec<Action> = match most_shared(plans) {
        Some(plan) => {
            let procedure = from_inputs.iter().find(|s| serde_json::to_string(&s.replay.procedure).unwrap_or_default() == plan);
            let procedure = procedure.map(|s| s.replay.procedure.clone()).unwrap_or_default();
            if procedure.iter().any(|(tool, arguments)| contains_secret(tool).is_some() || contains_secret(arguments).is_some()) {
                return Err("shared plan holds a secret");
            }
            procedure.into_iter().map(|(tool, arguments)| Action { tool, arguments }).collect()
        }
        None => Vec::new(),
    };
    Ok((!files.is_empty() || !actions.is_empty()).then_some(SharedWork { files, actions }))
}

/// The tools of the agent users run, which a harvested agent task offers.
fn agent_tool_names() -> Vec<String> {
    agent::agent_loop::tool_specs().into_iter().map(|tool| tool.name).collect()
}

/// Gives each task without reference actions the plan harvested for the same request on
/// the same files, where there is one; returns how many tasks got one. A plan taken on
/// other files is no plan for these, so files must match exactly.
pub fn attach_actions(tasks: &mut [Task], harvest: &Harvest) -> usize {
    let request = |task: &Task| task.messages.iter().find(|m| m.role == Some(agent::engine::Role::User)).map(|m| normalize(&m.content));
    let mut attached = 0;
    for task in tasks.iter_mut().filter(|t| t.actions.is_empty()) {
        let found = harvest
            .tasks
            .iter()
            .map(|h| &h.task)
            .find(|h| !h.actions.is_empty() && request(h).is_some() && request(h) == request(task) && h.files == task.files);
        if let Some(harvested) = found {
            task.actions = harvested.actions.clone();
            attached += 1;
        }
    }
    attached
}

/// A preference pair (TRL's DPO format) from the evolver's A/B gate: one held-out request
/// asked again without and with a candidate skill, where exactly one side passed the
/// session's check. The passing answer is chosen: a policy trained on such pairs learns to
/// answer as the skill taught, without the skill in its prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreferencePair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    /// The candidate whose gate produced it.
    pub candidate: String,
    /// Distinct users who asked the request.
    pub users: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PreferencePairs {
    pub pairs: Vec<PreferencePair>,
    /// Replayed cases left out and why.
    pub dropped: BTreeMap<&'static str, usize>,
}

/// Characters a line of a user's file needs before quoting it counts as a leak (shorter
/// lines, like `id,name`, are common to many files).
const QUOTED_LINE_CHARS: usize = 12;

/// Preference pairs from the replays the evolver's gates recorded on `candidates`, under the
/// rules of [`harvest`]: the request must have been asked by `min_users` distinct users (so
/// the prompt is no one user's text), nothing may hold a secret, and an answer that quotes
/// a line of the replayed session's files is dropped (the replay read that user's files).
pub fn preference_pairs(candidates: &[CandidateRecord], records: &[SummaryRecord], min_users: usize) -> PreferencePairs {
    let min_users = min_users.max(2);
    let mut out = PreferencePairs::default();
    let mut askers: BTreeMap<String, (&str, BTreeSet<&str>)> = BTreeMap::new();
    for record in records.iter().filter(|r| r.observed) {
        askers
            .entry(normalize(&record.request))
            .or_insert_with(|| (record.request.trim(), BTreeSet::new()))
            .1
            .insert(record.user_id.as_str());
    }
    let sessions: BTreeMap<&str, &SummaryRecord> = records.iter().map(|r| (r.session_id.as_str(), r)).collect();
    let mut seen = BTreeSet::new();
    for candidate in candidates {
        let Some(cases) = candidate.verdict.get("replay").and_then(|replay| replay.get(REPLAY_CASES_KEY)) else { continue };
        let Ok(cases) = serde_json::from_value::<Vec<ReplayComparison>>(cases.clone()) else {
            *out.dropped.entry("replay cases that do not parse").or_default() += 1;
            continue;
        };
        for case in cases {
            let (chosen, rejected) = match (&case.baseline, &case.candidate) {
                (b, c) if c.passed && !b.passed => (&c.answer, &b.answer),
                (b, c) if b.passed && !c.passed => (&b.answer, &c.answer),
                _ => {
                    *out.dropped.entry("both sides passed or both failed").or_default() += 1;
                    continue;
                }
            };
            let (Some(chosen), Some(rejected)) = (chosen.as_deref().map(str::trim), rejected.as_deref().map(str::trim)) else {
                *out.dropped.entry("a side gave no answer").or_default() += 1;
                continue;
            };
            let Some(session) = sessions.get(case.session_id.as_str()) else {
                *out.dropped.entry("the replayed session is not recorded").or_default() += 1;
                continue;
            };
            let Some((prompt, users)) = askers.get(&normalize(&session.request)).filter(|(_, users)| users.len() >= min_users) else {
                *out.dropped.entry("asked by fewer than min_users users").or_default() += 1;
                continue;
            };
            if [*prompt, chosen, rejected].iter().any(|text| contains_secret(text).is_some()) {
                *out.dropped.entry("holds a secret").or_default() += 1;
                continue;
            }
            let quotes_files = session
                .replay
                .inputs
                .values()
                .flat_map(|content| content.lines())
                .map(str::trim)
                .any(|line| line.chars().count() >= QUOTED_LINE_CHARS && (chosen.contains(line) || rejected.contains(line)));
            if quotes_files {
                *out.dropped.entry("an answer quotes the user's files").or_default() += 1;
                continue;
            }
            if seen.insert((prompt.to_string(), chosen.to_string(), rejected.to_string())) {
                out.pairs.push(PreferencePair {
                    prompt: prompt.to_string(),
                    chosen: chosen.to_string(),
                    rejected: rejected.to_string(),
                    candidate: candidate.id.clone(),
                    users: users.len(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use evolver::store::ReplayOutcome;

    fn session(user: &str, request: &str, answer: &str, verdict: Verdict) -> SummaryRecord {
        SummaryRecord {
            session_id: format!("{user}-{request}"),
            user_id: user.into(),
            run_id: "run".into(),
            updated_at: 0,
            request: request.into(),
            summary: Default::default(),
            skills_read: Vec::new(),
            score: verdict.score().unwrap_or(0.5),
            score_source: "feedback".into(),
            verdict,
            observed: true,
            summary_discarded: None,
            replay: evolver::store::ReplayCase { answer: Some(answer.into()), ..Default::default() },
        }
    }

    /// A successful session of `user` counting lines of `files` with `procedure`.
    fn worked(user: &str, files: &[(&str, &str)], procedure: &[(&str, &str)]) -> SummaryRecord {
        let mut record = session(user, "How many lines does poem.txt have?", "4", Verdict::Success);
        record.replay.inputs = files.iter().map(|(p, c)| (p.to_string(), c.to_string())).collect();
        record.replay.procedure = procedure.iter().map(|(t, a)| (t.to_string(), a.to_string())).collect();
        record
    }

    #[test]
    fn a_workspace_and_a_plan_come_only_from_enough_users_who_shared_them() {
        let poem = [("poem.txt", "roses\nviolets\nsugar\nhoney\n")];
        let wc = [("exec", r#"{"command": "wc -l poem.txt"}"#)];
        let read = [("read", r#"{"path": "poem.txt"}"#)];
        let records = vec![
            worked("ada", &poem, &wc),
            worked("bo", &poem, &wc),
            worked("cy", &poem, &read),
            // Another user's own files: not the shared workspace.
            worked("dee", &[("poem.txt", "my own\n")], &wc),
        ];
        let task = |min_users| harvest(&records, min_users).tasks.remove(0).task;

        // Two users took the same calls on the same files: the task is an agent task with
        // that plan.
        let shared = task(2);
        assert_eq!(shared.files, poem.iter().map(|(p, c)| (p.to_string(), c.to_string())).collect());
        assert_eq!(shared.actions, [Action { tool: "exec".into(), arguments: wc[0].1.into() }]);
        assert!(shared.is_agentic() && shared.tools.contains(&"exec".to_string()));
        // Three users share the files but no plan: the workspace without actions.
        let files_only = task(3);
        assert_eq!(files_only.files.len(), 1);
        assert!(files_only.actions.is_empty());

        // A secret in the shared files drops the workspace, and says so.
        let secret = [("poem.txt", "token ghp_abcdefghijklmnopqrstuvwxyz0123456789\n")];
        let leaky = vec![worked("ada", &secret, &wc), worked("bo", &secret, &wc)];
        let found = harvest(&leaky, 2);
        assert!(found.tasks[0].task.files.is_empty() && found.tasks[0].task.actions.is_empty());
        assert_eq!(found.dropped.get("shared workspace holds a secret"), Some(&2));

        // A task given in a file gets the plan harvested for its request on its files only.
        let mut given = vec![
            Task { id: "mine".into(), actions: Vec::new(), ..shared.clone() },
            Task { id: "other files".into(), actions: Vec::new(), files: [("poem.txt".into(), "x\n".into())].into(), ..shared.clone() },
        ];
        given[0].messages = vec![ChatMessage::user("how many lines does  POEM.TXT have")];
        assert_eq!(attach_actions(&mut given, &harvest(&records, 2)), 1);
        assert_eq!(given[0].actions, shared.actions);
        assert!(given[1].actions.is_empty());
    }

    #[test]
    fn only_patterns_of_enough_users_without_secrets_become_tasks() {
        let mut records = vec![
            session("ada", "What is the capital of France?", "Paris", Verdict::Success),
            session("bo", "what is the capital of  France", "Paris.", Verdict::Success),
            session("cy", "What is the capital of France?", "paris", Verdict::Success),
            session("dee", "What is the capital of France?", "Lyon", Verdict::Failure),
            // One user's own request, however often asked: never exported.
            session("ada", "Summarise my diary entry about Tuesday", "ok", Verdict::Success),
            session("ada", "Summarise my diary entry about Tuesday", "ok", Verdict::Success),
            session("ada", "Summarise my diary entry about Tuesday", "ok", Verdict::Success),
        ];
        // A planted secret, asked by three users: dropped, never cleaned and kept.
        for user in ["ada", "bo", "cy"] {
            records.push(session(user, "Use key sk-proj-abcdefghijklmnopqrstuv to call the API", "done", Verdict::Success));
        }
        // Not observed or not rated: no evidence.
        let mut unobserved = session("eve", "What is the capital of France?", "Rome", Verdict::Success);
        unobserved.observed = false;
        records.push(unobserved);
        records.push(session("fay", "What is the capital of France?", "Paris", Verdict::Unknown));

        let harvest = harvest(&records, 3);
        assert_eq!(harvest.tasks.len(), 1);
        let task = &harvest.tasks[0];
        assert_eq!(task.users, 4);
        assert_eq!(task.agreeing_users, 3);
        assert_eq!(task.task.verifier, Verifier::ExactAnswer { answer: "Paris".into() });
        assert_eq!(task.task.messages[0].content, "What is the capital of France?");
        assert_eq!(harvest.rated.len(), 1, "Lyon was given by one user only");
        assert!(harvest.rated[0].desirable);

        let exported = serde_json::to_string(&harvest).unwrap();
        assert!(!exported.contains("sk-proj") && !exported.contains("diary") && !exported.contains("Rome"), "{exported}");
        assert_eq!(harvest.dropped["asked by fewer than min_users users"], 3);
        assert_eq!(harvest.dropped["request holds a secret"], 3);
        assert_eq!(harvest.dropped["not observed by this server"], 1);
        assert_eq!(harvest.dropped["no verifiable verdict"], 1);
    }

    fn replayed(session_id: &str, baseline: (bool, &str), candidate: (bool, &str)) -> ReplayComparison {
        ReplayComparison {
            session_id: session_id.into(),
            baseline: ReplayOutcome { passed: baseline.0, answer: Some(baseline.1.into()) },
            candidate: ReplayOutcome { passed: candidate.0, answer: Some(candidate.1.into()) },
        }
    }

    fn candidate_with(cases: Vec<ReplayComparison>) -> CandidateRecord {
        CandidateRecord {
            id: "cand-1".into(),
            run_id: "run".into(),
            slug: "csv-rows".into(),
            action: "create".into(),
            base_version: None,
            skill_md: String::new(),
            rationale: String::new(),
            evidence_sessions: Vec::new(),
            distinct_users: 2,
            status: "published".into(),
            verdict: serde_json::json!({ "accepted": true, "replay": { REPLAY_CASES_KEY: cases } }),
            published_version: None,
            writer: "mined".into(),
        }
    }

    #[test]
    fn preference_pairs_come_from_decided_replays_of_shared_requests_only() {
        let mut records = vec![
            session("ada", "How many data rows does orders.csv have?", "4", Verdict::Success),
            session("bo", "How many data rows does orders.csv have?", "4", Verdict::Success),
            session("ada", "Read my diary.txt and tell me my password hint", "x", Verdict::Success),
        ];
        let mut quoted = session("cy", "How many data rows does orders.csv have?", "4", Verdict::Success);
        quoted.replay.inputs.insert("orders.csv".into(), "id,item\n1,private widget for Cy\n".into());
        records.push(quoted);
        let ids: Vec<String> = records.iter().map(|r| r.session_id.clone()).collect();
        let candidates = [candidate_with(vec![
            replayed(&ids[0], (false, "5"), (true, "4")),
            replayed(&ids[1], (false, "5"), (true, "4")),
            replayed(&ids[2], (false, "no"), (true, "The hint is 'blue'")),
            replayed(&ids[3], (false, "1,private widget for Cy"), (true, "4")),
            replayed(&ids[0], (true, "4"), (true, "4")),
        ])];
        let found = preference_pairs(&candidates, &records, 2);
        assert_eq!(
            found.pairs,
            vec![PreferencePair {
                prompt: "How many data rows does orders.csv have?".into(),
                chosen: "4".into(),
                rejected: "5".into(),
                candidate: "cand-1".into(),
                users: 3,
            }],
            "the same pair from two users' sessions is one row"
        );
        assert_eq!(found.dropped["asked by fewer than min_users users"], 1);
        assert_eq!(found.dropped["an answer quotes the user's files"], 1);
        assert_eq!(found.dropped["both sides passed or both failed"], 1);
        let exported = serde_json::to_string(&found).unwrap();
        assert!(!exported.contains("diary") && !exported.contains("private widget"), "{exported}");
    }
}
