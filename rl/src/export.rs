//! Data for scale-out trainers, as JSON Lines rows in their documented shapes.
//!
//! - verl's RL datasets: `data_source`, `prompt` (chat messages), `ability`,
//!   `reward_model` (`style`, `ground_truth`), `extra_info` (`split`, `index`, and what a
//!   reward function needs: here the task's verifier).
//! - TRL, conversational: GRPO prompts (`prompt`, plus extra columns that TRL passes to
//!   reward functions as keyword arguments), KTO's unpaired preferences (`prompt`,
//!   `completion`, `label`), SFT conversations (`messages`, `tools`), and DPO preference
//!   pairs (`prompt`, `chosen`, `rejected`) from the evolver's A/B replays.

use serde_json::{json, Value};

use crate::episode::Episode;
use crate::harvest::{PreferencePair, RatedAnswer};
use crate::task::{Task, Verifier};
use crate::trainer::{OldPolicy, TrainingSequence};

/// The formats `skillhive rl export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Verl,
    VerlAgentLoop,
    TrlGrpo,
    TrlKto,
    TrlSft,
    TrlDpo,
}

impl Format {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "verl" => Some(Self::Verl),
            "verl-agent-loop" => Some(Self::VerlAgentLoop),
            "trl-grpo" => Some(Self::TrlGrpo),
            "trl-kto" => Some(Self::TrlKto),
            "trl-sft" => Some(Self::TrlSft),
            "trl-dpo" => Some(Self::TrlDpo),
            _ => None,
        }
    }
}

fn messages(task: &Task) -> Value {
    Value::Array(task.messages.iter().map(|m| json!({ "role": m.role().as_str(), "content": m.content })).collect())
}

/// What a rule-based reward compares an answer with.
fn ground_truth(verifier: &Verifier) -> String {
    match verifier {
        Verifier::ExactAnswer { answer } => answer.clone(),
        Verifier::Contains { text } => text.clone(),
        Verifier::IntegerInRange { min, max, .. } => format!("{min}..={max}"),
        Verifier::Number { value } => value.to_string(),
        Verifier::CalledTool { name } => name.clone(),
        Verifier::FileContains { text, .. } => text.clone(),
        // A composite check has no single truth to compare with: its reward function
        // reads the verifier in `extra_info`.
        Verifier::All { .. } => serde_json::to_string(verifier).unwrap_or_default(),
    }
}

/// One row of a verl RL dataset.
pub fn verl_row(task: &Task, index: usize, split: &str) -> Value {
    let mut row = json!({
        "data_source": format!("skillhive/{}", task.id),
        "prompt": messages(task),
        "ability": "agent",
        "reward_model": { "style": "rule", "ground_truth": ground_truth(&task.verifier) },
        "extra_info": {
            "split": split,
            "index": index,
            "task_id": task.id,
            "verifier": serde_json::to_value(&task.verifier).unwrap_or(Value::Null),
        },
    });
    // An agent task runs in verl's tool agent loop, whose tools are created per sample
    // with these arguments (the workspace's files).
    if task.is_agentic() {
        row["agent_name"] = json!("tool_agent");
        row["extra_info"]["need_tools_kwargs"] = json!(true);
        row["extra_info"]["tools_kwargs"] =
            task.tools.iter().map(|tool| (tool.clone(), json!({ "create_kwargs": { "files": task.files } }))).collect();
    }
    row
}

/// One episode as verl's agent loop hands it to the trainer (`AgentLoopOutput`): token
/// ids of the prompt and of the response, the response mask (1 for tokens the policy
/// generated, 0 for tool results), the rollout's logprob of each response token (0 where
/// the mask is 0), the reward, and the number of chat turns (user, assistant and tool).
pub fn verl_agent_loop_row(task: &Task, episode: &Episode) -> Value {
    let mut sampled = episode.logprobs.iter();
    let logprobs: Vec<f32> = episode.sampled.iter().map(|s| if *s { sampled.next().copied().unwrap_or(0.0) } else { 0.0 }).collect();
    let tool_results = episode.turns.iter().filter(|turn| turn.result.is_some()).count();
    json!({
        "prompt_ids": episode.prompt,
        "response_ids": episode.tokens,
        "response_mask": episode.sampled.iter().map(|s| u8::from(*s)).collect::<Vec<_>>(),
        "response_logprobs": logprobs,
        "reward_score": episode.reward,
        "num_turns": task.messages.len() + episode.turns.len() + tool_results,
        "metrics": { "generate_sequences": 0.0, "tool_calls": 0.0 },
        "extra_fields": { "task_id": task.id, "seed": episode.seed, "end": episode.end },
    })
}

