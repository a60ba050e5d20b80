//! Agent episodes on the real default model: tool calls under the grammar, tool results
//! spliced in as tokens, and the trainer reading the same sequence.

use std::sync::Arc;

use agent::engine::{ChatMessage, Engine, Prompt};
use agent::model;
use rl::episode::{self, EpisodeEnd, EpisodeLimits};
use rl::grpo::{GrpoConfig, GrpoRun, Method};
use rl::methods::actguide::Action;
use rl::policy::{BaseModel, LoraConfig};
use rl::publish;
use rl::rollout::{self, SamplingConfig};
use rl::task::{Task, Verifier};
use rl::trainer::{Trainer, TrainerConfig};

fn model_path() -> std::path::PathBuf {
    let path = model::default_model_path(&model::cache_dir());
    assert!(path.exists(), "{} is missing: run `skillhive model pull` (scripts/test does)", path.display());
    path
}

fn read_task() -> Task {
    Task {
        id: "code-word".into(),
        messages: vec![ChatMessage::user("Read the file notes.txt, then answer with the code word written in it.")],
        verifier: Verifier::Contains { text: "falcon".into() },
        tools: vec!["read".into(), "ls".into()],
        files: [("notes.txt".to_string(), "The code word is falcon.\n".to_string())].into(),
        actions: Vec::new(),
    }
}

