// The trajectory viewer: every recorded event of a session as a collapsible row. Rows
// are built in one DocumentFragment and a row's body is only built the first time it is
// opened, so a session of thousands of events opens as fast as one of a hundred.

import { api, apiPath } from '../api.js';
import { h, button, facts, pre, pageHeader } from '../dom.js';
import { href } from '../router.js';
import { label, summary, tone, skillLink, toolCallView, toolResultView } from '../events.js';
import { number, duration, stopReason, time } from '../format.js';

function eventBody(event, completion) {
  const p = event.payload || {};
  const parts = [];
  switch (event.kind) {
    case 'user_message':
    case 'final_answer':
      parts.push(pre(p.text, { class: 'event-text' }));
      break;
    case 'model_call':
      parts.push(facts([
        ['Prompt tokens', number(p.prompt_tokens)],
        ['Completion tokens', completion === undefined ? null : number(completion)],
        ['Latency', duration(p.latency_ms)],
      ]));
      break;
    case 'model_output':
      parts.push(facts([['Completion tokens', number(p.completion_tokens)]]));
      if (p.text) parts.push(pre(p.text, { class: 'event-text' }));
      for (const call of p.tool_calls || []) {
        parts.push(h('div', { class: 'tool-card' }, h('div', { class: 'tool-name' }, h('code', { text: call.name })), toolCallView(call.name, call.arguments)));
      }
      break;
    case 'tool_call':
      parts.push(facts([['Tool', p.name], ['Call id', p.call_id]]), toolCallView(p.name, p.arguments));
      break;
    case 'tool_result':
      parts.push(facts([['Tool', p.name], ['Call id', p.call_id]]), toolResultView(p));
      break;
    case 'skill_read':
      parts.push(h('p', {}, 'Read ', skillLink(p.slug, p.version)));
      break;
    case 'compaction':
      parts.push(facts([['Messages replaced', number(p.replaced_messages)]]), pre(p.summary, { class: 'event-text' }));
      break;
    case 'stop':
      parts.push(facts([['Reason', stopReason(p.reason)], ['Detail', p.detail]]));
      break;
    case 'step_rejected':
      parts.push(facts([['Reason', p.reason]]), pre(p.text, { class: 'event-text' }));
      break;
    case 'input_file':
    case 'output_file':
      parts.push(facts([['Path', p.path]]), pre(p.content, { class: 'file-content' }));
      break;
    default:
      parts.push(pre(JSON.stringify(p, null, 2)));
  }
  parts.push(h('p', { class: 'muted event-time', text: `Recorded ${time(event.created_at)}` }));
  return h('div', { class: 'event-body' }, parts);
}

export async function render(ctx) {
  const { root, params, signal } = ctx;
  const id = params.id;
  const { session, events } = await api.get(apiPath('api', 'sessions', id, 'trajectory'), { signal });

  // The completion tokens of each model call are recorded with the output that follows it.
  const completions = new Map();
  const totals = { calls: 0, prompt: 0, completion: 0, latency: 0 };
  let openCall = null;
  for (const event of events) {
    const p = event.payload || {};
    if (event.kind === 'model_call') {
      openCall = event.seq;
      totals.calls += 1;
      totals.prompt += p.prompt_tokens || 0;
      totals.latency += p.latency_ms || 0;
    } else if (event.kind === 'model_output') {
      totals.completion += p.completion_tokens || 0;
      if (openCall !== null) completions.set(openCall, p.completion_tokens);
      openCall = null;
    }
  }
  const stops = events.filter((event) => event.kind === 'stop');
  const lastStop = stops.length ? stops[stops.length - 1].payload.reason : null;

  const list = h('div', { class: 'events', testid: 'event-list' });
  const fragment = document.createDocumentFragment();
  for (const event of events) {
    const p = event.payload || {};
    const row = document.createElement('details');
    row.className = `event kind-${event.kind} ${tone(event.kind, p)}`.trim();
    row.dataset.testid = 'event-row';
    row.dataset.kind = event.kind;
    row.dataset.seq = event.seq;
    const line = document.createElement('summary');
    const seq = document.createElement('span');
    seq.className = 'event-seq';
    seq.textContent = `#${event.seq}`;
    const kind = document.createElement('span');
    kind.className = 'event-kind';
    kind.textContent = label(event.kind);
    const text = document.createElement('span');
    text.className = 'event-summary';
    text.textContent = summary(event.kind, p, completions.get(event.seq));
    line.append(seq, kind, text);
    row.append(line);
    fragment.append(row);
  }
  list.append(fragment);
  const bySeq = new Map(events.map((event) => [String(event.seq), event]));
  // `toggle` does not bubble, so one capturing listener serves every row.
  list.addEventListener(
    'toggle',
    (toggled) => {
      const row = toggled.target;
      if (!(row instanceof HTMLDetailsElement) || !row.open || row.dataset.rendered) return;
      const event = bySeq.get(row.dataset.seq);
      row.dataset.rendered = 'true';
      row.append(eventBody(event, completions.get(event.seq)));
    },
    true,
  );

  const expand = button('Expand all', () => list.querySelectorAll('details.event').forEach((row) => { row.open = true; }), { testid: 'expand-all' });
  const collapse = button('Collapse all', () => list.querySelectorAll('details.event').forEach((row) => { row.open = false; }), { testid: 'collapse-all' });

  root.append(
    pageHeader(session.title, h('a', { href: href(`/chat/${encodeURIComponent(session.id)}`), testid: 'open-chat' }, 'Open chat'), h('a', { href: '#/sessions' }, 'All sessions')),
    h('section', { class: 'card' },
      facts([
        ['Status', session.status],
        ['Events', number(events.length)],
        ['Model calls', number(totals.calls)],
        ['Prompt tokens', number(totals.prompt)],
        ['Completion tokens', number(totals.completion)],
        ['Model time', duration(totals.latency)],
        ['Last stop', lastStop ? stopReason(lastStop) : null],
        ['Created', time(session.created_at)],
      ], { testid: 'trajectory-facts' })),
    h('div', { class: 'toolbar' }, expand, collapse),
    events.length ? list : h('p', { class: 'muted', text: 'Nothing recorded yet.' }),
  );
  root.dataset.events = String(events.length);
  root.dataset.readyMs = performance.now().toFixed(1);
  root.dataset.ready = 'true';
}