/// A sequence a method built (APPO's rollouts with per-token advantages, its branches and
/// ReSum's, ActGuide's guided samples under the unguided prompt) in the same shape, so that
/// a cluster trains on exactly what the method decided: the prompt is everything before
/// the first trained token, the per-token advantages and the ratio's old policy ride in
/// `extra_fields`.
pub fn verl_sequence_row(task_id: &str, sequence: &TrainingSequence) -> Value {
    let prompt_len = sequence.mask.iter().position(|m| *m).unwrap_or(sequence.tokens.len());
    let mut trained = 0;
    let (mut logprobs, mut advantages) = (Vec::new(), Vec::new());
    for sampled in &sequence.mask[prompt_len..] {
        if *sampled {
            logprobs.push(sequence.engine_logprobs.get(trained).copied().unwrap_or(0.0) as f64);
            advantages.push(sequence.advantage_of(trained));
            trained += 1;
        } else {
            logprobs.push(0.0);
            advantages.push(0.0);
        }
    }
    let old_policy = match sequence.old_policy {
        Some(OldPolicy::Behaviour) => "behaviour",
        _ => "recomputed",
    };
    json!({
        "prompt_ids": &sequence.tokens[..prompt_len],
        "response_ids": &sequence.tokens[prompt_len..],
        "response_mask": sequence.mask[prompt_len..].iter().map(|m| u8::from(*m)).collect::<Vec<_>>(),
        "response_logprobs": logprobs,
        "metrics": { "generate_sequences": 0.0, "tool_calls": 0.0 },
        "extra_fields": { "task_id": task_id, "advantages": advantages, "old_policy": old_policy },
    })
}

/// One row of a TRL GRPO dataset; `ground_truth` and `verifier` reach reward functions.
pub fn trl_grpo_row(task: &Task) -> Value {
    json!({
        "prompt": messages(task),
        "task_id": task.id,
        "ground_truth": ground_truth(&task.verifier),
        "verifier": serde_json::to_value(&task.verifier).unwrap_or(Value::Null),
    })
}

/// One row of a TRL KTO dataset (unpaired preference).
pub fn trl_kto_row(rated: &RatedAnswer) -> Value {
    json!({
        "prompt": [{ "role": "user", "content": rated.prompt }],
        "completion": [{ "role": "assistant", "content": rated.answer }],
        "label": rated.desirable,
    })
}

/// One row of a TRL DPO dataset (conversational preference: a prompt, the chosen and the
/// rejected completion).
pub fn trl_dpo_row(pair: &PreferencePair) -> Value {
    json!({
        "prompt": [{ "role": "user", "content": pair.prompt }],
        "chosen": [{ "role": "assistant", "content": pair.chosen }],
        "rejected": [{ "role": "assistant", "content": pair.rejected }],
    })
}

/// One row of a TRL SFT dataset: the task's conversation answered with its checked
/// answer (only tasks whose check is an exact answer have one).
pub fn trl_sft_row(task: &Task) -> Option<Value> {
    let Verifier::ExactAnswer { answer } = &task.verifier else { return None };
    let mut conversation = messages(task);
    conversation.as_array_mut()?.push(json!({ "role": "assistant", "content": answer }));
    Some(json!({ "messages": conversation, "tools": [] }))
}

