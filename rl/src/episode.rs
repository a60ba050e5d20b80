//! Agent episodes, token in and token out: the policy replies, calls the same tools users'
//! agents call (in a fresh workspace per episode), reads their results, and replies again
//! until it answers. The sequence a trainer sees is exactly what the engine saw: the
//! policy's sampled tokens are never re-tokenized, and each tool result is rendered by the
//! model's own chat template and spliced in as tokens the loss masks out.
//!
//! Tool calls are sampled under the tool protocol's JSON grammar (as when serving users),
//! which masks the logits. The engine's logprobs are then those of the masked, renormalized
//! distribution and never lower than the unmasked policy's, which the trainer computes:
//! the difference shows in the step's `gap` metric. The PPO ratio is taken between the
//! trainer's own logprobs (old and new policy, both unmasked), so the grammar acts as part
//! of the environment and does not bias the ratio.

use std::collections::BTreeMap;

use agent::agent_loop::{self, AgentConfig, StaticSkills};
use agent::engine::tool_protocol::{self, ParsedReply};
use agent::engine::{ChatMessage, Engine, FinishReason, Prompt, Role, ToolCall, ToolChoice, ToolSpec};
use agent::workspace::Workspace;
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::rollout::{self, sample_seed, SamplingConfig};
use crate::task::{Outcome, Task};
use crate::trainer::TrainingSequence;

/// How long an agent episode may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpisodeLimits {
    /// Model replies per episode at most.
    pub max_turns: usize,
    /// Tokens of the whole sequence (prompt, replies and tool results) at most: what the
    /// trainer's memory holds per sequence.
    pub max_tokens: usize,
    /// Characters of one tool result shown to the policy at most.
    pub result_chars: usize,
    /// Whether a tool call may also say what it expects the tool to return
    /// (`predict_next`, Role-Agent's World-In-Agent); off, the grammar has no such field.
    pub predict_observations: bool,
}

impl Default for EpisodeLimits {
    fn default() -> Self {
        Self { max_turns: 4, max_tokens: 1024, result_chars: 600, predict_observations: false }
    }
}

/// The instruction that asks for predictions, appended to the system prompt.
const PREDICT_INSTRUCTION: &str = "With a tool call, add \"predict_next\": what you expect the tool to return.";

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeEnd {
    /// The policy gave its final answer (or, without tools, its one reply ended).
    Answered,
    /// A reply reached the per-reply token cap.
    Length,
    /// A reply did not parse as an action (only without the grammar, from a remote engine).
    Unparsed,
    /// The policy was still calling tools after `max_turns` replies.
    TurnLimit,
    /// The next reply would not fit in `max_tokens`.
    ContextLimit,
}

/// One reply of the policy and, for a tool call, what the tool returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub text: String,
    pub call: Option<ToolCall>,
    pub result: Option<String>,
}

/// One rollout of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub seed: u64,
    /// The task's conversation as the engine tokenized it.
    pub prompt: Vec<u32>,
    /// Everything after the prompt: the policy's replies and the tool results between them.
    pub tokens: Vec<u32>,
    /// `true` where the policy sampled `tokens[i]`; tool-result tokens are `false`.
    pub sampled: Vec<bool>,
    /// The engine's logprob of each sampled token, in order.
    pub logprobs: Vec<f32>,
    /// The entropy of the distribution each sampled token was drawn from, in order.
    #[serde(default)]
    pub entropies: Vec<f32>,
    pub turns: Vec<Turn>,
    pub answer: Option<String>,
    pub end: EpisodeEnd,
    pub reward: f64,
}

impl Episode {
    /// The sequence the trainer learns from, with this episode's advantage on every token
    /// the policy sampled.
    pub fn training_sequence(&self, advantage: f64) -> TrainingSequence {
        let tokens = self.prompt.iter().chain(&self.tokens).copied().collect();
        let mask = std::iter::repeat_n(false, self.prompt.len()).chain(self.sampled.iter().copied()).collect();
        TrainingSequence { tokens, mask, engine_logprobs: self.logprobs.clone(), advantage, token_advantages: Vec::new(), old_policy: None }
    }

