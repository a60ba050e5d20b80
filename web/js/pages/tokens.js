// The user's API tokens: make one (shown once), see them by id and age, revoke one.

import { api, apiPath } from '../api.js';
import { h, button, act, card, pageHeader, showNotice } from '../dom.js';
import { time } from '../format.js';
import { secretBox } from './admin.js';

export async function render(ctx) {
  const { root, signal } = ctx;
  const list = h('ul', { class: 'list', testid: 'token-list' });
  const created = h('div', { testid: 'created-token' });
  const create = button('New token', () => act(create, async () => {
    const result = await api.post('/api/tokens');
    created.replaceChildren(secretBox('Your new API token', result.token, 'new-token'));
    await load();
  }), { class: 'primary', testid: 'token-create' });

  root.append(
    pageHeader('API tokens', create),
    h('p', { class: 'muted', text: 'Tokens let programs act as you: the OpenAI-compatible endpoint, `skillhive sync`, the ClawHub CLI. The server keeps only a hash of each.' }),
    created,
    card('Your tokens', list),
  );

  function row(token) {
    const item = h('li', { class: 'token-row', testid: 'token-row', dataset: { id: token.id } },
      h('code', { text: token.id }), h('span', { class: 'muted', text: ` made ${time(token.created_at)} ` }));
    const revoke = button('Revoke', () => act(revoke, async () => {
      await api.del(apiPath('api', 'tokens', token.id));
      showNotice(`Token ${token.id} is revoked; every program using it is refused from now on.`);
      await load();
    }), { class: 'danger small', testid: 'token-revoke' });
    item.append(revoke);
    return item;
  }

  async function load() {
    const { tokens } = await api.get('/api/tokens', { signal });
    list.replaceChildren(...tokens.map(row));
    if (!tokens.length) list.append(h('li', { class: 'muted empty', text: 'No tokens: you signed in with a password.' }));
  }
  await load();
  root.dataset.ready = 'true';
}
