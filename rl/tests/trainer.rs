//! The trainer on the real default model, against the engine that serves it.

use std::sync::Arc;

use agent::engine::mistral::MistralRsEngine;
use agent::engine::{ChatMessage, Engine, GenerationRequest, Prompt};
use agent::model;
use rl::grpo::{GrpoConfig, GrpoRun};
use rl::policy::{BaseModel, LoraConfig, LoraTarget};
use rl::publish;
use rl::rollout::{PrefixEdit, SamplingConfig};
use rl::task::Task;
use rl::trainer::{OldPolicy, Trainer, TrainerConfig, TrainingSequence};

fn model_path() -> std::path::PathBuf {
    let path = model::default_model_path(&model::cache_dir());
    assert!(path.exists(), "{} is missing: run `skillhive model pull` (scripts/test does)", path.display());
    path
}

/// An engine serving `trainer`'s policy as published (every tensor F32), and the folder
/// its file lives in.
async fn published_engine(base: &BaseModel, trainer: &Trainer) -> (MistralRsEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.gguf");
    publish::write_policy(base, Some(&trainer.adapters), &path).unwrap();
    (publish::load_policy_engine(&path, "policy").await.unwrap(), dir)
}

#[tokio::test]
async fn the_trainer_recomputes_the_engines_sampled_logprobs() {
    // The engine serves the policy as published: every tensor F32.
    let base = Arc::new(BaseModel::load(&model_path()).unwrap());
    let trainer = Trainer::new(base.clone(), LoraConfig::default(), TrainerConfig::default(), 1).unwrap();
    let (engine, _dir) = published_engine(&base, &trainer).await;
    let prompt = engine.tokenize(&Prompt::Messages(vec![ChatMessage::user("Name a colour.")])).await.unwrap();
    let mut sequences = Vec::new();
    for seed in 0..3 {
        let mut request = GenerationRequest::new(Prompt::Tokens(prompt.clone()), 16);
        request.temperature = Some(1.0);
        request.seed = Some(seed);
        request.logprobs = Some(0);
        let choice = engine.generate(request).await.unwrap().choices.remove(0);
        assert_eq!(choice.token_logprobs.len(), choice.token_ids.len());
        sequences.push(TrainingSequence::completion(&prompt, &choice.token_ids, choice.token_logprobs, 0.0));
    }
    let started = std::time::Instant::now();
    let recomputed = trainer.logprobs(&sequences).unwrap();
    eprintln!("scored in {:?}", started.elapsed());
    for (sequence, trainer_values) in sequences.iter().zip(&recomputed) {
        assert_eq!(trainer_values.len(), sequence.engine_logprobs.len());
        for (i, (t, e)) in trainer_values.iter().zip(&sequence.engine_logprobs).enumerate() {
            assert!(*e <= 0.0, "token {i}: engine logprob {e} above 0");
            assert!((t - e).abs() < 1e-3, "token {i}: trainer {t}, engine {e}");
        }
    }
}

#[test]
fn every_adapter_tensor_gets_a_gradient() {
    let base = Arc::new(BaseModel::load(&model_path()).unwrap());
    let lora = LoraConfig { rank: 4, alpha: 8.0, targets: LoraTarget::ALL.to_vec() };
    let mut trainer = Trainer::new(base, lora, TrainerConfig::default(), 7).unwrap();
    let sequences = vec![
        TrainingSequence::completion(&[1, 4093, 198, 31530], &[549, 253, 1740], vec![0.0; 3], 1.0),
        TrainingSequence::completion(&[1, 4093, 198], &[31530, 549], vec![0.0; 2], -1.0),
    ];
    let started = std::time::Instant::now();
    let first = trainer.update(&sequences).unwrap();
    eprintln!("update in {:?}", started.elapsed());
    // B starts at zero, so only the B half has a gradient before the first update.
    assert_eq!(first.tensors, 30 * 7 * 2);
    assert_eq!(first.tensors_with_gradient, first.tensors / 2, "{first:?}");
    let second = trainer.update(&sequences).unwrap();
    assert_eq!(second.tensors_with_gradient, second.tensors);

    // A step whose groups teach nothing (every advantage 0) leaves the adapters alone;
    // momentum and weight decay do not move them.
    let before: Vec<Vec<f32>> = trainer.adapters.vars().iter().map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
    let nothing: Vec<TrainingSequence> = sequences.iter().map(|s| TrainingSequence { advantage: 0.0, ..s.clone() }).collect();
    let third = trainer.update(&nothing).unwrap();
    assert_eq!((third.grad_norm, trainer.step()), (0.0, 3));
    let after: Vec<Vec<f32>> = trainer.adapters.vars().iter().map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
    assert!(before == after, "an update without signal moved the adapters");
}