    /// The token ranges of the policy's replies, in order: each reply is one run of
    /// sampled tokens, and tool results (never empty) stand between them.
    pub fn reply_spans(&self) -> Vec<std::ops::Range<usize>> {
        let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, sampled) in self.sampled.iter().enumerate() {
            match spans.last_mut() {
                Some(span) if *sampled && span.end == i => span.end = i + 1,
                _ if *sampled => spans.push(i..i + 1),
                _ => {}
            }
        }
        spans
    }

    /// The position in `tokens` of each sampled token, in order: trained token `k` is
    /// `tokens[sampled_positions()[k]]`.
    pub fn sampled_positions(&self) -> Vec<usize> {
        self.sampled.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i).collect()
    }

    pub fn calls(&self) -> Vec<ToolCall> {
        self.turns.iter().filter_map(|turn| turn.call.clone()).collect()
    }

    /// Appends tokens: the policy's (with their logprobs and entropies) or a tool's.
    fn push(&mut self, tokens: &[u32], sampled: Option<(&[f32], &[f32])>) {
        self.tokens.extend_from_slice(tokens);
        self.sampled.extend(std::iter::repeat_n(sampled.is_some(), tokens.len()));
        if let Some((logprobs, entropies)) = sampled {
            self.logprobs.extend_from_slice(logprobs);
            self.entropies.extend(entropies.iter().copied().chain(std::iter::repeat(0.0)).take(tokens.len()));
        }
    }
}

/// `group` episodes of `task`, seeded from `group_seed` as [`crate::rollout::sample_group`]
/// seeds its samples (so a task without tools gets exactly the same samples).
pub async fn run_group(
    engine: &dyn Engine,
    task: &Task,
    group: usize,
    sampling: &SamplingConfig,
    limits: &EpisodeLimits,
    group_seed: u64,
) -> anyhow::Result<Vec<Episode>> {
    let episodes = (0..group).map(|index| run_episode(engine, task, sampling, limits, sample_seed(group_seed, index)));
    futures::future::try_join_all(episodes).await
}

/// One episode of `task` with `seed`.
pub async fn run_episode(
    engine: &dyn Engine,
    task: &Task,
    sampling: &SamplingConfig,
    limits: &EpisodeLimits,
    seed: u64,
) -> anyhow::Result<Episode> {
    drive(engine, task, sampling, limits, seed, None).await
}

/// An episode that left another at one of its replies: APPO's and ReSum's branches.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub episode: Episode,
    /// Tokens of `episode.tokens` taken from the source episode or an edit; the branch's
    /// own samples start here.
    pub fixed: usize,
}

impl Branch {
    /// The sequence that trains the branch's own samples only, with `advantage`: the shared
    /// prefix is trained in its source episode, and an edit (an injected phrase) in none.
    pub fn training_sequence(&self, advantage: f64) -> TrainingSequence {
        let episode = &self.episode;
        let tokens = episode.prompt.iter().chain(&episode.tokens).copied().collect();
        let mask: Vec<bool> = std::iter::repeat_n(false, episode.prompt.len())
            .chain(episode.sampled.iter().enumerate().map(|(i, sampled)| *sampled && i >= self.fixed))
            .collect();
        let fixed_samples = episode.sampled[..self.fixed].iter().filter(|s| **s).count();
        TrainingSequence {
            tokens,
            mask,
            engine_logprobs: episode.logprobs[fixed_samples..].to_vec(),
            advantage,
            token_advantages: Vec::new(),
            old_policy: None,
        }
    }
}

/// Where a branch leaves an episode: `source` (an episode of the same task) resumed at
/// its reply `turn`, which now begins with `reply_prefix`.
#[derive(Debug, Clone, Copy)]
pub struct ResumeAt<'a> {
    pub source: &'a Episode,
    pub turn: usize,
    pub reply_prefix: &'a [u32],
}

