// The pages shown for an address that names nothing, something of another user's (the
// server answers 404 for both, so they look the same here), or an admin page.

import { h } from '../dom.js';

export function renderNotFound({ root, message }) {
  root.append(
    h('div', { class: 'card empty-state' },
      h('h1', { text: 'Not found' }),
      h('p', { testid: 'not-found-message', text: message || 'There is nothing at this address.' }),
      h('p', {}, h('a', { href: '#/chat' }, 'Go to chat'))),
  );
}

export function renderForbidden({ root }) {
  root.append(
    h('div', { class: 'card empty-state' },
      h('h1', { text: 'Admins only' }),
      h('p', { testid: 'forbidden-message', text: 'This page is for administrators. Ask one if you need something from it.' }),
      h('p', {}, h('a', { href: '#/chat' }, 'Go to chat'))),
  );
}
