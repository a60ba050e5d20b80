// The user's workspace, the folder the agent's tools work in: list, upload (pick or drop
// files), download and delete.

import { api, apiPath } from '../api.js';
import { h, field, button, act, card, pageHeader, showNotice } from '../dom.js';
import { bytes } from '../format.js';
import { uploadToWorkspace, acceptDrops } from '../upload.js';

export async function render(ctx) {
  const { root, signal } = ctx;
  const list = h('ul', { class: 'list', testid: 'file-list' });
  const picker = h('input', { type: 'file', multiple: true, testid: 'file-upload' });
  const dropZone = h('div', { class: 'drop-zone', testid: 'drop-zone' }, field('Upload files', picker), h('p', { class: 'muted', text: 'Or drop text files anywhere on this page.' }));

  root.append(pageHeader('Workspace files'), card('Add files', dropZone), card('Files', list));

  const uploadAll = (files) => act(null, async () => {
    for (const file of files) {
      await uploadToWorkspace(file);
      showNotice(`Uploaded ${file.name}.`);
    }
    await load();
  });
  picker.addEventListener('change', () => {
    uploadAll(Array.from(picker.files)).then(() => {
      picker.value = '';
    });
  });
  acceptDrops(root, uploadAll);

  function row(file) {
    const path = apiPath('api', 'workspace', 'files', file.path);
    const item = h('li', { class: 'file-row', testid: 'file-row', dataset: { path: file.path } },
      h('code', { class: 'file-path', text: file.path }),
      h('span', { class: 'muted', text: bytes(file.bytes) }));
    const download = h('a', { href: path, download: file.path.split('/').pop(), testid: 'file-download', 'aria-label': `Download ${file.path}` }, 'Download');
    const remove = button('Delete', () => act(remove, async () => {
      await api.del(path);
      showNotice(`Deleted ${file.path}.`);
      await load();
    }), { class: 'danger small', testid: 'file-delete', 'aria-label': `Delete ${file.path}` });
    item.append(h('span', { class: 'buttons' }, download, remove));
    return item;
  }

  async function load() {
    const { files } = await api.get('/api/workspace/files', { signal });
    list.replaceChildren(...files.map(row));
    if (!files.length) list.append(h('li', { class: 'muted empty', text: 'The workspace is empty.' }));
  }
  await load();
  root.dataset.ready = 'true';
}
