//! Agent episodes on the real default model: tool calls under the grammar, tool results
//! spliced in as tokens, and the trainer reading the same sequence.

use std::sync::Arc;

use agent::engine::{ChatMessage, Engine, Prompt};
use agent::model;
use rl::episode::{self, Episode, EpisodeEnd, EpisodeLimits, ResumeAt};
use rl::grpo::{GrpoConfig, GrpoRun, Method, Methods};
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

const SAMPLING: SamplingConfig = SamplingConfig { max_new_tokens: 40, temperature: 1.0 };
const LIMITS: EpisodeLimits = EpisodeLimits { max_turns: 3, max_tokens: 1024, result_chars: 200, predict_observations: false };

/// Episodes of `task` until one read notes.txt and replied again after reading it (the
/// untrained model does not always call a tool): all of them, and the index of that one.
async fn episode_that_read_the_file(engine: &dyn Engine, task: &Task) -> (Vec<Episode>, usize) {
    let mut episodes = Vec::new();
    for seed in 0..8 {
        let episode = episode::run_episode(engine, task, &SAMPLING, &LIMITS, seed).await.unwrap();
        eprintln!(
            "seed {seed}: {:?} after {} replies, reward {}: {:?}",
            episode.end,
            episode.turns.len(),
            episode.reward,
            episode.turns.iter().map(|t| &t.text).collect::<Vec<_>>()
        );
        let read_the_file = episode.turns.first().and_then(|t| t.result.as_deref()).is_some_and(|r| r.contains("falcon"));
        let replied_again = episode.turns.len() >= 2;
        episodes.push(episode);
        if read_the_file && replied_again {
            return (episodes.clone(), episodes.len() - 1);
        }
    }
    panic!("no episode in 8 read notes.txt and replied again");
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
    let (episodes, chosen) = episode_that_read_the_file(&engine, &task).await;
    let episode = &episodes[chosen];

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
        // The same values up to float rounding: the second call finds the prompt in the
        // engine's prefix cache and recomputes only its last token, on the block kernels
        // rather than the dense prompt path.
        assert_eq!(episode.logprobs.len(), sample.logprobs.len());
        for (e, s) in episode.logprobs.iter().zip(&sample.logprobs) {
            assert!((e - s).abs() < 1e-4, "episode logprob {e}, plain rollout {s}");
        }
        assert!(episode.sampled.iter().all(|s| *s));
        assert_eq!(episode.reward, task.verifier.reward(&sample.text));
        assert!(matches!(episode.end, EpisodeEnd::Answered | EpisodeEnd::Length));
    }
}

