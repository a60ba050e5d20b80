// Talking to the server: JSON requests, its error shape, the CSRF header, and turns
// streamed as server-sent events over a POST.
//
// The browser signs in with an HttpOnly cookie, which scripts never see. A request that
// changes something must also carry the CSRF token the server gave at sign-in; it lives
// only in this module's memory, so a reload asks `GET /api/me` for it again.

let csrfToken = null;
let onUnauthorized = () => {};

export function setCsrf(token) {
  csrfToken = token || null;
}

// Called when the server answers 401 to a signed-in request: the cookie has expired or
// was signed out elsewhere, so the app goes back to the sign-in page.
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

// An error the server reported, with its status and the message it chose to show.
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code || null;
  }
}

function headersFor(method, extra) {
  const headers = { Accept: 'application/json', ...extra };
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) {
    headers['X-CSRF-Token'] = csrfToken;
  }
  return headers;
}

// Reads the server's `{"error": {"message"}}` body; anything else still gets a message
// that names the status, so that no failure is silent.
async function errorFrom(response) {
  let message = `The server answered ${response.status} ${response.statusText}`.trim();
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      message = body.error.message;
      code = body.error.code || null;
    }
  } catch {
    // The body was not JSON; the status line has to do.
  }
  return new ApiError(response.status, message, code);
}

// One request. `json` is sent as a JSON body, `body` as is (for file uploads). Set
// `redirectOn401: false` where a 401 is an expected answer (signing in, the first
// `GET /api/me`). With `raw: true` the answer's bytes come back as an ArrayBuffer,
// whatever its type (a skill's files).
export async function request(method, path, options = {}) {
  const { json, body, headers = {}, signal, redirectOn401 = true, raw = false } = options;
  const init = { method, headers: headersFor(method, headers), credentials: 'same-origin', signal };
  if (json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'The server could not be reached. Check your connection and try again.');
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && redirectOn401) onUnauthorized();
    throw error;
  }
  if (raw) return response.arrayBuffer();
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  return type.includes('application/json') ? response.json() : response.text();
}

export const api = {
  get: (path, options) => request('GET', path, options),
  post: (path, json, options) => request('POST', path, { ...options, json }),
  patch: (path, json, options) => request('PATCH', path, { ...options, json }),
  put: (path, json, options) => request('PUT', path, { ...options, json }),
  del: (path, options) => request('DELETE', path, options),
};

// Builds a path from segments, each escaped, so that a slug, an id or a file name never
// changes which endpoint is called.
export function apiPath(...segments) {
  return '/' + segments.map((segment) => String(segment).split('/').map(encodeURIComponent).join('/')).join('/');
}

// A query string from an object, leaving out empty values.
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '' && value !== false) search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

// Splits a stream of server-sent events into frames. The server sends `event:` and
// `data:` lines, a blank line ending each frame, and comment lines (`:`) to keep the
// connection alive. Returns the text left over after the last complete frame.
export function parseSseChunk(buffer, onFrame) {
  // A "\r" at the very end may be the first half of a "\r\n" split between chunks, so it
  // waits for the next one.
  const held = buffer.endsWith('\r') ? '\r' : '';
  const normalized = (held ? buffer.slice(0, -1) : buffer).replace(/\r\n?/g, '\n');
  const frames = normalized.split('\n\n');
  const rest = frames.pop();
  for (const frame of frames) {
    let name = 'message';
    const data = [];
    for (const line of frame.split('\n')) {
      if (line.startsWith(':') || line === '') continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length) onFrame(name, data.join('\n'));
  }
  return rest + held;
}

// Posts a message and reads the turn as it runs. `onFrame(name, value)` gets each
// `delta`, `event` and the final `done`, with the JSON already parsed. Resolves once the
// stream ends.
export async function streamTurn(sessionId, body, onFrame, signal) {
  let response;
  try {
    response = await fetch(apiPath('api', 'sessions', sessionId, 'messages'), {
      method: 'POST',
      headers: headersFor('POST', { 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
      body: JSON.stringify(body),
      credentials: 'same-origin',
      signal,
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'The server could not be reached. Check your connection and try again.');
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401) onUnauthorized();
    throw error;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const deliver = (name, data) => {
    let value;
    try {
      value = JSON.parse(data);
    } catch {
      return;
    }
    onFrame(name, value);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = parseSseChunk(buffer + decoder.decode(value, { stream: true }), deliver);
  }
  parseSseChunk(buffer + decoder.decode() + '\n\n', deliver);
}
