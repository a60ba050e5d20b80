// The skillhive browser app: signs in, draws the navigation and shows the page that the
// address names. Each page lives in its own module under /js/pages/.

import { api, ApiError, setCsrf, setUnauthorizedHandler } from './js/api.js';
import { h, clear, clearMessages, showError, button, act } from './js/dom.js';
import { currentRoute, go, match } from './js/router.js';
import { currentUser, setCurrentUser } from './js/state.js';
import * as missing from './js/pages/notfound.js';

// A page's module is loaded when the page is first shown, so that opening one page
// fetches only the code that page needs.
const pages = {
  login: () => import('./js/pages/login.js'),
  chat: () => import('./js/pages/chat.js'),
  sessions: () => import('./js/pages/sessions.js'),
  trajectory: () => import('./js/pages/trajectory.js'),
  skills: () => import('./js/pages/skills.js'),
  skill: () => import('./js/pages/skill.js'),
  evolver: () => import('./js/pages/evolver.js'),
  admin: () => import('./js/pages/admin.js'),
  tokens: () => import('./js/pages/tokens.js'),
  files: () => import('./js/pages/files.js'),
};

// Pattern, page name (the root element's `data-page`), the page's module, the function in
// it that draws the page, admins only.
const ROUTES = [
  ['/login', 'login', pages.login, 'render', false],
  ['/chat', 'chat', pages.chat, 'render', false],
  ['/chat/:id', 'chat', pages.chat, 'render', false],
  ['/sessions', 'sessions', pages.sessions, 'render', false],
  ['/sessions/:id', 'trajectory', pages.trajectory, 'render', false],
  ['/skills', 'skills', pages.skills, 'render', false],
  ['/skills/:slug', 'skill', pages.skill, 'render', false],
  ['/skills/:slug/diff', 'diff', pages.skill, 'renderDiffPage', false],
  ['/evolver', 'evolver', pages.evolver, 'renderDesk', true],
  ['/evolver/runs/:id', 'run', pages.evolver, 'renderRun', true],
  ['/evolver/candidates/:id', 'candidate', pages.evolver, 'renderCandidate', true],
  ['/admin', 'admin', pages.admin, 'render', true],
  ['/tokens', 'tokens', pages.tokens, 'render', false],
  ['/files', 'files', pages.files, 'render', false],
];

const NAV = [
  ['chat', 'Chat', '#/chat', false],
  ['sessions', 'Sessions', '#/sessions', false],
  ['skills', 'Skills', '#/skills', false],
  ['files', 'Files', '#/files', false],
  ['tokens', 'Tokens', '#/tokens', false],
  ['evolver', 'Evolver', '#/evolver', true],
  ['admin', 'Admin', '#/admin', true],
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');

// Where to go after signing in: the page that was asked for before.
let returnTo = null;
// Each render gets a number and an abort signal; a page still loading when the user
// moves on is cancelled, and nothing it finishes later touches the new page.
let renderCount = 0;
let renderController = null;

function drawNav() {
  const user = currentUser();
  clear(nav);
  nav.hidden = !user;
  if (!user) return;
  const { path } = currentRoute();
  const section = path.split('/')[1] || 'chat';
  const list = h('ul', { class: 'nav-links' });
  for (const [key, label, target, adminOnly] of NAV) {
    if (adminOnly && !user.is_admin) continue;
    list.append(h('li', {}, h('a', { href: target, testid: `nav-${key}`, 'aria-current': section === key ? 'page' : null }, label)));
  }
  const signOut = button('Sign out', () => act(signOut, signOutNow), { testid: 'sign-out', class: 'link-button' });
  nav.append(list, h('div', { class: 'nav-user' }, h('span', { class: 'user-name', testid: 'user-name', text: user.name }), signOut));
}

async function signOutNow() {
  try {
    await api.post('/api/auth/logout', undefined, { redirectOn401: false });
  } catch (error) {
    // An expired cookie is already signed out; anything else is worth saying.
    if (!(error instanceof ApiError && error.status === 401)) throw error;
  }
  signedOut();
}

function signedOut() {
  setCurrentUser(null);
  setCsrf(null);
  drawNav();
  go('/login');
}

function signedIn(user) {
  setCurrentUser(user);
  setCsrf(user.csrf);
  drawNav();
  const target = returnTo;
  returnTo = null;
  if (target && target !== '#/login') location.hash = target;
  else go('/chat');
}

function findRoute(path) {
  for (const [pattern, name, load, entry, adminOnly] of ROUTES) {
    const params = match(pattern, path);
    if (params) return { name, load, entry, adminOnly, params };
  }
  return null;
}

// Marks a page as fully drawn (`data-ready`), which tests and benchmarks wait for.
function ready(root) {
  root.dataset.ready = 'true';
  return root;
}

function mount(name) {
  const root = h('section', { class: 'page', dataset: { page: name } });
  main.replaceChildren(root);
  return root;
}

async function renderRoute() {
  renderCount += 1;
  const count = renderCount;
  if (renderController) renderController.abort();
  renderController = new AbortController();
  const signal = renderController.signal;
  clearMessages();

  const { path, query } = currentRoute();
  const user = currentUser();
  if (path === '/') {
    go(user ? '/chat' : '/login');
    return;
  }
  if (!user && path !== '/login') {
    returnTo = location.hash;
    go('/login');
    return;
  }
  if (user && path === '/login') {
    go('/chat');
    return;
  }
  drawNav();
  const route = findRoute(path);
  if (!route) {
    missing.renderNotFound({ root: ready(mount('not-found')) });
    return;
  }
  if (route.adminOnly && !user.is_admin) {
    missing.renderForbidden({ root: ready(mount('forbidden')) });
    return;
  }
  const root = mount(route.name);
  const ctx = {
    root,
    params: route.params,
    query,
    signal,
    isCurrent: () => count === renderCount,
    onSignedIn: signedIn,
  };
  try {
    const module = await route.load();
    if (!ctx.isCurrent()) return;
    await module[route.entry](ctx);
    if (ctx.isCurrent()) ready(root);
  } catch (error) {
    if (!ctx.isCurrent() || error.name === 'AbortError') return;
    if (error instanceof ApiError && error.status === 404) missing.renderNotFound({ root: ready(mount('not-found')), message: error.message });
    else if (error instanceof ApiError && error.status === 403) missing.renderForbidden({ root: ready(mount('forbidden')) });
    else if (!(error instanceof ApiError && error.status === 401)) showError(error);
  }
}

async function start() {
  setUnauthorizedHandler(() => {
    if (!currentUser()) return;
    returnTo = location.hash;
    signedOut();
  });
  // The page's code loads while the server says who is signed in.
  const first = findRoute(currentRoute().path);
  if (first) first.load().catch(() => {});
  try {
    const me = await api.get('/api/me', { redirectOn401: false });
    setCurrentUser(me);
    setCsrf(me.csrf);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) showError(error);
  }
  window.addEventListener('hashchange', renderRoute);
  await renderRoute();
}

start();
