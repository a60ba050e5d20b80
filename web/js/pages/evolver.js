// The evolver desk, for admins: its status, starting a run, the runs with what each step
// cost, the candidates waiting for review, and one candidate in full (verdict, replay
// numbers, diff against the current version, redacted evidence).

import { api, apiPath } from '../api.js';
import { h, button, act, badge, facts, pre, card, pageHeader, flash, showNotice } from '../dom.js';
import { href, go } from '../router.js';
import { number, duration, time, preview } from '../format.js';
import { renderDiff } from '../diff.js';
import { verdictView } from '../verdict.js';

const candidateHref = (id) => href(`/evolver/candidates/${encodeURIComponent(id)}`);
const runHref = (id) => href(`/evolver/runs/${encodeURIComponent(id)}`);

function statusBadge(status) {
  const kind = status === 'pending_review' ? 'warn' : /published|accepted|finished/.test(status) ? 'ok' : /reject|failed|rolled_back/.test(status) ? 'error' : '';
  const element = badge(status, kind);
  element.dataset.testid = 'status-badge';
  return element;
}

function runTotals(report) {
  const steps = (report && report.steps) || [];
  return steps.reduce(
    (sum, step) => ({
      calls: sum.calls + (step.llm_calls || 0),
      replays: sum.replays + (step.replay_calls || 0),
      tokens: sum.tokens + (step.prompt_tokens || 0) + (step.completion_tokens || 0),
      millis: sum.millis + (step.millis || 0),
    }),
    { calls: 0, replays: 0, tokens: 0, millis: 0 },
  );
}

function stepsTable(report) {
  const steps = (report && report.steps) || [];
  if (!steps.length) return h('p', { class: 'muted', text: 'No step has finished yet.' });
  const header = ['Step', 'Items', 'Engine calls', 'Replay calls', 'Prompt tokens', 'Completion tokens', 'Time'];
  return h('div', { class: 'table-wrap' }, h('table', { class: 'steps', testid: 'steps-table' },
    h('thead', {}, h('tr', {}, header.map((text) => h('th', { scope: 'col', text })))),
    h('tbody', {}, steps.map((step) => h('tr', { testid: 'step-row' },
      h('th', { scope: 'row', text: step.name }),
      h('td', { text: number(step.items) }),
      h('td', { text: number(step.llm_calls) }),
      h('td', { text: number(step.replay_calls) }),
      h('td', { text: number(step.prompt_tokens) }),
      h('td', { text: number(step.completion_tokens) }),
      h('td', { text: duration(step.millis) }))))));
}

function runSummary(run) {
  const report = run.report || {};
  const totals = runTotals(report);
  const took = run.finished_at ? duration((run.finished_at - run.started_at) * 1000) : null;
  return facts([
    ['Status', statusBadge(run.status)],
    ['Trigger', run.trigger],
    ['Started', time(run.started_at, 's')],
    ['Took', took],
    ['New sessions', number(report.new_sessions)],
    ['Candidates', number(report.candidates)],
    ['Published', number(report.published)],
    ['Rolled back', number(report.rolled_back)],
    ['Engine calls', `${number(totals.calls)} (+${number(totals.replays)} in replays)`],
    ['Tokens', number(totals.tokens)],
    ['Error', report.error],
  ]);
}

function candidateReplay(candidate) {
  const replay = candidate.verdict && candidate.verdict.replay;
  if (!replay || typeof replay !== 'object') return null;
  const mean = (value) => (typeof value === 'number' ? value.toFixed(2) : '–');
  return `replay ${mean(replay.baseline_mean)} → ${mean(replay.candidate_mean)} over ${number(replay.goals)} goals`;
}

function review(id, decision) {
  return api.post(apiPath('api', 'evolver', 'candidates', id, decision));
}

function queueRow(candidate, onDone) {
  const item = h('li', { class: 'card candidate-row', testid: 'candidate-row', dataset: { id: candidate.id } });
  const approve = button('Approve', () => act(approve, async () => {
    const result = await review(candidate.id, 'approve');
    onDone(item, result);
  }), { class: 'primary', testid: 'candidate-approve' });
  const reject = button('Reject', () => act(reject, async () => {
    const result = await review(candidate.id, 'reject');
    onDone(item, result);
  }), { class: 'danger', testid: 'candidate-reject' });
  item.append(
    h('div', { class: 'row-top' },
      h('h3', { class: 'row-heading' }, h('a', { href: candidateHref(candidate.id), testid: 'candidate-link' }, `${candidate.slug} (${candidate.action})`)),
      statusBadge(candidate.status)),
    h('p', { class: 'muted', text: [`${number(candidate.distinct_users)} users`, `${number((candidate.evidence_sessions || []).length)} sessions`, candidate.writer ? `written from ${candidate.writer}` : null, candidateReplay(candidate)].filter(Boolean).join(' · ') }),
    candidate.rationale ? h('p', { text: preview(candidate.rationale, 200) }) : null,
    h('div', { class: 'buttons' }, h('a', { href: candidateHref(candidate.id) }, 'Review'), approve, reject),
  );
  return item;
}

