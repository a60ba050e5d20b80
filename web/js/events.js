// What the recorded events of a turn look like on the page, shared by the chat and the
// trajectory viewer. Event payloads are the agent's `Event` enum: a `type` tag and the
// variant's fields.

import { h, pre } from './dom.js';
import { renderReplacement } from './diff.js';
import { href } from './router.js';
import { number, duration, preview, stopReason } from './format.js';

export function parseArguments(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === 'object' ? value : null;
  } catch {
    return null;
  }
}

export function skillLink(slug, version) {
  return h('a', { href: href(`/skills/${encodeURIComponent(slug)}`, { version }), class: 'skill-link', testid: 'skill-link' }, version ? `${slug} ${version}` : slug);
}

// A tool call's arguments shown as what they do: the command an `exec` runs, the file
// a `write` leaves, the change an `edit` makes, the path of a `read` or `ls`.
export function toolCallView(name, argumentsText) {
  const args = parseArguments(argumentsText);
  if (!args) return pre(argumentsText, { class: 'tool-args' });
  if (name === 'exec' && typeof args.command === 'string') return pre(`$ ${args.command}`, { class: 'tool-command' });
  if (name === 'write' && typeof args.path === 'string') {
    return h('div', { class: 'tool-args' }, h('p', { class: 'tool-path' }, h('code', { text: args.path })), pre(args.content ?? '', { class: 'file-content' }));
  }
  if (name === 'edit' && typeof args.path === 'string') {
    return h('div', { class: 'tool-args' }, h('p', { class: 'tool-path' }, h('code', { text: args.path })), renderReplacement(args.old ?? '', args.new ?? ''));
  }
  if ((name === 'read' || name === 'ls') && typeof args.path === 'string') {
    return h('p', { class: 'tool-path' }, h('code', { text: args.path }));
  }
  return pre(JSON.stringify(args, null, 2), { class: 'tool-args' });
}

export function toolResultView(payload) {
  const status = payload.ok ? 'worked' : 'failed';
  const code = payload.exit_code === null || payload.exit_code === undefined ? '' : ` · exit code ${payload.exit_code}`;
  return h(
    'div',
    { class: `tool-result ${payload.ok ? 'ok' : 'failed'}` },
    h('p', { class: 'tool-status', text: `${status}${code}` }),
    pre(payload.excerpt ?? '', { class: 'tool-output', testid: 'tool-output' }),
  );
}

const LABELS = {
  user_message: 'User message',
  model_call: 'Model call',
  model_output: 'Model output',
  tool_call: 'Tool call',
  tool_result: 'Tool result',
  skill_read: 'Skill read',
  compaction: 'Compaction',
  final_answer: 'Final answer',
  stop: 'Stop',
  step_rejected: 'Step rejected',
  input_file: 'Input file',
  output_file: 'Output file',
};

export function label(kind) {
  return LABELS[kind] || kind;
}

// How an event is marked: problems stand out from the ordinary steps.
export function tone(kind, payload) {
  if (kind === 'tool_result' && !payload.ok) return 'warn';
  if (kind === 'step_rejected') return 'warn';
  if (kind === 'stop') {
    if (payload.reason === 'error') return 'error';
    if (payload.reason !== 'final_answer') return 'warn';
  }
  return '';
}

// One line saying what an event is. `completion` is the completion token count of the
// model output that followed a model call, when known.
export function summary(kind, payload, completion) {
  switch (kind) {
    case 'user_message':
    case 'final_answer':
      return preview(payload.text);
    case 'model_call': {
      const parts = [`${number(payload.prompt_tokens)} prompt tokens`];
      if (completion !== undefined) parts.push(`${number(completion)} completion tokens`);
      parts.push(duration(payload.latency_ms));
      return parts.join(' · ');
    }
    case 'model_output': {
      const calls = (payload.tool_calls || []).map((call) => call.name);
      const what = calls.length ? `calls ${calls.join(', ')}` : preview(payload.text, 60);
      return `${number(payload.completion_tokens)} completion tokens · ${what}`;
    }
    case 'tool_call': {
      const args = parseArguments(payload.arguments);
      const detail = args ? args.command ?? args.path ?? '' : payload.arguments;
      return `${payload.name} ${preview(detail, 70)}`.trim();
    }
    case 'tool_result':
      return `${payload.name} ${payload.ok ? 'worked' : 'failed'}${payload.exit_code === null || payload.exit_code === undefined ? '' : ` (exit ${payload.exit_code})`} · ${preview(payload.excerpt, 60)}`;
    case 'skill_read':
      return `${payload.slug} ${payload.version}`;
    case 'compaction':
      return `${number(payload.replaced_messages)} messages summarized`;
    case 'stop':
      return `${stopReason(payload.reason)}${payload.detail ? ` · ${preview(payload.detail, 60)}` : ''}`;
    case 'step_rejected':
      return preview(payload.reason);
    case 'input_file':
    case 'output_file':
      return `${payload.path} (${number((payload.content || '').length)} characters)`;
    default:
      return preview(JSON.stringify(payload));
  }
}
