// Sign-in: with a user name and password, or with an API token. The server answers with
// an HttpOnly cookie; the token typed here is sent once and then cleared from the form.

import { api } from '../api.js';
import { h, field, act, showError } from '../dom.js';

export async function render(ctx) {
  const { root } = ctx;
  root.classList.add('narrow');

  const username = h('input', { type: 'text', name: 'username', autocomplete: 'username', required: true, testid: 'login-username' });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true, testid: 'login-password' });
  const submitPassword = h('button', { type: 'submit', class: 'primary', testid: 'login-submit' }, 'Sign in');
  const passwordForm = h(
    'form',
    { class: 'card stack', testid: 'login-form' },
    h('h2', { text: 'Sign in' }),
    field('User name', username),
    field('Password', password),
    submitPassword,
  );
  passwordForm.addEventListener('submit', (event) => {
    event.preventDefault();
    act(submitPassword, async () => {
      const user = await api.post('/api/auth/login', { username: username.value.trim(), password: password.value }, { redirectOn401: false });
      password.value = '';
      ctx.onSignedIn(user);
    });
  });

  const token = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false', testid: 'login-token' });
  const submitToken = h('button', { type: 'submit', testid: 'login-token-submit' }, 'Sign in with token');
  const tokenForm = h(
    'form',
    { class: 'card stack', testid: 'login-token-form' },
    h('h2', { text: 'Or use an API token' }),
    field('API token', token, 'A token from `skillhive user add` or the Tokens page. It is used once to sign in and not kept.'),
    submitToken,
  );
  tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const typed = token.value.trim();
    // The token leaves the page with this one request and is not kept anywhere.
    token.value = '';
    if (!typed) {
      showError('Enter an API token.');
      return;
    }
    act(submitToken, async () => {
      const user = await api.post('/api/auth/login', { token: typed }, { redirectOn401: false });
      ctx.onSignedIn(user);
    });
  });

  root.append(h('h1', { text: 'Welcome to skillhive' }), h('p', { class: 'muted', text: 'Agents that share skills. Sign in to chat, browse skills and review what your agents did.' }), passwordForm, tokenForm);
  username.focus();
}
