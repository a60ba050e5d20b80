// The user's sessions: search by title, show archived ones, rename, archive, delete.

import { api, apiPath, query } from '../api.js';
import { h, field, button, act, badge, pageHeader, showNotice } from '../dom.js';
import { href } from '../router.js';
import { number, duration, stopReason, time } from '../format.js';

// The summary of a session's turns: the server sends steps, prompt and completion
// tokens, model time and the last stop reason (older servers sent total_tokens and
// elapsed_ms, which are read too).
function sessionMeta(session) {
  const summary = session.summary || {};
  const tokens = summary.total_tokens ?? (summary.prompt_tokens === undefined ? null : (summary.prompt_tokens || 0) + (summary.completion_tokens || 0));
  const millis = summary.elapsed_ms ?? summary.model_ms;
  // Each label stays on one line with its value: a <div> groups them, as HTML allows in <dl>.
  const pair = (label, value, testid) => h('div', {}, h('dt', { text: label }), h('dd', { testid, text: value }));
  return h(
    'dl',
    { class: 'inline-facts' },
    pair('Last stop', stopReason(summary.stop_reason), 'session-stop'),
    pair('Steps', number(summary.steps)),
    pair('Tokens', number(tokens)),
    pair(summary.elapsed_ms === undefined ? 'Model time' : 'Time', duration(millis)),
    pair('Updated', time(session.updated_at)),
  );
}

export async function render(ctx) {
  const { root, signal, query: params } = ctx;
  const search = h('input', { type: 'search', name: 'q', testid: 'session-search', value: params.get('q') || '', placeholder: 'Words in the title' });
  const archived = h('input', { type: 'checkbox', id: 'show-archived', name: 'archived', testid: 'show-archived', checked: params.get('archived') === 'true' });
  const list = h('ul', { class: 'list', testid: 'session-list' });
  const count = h('p', { class: 'muted', testid: 'session-count' });

  root.append(
    pageHeader('Sessions', h('a', { href: '#/chat', class: 'button primary', testid: 'new-session' }, 'New chat')),
    h('div', { class: 'toolbar card' }, field('Search titles', search), h('div', { class: 'field checkbox' }, archived, h('label', { for: 'show-archived', text: 'Show archived sessions' }))),
    count,
    list,
  );

  function row(session) {
    const titleLink = h('a', { href: href(`/chat/${encodeURIComponent(session.id)}`), class: 'row-title', testid: 'session-title' }, session.title);
    const heading = h('h2', { class: 'row-heading' }, titleLink);
    const actions = h('div', { class: 'buttons' });
    const item = h(
      'li',
      { class: 'card session-row', testid: 'session-row', dataset: { id: session.id } },
      h('div', { class: 'row-top' }, heading, h('div', { class: 'badges' }, badge(session.status, `status-${session.status}`), session.archived ? badge('archived') : null)),
      sessionMeta(session),
      actions,
    );

    const trajectory = h('a', { href: href(`/sessions/${encodeURIComponent(session.id)}`), testid: 'session-trajectory' }, 'Trajectory');
    const rename = button('Rename', () => startRename(), { testid: 'session-rename' });
    const archive = button(session.archived ? 'Unarchive' : 'Archive', () => act(archive, toggleArchive), { testid: 'session-archive' });
    const remove = button('Delete', () => confirmDelete(), { testid: 'session-delete', class: 'danger' });
    actions.append(trajectory, rename, archive, remove);

    function startRename() {
      const input = h('input', { type: 'text', value: session.title, testid: 'session-title-input', maxlength: 200 });
      const save = h('button', { type: 'submit', class: 'primary', testid: 'session-rename-save' }, 'Save');
      const cancel = button('Cancel', () => form.replaceWith(heading));
      const form = h('form', { class: 'inline-form' }, field('New title', input), save, cancel);
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        act(save, async () => {
          const changed = await api.patch(apiPath('api', 'sessions', session.id), { title: input.value });
          session.title = changed.title;
          titleLink.textContent = changed.title;
          form.replaceWith(heading);
        });
      });
      heading.replaceWith(form);
      input.focus();
      input.select();
    }

    async function toggleArchive() {
      await api.patch(apiPath('api', 'sessions', session.id), { archived: !session.archived });
      item.remove();
      showNotice(session.archived ? `“${session.title}” is back in your sessions.` : `“${session.title}” is archived.`);
      updateCount();
    }

    function confirmDelete() {
      const yes = button('Delete for good', () => act(yes, async () => {
        await api.del(apiPath('api', 'sessions', session.id));
        item.remove();
        showNotice(`“${session.title}” is deleted.`);
        updateCount();
      }), { testid: 'session-delete-confirm', class: 'danger' });
      const no = button('Keep it', () => question.replaceWith(actions), { testid: 'session-delete-cancel' });
      const question = h('div', { class: 'confirm', role: 'group', 'aria-label': 'Confirm deletion' }, h('p', { text: 'Delete this session, its trajectory and its ratings?' }), h('div', { class: 'buttons' }, yes, no));
      actions.replaceWith(question);
      no.focus();
    }

    return item;
  }

  function updateCount() {
    const n = list.querySelectorAll('.session-row').length;
    count.textContent = `${n} ${archived.checked ? 'archived ' : ''}session${n === 1 ? '' : 's'}`;
  }

  let loading = null;
  async function load() {
    if (loading) loading.abort();
    loading = new AbortController();
    signal.addEventListener('abort', () => loading.abort());
    const { sessions } = await api.get(`/api/sessions${query({ q: search.value.trim(), archived: archived.checked })}`, { signal: loading.signal });
    list.replaceChildren(...sessions.map(row));
    if (!sessions.length) list.append(h('li', { class: 'muted empty', text: search.value.trim() ? 'No session title has those words.' : 'No sessions yet.' }));
    updateCount();
    root.dataset.ready = 'true';
  }

  let timer = null;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => act(null, load), 250);
  });
  archived.addEventListener('change', () => act(null, load));
  await load();
}
