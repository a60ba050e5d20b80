// One skill: its SKILL.md rendered, its files, its versions with a diff between any two,
// where it came from, how to sync it, and (for those who may write its scope) editing,
// rollback and deletion. Also the diff page between two versions.

import { api, apiPath, request } from '../api.js';
import { h, field, button, act, badge, facts, pre, card, flash, showNotice } from '../dom.js';
import { href, go } from '../router.js';
import { isAdmin, mayWriteScope } from '../state.js';
import { bytes, number, time } from '../format.js';
import { renderMarkdown, splitFrontmatter } from '../markdown.js';
import { renderDiff } from '../diff.js';
import { verdictView } from '../verdict.js';
import { skillEditor, otherFiles } from '../skill-editor.js';
import { scopeBadge } from './skills.js';

const skillPath = (slug, ...rest) => apiPath('api', 'skills', slug, ...rest);

async function fileText(slug, version, path, signal) {
  const buffer = await request('GET', `${skillPath(slug, 'files', path)}?version=${encodeURIComponent(version)}`, { raw: true, signal });
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buffer);
  } catch {
    return null;
  }
}

function provenanceView(version) {
  const provenance = version.provenance && typeof version.provenance === 'object' ? version.provenance : {};
  const evolver = provenance.evolver;
  const rollback = provenance.rollback;
  const parts = [
    facts([
      ['Published by', version.author_kind],
      ['Author id', version.author_id],
      ['Published', time(version.created_at)],
      ['Parent version', version.parent_version],
      ['Source', provenance.source],
      ['Fingerprint', version.fingerprint],
    ], { testid: 'provenance-facts' }),
  ];
  if (rollback) {
    const said = [`Restores version ${rollback.restored}`];
    if (rollback.replaced) said.push(`replacing ${rollback.replaced}`);
    if (rollback.by) said.push(`by ${rollback.by}`);
    parts.push(h('p', { testid: 'provenance-rollback', text: `${said.join(', ')}.${rollback.reason ? ` Reason: ${rollback.reason}` : ''}` }));
  }
  if (evolver) {
    const sessions = evolver.evidence_session_count ?? (Array.isArray(evolver.evidence_sessions) ? evolver.evidence_sessions.length : null);
    const runLink = evolver.run_id && isAdmin() ? h('a', { href: href(`/evolver/runs/${encodeURIComponent(evolver.run_id)}`) }, evolver.run_id) : evolver.run_id;
    const candidateLink = evolver.candidate_id && isAdmin() ? h('a', { href: href(`/evolver/candidates/${encodeURIComponent(evolver.candidate_id)}`) }, evolver.candidate_id) : evolver.candidate_id;
    parts.push(
      h('h3', { text: 'Learnt by the evolver' }),
      facts([
        ['Run', runLink],
        ['Candidate', candidateLink],
        ['Action', evolver.action],
        ['Written from', evolver.writer],
        ['Distinct users', evolver.distinct_users === undefined ? null : number(evolver.distinct_users)],
        ['Evidence sessions', sessions === null ? null : number(sessions)],
        ['Rationale', evolver.rationale],
      ], { testid: 'provenance-evolver' }),
      verdictView(evolver.verdict),
    );
  }
  return h('div', { class: 'provenance', testid: 'provenance' }, parts);
}

function syncView(slug) {
  const origin = location.origin;
  return h(
    'div',
    { class: 'sync', testid: 'sync' },
    h('p', { text: 'With the ClawHub CLI (its config file holds your API token):' }),
    pre(`clawhub --registry ${origin} install ${slug}`, { testid: 'sync-clawhub' }),
    h('p', { text: 'Or keep every skill you may see in a folder, up to date:' }),
    pre(`skillhive sync --server ${origin} --token $SKILLHIVE_TOKEN --dir skills`, { testid: 'sync-skillhive' }),
    h('p', { class: 'muted' }, 'Make a token on the ', h('a', { href: '#/tokens' }, 'Tokens'), ' page.'),
  );
}