/// The toy task's GRPO run of the issue, as a user would check it: the share of rewarded
/// answers rises from the base model's measured rate to at least one half, and a run
/// resumed from a checkpoint makes exactly the update the uninterrupted run made.
#[tokio::test]
async fn grpo_on_the_real_model_raises_the_rewarded_probability_and_resumes_exactly() {
    let base = Arc::new(BaseModel::load(&model_path()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config =
        GrpoConfig { group_size: 16, seed: 3, sampling: SamplingConfig { max_new_tokens: 8, temperature: 1.0 }, ..Default::default() };
    let trainer_config = TrainerConfig { learning_rate: 5e-3, ..Default::default() };
    let trainer = Trainer::new(base.clone(), LoraConfig::default(), trainer_config, 11).unwrap();
    let mut run = GrpoRun::start(trainer, config.clone(), "demo", &dir.path().join("policies")).await.unwrap();
    let tasks = [Task::pick_a_number()];

    let mut rewards = Vec::new();
    let checkpoint = dir.path().join("checkpoint");
    let mut after_checkpoint = None;
    for step in 1..=5 {
        let report = run.step(&tasks).await.unwrap();
        eprintln!("{}", report.line());
        assert!(report.metrics.logprob_gap < 1e-3, "the engine sampled from another distribution than the trainer's: {}", report.line());
        rewards.push(report.success_rate);
        if step == 2 {
            run.trainer.save_checkpoint(&checkpoint).unwrap();
        }
        if step == 3 {
            after_checkpoint = Some((report.clone(), run.trainer.adapters.named_tensors().unwrap()));
        }
    }
    // The first step's samples come from the base model: its measured rate is the anchor.
    let base_rate = rewards[0];
    assert!(base_rate < 0.5, "the base model already answers 2-9 with rate {base_rate}: the task teaches nothing");
    let best = rewards[1..].iter().copied().fold(0.0, f64::max);
    assert!(best >= 0.5 && best > base_rate, "the share of answers from 2 to 9 did not rise to 0.5: {rewards:?}");

    // Resumed from the checkpoint after step 2, step 3 is the same update.
    let resumed = Trainer::resume(base, &checkpoint).unwrap();
    assert_eq!(resumed.step(), 2);
    let mut rerun = GrpoRun::start(resumed, config, "resumed", &dir.path().join("resumed")).await.unwrap();
    let report = rerun.step(&tasks).await.unwrap();
    let (uninterrupted, tensors) = after_checkpoint.unwrap();
    assert_eq!((report.metrics.reward_mean, report.loss), (uninterrupted.metrics.reward_mean, uninterrupted.loss));
    for (name, tensor) in rerun.trainer.adapters.named_tensors().unwrap() {
        let expected: Vec<f32> = tensors[&name].flatten_all().unwrap().to_vec1().unwrap();
        let got: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
        let largest = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert_eq!(largest, 0.0, "{name} differs after resuming by up to {largest}");
    }
}

#[test]
fn adapters_go_out_to_peft_and_come_back_unchanged() {
    let base = Arc::new(BaseModel::load(&model_path()).unwrap());
    let lora = LoraConfig { rank: 4, alpha: 8.0, targets: vec![LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::Down] };
    let mut trainer = Trainer::new(base.clone(), lora, TrainerConfig::default(), 5).unwrap();
    // One update, so that B is no longer zero and the q/k row permutation matters.
    trainer.update(&[TrainingSequence::completion(&[1, 4093, 198], &[31530, 549], vec![0.0; 2], 1.0)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    rl::peft::export(&trainer.adapters, &base, "HuggingFaceTB/SmolLM2-135M-Instruct", dir.path()).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["target_modules"], serde_json::json!(["q_proj", "k_proj", "v_proj", "down_proj"]));
    let imported = rl::peft::import(dir.path(), &base).unwrap();
    let before = trainer.adapters.named_tensors().unwrap();
    for (name, tensor) in imported.named_tensors().unwrap() {
        let a: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = before[&name].flatten_all().unwrap().to_vec1().unwrap();
        assert!(a == b, "{name} changed on the way through PEFT's format");
    }
}

#[tokio::test]
async fn a_branch_continues_from_the_exact_edited_prefix() {
    let base = Arc::new(BaseModel::load(&model_path()).unwrap());
    let trainer = Trainer::new(base.clone(), LoraConfig::default(), TrainerConfig::default(), 1).unwrap();
    let (engine, _dir) = published_engine(&base, &trainer).await;
    let prompt = engine.tokenize(&Prompt::Messages(vec![ChatMessage::user("Count from one to five.")])).await.unwrap();
    let sampling = SamplingConfig { max_new_tokens: 6, temperature: 1.0 };
    let first = rl::rollout::sample_group(&engine, &prompt, 1, &sampling, 9).await.unwrap().remove(0);
    let trajectory: Vec<u32> = prompt.iter().chain(&first.completion).copied().collect();

    // Branch: drop the sampled reply's last two tokens and insert the text " one, two,".
    let hint = engine.tokenize_text(" one, two,").await.unwrap();
    let at = trajectory.len() - 2;
    let edit = PrefixEdit::Insert { at, tokens: hint.clone() };
    let cut = PrefixEdit::Delete { start: at, end: trajectory.len() }.apply(&trajectory).unwrap();
    let (edited, samples) = rl::rollout::branch(&engine, &cut, &edit, 2, &sampling, 4).await.unwrap();
    assert_eq!(&edited[..at], &trajectory[..at]);
    assert_eq!(&edited[at..], hint.as_slice());
    // Each branch's logprobs are those of the edited context: teacher forcing agrees.
    for sample in samples {
        let scored = engine.score(&edited, &sample.completion).await.unwrap();
        for (s, l) in scored.iter().zip(&sample.logprobs) {
            assert!((s - l).abs() < 1e-3, "scored {s}, sampled with {l}");
        }
    }
}

/// Samples from an older policy: with the engine's logprobs as the old policy, a token
/// the policy now finds far likelier than when it was sampled is clipped and teaches
/// nothing, while the trainer's own recomputation (on-policy) never clips.
#[test]
fn the_behaviour_policy_ratio_clips_tokens_the_policy_moved_past() {
    let base = Arc::new(BaseModel::load(&model_path()).unwrap());
    let sequence =
        |engine_logprobs: Vec<f32>| TrainingSequence::completion(&[1, 4093, 198, 31530], &[549, 253, 1740], engine_logprobs, 1.0);
    let mut on_policy = Trainer::new(base.clone(), LoraConfig::default(), TrainerConfig::default(), 3).unwrap();
    let current = on_policy.logprobs(&[sequence(vec![0.0; 3])]).unwrap().remove(0);
    let stats = on_policy.update(&[sequence(current.clone())]).unwrap();
    assert_eq!(stats.clip_fraction, 0.0);
    assert!(stats.grad_norm > 0.0);

    // The tokens were sampled when they were e (2.7) times less likely than now: ratio
    // e > 1.2 with a positive advantage, so every token is clipped and the gradient is 0.
    let config = TrainerConfig { old_policy: OldPolicy::Behaviour, ..Default::default() };
    let mut off_policy = Trainer::new(base, LoraConfig::default(), config, 3).unwrap();
    let behaviour: Vec<f32> = current.iter().map(|l| l - 1.0).collect();
    let stats = off_policy.update(&[sequence(behaviour)]).unwrap();
    assert_eq!(stats.clip_fraction, 1.0);
    assert_eq!(stats.grad_norm, 0.0);
    assert!((stats.logprob_gap - 1.0).abs() < 1e-4);
}
