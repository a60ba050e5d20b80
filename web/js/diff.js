// Unified diffs as DOM: one row per line, with classes for added, removed, context, hunk
// and file header lines, so that the colours come from the style sheet.

import { h } from './dom.js';

// Classifies each line. Inside a hunk the `@@ -a,b +c,d @@` counts say how many lines
// belong to it, so that a removed line that itself starts with `-- ` is not taken for
// the next file's header. Without hunks (`bare`), the first character decides.
function classify(lines, bare) {
  const kinds = [];
  let oldLeft = 0;
  let newLeft = 0;
  for (const line of lines) {
    const first = line[0];
    if (bare || oldLeft > 0 || newLeft > 0) {
      if (first === '+') {
        newLeft -= 1;
        kinds.push('diff-add');
        continue;
      }
      if (first === '-') {
        oldLeft -= 1;
        kinds.push('diff-del');
        continue;
      }
      if (first === ' ' || line === '') {
        oldLeft -= 1;
        newLeft -= 1;
        kinds.push('diff-ctx');
        continue;
      }
      if (first === '\\') {
        kinds.push('diff-note');
        continue;
      }
    }
    const hunk = line.match(/^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@/);
    if (hunk) {
      oldLeft = hunk[1] === undefined ? 1 : Number(hunk[1]);
      newLeft = hunk[2] === undefined ? 1 : Number(hunk[2]);
      kinds.push('diff-hunk');
    } else if (line.startsWith('--- ') || line.startsWith('+++ ')) kinds.push('diff-file');
    else kinds.push('diff-note');
  }
  return kinds;
}

// Renders unified diff text. Returns the element and the counts of added and removed
// lines. `bare` is for a list of +/- lines with no headers or hunks.
export function renderDiff(text, { bare = false, ...attrs } = {}) {
  const container = h('div', { class: 'diff', ...attrs });
  const lines = String(text ?? '').replace(/\r\n?/g, '\n').split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const kinds = classify(lines, bare);
  const fragment = document.createDocumentFragment();
  let added = 0;
  let removed = 0;
  lines.forEach((line, i) => {
    const kind = kinds[i];
    if (kind === 'diff-add') added += 1;
    if (kind === 'diff-del') removed += 1;
    const row = document.createElement('div');
    row.className = `diff-line ${kind}`;
    row.textContent = line === '' ? ' ' : line;
    fragment.append(row);
  });
  container.append(fragment);
  return { element: container, added, removed };
}

// The change an `edit` tool call makes (one old text replaced by a new one), as a diff:
// the lines both share at the start and the end are context, the rest removed and added.
export function renderReplacement(oldText, newText) {
  const before = String(oldText ?? '').split('\n');
  const after = String(newText ?? '').split('\n');
  let start = 0;
  while (start < before.length && start < after.length && before[start] === after[start]) start += 1;
  let end = 0;
  while (end < before.length - start && end < after.length - start && before[before.length - 1 - end] === after[after.length - 1 - end]) end += 1;
  const lines = [
    ...before.slice(0, start).map((line) => ` ${line}`),
    ...before.slice(start, before.length - end).map((line) => `-${line}`),
    ...after.slice(start, after.length - end).map((line) => `+${line}`),
    ...before.slice(before.length - end).map((line) => ` ${line}`),
  ];
  return renderDiff(lines.join('\n'), { bare: true }).element;
}