/// Rows as JSON Lines.
pub fn to_jsonl(rows: &[Value]) -> String {
    rows.iter().map(|row| format!("{row}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::{EpisodeEnd, Turn};

    /// The JSON type of a field as the documented schemas name them.
    fn kind(value: &Value) -> &'static str {
        match value {
            Value::String(_) => "string",
            Value::Number(n) if n.is_u64() || n.is_i64() => "int",
            Value::Number(_) => "float",
            Value::Bool(_) => "bool",
            Value::Array(_) => "list",
            Value::Object(_) => "struct",
            Value::Null => "null",
        }
    }

    /// Checks a row against `(path, type)` pairs; `[]` in a path checks every element.
    fn check(row: &Value, schema: &[(&str, &str)]) {
        for (path, expected) in schema {
            let mut values = vec![row];
            for part in path.split('.') {
                values = values
                    .into_iter()
                    .flat_map(|v| if part == "[]" { v.as_array().map(|a| a.iter().collect()).unwrap_or_default() } else { vec![&v[part]] })
                    .collect();
            }
            assert!(!values.is_empty(), "{path} is missing in {row}");
            for value in values {
                assert_eq!(kind(value), *expected, "{path} in {row}");
            }
        }
    }

    fn task() -> Task {
        Task {
            id: "capital".into(),
            messages: vec![agent::engine::ChatMessage::user("What is the capital of France?")],
            verifier: Verifier::ExactAnswer { answer: "Paris".into() },
            tools: Vec::new(),
            files: Default::default(),
            actions: Vec::new(),
        }
    }

    #[test]
    fn rows_have_the_fields_and_types_the_trainers_document() {
        // verl's RL dataset columns (its data preparation examples and parquet features).
        check(
            &verl_row(&task(), 3, "train"),
            &[
                ("data_source", "string"),
                ("prompt", "list"),
                ("prompt.[].role", "string"),
                ("prompt.[].content", "string"),
                ("ability", "string"),
                ("reward_model", "struct"),
                ("reward_model.style", "string"),
                ("reward_model.ground_truth", "string"),
                ("extra_info", "struct"),
                ("extra_info.split", "string"),
                ("extra_info.index", "int"),
            ],
        );
        // TRL's conversational prompt-only (GRPO) and unpaired preference (KTO) formats.
        check(&trl_grpo_row(&task()), &[("prompt", "list"), ("prompt.[].role", "string"), ("prompt.[].content", "string")]);
        let rated = RatedAnswer { prompt: "What is the capital of France?".into(), answer: "Paris".into(), desirable: true, users: 3 };
        check(
            &trl_kto_row(&rated),
            &[("prompt.[].role", "string"), ("prompt.[].content", "string"), ("completion.[].role", "string"), ("label", "bool")],
        );
        assert_eq!(trl_kto_row(&rated)["completion"][0]["role"], "assistant");
        // TRL's conversational language-modeling format (SFT), with tools.
        let sft = trl_sft_row(&task()).unwrap();
        check(&sft, &[("messages", "list"), ("messages.[].role", "string"), ("messages.[].content", "string"), ("tools", "list")]);
        assert_eq!(sft["messages"][1]["content"], "Paris");
        let open = Task { verifier: Verifier::Contains { text: "a".into() }, ..task() };
        assert!(trl_sft_row(&open).is_none(), "a task without an exact answer has no SFT target");
        // verl's agent-loop output (AgentLoopOutput), one row per episode.
        let episode = Episode {
            seed: 7,
            prompt: vec![1, 2, 3],
            tokens: vec![10, 11, 20, 21, 12],
            sampled: vec![true, true, false, false, true],
            logprobs: vec![-0.5, -0.25, -1.0],
            entropies: vec![0.5, 0.5, 0.5],
            turns: vec![
                Turn { text: "call".into(), call: None, result: Some("result".into()) },
                Turn { text: "answer".into(), call: None, result: None },
            ],
            answer: Some("Paris".into()),
            end: EpisodeEnd::Answered,
            reward: 1.0,
        };
        let row = verl_agent_loop_row(&task(), &episode);
        check(
            &row,
            &[
                ("prompt_ids.[]", "int"),
                ("response_ids.[]", "int"),
                ("response_mask.[]", "int"),
                ("response_logprobs.[]", "float"),
                ("reward_score", "float"),
                ("num_turns", "int"),
                ("metrics.generate_sequences", "float"),
                ("metrics.tool_calls", "float"),
            ],
        );
        assert_eq!(row["response_mask"], json!([1, 1, 0, 0, 1]));
        assert_eq!(row["response_logprobs"], json!([-0.5, -0.25, 0.0, 0.0, -1.0]), "tool tokens carry no logprob");
        assert_eq!(row["num_turns"], 4, "user, assistant, tool, assistant");
        // A method's sequence: the prompt ends where training starts; advantages per token.
        let sequence = TrainingSequence {
            tokens: vec![1, 2, 3, 10, 20, 11],
            mask: vec![false, false, false, true, false, true],
            engine_logprobs: vec![-0.1, -0.2],
            advantage: 0.5,
            token_advantages: vec![0.75, 0.25],
            old_policy: Some(OldPolicy::Behaviour),
        };
        let row = verl_sequence_row("t", &sequence);
        check(
            &row,
            &[("prompt_ids.[]", "int"), ("response_ids.[]", "int"), ("response_mask.[]", "int"), ("response_logprobs.[]", "float")],
        );
        assert_eq!((row["prompt_ids"].clone(), row["response_mask"].clone()), (json!([1, 2, 3]), json!([1, 0, 1])));
        assert_eq!(row["extra_fields"]["advantages"], json!([0.75, 0.0, 0.25]));
        assert_eq!(row["extra_fields"]["old_policy"], "behaviour");
        // TRL's conversational preference format (DPO).
        let pair = PreferencePair { prompt: "q".into(), chosen: "4".into(), rejected: "5".into(), candidate: "c".into(), users: 2 };
        check(
            &trl_dpo_row(&pair),
            &[
                ("prompt.[].role", "string"),
                ("prompt.[].content", "string"),
                ("chosen.[].content", "string"),
                ("rejected.[].content", "string"),
            ],
        );
        assert_eq!(trl_dpo_row(&pair)["chosen"][0]["role"], "assistant");
        let lines = to_jsonl(&[verl_row(&task(), 0, "train"), verl_row(&task(), 1, "test")]);
        assert_eq!(lines.lines().count(), 2);
        assert!(lines.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
    }
}