/// An episode resumed `at` a reply of another: the reply is sampled on from its new
/// beginning with `seed`, under the same grammar, and later turns as in any episode.
/// Earlier turns are kept token for token, and their tool calls run again in a fresh
/// workspace so that later tools see the files they left.
pub async fn resume_episode(
    engine: &dyn Engine,
    task: &Task,
    sampling: &SamplingConfig,
    limits: &EpisodeLimits,
    at: ResumeAt<'_>,
    seed: u64,
) -> anyhow::Result<Branch> {
    let span = at.source.reply_spans().get(at.turn).cloned().with_context(|| format!("the episode has no reply {}", at.turn))?;
    let episode = drive(engine, task, sampling, limits, seed, Some(at)).await?;
    Ok(Branch { episode, fixed: span.start + at.reply_prefix.len() })
}

async fn drive(
    engine: &dyn Engine,
    task: &Task,
    sampling: &SamplingConfig,
    limits: &EpisodeLimits,
    seed: u64,
    resume: Option<ResumeAt<'_>>,
) -> anyhow::Result<Episode> {
    if !task.is_agentic() {
        return single_reply(engine, task, sampling, seed, resume.map(|r| r.reply_prefix).unwrap_or_default()).await;
    }
    let tools = offered_tools(&task.tools)?;
    let dir = tempfile::tempdir()?;
    let workspace = Workspace::open(dir.path())?;
    for (path, content) in &task.files {
        workspace.write(path, content).with_context(|| format!("task {}: cannot lay out {path}", task.id))?;
    }
    let mut conversation = task.messages.clone();
    let prompt = tokenize(engine, &conversation, &tools, limits.predict_observations).await?;
    let mut episode = Episode {
        seed,
        prompt,
        tokens: Vec::new(),
        sampled: Vec::new(),
        logprobs: Vec::new(),
        entropies: Vec::new(),
        turns: Vec::new(),
        answer: None,
        end: EpisodeEnd::TurnLimit,
        reward: 0.0,
    };
    let config = AgentConfig::default();
    let no_skills = StaticSkills::default();
    let mut first_turn = 0;
    let mut forced: &[u32] = &[];
    if let Some(ResumeAt { source, turn, reply_prefix }) = resume {
        anyhow::ensure!(source.prompt == episode.prompt, "the episode to resume is not one of task {}", task.id);
        let start = source.reply_spans().get(turn).with_context(|| format!("the episode has no reply {turn}"))?.start;
        for earlier in &source.turns[..turn] {
            let call = earlier.call.as_ref().context("only tool calls come before a later reply")?;
            agent_loop::run_tool(&workspace, &no_skills, &config, call).await;
            push_call(&mut conversation, call, earlier.result.clone().unwrap_or_default());
            episode.turns.push(earlier.clone());
        }
        let samples = source.sampled[..start].iter().filter(|s| **s).count();
        episode.tokens.extend_from_slice(&source.tokens[..start]);
        episode.sampled.extend_from_slice(&source.sampled[..start]);
        episode.logprobs.extend_from_slice(&source.logprobs[..samples]);
        episode.entropies.extend_from_slice(&source.entropies[..samples.min(source.entropies.len())]);
        first_turn = turn;
        forced = reply_prefix;
    }
    for turn in first_turn..limits.max_turns {
        let context: Vec<u32> = episode.prompt.iter().chain(&episode.tokens).copied().collect();
        if context.len() + sampling.max_new_tokens > limits.max_tokens {
            episode.end = EpisodeEnd::ContextLimit;
            break;
        }
        let turn_seed = if turn == first_turn { seed } else { sample_seed(seed, turn) };
        let schema = reply_schema(&tools, limits.predict_observations);
        let choice = rollout::sample_one(engine, context, std::mem::take(&mut forced), sampling, turn_seed, Some(schema)).await?;
        episode.push(&choice.token_ids, Some((&choice.token_logprobs, &choice.token_entropies)));
        if choice.finish_reason == Some(FinishReason::Length) {
            episode.turns.push(Turn { text: choice.text, call: None, result: None });
            episode.end = EpisodeEnd::Length;
            break;
        }
        match tool_protocol::parse_reply(&choice.text) {
            ParsedReply::Answer(answer) => {
                episode.turns.push(Turn { text: choice.text, call: None, result: None });
                episode.answer = Some(answer);
                episode.end = EpisodeEnd::Answered;
                break;
            }
            ParsedReply::Unparsed(_) => {
                episode.turns.push(Turn { text: choice.text, call: None, result: None });
                episode.end = EpisodeEnd::Unparsed;
                break;
            }
            ParsedReply::Call(call) => {
                let output = agent_loop::run_tool(&workspace, &no_skills, &config, &call).await;
                let result = cut(&output.text, limits.result_chars);
                let before = tokenize(engine, &conversation, &tools, limits.predict_observations).await?;
                push_call(&mut conversation, &call, result.clone());
                let rendered = render(&conversation, &tools, limits.predict_observations);
                let after = engine.tokenize(&Prompt::Messages(rendered.clone())).await?;
                let reply = engine.tokenize_text(&rendered[rendered.len() - 2].content).await?;
                let mut observation = observation_tokens(&before, &after, &reply)?;
                // A reply that ended with the end-of-turn token already holds it.
                if observation.first() == choice.token_ids.last() {
                    observation = &observation[1..];
                }
                episode.push(observation, None);
                episode.turns.push(Turn { text: choice.text, call: Some(call), result: Some(result) });
            }
        }
    }
    let calls = episode.calls();
    episode.reward = task.verifier.score(&Outcome { answer: episode.answer.as_deref(), calls: &calls, workspace: Some(&workspace) });
    Ok(episode)
}

