// The skills the user may see: search, filter by scope, and publish a new one.

import { api, apiPath, query, request } from '../api.js';
import { h, field, button, act, pageHeader, badge } from '../dom.js';
import { href } from '../router.js';
import { currentUser, isAdmin } from '../state.js';
import { number, time } from '../format.js';
import { skillEditor } from '../skill-editor.js';

export function scopeBadge(scope) {
  const kind = scope === 'shared' ? 'scope-shared' : scope && scope.startsWith('group:') ? 'scope-group' : 'scope-private';
  const badgeElement = badge(scope, kind);
  badgeElement.dataset.testid = 'scope-badge';
  return badgeElement;
}

// The scopes the user may publish to.
export function writableScopes() {
  const user = currentUser();
  const scopes = ['private', ...(user.groups || []).map((group) => `group:${group}`)];
  if (isAdmin()) scopes.push('shared');
  return scopes;
}

export async function render(ctx) {
  const { root, signal, query: params } = ctx;
  const user = currentUser();
  const search = h('input', { type: 'search', name: 'q', testid: 'skill-search', value: params.get('q') || '', placeholder: 'Name or description' });
  const scopes = ['shared', 'private', ...(user.groups || []).map((group) => `group:${group}`)];
  const scope = h('select', { name: 'scope', testid: 'skill-scope' }, h('option', { value: '', text: 'All scopes' }), scopes.map((value) => h('option', { value, text: value, selected: params.get('scope') === value })));
  const list = h('ul', { class: 'list skill-list', testid: 'skill-list' });
  const editorSlot = h('div');
  const newSkill = button('New skill', () => {
    newSkill.hidden = true;
    editorSlot.replaceChildren(h('section', { class: 'card' }, h('h2', { text: 'New skill' }), skillEditor({
      scopes: writableScopes(),
      onPublished: (published) => { location.hash = href(`/skills/${encodeURIComponent(published.slug)}`); },
      onCancel: () => { editorSlot.replaceChildren(); newSkill.hidden = false; },
    })));
  }, { testid: 'new-skill', class: 'primary' });

  // Publishing a zip of a skill's folder: the server unpacks it, checks it as a bundle and
  // publishes it as the next version of that slug (or its first).
  const zipSlug = h('input', { name: 'slug', testid: 'zip-slug', required: true, autocomplete: 'off', placeholder: 'csv-tools' });
  const zipScope = h('select', { name: 'zip-scope', testid: 'zip-scope' }, writableScopes().map((value) => h('option', { value, text: value })));
  const zipFile = h('input', { type: 'file', name: 'zip', accept: '.zip,application/zip', testid: 'zip-file' });
  const zipPublish = button('Publish the zip', () => act(zipPublish, async () => {
    const file = zipFile.files && zipFile.files[0];
    const slug = zipSlug.value.trim();
    if (!slug || !file) throw new Error('Name the skill and choose a zip of its folder.');
    const published = await request('POST', `${apiPath('api', 'skills', slug, 'zip')}${query({ scope: zipScope.value })}`, {
      body: file,
      headers: { 'Content-Type': 'application/zip' },
    });
    location.hash = href(`/skills/${encodeURIComponent(published.slug || slug)}`);
  }), { testid: 'zip-publish' });
  const zipForm = h('section', { class: 'card zip-upload', testid: 'zip-upload' },
    h('h2', { text: 'Publish from a zip' }),
    h('div', { class: 'toolbar' }, field('Skill name', zipSlug), field('Scope', zipScope), field('Zip of the folder', zipFile)),
    h('div', { class: 'buttons' }, zipPublish));

  root.append(
    pageHeader('Skills', newSkill),
    editorSlot,
    h('div', { class: 'toolbar card' }, field('Search', search), field('Scope', scope)),
    list,
    zipForm,
  );

  function row(skill) {
    const latest = skill.latest || {};
    return h(
      'li',
      { class: 'card skill-row', testid: 'skill-row', dataset: { slug: skill.slug } },
      h('div', { class: 'row-top' },
        h('h2', { class: 'row-heading' }, h('a', { href: href(`/skills/${encodeURIComponent(skill.slug)}`), testid: 'skill-name' }, skill.slug)),
        h('div', { class: 'badges' }, scopeBadge(skill.scope), badge(`v${latest.version}`), latest.author_kind === 'evolver' ? badge('evolved', 'evolved') : null)),
      h('p', { class: 'description', text: latest.description || '' }),
      h('p', { class: 'muted', text: `${number(skill.version_count)} version${skill.version_count === 1 ? '' : 's'} · updated ${time(skill.updated_at)}` }),
    );
  }

  let loading = null;
  async function load() {
    if (loading) loading.abort();
    loading = new AbortController();
    signal.addEventListener('abort', () => loading.abort());
    const { skills } = await api.get(`/api/skills${query({ q: search.value.trim(), scope: scope.value })}`, { signal: loading.signal });
    list.replaceChildren(...skills.map(row));
    if (!skills.length) list.append(h('li', { class: 'muted empty', text: 'No skill matches.' }));
    root.dataset.ready = 'true';
  }
  let timer = null;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => act(null, load), 250);
  });
  scope.addEventListener('change', () => act(null, load));
  await load();
}
