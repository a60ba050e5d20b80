// Editing a skill's SKILL.md in the browser: the server checks the bundle rule by rule
// (`POST /api/skills/validate`) and only a bundle that passes can be published. The
// other files of the version are published unchanged with the new SKILL.md.

import { api, apiPath, request } from './api.js';
import { h, field, button, act, showNotice } from './dom.js';

// The bytes of a file as the publish API takes them: text as is, anything else base64.
function asBundleFile(path, buffer) {
  try {
    return { path, content: new TextDecoder('utf-8', { fatal: true }).decode(buffer) };
  } catch {
    const bytes = new Uint8Array(buffer);
    let binary = '';
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { path, content_base64: btoa(binary) };
  }
}

// Every file of `version` but SKILL.md, read from the server.
export async function otherFiles(slug, version, files, signal) {
  const result = [];
  for (const file of files) {
    if (file.path === 'SKILL.md') continue;
    const buffer = await request('GET', `${apiPath('api', 'skills', slug, 'files', file.path)}?version=${encodeURIComponent(version)}`, { raw: true, signal });
    result.push(asBundleFile(file.path, buffer));
  }
  return result;
}

export const NEW_SKILL_TEMPLATE = `---
name: my-skill
description: What this skill does and when an agent should use it, in one or two sentences.
---

# My skill

## Steps

1. The first thing to do.
2. The next thing to do.
`;

// Options: slug (fixed) or none (the form asks for it), scope (fixed) or scopes (the
// form offers them), text (the starting SKILL.md), files (a function returning the other
// files to publish with it), onPublished(version), onCancel().
export function skillEditor(options) {
  const { text = NEW_SKILL_TEMPLATE, onPublished, onCancel } = options;
  const slugInput = options.slug ? null : h('input', { type: 'text', name: 'slug', testid: 'skill-slug', required: true, pattern: '[a-z0-9][a-z0-9\\-]*', placeholder: 'my-skill' });
  const scopeSelect = options.scope
    ? null
    : h('select', { name: 'scope', testid: 'skill-scope-select' }, (options.scopes || ['private']).map((scope) => h('option', { value: scope, text: scope })));
  const editor = h('textarea', { rows: 18, name: 'skill-md', class: 'code-input', spellcheck: 'false', testid: 'skill-md-editor', value: text });
  const changelog = h('input', { type: 'text', name: 'changelog', testid: 'skill-changelog', placeholder: 'What changed and why' });
  const results = h('div', { class: 'rules-verdict', testid: 'validate-results', 'aria-live': 'polite' });
  const validate = h('button', { type: 'submit', testid: 'skill-validate' }, 'Validate');
  const publish = button('Publish', () => act(publish, publishNow), { class: 'primary', testid: 'skill-publish', disabled: true });
  const cancel = onCancel ? button('Cancel', onCancel, { testid: 'skill-edit-cancel' }) : null;

  // The text that last passed validation; editing it again asks for a new check.
  let validatedText = null;
  let validatedFiles = null;

  async function bundle() {
    const rest = options.files ? await options.files() : [];
    return [{ path: 'SKILL.md', content: editor.value }, ...rest];
  }

  // Each rule the server checks: what it asks, whether the bundle keeps it, and the
  // problems (file, line, message) where it does not.
  function ruleItem(rule) {
    const problems = rule.problems || (rule.message && !rule.ok ? [rule.message] : []);
    return h('li', { class: `rule ${rule.ok ? 'ok' : 'fail'}`, testid: 'validate-rule', dataset: { rule: rule.rule, ok: String(rule.ok) } },
      h('span', { class: 'rule-mark', text: rule.ok ? '✓ passes' : '✗ fails' }),
      h('span', { class: 'rule-name', text: rule.rule }),
      h('span', { class: 'rule-message', text: rule.asks || (rule.ok ? rule.message || '' : '') }),
      problems.length ? h('ul', { class: 'rule-problems' }, problems.map((problem) => h('li', { text: problem }))) : null);
  }

  async function validateNow() {
    publish.disabled = true;
    const slug = options.slug || slugInput.value.trim();
    const files = await bundle();
    const verdict = await api.post(`${apiPath('api', 'skills', slug)}/validate`, { files });
    // Broken rules first, in full; the ones that hold fold away under a count.
    const rules = verdict.rules || [];
    const broken = rules.filter((rule) => !rule.ok);
    const kept = rules.filter((rule) => rule.ok);
    results.replaceChildren(
      h('p', { class: broken.length ? 'rules-summary fail' : 'rules-summary ok', testid: 'validate-summary', text: broken.length ? `${broken.length} of ${rules.length} rules are broken.` : `All ${rules.length} rules pass.` }),
      broken.length ? h('ul', { class: 'rules' }, broken.map(ruleItem)) : null,
      kept.length ? h('details', { class: 'rules-kept' }, h('summary', { text: `${kept.length} rules that pass` }), h('ul', { class: 'rules' }, kept.map(ruleItem))) : null,
    );
    results.dataset.ok = String(Boolean(verdict.ok));
    if (verdict.ok) {
      validatedText = editor.value;
      validatedFiles = files;
      publish.disabled = false;
      showNotice('The skill passes every rule; it can be published.');
    } else {
      showNotice('The skill breaks a rule; fix what is marked and validate again.');
    }
  }

  async function publishNow() {
    if (editor.value !== validatedText) return;
    const slug = options.slug || slugInput.value.trim();
    const scope = options.scope || scopeSelect.value;
    const body = { slug, scope, files: validatedFiles };
    if (changelog.value.trim()) body.changelog = changelog.value.trim();
    const published = await api.post('/api/skills', body);
    showNotice(`Published ${published.slug} ${published.version}.`);
    if (onPublished) onPublished(published);
  }

  editor.addEventListener('input', () => {
    publish.disabled = editor.value !== validatedText;
  });
  // The rules depend on the slug too (`name` must match it), so a new slug asks for a new
  // check. While the frontmatter's `name` still follows the slug, it is kept equal to it.
  if (slugInput) {
    let followed = 'my-skill';
    slugInput.addEventListener('input', () => {
      validatedText = null;
      publish.disabled = true;
      const slug = slugInput.value.trim();
      const lines = editor.value.split('\n');
      const at = lines.indexOf(`name: ${followed}`);
      if (at !== -1) {
        lines[at] = `name: ${slug}`;
        editor.value = lines.join('\n');
        followed = slug;
      }
    });
  }

  const form = h(
    'form',
    { class: 'skill-editor stack', testid: 'skill-editor' },
    slugInput ? field('Slug', slugInput, 'Lower-case letters, digits and hyphens; the same as `name` in the frontmatter.') : null,
    scopeSelect ? field('Scope', scopeSelect) : null,
    field('SKILL.md', editor),
    field('Changelog', changelog),
    h('div', { class: 'buttons' }, validate, publish, cancel),
    results,
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act(validate, validateNow);
  });
  return form;
}