export async function renderDesk(ctx) {
  const { root, signal } = ctx;
  const statusSlot = h('div');
  const queue = h('ul', { class: 'list', testid: 'review-queue' });
  const runs = h('ul', { class: 'list', testid: 'runs' });
  const rollbacks = h('ul', { class: 'list', testid: 'rollback-log' });
  const start = button('Start a run', () => act(start, async () => {
    await api.post('/api/evolver/runs');
    showNotice('A run has started; it yields to users and goes on in the pauses.');
    await load();
  }), { class: 'primary', testid: 'evolver-start' });

  root.append(pageHeader('Evolver', start), card('Status', statusSlot), card('Waiting for review', queue), card('Runs', runs),
    card('Automatic rollbacks', rollbacks));

  const reviewed = (item, candidate) => {
    const published = candidate.published_version;
    item.replaceWith(h('li', { class: 'card', testid: 'candidate-reviewed' },
      h('p', {}, `${candidate.slug}: `, statusBadge(candidate.status), published ? ' ' : null, published ? h('a', { href: href(`/skills/${encodeURIComponent(candidate.slug)}`, { version: published }) }, `published as ${published}`) : null)));
  };

  async function load() {
    const [status, pending, history, undone] = await Promise.all([
      api.get('/api/evolver/status', { signal }),
      api.get('/api/evolver/candidates?status=pending_review', { signal }),
      api.get('/api/evolver/runs', { signal }),
      api.get('/api/evolver/candidates?status=rolled_back', { signal }),
    ]);
    const last = status.last_run;
    statusSlot.replaceChildren(facts([
      ['Running now', status.running ? 'yes' : 'no'],
      ['Last run', last ? h('a', { href: runHref(last.id) }, `${last.status}, ${time(last.started_at, 's')}`) : 'none yet'],
      ['Sessions waiting', number(status.pending_sessions)],
      ['Runs', `every ${number(status.every_minutes)} minutes, or once ${number(status.after_sessions)} sessions wait`],
      ['Admin review', status.review ? 'on: candidates wait here' : 'off: candidates that pass are published'],
      ['Distinct users needed', number(status.min_distinct_users)],
    ], { testid: 'evolver-status' }));
    start.disabled = Boolean(status.running);
    const candidates = pending.candidates || [];
    queue.replaceChildren(...candidates.map((candidate) => queueRow(candidate, reviewed)));
    if (!candidates.length) queue.append(h('li', { class: 'muted empty', text: 'Nothing is waiting for review.' }));
    const list = history.runs || [];
    runs.replaceChildren(...list.map((run) => h('li', { class: 'card run-row', testid: 'run-row', dataset: { id: run.id } },
      h('h3', { class: 'row-heading' }, h('a', { href: runHref(run.id), testid: 'run-link' }, `Run ${run.id.slice(0, 8)}`)),
      runSummary(run),
      h('details', { class: 'steps-details' }, h('summary', { text: 'Steps' }), stepsTable(run.report)))));
    if (!list.length) runs.append(h('li', { class: 'muted empty', text: 'No run yet.' }));
    // A publication whose sessions did worse than on the version before was undone by the
    // evolver itself; each entry says which version came back and the numbers behind it.
    const undoneList = undone.candidates || [];
    rollbacks.replaceChildren(...undoneList.map((candidate) => {
      const rollback = (candidate.verdict && candidate.verdict.rollback) || {};
      return h('li', { class: 'card', testid: 'rollback-row' },
        h('div', { class: 'row-top' },
          h('a', { href: candidateHref(candidate.id) }, `${candidate.slug} ${candidate.published_version || ''}`.trim()),
          statusBadge(candidate.status)),
        h('p', { text: rollback.reason || 'Rolled back.' }),
        rollback.version ? h('p', { class: 'muted' }, 'Restored as ', h('a', { href: href(`/skills/${encodeURIComponent(candidate.slug)}`, { version: rollback.version }) }, rollback.version)) : null);
    }));
    if (!undoneList.length) rollbacks.append(h('li', { class: 'muted empty', text: 'No publication has been rolled back.' }));
  }
  await load();
  root.dataset.ready = 'true';
}