function filesView(slug, version, files, signal) {
  const list = h('ul', { class: 'files', testid: 'skill-files' });
  for (const file of files) {
    const body = h('div', { class: 'file-body' });
    const details = h('details', { class: 'file', testid: 'skill-file', dataset: { path: file.path } },
      h('summary', {}, h('code', { text: file.path }), h('span', { class: 'muted', text: ` ${bytes(file.size)}` })),
      body);
    details.addEventListener('toggle', () => {
      if (!details.open || details.dataset.loaded) return;
      details.dataset.loaded = 'true';
      act(null, async () => {
        const text = await fileText(slug, version, file.path, signal);
        body.replaceChildren(text === null ? h('p', { class: 'muted', text: 'A binary file; download it to see it.' }) : pre(text, { class: 'file-content' }));
      });
    });
    const download = h('a', { href: `${skillPath(slug, 'files', file.path)}?version=${encodeURIComponent(version)}`, download: file.path.split('/').pop(), class: 'file-download' }, `Download ${file.path}`);
    list.append(h('li', {}, details, download));
  }
  return list;
}

export async function render(ctx) {
  const { root, params, query, signal } = ctx;
  const slug = params.slug;
  const skill = await api.get(skillPath(slug), { signal });
  const latest = skill.latest;
  const shown = query.get('version') || latest.version;
  const [version, history, skillMd] = await Promise.all([
    shown === latest.version && latest.files ? latest : api.get(skillPath(slug, 'versions', shown), { signal }),
    api.get(skillPath(slug, 'versions'), { signal }),
    fileText(slug, shown, 'SKILL.md', signal),
  ]);
  const versions = history.versions || [];
  const writable = mayWriteScope(skill.scope);
  const isLatest = version.version === latest.version;

  const title = h('div', { class: 'page-header' },
    h('h1', { testid: 'skill-title', text: slug }),
    h('div', { class: 'badges' }, scopeBadge(skill.scope), h('span', { class: 'badge', testid: 'skill-version', text: `v${version.version}` }), isLatest ? badge('latest', 'latest') : null, version.author_kind === 'evolver' ? badge('evolved', 'evolved') : null));
  root.append(title);
  if (!isLatest) {
    root.append(h('p', { class: 'callout', testid: 'older-version' }, `This is version ${version.version}; the latest is `, h('a', { href: href(`/skills/${encodeURIComponent(slug)}`) }, latest.version), '.'));
  }
  root.append(h('p', { class: 'description', testid: 'skill-description', text: version.description || '' }));

  // SKILL.md, rendered, with its frontmatter shown as it is written.
  const { frontmatter, body } = splitFrontmatter(skillMd ?? '');
  const readme = h('div', { class: 'markdown', testid: 'skill-readme' }, renderMarkdown(body));
  const readmeCard = card('SKILL.md', frontmatter ? pre(frontmatter, { class: 'frontmatter', testid: 'skill-frontmatter' }) : null, readme);
  if (writable) {
    const edit = button('Edit SKILL.md', () => {
      const editor = skillEditor({
        slug,
        scope: skill.scope,
        text: skillMd ?? '',
        files: () => otherFiles(slug, version.version, version.files || [], signal),
        onPublished: (published) => {
          flash(`Published ${published.slug} ${published.version}.`);
          go(`/skills/${encodeURIComponent(slug)}`);
        },
        onCancel: () => editorCard.replaceWith(readmeCard),
      });
      const editorCard = card(`Edit SKILL.md (publishes a new version after ${latest.version})`, editor);
      readmeCard.replaceWith(editorCard);
      editor.querySelector('textarea').focus();
    }, { testid: 'skill-edit' });
    readmeCard.querySelector('h2').after(h('div', { class: 'buttons' }, edit));
  }
  root.append(readmeCard);

  root.append(card('Files', filesView(slug, version.version, version.files || [], signal)));

  // Versions, a comparison of any two, and rollback.
  const from = h('select', { name: 'from', testid: 'diff-from' }, versions.map((v) => h('option', { value: v.version, text: v.version })));
  const to = h('select', { name: 'to', testid: 'diff-to' }, versions.map((v) => h('option', { value: v.version, text: v.version })));
  if (versions.length > 1) from.value = versions[1].version;
  if (versions.length) to.value = versions[0].version;
  const compareForm = h('form', { class: 'compare', testid: 'compare-form' }, field('From', from), field('To', to), h('button', { type: 'submit', testid: 'diff-compare' }, 'Compare'));
  compareForm.addEventListener('submit', (event) => {
    event.preventDefault();
    go(`/skills/${encodeURIComponent(slug)}/diff`, { from: from.value, to: to.value });
  });

  const rows = versions.map((v) => {
    const actions = h('td', { class: 'actions' });
    if (writable && v.version !== latest.version) {
      const restore = button(`Restore ${v.version}`, () => act(restore, async () => {
        const published = await api.post(skillPath(slug, 'rollback'), { version: v.version });
        flash(`Restored ${v.version} as the new version ${published.version}.`);
        go(`/skills/${encodeURIComponent(slug)}`);
      }), { testid: 'skill-rollback', dataset: { version: v.version } });
      actions.append(restore);
    }
    return h('tr', { testid: 'version-row', dataset: { version: v.version }, class: v.version === version.version ? 'current' : '' },
      h('th', { scope: 'row' }, h('a', { href: href(`/skills/${encodeURIComponent(slug)}`, { version: v.version }) }, v.version)),
      h('td', { text: time(v.created_at) }),
      h('td', { class: 'hide-narrow', text: v.author_kind }),
      h('td', { class: 'changelog', text: v.changelog || '' }),
      actions);
  });
  const table = h('div', { class: 'table-wrap' }, h('table', { class: 'versions', testid: 'versions-table' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', text: 'Version' }),
      h('th', { scope: 'col', text: 'Published' }),
      h('th', { scope: 'col', class: 'hide-narrow', text: 'By' }),
      h('th', { scope: 'col', text: 'Changelog' }),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden', text: 'Actions' })))),
    h('tbody', {}, rows)));
  root.append(card('Versions', versions.length > 1 ? compareForm : null, table));

  root.append(card('Provenance', provenanceView(version)));
  root.append(card('Sync', syncView(slug)));

  if (writable) {
    const actions = h('div', { class: 'buttons' });
    const remove = button('Delete skill', () => {
      const yes = button('Delete for good', () => act(yes, async () => {
        await api.del(skillPath(slug));
        flash(`${slug} is deleted; its versions are kept on the server.`);
        go('/skills');
      }), { class: 'danger', testid: 'skill-delete-confirm' });
      const no = button('Keep it', () => question.replaceWith(actions), { testid: 'skill-delete-cancel' });
      const question = h('div', { class: 'confirm' }, h('p', { text: `Delete ${slug}? It disappears from listings and from every client's sync.` }), h('div', { class: 'buttons' }, yes, no));
      actions.replaceWith(question);
      no.focus();
    }, { class: 'danger', testid: 'skill-delete' });
    actions.append(remove);
    root.append(card('Delete', actions));
  }
  root.dataset.ready = 'true';
}

export async function renderDiffPage(ctx) {
  const { root, params, query, signal } = ctx;
  const slug = params.slug;
  const fromVersion = query.get('from');
  const toVersion = query.get('to');
  root.append(h('div', { class: 'page-header' },
    h('h1', { text: `${slug}: ${fromVersion ?? '?'} → ${toVersion ?? '?'}` }),
    h('div', { class: 'page-actions' }, h('a', { href: href(`/skills/${encodeURIComponent(slug)}`), testid: 'back-to-skill' }, `Back to ${slug}`))));
  if (!fromVersion || !toVersion) {
    showNotice('Pick two versions on the skill page to compare them.');
    return;
  }
  const result = await api.get(`${skillPath(slug, 'diff')}?from=${encodeURIComponent(fromVersion)}&to=${encodeURIComponent(toVersion)}`, { signal });
  const text = result.diff || '';
  if (!text.trim()) {
    root.append(h('p', { class: 'card muted', testid: 'diff-empty', text: 'The two versions have the same files.' }));
  } else {
    const { element, added, removed } = renderDiff(text, { testid: 'diff' });
    root.append(h('p', { class: 'diff-stats', testid: 'diff-stats' }, h('span', { class: 'added', text: `+${number(added)}` }), ' ', h('span', { class: 'removed', text: `−${number(removed)}` })), element);
  }
  root.dataset.readyMs = performance.now().toFixed(1);
  root.dataset.ready = 'true';
}