/// Where `needle` occurs in `haystack` as a contiguous run.
fn find(haystack: &[u32], needle: &[u32]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[tokio::test]
async fn an_agent_episode_trains_on_its_own_replies_and_reads_tool_results_as_given_tokens() {
    let base = Arc::new(BaseModel::load(&model_path()).unwrap());
    let trainer = Trainer::new(base.clone(), LoraConfig::default(), TrainerConfig::default(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.gguf");
    publish::write_policy(&base, Some(&trainer.adapters), &path).unwrap();
    let engine = publish::load_policy_engine(&path, "policy").await.unwrap();

    let task = read_task();
    let sampling = SamplingConfig { max_new_tokens: 40, temperature: 1.0 };
    let limits = EpisodeLimits { max_turns: 3, max_tokens: 1024, result_chars: 200, ..Default::default() };
    // The untrained model does not always call a tool; take the first episode that read
    // the file and replied again after reading it.
    let mut episodes = Vec::new();
    let mut chosen = None;
    for seed in 0..8 {
        let episode = episode::run_episode(&engine, &task, &sampling, &limits, seed).await.unwrap();
        eprintln!(
            "seed {seed}: {:?} after {} replies, reward {}: {:?}",
            episode.end,
            episode.turns.len(),
            episode.reward,
            episode.turns.iter().map(|t| &t.text).collect::<Vec<_>>()
        );
        let read_the_file = episode.turns.first().and_then(|t| t.result.as_deref()).is_some_and(|r| r.contains("falcon"));
        episodes.push(episode);
        if read_the_file && episodes.last().unwrap().turns.len() >= 2 {
            chosen = Some(episodes.len() - 1);
            break;
        }
    }
    let episode = &episodes[chosen.expect("no episode in 8 read notes.txt and replied again")];

    // The policy's tokens and the tool's are told apart, one logprob per sampled token.
    let sampled = episode.sampled.iter().filter(|s| **s).count();
    assert_eq!(episode.logprobs.len(), sampled);
    assert!(sampled < episode.tokens.len(), "the tool result is in the sequence, not trained on");
    // The file's text reaches the policy as the tokenizer writes it, inside a span that
    // is not trained on.
    let content = engine.tokenize_text("The code word is falcon.").await.unwrap();
    let at = find(&episode.tokens, &content).expect("the file's tokens are in the episode");
    assert!(episode.sampled[at..at + content.len()].iter().all(|s| !s), "the tool result's tokens are masked out");
    // The first reply is exactly the tokens sampled, never re-tokenized: the episode starts
    // with them and the trainer's sequence is prompt + episode.
    let sequence = episode.training_sequence(1.0);
    assert_eq!(sequence.tokens.len(), episode.prompt.len() + episode.tokens.len());
    assert_eq!(sequence.trained_tokens(), sampled);

    // The trainer recomputes every sampled token without the grammar's mask. Masking only
    // removes other tokens and renormalizes, so the engine's logprob is never below the
    // trainer's; where the grammar allowed every likely token the two agree.
    let recomputed = trainer.logprobs(std::slice::from_ref(&sequence)).unwrap().remove(0);
    assert_eq!(recomputed.len(), sampled);
    let mut gap = 0.0;
    for (i, (t, e)) in recomputed.iter().zip(&episode.logprobs).enumerate() {
        assert!(*e <= 1e-6, "token {i}: engine logprob {e} above 0");
        assert!(e - t > -2e-3, "token {i}: the masked engine logprob {e} is below the unmasked trainer's {t}");
        gap += (e - t) as f64;
    }
    eprintln!("grammar gap: mean engine − trainer logprob {:.4} over {sampled} tokens", gap / sampled as f64);
}

#[tokio::test]
async fn a_task_without_tools_samples_exactly_what_plain_rollouts_sample() {
    let engine = publish::load_policy_engine(&model_path(), "base").await.unwrap();
    let task = Task::pick_a_number();
    let sampling = SamplingConfig { max_new_tokens: 6, temperature: 1.0 };
    let episodes = episode::run_group(&engine, &task, 3, &sampling, &EpisodeLimits::default(), 11).await.unwrap();
    let prompt = engine.tokenize(&Prompt::Messages(task.messages.clone())).await.unwrap();
    let samples = rollout::sample_group(&engine, &prompt, 3, &sampling, 11).await.unwrap();
    for (episode, sample) in episodes.iter().zip(&samples) {
        assert_eq!(episode.prompt, prompt);
        assert_eq!(episode.tokens, sample.completion);
        assert_eq!(episode.logprobs, sample.logprobs);
        assert!(episode.sampled.iter().all(|s| *s));
        assert_eq!(episode.reward, task.verifier.reward(&sample.text));
        assert!(matches!(episode.end, EpisodeEnd::Answered | EpisodeEnd::Length));
    }
}

/// A task no policy solves alone: the file's path is only in the reference plan, and the
/// policy cannot list the workspace.
fn hidden_file_task() -> Task {
    Task {
        id: "hidden-code-word".into(),
        messages: vec![ChatMessage::user("A file holds a code word. Read it and answer with the code word.")],
        verifier: Verifier::Contains { text: "falcon".into() },
        tools: vec!["read".into()],
        files: [("vault/zq-7731.txt".to_string(), "falcon\n".to_string())].into(),
        actions: vec![Action { tool: "read".into(), arguments: r#"{"path": "vault/zq-7731.txt"}"#.into() }],
    }
}

#[tokio::test]
async fn each_method_runs_a_step_on_the_real_model_and_reports_what_it_did() {
    let base = Arc::new(BaseModel::load(&model_path()).unwrap());
    for method in [Method::ActGuide, Method::RoleAgent, Method::Appo, Method::Resum] {
        let trainer = Trainer::new(base.clone(), LoraConfig::default(), TrainerConfig::default(), 1).unwrap();
        let config = GrpoConfig {
            group_size: 2,
            sampling: SamplingConfig { max_new_tokens: 32, temperature: 1.0 },
            limits: EpisodeLimits { max_turns: 2, ..Default::default() },
            method,
            seed: 5,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut run = GrpoRun::start(trainer, config, "method", dir.path()).await.unwrap();
        let tasks = match method {
            Method::Appo | Method::Resum => vec![Task::pick_a_number(), read_task()],
            _ => vec![hidden_file_task(), read_task()],
        };
        let report = run.step(&tasks).await.unwrap();
        eprintln!("{method:?}: {}", report.line());
        let metric = |key: &str| report.method_metrics.get(key).copied();
        assert!(report.trained_tokens > 0);
        match method {
            Method::ActGuide => {
                // The hidden file's group earned nothing: it was searched and re-sampled
                // with at most the one-step plan.
                assert!(metric("hard_groups").unwrap() >= 1.0, "{:?}", report.method_metrics);
                assert!(metric("probes").unwrap() >= 1.0);
                assert!(metric("hint_length_sum").unwrap() <= metric("hard_groups").unwrap());
            }
            Method::Appo => {
                // The single-reply task branched at two points; the agent task did not.
                assert_eq!(metric("branch_points"), Some(2.0), "{:?}", report.method_metrics);
                assert_eq!(metric("agent_tasks_without_branches"), Some(1.0));
                assert!(metric("branch_reward_sum").unwrap() <= 2.0);
            }
            Method::Resum => {
                // Two injected phrases on the single-reply task (the untrained model never
                // summarizes on its own), each a trained branch.
                assert_eq!(metric("artifact_points"), Some(2.0), "{:?}", report.method_metrics);
                assert_eq!(metric("branches"), Some(2.0 + metric("natural_points").unwrap()));
                assert_eq!(metric("agent_tasks_without_branches"), Some(1.0));
            }
            _ => {
                // Every episode's reward was shaped (or kept), and each failure raised a
                // task's weight above 1.
                assert!(metric("shaped_reward_sum").is_some(), "{:?}", report.method_metrics);
                let weights: Vec<f64> = (0..2).map(|t| metric(&format!("task_weight_{t}")).unwrap()).collect();
                let failures = report.metrics.reward_min <= 0.0;
                assert_eq!(weights.iter().any(|w| *w > 1.0), failures, "{weights:?}");
            }
        }
    }
}