/// The conversation goes on with a tool call and what the tool returned.
fn push_call(conversation: &mut Vec<ChatMessage>, call: &ToolCall, result: String) {
    conversation.push(ChatMessage { role: Some(Role::Assistant), tool_calls: vec![call.clone()], ..Default::default() });
    conversation.push(ChatMessage { role: Some(Role::Tool), content: result, tool_call_id: Some(call.id.clone()), ..Default::default() });
}

/// A task without tools: one reply, unconstrained, beginning with `forced`, whose whole
/// text is the answer.
async fn single_reply(engine: &dyn Engine, task: &Task, sampling: &SamplingConfig, seed: u64, forced: &[u32]) -> anyhow::Result<Episode> {
    let prompt = engine.tokenize(&Prompt::Messages(task.messages.clone())).await?;
    let choice = rollout::sample_one(engine, prompt.clone(), forced, sampling, seed, None).await?;
    let end = if choice.finish_reason == Some(FinishReason::Length) { EpisodeEnd::Length } else { EpisodeEnd::Answered };
    let reward = task.verifier.score(&Outcome { answer: Some(&choice.text), ..Outcome::default() });
    Ok(Episode {
        seed,
        prompt,
        sampled: vec![true; choice.token_ids.len()],
        entropies: choice.token_entropies.iter().copied().chain(std::iter::repeat(0.0)).take(choice.token_ids.len()).collect(),
        tokens: choice.token_ids,
        logprobs: choice.token_logprobs,
        turns: vec![Turn { text: choice.text.clone(), call: None, result: None }],
        answer: Some(choice.text),
        end,
        reward,
    })
}

/// The agent tools with these names, in the order given.
pub fn offered_tools(names: &[String]) -> anyhow::Result<Vec<ToolSpec>> {
    let all: BTreeMap<String, ToolSpec> = agent_loop::tool_specs().into_iter().map(|tool| (tool.name.clone(), tool)).collect();
    names
        .iter()
        .map(|name| {
            all.get(name).cloned().with_context(|| {
                format!("there is no agent tool `{name}` (there are {})", all.keys().cloned().collect::<Vec<_>>().join(", "))
            })
        })
        .collect()
}

/// The conversation as the tool protocol renders it, with the request for predictions in
/// the system prompt when asked.
fn render(conversation: &[ChatMessage], tools: &[ToolSpec], predict: bool) -> Vec<ChatMessage> {
    let mut rendered = tool_protocol::render_conversation(conversation, tools, &ToolChoice::Auto);
    if predict {
        if let Some(system) = rendered.first_mut() {
            system.content = format!("{}\n{PREDICT_INSTRUCTION}", system.content);
        }
    }
    rendered
}

