// Hash routing: `#/skills/csv-inspect?version=1.0.0` is the path `/skills/csv-inspect`
// with the query `version=1.0.0`. The server serves only `/`, and a reload keeps the page.

export function currentRoute() {
  const hash = location.hash.startsWith('#') ? location.hash.slice(1) : '';
  const [rawPath, rawQuery = ''] = hash.split('?');
  const path = rawPath && rawPath.startsWith('/') ? rawPath : '/';
  return { path, query: new URLSearchParams(rawQuery) };
}

export function href(path, params) {
  const search = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '')).toString() : '';
  return `#${path}${search ? `?${search}` : ''}`;
}

export function go(path, params) {
  const target = href(path, params);
  if (location.hash === target) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = target;
}

// Changes the address without rendering the page again, for a page that already shows
// what the new address names (a new chat that just got its session id).
export function replaceQuietly(path, params) {
  history.replaceState(history.state, '', href(path, params));
}

// Matches a path against patterns like `/skills/:slug/diff`; returns the decoded
// parameters or null.
export function match(pattern, path) {
  const want = pattern.split('/');
  const have = path.split('/');
  if (want.length !== have.length) return null;
  const params = {};
  for (let i = 0; i < want.length; i += 1) {
    if (want[i].startsWith(':')) {
      if (!have[i]) return null;
      try {
        params[want[i].slice(1)] = decodeURIComponent(have[i]);
      } catch {
        return null;
      }
    } else if (want[i] !== have[i]) return null;
  }
  return params;
}