export async function renderRun(ctx) {
  const { root, params, signal } = ctx;
  const run = await api.get(apiPath('api', 'evolver', 'runs', params.id), { signal });
  const report = run.report || {};
  const redactions = Object.entries(report.redactions || {}).map(([kind, count]) => `${kind}: ${count}`).join(', ');
  root.append(
    pageHeader(`Run ${run.id.slice(0, 8)}`, h('a', { href: '#/evolver' }, 'Back to the desk')),
    card('Summary', runSummary(run), facts([
      ['Run id', run.id],
      ['Groups', number(report.groups)],
      ['Patterns', number(report.patterns)],
      ['Accepted', number(report.accepted)],
      ['Summaries discarded', number(report.summaries_discarded)],
      ['Redactions', redactions || 'none'],
    ])),
    card('Steps', stepsTable(report)),
  );
  const decisions = report.decisions || [];
  root.append(card('Decisions', decisions.length
    ? h('ul', { class: 'decisions' }, decisions.map((d) => h('li', {}, h('strong', { text: `${d.action}: ` }), `${d.pattern} — ${d.reason}`)))
    : h('p', { class: 'muted', text: 'No pattern was considered.' })));
  const candidates = run.candidates || [];
  root.append(card('Candidates', candidates.length
    ? h('ul', { class: 'list' }, candidates.map((c) => h('li', { class: 'card', testid: 'run-candidate' },
      h('div', { class: 'row-top' }, h('a', { href: candidateHref(c.id) }, `${c.slug} (${c.action})`), statusBadge(c.status)),
      h('p', { class: 'muted', text: [candidateReplay(c), c.verdict && c.verdict.failed ? `failed at ${c.verdict.failed}` : null].filter(Boolean).join(' · ') || 'no verdict' }))))
    : h('p', { class: 'muted', text: 'This run made no candidate.' })));
  root.dataset.ready = 'true';
}

// One evidence session as the evolver summarized it, after redaction: the request, the
// goal and outcome, what helped and what went wrong, and the score it was judged by.
function evidenceItem(summary) {
  if (typeof summary !== 'object' || summary === null) return h('li', { testid: 'evidence-item', class: 'prose', text: String(summary) });
  const scored = summary.score === undefined || summary.score === null ? null : `${summary.score}${summary.score_source ? ` (${summary.score_source})` : ''}`;
  return h('li', { testid: 'evidence-item' }, facts([
    ['Request', summary.request],
    ['Goal', summary.goal],
    ['Outcome', summary.outcome],
    ['Helped', summary.helped],
    ['Went wrong', summary.went_wrong],
    ['Score', scored],
  ]));
}

export async function renderCandidate(ctx) {
  const { root, params, signal } = ctx;
  const candidate = await api.get(apiPath('api', 'evolver', 'candidates', params.id), { signal });
  const actions = h('div', { class: 'buttons' });
  if (candidate.status === 'pending_review') {
    const decide = (decision) => async () => {
      const result = await review(candidate.id, decision);
      flash(result.published_version ? `Approved: ${result.slug} ${result.published_version} is published.` : `The candidate is ${result.status}.`);
      go(`/evolver/candidates/${encodeURIComponent(candidate.id)}`);
    };
    const approve = button('Approve and publish', () => act(approve, decide('approve')), { class: 'primary', testid: 'candidate-approve' });
    const reject = button('Reject', () => act(reject, decide('reject')), { class: 'danger', testid: 'candidate-reject' });
    actions.append(approve, reject);
  }
  const published = candidate.published_version
    ? h('a', { href: href(`/skills/${encodeURIComponent(candidate.slug)}`, { version: candidate.published_version }), testid: 'candidate-published' }, `${candidate.slug} ${candidate.published_version}`)
    : null;
  root.append(
    h('div', { class: 'page-header' },
      h('h1', { text: `Candidate: ${candidate.slug}` }),
      h('div', { class: 'page-actions' }, h('span', { testid: 'candidate-status' }, statusBadge(candidate.status)), h('a', { href: '#/evolver' }, 'Back to the desk'))),
    actions,
    card('What it is', facts([
      ['Action', candidate.action],
      ['Written from', candidate.writer],
      ['Replaces version', candidate.base_version || 'none: a new skill'],
      ['Distinct users', number(candidate.distinct_users)],
      ['Evidence sessions', number((candidate.evidence_sessions || []).length)],
      ['Run', candidate.run_id ? h('a', { href: runHref(candidate.run_id) }, candidate.run_id) : null],
      ['Published as', published],
    ], { testid: 'candidate-facts' }), candidate.rationale ? h('div', {}, h('h3', { text: 'Rationale' }), h('p', { class: 'prose', text: candidate.rationale })) : null),
    card('Verdict', verdictView(candidate.verdict)),
  );
  const diffText = candidate.diff || '';
  if (diffText.trim()) {
    const { element, added, removed } = renderDiff(diffText, { testid: 'candidate-diff' });
    root.append(card(`Change against ${candidate.base_version || 'nothing'}`, h('p', { class: 'diff-stats', testid: 'diff-stats' }, h('span', { class: 'added', text: `+${number(added)}` }), ' ', h('span', { class: 'removed', text: `−${number(removed)}` })), element));
  } else {
    root.append(card('SKILL.md (a new skill)', pre(candidate.skill_md, { class: 'file-content', testid: 'candidate-skill-md' })));
  }
  const evidence = candidate.evidence || [];
  root.append(card('Evidence (redacted)', evidence.length
    ? h('ul', { class: 'evidence', testid: 'evidence' }, evidence.map(evidenceItem))
    : h('p', { class: 'muted', text: 'No evidence summary was kept.' })));
  root.dataset.ready = 'true';
}
