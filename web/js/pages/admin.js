// Accounts, for admins: create a user (its first API token is shown once), make or
// unmake admins, disable, set a password, and manage group membership.

import { api, apiPath } from '../api.js';
import { h, field, button, act, badge, card, pageHeader, showNotice } from '../dom.js';
import { currentUser } from '../state.js';
import { time } from '../format.js';

const userPath = (id, ...rest) => apiPath('api', 'admin', 'users', id, ...rest);

// A secret shown once: selectable, with a note that it will not be shown again.
export function secretBox(label, secret, testid) {
  const value = h('input', { type: 'text', readonly: true, value: secret, testid, class: 'secret', 'aria-label': label });
  value.addEventListener('focus', () => value.select());
  return h('div', { class: 'callout secret-box', role: 'group', 'aria-label': label },
    h('p', {}, h('strong', { text: label }), ' — copy it now; it is not shown again.'),
    value);
}

export async function render(ctx) {
  const { root, signal } = ctx;
  const me = currentUser();
  const list = h('ul', { class: 'list', testid: 'user-list' });
  const created = h('div', { testid: 'created-user' });

  const name = h('input', { type: 'text', name: 'name', required: true, testid: 'new-user-name', autocomplete: 'off' });
  const password = h('input', { type: 'password', name: 'password', testid: 'new-user-password', autocomplete: 'new-password' });
  const makeAdmin = h('input', { type: 'checkbox', id: 'new-user-admin', name: 'is_admin', testid: 'new-user-admin' });
  const create = h('button', { type: 'submit', class: 'primary', testid: 'new-user-create' }, 'Create user');
  const form = h('form', { class: 'stack', testid: 'new-user-form' },
    field('Name', name),
    field('Password', password, 'Optional: without one the user signs in with the token below.'),
    h('div', { class: 'field checkbox' }, makeAdmin, h('label', { for: 'new-user-admin', text: 'Administrator' })),
    create);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act(create, async () => {
      const body = { name: name.value.trim(), is_admin: makeAdmin.checked };
      if (password.value) body.password = password.value;
      const result = await api.post('/api/admin/users', body);
      password.value = '';
      name.value = '';
      makeAdmin.checked = false;
      created.replaceChildren(secretBox(`API token for ${result.user.name}`, result.token, 'new-user-token'));
      await load();
    });
  });

  root.append(pageHeader('Users'), card('New user', form, created), card('Everyone', list));

  function row(user) {
    const item = h('li', { class: 'card user-row', testid: 'user-row', dataset: { id: user.id, name: user.name } });
    const self = user.id === me.id;
    const update = async (change, message) => {
      await api.patch(userPath(user.id), change);
      showNotice(message);
      await load();
    };
    const adminToggle = button(user.is_admin ? 'Remove admin' : 'Make admin', () => act(adminToggle, () => update({ is_admin: !user.is_admin }, `${user.name} is ${user.is_admin ? 'no longer' : 'now'} an admin.`)), { testid: 'user-admin-toggle', disabled: self });
    const disableToggle = button(user.disabled ? 'Enable' : 'Disable', () => act(disableToggle, () => update({ disabled: !user.disabled }, `${user.name} is ${user.disabled ? 'enabled' : 'disabled'}.`)), { testid: 'user-disable-toggle', class: user.disabled ? '' : 'danger', disabled: self });

    const newPassword = h('input', { type: 'password', name: 'password', testid: 'user-password', autocomplete: 'new-password', required: true });
    const setPassword = h('button', { type: 'submit', testid: 'user-password-set' }, 'Set password');
    const passwordForm = h('form', { class: 'inline-form' }, field('New password', newPassword), setPassword);
    passwordForm.addEventListener('submit', (event) => {
      event.preventDefault();
      act(setPassword, async () => {
        await api.patch(userPath(user.id), { password: newPassword.value });
        newPassword.value = '';
        showNotice(`${user.name} has a new password.`);
        await load();
      });
    });

    const group = h('input', { type: 'text', name: 'group', testid: 'user-group', required: true, pattern: '[A-Za-z0-9_\\-]+', autocomplete: 'off' });
    const join = h('button', { type: 'submit', testid: 'user-group-join' }, 'Join group');
    const groupForm = h('form', { class: 'inline-form' }, field('Group', group), join);
    groupForm.addEventListener('submit', (event) => {
      event.preventDefault();
      act(join, async () => {
        await api.put(userPath(user.id, 'groups', group.value.trim()));
        showNotice(`${user.name} joined ${group.value.trim()}.`);
        await load();
      });
    });

    const groups = h('ul', { class: 'groups', testid: 'user-groups' }, (user.groups || []).map((name) => {
      const leave = button(`Leave ${name}`, () => act(leave, async () => {
        await api.del(userPath(user.id, 'groups', name));
        showNotice(`${user.name} left ${name}.`);
        await load();
      }), { testid: 'user-group-leave', class: 'small' });
      return h('li', {}, badge(`group:${name}`, 'scope-group'), ' ', leave);
    }));

    item.append(
      h('div', { class: 'row-top' },
        h('h3', { class: 'row-heading', text: user.name }),
        h('div', { class: 'badges' }, user.is_admin ? badge('admin', 'ok') : null, user.disabled ? badge('disabled', 'error') : null, user.has_password ? badge('password') : badge('token only'), self ? badge('you') : null)),
      h('p', { class: 'muted', text: `Created ${time(user.created_at)} · id ${user.id}` }),
      groups,
      h('div', { class: 'buttons' }, adminToggle, disableToggle),
      passwordForm,
      groupForm,
    );
    return item;
  }

  async function load() {
    const { users } = await api.get('/api/admin/users', { signal });
    list.replaceChildren(...users.map(row));
  }
  await load();
  root.dataset.ready = 'true';
}
