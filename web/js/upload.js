// Uploading files from the browser into the user's workspace. The server keeps UTF-8
// text only, so anything else is refused here with a message rather than sent mangled.

import { request, apiPath } from './api.js';

export async function uploadToWorkspace(file, path = file.name) {
  const buffer = await file.arrayBuffer();
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buffer);
  } catch {
    throw new Error(`${file.name} is not UTF-8 text; the workspace holds text files only.`);
  }
  return request('PUT', apiPath('api', 'workspace', 'files', path), {
    body: text,
    headers: { 'Content-Type': 'text/plain; charset=utf-8' },
  });
}

// Makes `target` accept dropped files: `onFiles` gets them, and `target` carries the
// class `dragging` while files are held over it.
export function acceptDrops(target, onFiles) {
  let depth = 0;
  const carriesFiles = (event) => Array.from(event.dataTransfer ? event.dataTransfer.types : []).includes('Files');
  target.addEventListener('dragenter', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth += 1;
    target.classList.add('dragging');
  });
  target.addEventListener('dragover', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  target.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) target.classList.remove('dragging');
  });
  target.addEventListener('drop', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth = 0;
    target.classList.remove('dragging');
    onFiles(Array.from(event.dataTransfer.files));
  });
}