/// The tool protocol's reply schema, with an optional `predict_next` text in every tool
/// call when predictions are asked for.
fn reply_schema(tools: &[ToolSpec], predict: bool) -> serde_json::Value {
    let mut schema = tool_protocol::reply_schema(tools, &ToolChoice::Auto);
    if predict {
        let mut branches: Vec<&mut serde_json::Value> = match schema.get_mut("anyOf").and_then(serde_json::Value::as_array_mut) {
            Some(branches) => branches.iter_mut().collect(),
            None => vec![&mut schema],
        };
        for branch in branches.iter_mut() {
            if let Some(properties) = branch.get_mut("properties").and_then(serde_json::Value::as_object_mut) {
                if properties.contains_key("tool") {
                    properties.insert("predict_next".into(), serde_json::json!({ "type": "string" }));
                }
            }
        }
    }
    schema
}

/// The tokens of a conversation under the tool protocol, ending with the template's
/// generation prompt.
async fn tokenize(engine: &dyn Engine, conversation: &[ChatMessage], tools: &[ToolSpec], predict: bool) -> anyhow::Result<Vec<u32>> {
    Ok(engine.tokenize(&Prompt::Messages(render(conversation, tools, predict))).await?)
}

/// The tokens the chat template puts between the end of a reply and the next reply: the
/// reply's end-of-turn token (the grammar ends a reply without one), the tool result's
/// turn, and the next generation prompt. `before` is the conversation up to the reply
/// (with its generation prompt), `after` the conversation with the reply and the result,
/// and `reply` the tokens of the reply as the template renders it. The reply itself is not
/// taken from `after`: the policy's sampled tokens stand, whatever a re-rendering would
/// tokenize them as.
pub fn observation_tokens<'a>(before: &[u32], after: &'a [u32], reply: &[u32]) -> anyhow::Result<&'a [u32]> {
    anyhow::ensure!(
        after.starts_with(before),
        "the chat template renders earlier turns differently once a turn follows; token-level rollouts need one that only appends"
    );
    anyhow::ensure!(
        after[before.len()..].starts_with(reply),
        "the chat template does not render a reply as its own tokens right after the generation prompt"
    );
    Ok(&after[before.len() + reply.len()..])
}

fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((index, _)) => format!("{}\n[cut: the result is longer]", &text[..index]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observation_is_what_follows_the_rendered_reply() {
        // before: [prompt.., generation prompt]; after: the same, the rendered reply (5, 6),
        // its end-of-turn token (2), then the result's turn and the next prompt.
        let before = [1, 10, 11];
        let after = [1, 10, 11, 5, 6, 2, 20, 21, 22];
        assert_eq!(observation_tokens(&before, &after, &[5, 6]).unwrap(), &[2, 20, 21, 22]);
        assert!(observation_tokens(&[1, 9], &after, &[5, 6]).is_err(), "a template that rewrites earlier turns is refused");
        assert!(observation_tokens(&before, &after, &[5, 7]).is_err(), "a reply rendered as other tokens is refused");
    }

    #[test]
    fn predictions_are_an_optional_field_of_tool_calls_only() {
        let tools = offered_tools(&["read".into()]).unwrap();
        let plain = reply_schema(&tools, false).to_string();
        assert!(!plain.contains("predict_next"));
        let schema = reply_schema(&tools, true);
        let branches = schema["anyOf"].as_array().unwrap();
        assert_eq!(branches[0]["properties"]["predict_next"]["type"], "string");
        assert!(!branches[0]["required"].as_array().unwrap().iter().any(|r| r == "predict_next"));
        assert!(branches[1]["properties"].get("predict_next").is_none(), "an answer predicts nothing");
    }

    #[test]
    fn long_results_are_cut_on_a_character_boundary() {
        assert_eq!(cut("héllo", 10), "héllo");
        assert_eq!(cut("héllo", 2), "hé\n[cut: the result is longer]");
    }

    #[test]
    fn only_agent_tools_are_offered() {
        let tools = offered_tools(&["exec".into(), "read".into()]).unwrap();
        assert_eq!(tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["exec", "read"]);
        assert!(offered_tools(&["browser".into()]).unwrap_err().to_string().contains("no agent tool `browser`"));
    }
}
