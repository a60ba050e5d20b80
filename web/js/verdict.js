// An evolver candidate's verdict: each gate's outcome and, for the A/B replay, the
// score of the current version and of the candidate on every replayed goal.

import { h, facts, pre } from './dom.js';

function score(value) {
  return typeof value === 'number' ? value.toFixed(2).replace(/\.00$/, '') : '–';
}

export function replayTable(replay) {
  const baseline = replay.baseline_scores || [];
  const candidate = replay.candidate_scores || [];
  const goals = Math.max(baseline.length, candidate.length, replay.goals || 0);
  const rows = [];
  for (let i = 0; i < goals; i += 1) {
    const better = candidate[i] > baseline[i];
    rows.push(h('tr', { testid: 'replay-row', class: better ? 'better' : '' },
      h('th', { scope: 'row', text: `Goal ${i + 1}` }),
      h('td', { text: score(baseline[i]) }),
      h('td', { text: score(candidate[i]) })));
  }
  return h(
    'div',
    { class: 'table-wrap' },
    h('table', { class: 'replay', testid: 'replay-table' },
      h('caption', { text: 'A/B replay: each held-out goal run again with the current version and with the candidate (same model, same seeds)' }),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Goal' }), h('th', { scope: 'col', text: 'Current' }), h('th', { scope: 'col', text: 'Candidate' }))),
      h('tbody', {}, rows),
      h('tfoot', {}, h('tr', {}, h('th', { scope: 'row', text: 'Mean' }), h('td', { testid: 'replay-current-mean', text: score(replay.baseline_mean) }), h('td', { testid: 'replay-candidate-mean', text: score(replay.candidate_mean) })))),
  );
}

export function verdictView(verdict) {
  if (!verdict || typeof verdict !== 'object') return h('p', { class: 'muted', text: 'No verdict recorded.' });
  const list = (value) => (Array.isArray(value) ? (value.length ? value.map((item) => (typeof item === 'string' ? item : JSON.stringify(item))).join('; ') : 'none') : value);
  const parts = [
    facts([
      ['Accepted', verdict.accepted === undefined ? null : verdict.accepted ? 'yes' : 'no'],
      ['Failed gate', verdict.failed],
      ['Format', list(verdict.format)],
      ['Dropped content', list(verdict.dropped)],
      ['Safety findings', verdict.safety === undefined ? null : list(verdict.safety)],
      ['Threshold', verdict.replay && typeof verdict.replay === 'object' ? score(verdict.replay.threshold) : null],
      ['Seed', verdict.replay && typeof verdict.replay === 'object' ? verdict.replay.seed : null],
    ], { testid: 'verdict' }),
  ];
  if (verdict.replay && typeof verdict.replay === 'object') parts.push(replayTable(verdict.replay));
  else if (typeof verdict.replay === 'string') parts.push(h('p', { text: `Replay: ${verdict.replay}` }));
  if (verdict.rollback) parts.push(h('p', { class: 'warn-text', text: `Rolled back: ${verdict.rollback.reason || ''}` }), pre(JSON.stringify(verdict.rollback, null, 2)));
  return h('div', { class: 'verdict' }, parts);
}