#[tokio::test]
async fn a_branch_resumes_an_agent_episode_part_way_through_a_later_reply_under_the_grammar() {
    let engine = publish::load_policy_engine(&model_path(), "base").await.unwrap();
    let task = read_task();
    let (episodes, chosen) = episode_that_read_the_file(&engine, &task).await;
    let source = &episodes[chosen];
    // Branch inside the reply after the tool result, keeping its first three tokens.
    let spans = source.reply_spans();
    assert_eq!(spans.len(), source.turns.len(), "one run of sampled tokens per reply");
    let second = spans[1].clone();
    assert!(second.len() > 3, "{second:?}");
    let point = second.start + 2;
    let at = ResumeAt { source, turn: 1, reply_prefix: &source.tokens[second.start..=point] };
    let branch = episode::resume_episode(&engine, &task, &SAMPLING, &LIMITS, at, 99).await.unwrap();
    let resumed = &branch.episode;
    eprintln!("branch: {:?}, reward {}: {:?}", resumed.end, resumed.reward, resumed.turns.iter().map(|t| &t.text).collect::<Vec<_>>());

    // Everything up to the point is the source's, token for token, and so is the first turn
    // (its tool ran again in the branch's own workspace).
    assert_eq!(branch.fixed, point + 1);
    assert_eq!(resumed.tokens[..=point], source.tokens[..=point]);
    assert_eq!(resumed.sampled[..=point], source.sampled[..=point]);
    assert_eq!(resumed.turns[0], source.turns[0]);
    // The kept reply tokens were taken, not sampled: the grammar accepted each on its first
    // look, so their logprobs are the model's, never above what sampling them reported.
    let before = source.sampled[..second.start].iter().filter(|s| **s).count();
    for k in before..before + 3 {
        assert!(resumed.logprobs[k] <= source.logprobs[k] + 2e-3, "token {k}: {} vs {}", resumed.logprobs[k], source.logprobs[k]);
        assert!(resumed.logprobs[k].is_finite());
    }
    // The reply was finished under the tool grammar: a call or an answer, never free text.
    assert_ne!(resumed.end, EpisodeEnd::Unparsed);
    assert!(resumed.turns[1].text.starts_with('{'), "{}", resumed.turns[1].text);
    assert_eq!(resumed.logprobs.len(), resumed.sampled.iter().filter(|s| **s).count());

    // Its training sequence trains only what the branch sampled itself.
    let sequence = branch.training_sequence(0.5);
    let own = resumed.sampled[branch.fixed..].iter().filter(|s| **s).count();
    assert!(own > 0);
    assert_eq!(sequence.trained_tokens(), own);
    assert_eq!(sequence.engine_logprobs.len(), own);
    let first_trained = sequence.mask.iter().position(|m| *m).unwrap();
    assert_eq!(first_trained, resumed.prompt.len() + branch.fixed);
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
    let combined = Methods::parse("actguide+role-agent+appo").unwrap();
    let runs: Vec<Methods> =
        [Method::ActGuide, Method::RoleAgent, Method::Appo, Method::Resum].map(Methods::from).into_iter().chain([combined]).collect();
    for methods in runs {
        let trainer = Trainer::new(base.clone(), LoraConfig::default(), TrainerConfig::default(), 1).unwrap();
        let config = GrpoConfig {
            group_size: 2,
            sampling: SamplingConfig { max_new_tokens: 32, temperature: 1.0 },
            limits: EpisodeLimits { max_turns: 2, ..Default::default() },
            methods: methods.clone(),
            seed: 5,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut run = GrpoRun::start(trainer, config, "method", dir.path()).await.unwrap();
        let tasks = match methods.name().as_str() {
            "appo" | "resum" => vec![Task::pick_a_number(), read_task()],
            _ => vec![hidden_file_task(), read_task()],
        };
        let report = run.step(&tasks).await.unwrap();
        eprintln!("{}: {}", methods.name(), report.line());
        let metric = |key: &str| report.method_metrics.get(key).copied();
        assert!(report.trained_tokens > 0);
        match methods.name().as_str() {
            "actguide" => {
                // The hidden file's group earned nothing: it was searched and re-sampled
                // with at most the one-step plan.
                assert!(metric("hard_groups").unwrap() >= 1.0, "{:?}", report.method_metrics);
                assert!(metric("probes").unwrap() >= 1.0);
                assert!(metric("hint_length_sum").unwrap() <= metric("hard_groups").unwrap());
            }
            "appo" => {
                // Each group branched at two points, the agent task's inside its episodes.
                assert_eq!(metric("branch_points"), Some(4.0), "{:?}", report.method_metrics);
                assert!(metric("branch_reward_sum").unwrap() <= 4.0);
            }
            "resum" => {
                // Two injected phrases on the single-reply task (the untrained model never
                // summarizes on its own), and more where an agent episode ended with an
                // answer to inject into; each a trained branch.
                let artifacts = metric("artifact_points").unwrap();
                assert!((2.0..=4.0).contains(&artifacts), "{:?}", report.method_metrics);
                assert_eq!(metric("branches"), Some(artifacts + metric("natural_points").unwrap()));
            }
            "actguide+role-agent+appo" => {
                // Each method did its part in the one step: the hidden file's group was
                // guided (and so not branched), rewards were shaped, tasks reweighted, and
                // the unguided group branched inside its episodes.
                assert!(metric("hard_groups").unwrap() >= 1.0, "{:?}", report.method_metrics);
                assert!(metric("shaped_reward_sum").is_some());
                assert!(metric("task_weight_0").is_some());
                let guided = metric("guided_groups_without_branches").unwrap_or(0.0);
                assert_eq!(metric("branch_points").unwrap_or(0.0), 2.0 * (2.0 - guided), "{:?}", report.method_metrics);
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
