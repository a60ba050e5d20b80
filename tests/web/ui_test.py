#!/usr/bin/env python3
"""Browser scenarios for the skillhive web UI, run with Playwright on Chromium.

    ui_test.py SCENARIO --base URL --fixture FIXTURE.json --artifacts DIR

Exits 0 when the scenario passes; otherwise prints `FAIL: ...` and exits 1. Any browser
console error or uncaught page error fails the scenario, except the "Failed to load
resource" lines Chromium prints for API answers of 4xx that the page expects and shows
(401 before signing in, 404 for another user's session, 403 for admin pages).

Chromium is the system's: `SKILLHIVE_CHROMIUM` (default /usr/bin/chromium), launched
with --no-sandbox because the tests run as root.

Fixture keys:

  chat (a server with a real model):
    {"user": {"name", "password", "token"},   a user with a password and an API token
     "other_session_id"}                       a session of another user

  desk (a scripted server):
    {"admin": {"name", "password"},
     "user": {"name", "password"},
     "skill_slug",       a skill with two or more versions whose content holds XSS
                         payloads; the admin may roll it back (shared, or in a group
                         the admin writes)
     "xss_session_id",   the user's session whose model reply and tool output hold
                         <img src=x onerror="window.__pwned=1"> and
                         <script>window.__pwned=1</script>
     "candidate_id"}     an evolver candidate held for review, with replay numbers and
                         a diff against the current version of its skill

Screenshots (PAGE-WIDTHxHEIGHT.png) and, on failure, failure.png go to --artifacts.
"""

import argparse
import json
import os
import re
import sys
import traceback

from playwright.sync_api import sync_playwright, Error as PlaywrightError, TimeoutError as PlaywrightTimeoutError

XSS_IMG = '<img src=x onerror="window.__pwned=1">'
XSS_SCRIPT = '<script>window.__pwned=1</script>'
VIEWPORTS = [(1280, 800), (390, 844)]
# The API answers a page expects and shows as a message or a page of its own.
EXPECTED_API_ERROR = re.compile(r'Failed to load resource: the server responded with a status of 40[134]')


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


class Run:
    """One browser, the pages opened in it, and every console or page error seen."""

    def __init__(self, playwright, base, artifacts):
        self.playwright = playwright
        self.base = base.rstrip('/')
        self.artifacts = artifacts
        self.errors = []
        self.browser = playwright.chromium.launch(
            executable_path=os.environ.get('SKILLHIVE_CHROMIUM', '/usr/bin/chromium'),
            args=['--no-sandbox'],
        )
        self.context = None
        self.page = None
        self.new_context()

    def new_context(self, viewport=VIEWPORTS[0]):
        """A fresh browser profile (no cookies), with one page."""
        if self.context:
            self.context.close()
        self.context = self.browser.new_context(viewport={'width': viewport[0], 'height': viewport[1]})
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.page.on('console', self._console)
        self.page.on('pageerror', lambda error: self.errors.append(f'page error: {error}'))
        return self.page

    def _console(self, message):
        if message.type != 'error':
            return
        url = (message.location or {}).get('url', '')
        if EXPECTED_API_ERROR.search(message.text) and '/api/' in url:
            return
        self.errors.append(f'console error: {message.text} ({url})')

    def check_no_errors(self):
        check(not self.errors, 'browser errors:\n  ' + '\n  '.join(self.errors))

    def close(self):
        self.browser.close()

    # Navigation -----------------------------------------------------------------------

    def load(self, route):
        """A full page load of `route` (`/chat`, `/skills/x?version=1.0.0`)."""
        self.page.goto(f'{self.base}/#{route}')

    def route(self, route, page_name):
        """Goes to `route` inside the app and waits until the page `page_name` is drawn."""
        self.page.evaluate(
            """route => {
                const current = document.querySelector('#main > [data-page]');
                if (current) current.removeAttribute('data-ready');
                if (location.hash === '#' + route) window.dispatchEvent(new HashChangeEvent('hashchange'));
                else location.hash = route;
            }""",
            route,
        )
        return self.wait_page(page_name)

    def wait_page(self, page_name, timeout=20_000):
        """Waits for the page `page_name` to be drawn; fails with what the app shows
        instead (another page, or an error in its alert area)."""
        try:
            self.page.wait_for_function(
                """name => document.querySelector(`#main > [data-page="${name}"][data-ready]`)
                         || !document.getElementById('status').hidden""",
                arg=page_name,
                timeout=timeout,
            )
        except PlaywrightTimeoutError:
            pass
        shown = self.page.evaluate("() => document.querySelector('#main > [data-page]')?.dataset.page")
        ready = self.page.locator(f'#main > [data-page="{page_name}"][data-ready]').count() == 1
        check(ready, f'expected the {page_name} page, got {shown!r} (alert: {self.status_text()!r}; errors: {self.errors})')
        return self.page.locator(f'#main > [data-page="{page_name}"]')

    def status_text(self):
        return self.page.evaluate("() => { const s = document.getElementById('status'); return s.hidden ? '' : s.textContent; }")

    def testid(self, name):
        return self.page.locator(f'[data-testid="{name}"]')

    # Signing in and out ---------------------------------------------------------------

    def sign_in(self, name, password):
        self.load('/login')
        self.wait_page('login')
        self.testid('login-username').fill(name)
        self.testid('login-password').fill(password)
        self.testid('login-submit').click()
        self.wait_page('chat')
        check(self.testid('user-name').inner_text() == name, f'signed in as {self.testid("user-name").inner_text()!r}, not {name!r}')

    def sign_out(self):
        self.testid('sign-out').click()
        self.wait_page('login')

    # Checks ---------------------------------------------------------------------------

    def screenshot(self, name):
        """Screenshots the current page at each viewport, checking that nothing makes it
        scroll sideways."""
        for width, height in VIEWPORTS:
            self.page.set_viewport_size({'width': width, 'height': height})
            self.page.evaluate('() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))')
            overflow = self.page.evaluate('() => [document.documentElement.scrollWidth, window.innerWidth]')
            path = os.path.join(self.artifacts, f'{name}-{width}x{height}.png')
            self.page.screenshot(path=path, full_page=True)
            if overflow[0] > overflow[1]:
                wide = self.page.evaluate("""() => [...document.querySelectorAll('#main *')]
                    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                    .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + (e.dataset.testid || ''))""")
                raise Failure(f'{name} at {width}x{height} scrolls sideways: scrollWidth {overflow[0]} > {overflow[1]}; widest: {wide}')
        self.page.set_viewport_size({'width': VIEWPORTS[0][0], 'height': VIEWPORTS[0][1]})

    def check_keyboard(self, name):
        """From the first focusable element, Tab must reach every visible, enabled link,
        button, input, select, textarea and summary of the page."""
        total = self.page.evaluate("""() => {
            const selector = 'a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), '
                + 'select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex="-1"])';
            const visible = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
            const all = [...document.querySelectorAll(selector)].filter(visible);
            document.querySelectorAll('[data-kbd]').forEach(e => e.removeAttribute('data-kbd'));
            all.forEach((e, i) => { e.dataset.kbd = String(i); });
            if (all.length) all[0].focus();
            return all.length;
        }""")
        check(total > 0, f'{name}: nothing on the page can take focus')
        seen = {self.page.evaluate('() => document.activeElement?.dataset.kbd ?? null')}
        for _ in range(total * 2 + 10):
            self.page.keyboard.press('Tab')
            seen.add(self.page.evaluate('() => document.activeElement?.dataset.kbd ?? null'))
            if len(seen - {None}) == total:
                break
        missing = sorted(set(str(i) for i in range(total)) - seen, key=int)
        if missing:
            described = self.page.evaluate(
                """ids => ids.slice(0, 8).map(i => { const e = document.querySelector(`[data-kbd="${i}"]`);
                    return `${e.tagName.toLowerCase()} ${e.dataset.testid || ''} "${(e.textContent || e.getAttribute('aria-label') || '').trim().slice(0, 40)}"`; })""",
                missing,
            )
            raise Failure(f'{name}: Tab never reaches {len(missing)} of {total} controls: {described}')

    def check_not_pwned(self, where):
        pwned = self.page.evaluate('() => window.__pwned')
        check(pwned is None, f'{where}: an XSS payload ran (window.__pwned = {pwned!r})')
        injected = self.page.evaluate("""() => document.querySelectorAll('#main img, #main script, #main iframe, #main [onerror]').length""")
        check(injected == 0, f'{where}: {injected} elements from payloads were made into markup')

    def page_text(self):
        return self.page.evaluate('() => document.body.innerText')


def session_id_from_hash(page):
    found = re.match(r'#/chat/([^?]+)', page.evaluate('() => location.hash'))
    check(found, f'the chat has no session in its address: {page.url}')
    return found.group(1)


# The chat scenario ------------------------------------------------------------------------

def chat_stream_and_stop(run):
    run.route('/chat', 'chat')
    run.testid('chat-input').fill('Write a long story about a robot.')
    run.testid('send').click()
    # Text must show while the turn still runs: the stop button is enabled.
    state = run.page.wait_for_function(
        """() => {
            const text = [...document.querySelectorAll('[data-testid="assistant-message"] .message-text')]
                .some(e => e.textContent.trim().length > 0);
            const stop = document.querySelector('[data-testid="stop"]');
            if (text && stop && !stop.disabled) return 'partial';
            if (document.querySelector('[data-testid="turn-end"]')) return 'ended';
            if (!document.getElementById('status').hidden) return 'error';
            return false;
        }""",
        timeout=240_000,
    ).json_value()
    check(state != 'error', f'sending failed: {run.status_text()}')
    check(state == 'partial', 'the turn ended before any of its text was shown while it ran')
    run.testid('stop').click()
    run.page.wait_for_selector('[data-testid="turn-end"]', timeout=120_000)
    reason = run.testid('turn-end').last.get_attribute('data-stop-reason')
    check(reason == 'cancelled', f'the stopped turn ended with {reason!r}, not cancelled')
    run.page.wait_for_function("() => document.querySelector('[data-testid=\"stop\"]').disabled")
    run.screenshot('chat')
    return session_id_from_hash(run.page)


def chat_second_turn(run):
    """The session takes a new turn after a cancel, and this one runs to its end: a model
    call whose step was cancelled mid-generation is never recorded, so this turn is what
    gives the trajectory its model call."""
    ends = run.testid('turn-end').count()
    run.testid('chat-input').fill('Say hello.')
    run.testid('send').click()
    run.page.wait_for_function(
        """ends => document.querySelectorAll('[data-testid="turn-end"]').length > ends
                 && document.querySelector('[data-testid="stop"]').disabled""",
        arg=ends,
        timeout=240_000,
    )
    check(not run.status_text(), f'the turn after a cancel failed: {run.status_text()}')


def chat_trajectory(run, session_id):
    run.route(f'/sessions/{session_id}', 'trajectory')
    run.testid('expand-all').click()
    call = run.page.locator('[data-testid="event-row"][data-kind="model_call"]').first
    check(call.count() == 1, 'the trajectory has no model call row')
    check(re.search(r'\d+ prompt tokens', call.locator('summary').inner_text()), f'the model call row shows no tokens: {call.inner_text()!r}')
    body = call.locator('.event-body')
    body.wait_for()
    check('Prompt tokens' in body.inner_text(), 'the expanded model call shows no prompt tokens')
    run.screenshot('trajectory')


def chat_feedback(run, session_id):
    comment = 'A fine robot, thank you.'
    run.route(f'/chat/{session_id}', 'chat')
    run.testid('feedback-comment').fill(comment)
    run.testid('thumbs-up').click()
    run.page.locator('[data-testid="feedback-item"][data-rating="up"]', has_text=comment).wait_for()
    run.page.reload()
    run.wait_page('chat')
    item = run.page.locator('[data-testid="feedback-item"][data-rating="up"]', has_text=comment)
    check(item.count() >= 1, 'the rating and its comment are gone after a reload')


def chat_sign_out_is_server_side(run):
    old_cookies = run.context.cookies()
    check(old_cookies, 'signing in set no cookie')
    run.sign_out()
    check(run.page.request.get(f'{run.base}/api/me').status == 401, 'GET /api/me still answers after signing out')
    # The cookie the browser had before must no longer sign anyone in.
    header = '; '.join(f"{c['name']}={c['value']}" for c in old_cookies)
    replay = run.playwright.request.new_context(extra_http_headers={'Cookie': header})
    try:
        status = replay.get(f'{run.base}/api/me').status
    finally:
        replay.dispose()
    check(status == 401, f'the signed-out cookie still works (GET /api/me answered {status})')


def chat_token_sign_in(run, token):
    run.wait_page('login')
    run.testid('login-token').fill(token)
    run.testid('login-token-submit').click()
    run.wait_page('chat')
    check(run.testid('login-token').count() == 0, 'still on the sign-in page')
    stored = run.page.evaluate('() => JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage}) + location.href')
    check(token not in stored, 'the API token was kept in storage or the address')


def chat_other_users_session(run, other):
    run.route(f'/sessions/{other}', 'not-found')
    run.route(f'/chat/{other}', 'not-found')
    run.screenshot('not-found')


def scenario_chat(run, fixture):
    user = fixture['user']
    run.sign_in(user['name'], user['password'])
    session_id = chat_stream_and_stop(run)
    chat_second_turn(run)
    chat_trajectory(run, session_id)
    chat_feedback(run, session_id)
    chat_sign_out_is_server_side(run)
    chat_token_sign_in(run, user['token'])
    chat_other_users_session(run, fixture['other_session_id'])
    run.check_no_errors()


# The desk scenario ------------------------------------------------------------------------

def desk_review_candidate(run, candidate_id):
    run.route('/evolver', 'evolver')
    row = run.page.locator(f'[data-testid="candidate-row"][data-id="{candidate_id}"]')
    check(row.count() == 1, 'the candidate is not in the review queue')
    run.screenshot('evolver')
    run.check_keyboard('evolver')
    row.locator('[data-testid="candidate-link"]').click()
    run.wait_page('candidate')
    check(run.page.locator('[data-testid="replay-row"]').count() >= 1, 'the candidate shows no replay numbers per goal')
    for mean in ('replay-current-mean', 'replay-candidate-mean'):
        check(re.search(r'\d', run.testid(mean).inner_text()), f'{mean} is empty')
    diff = run.testid('candidate-diff')
    check(diff.count() == 1 and diff.locator('.diff-add, .diff-del').count() > 0, 'the candidate shows no diff')
    run.screenshot('candidate')
    run.check_keyboard('candidate')
    run.testid('candidate-approve').click()
    run.page.locator('[data-testid="candidate-status"]', has_text='published').wait_for()
    published = run.testid('candidate-published')
    check(published.count() == 1, 'the approved candidate names no published version')
    version = published.inner_text().split()[-1]
    published.click()
    run.wait_page('skill')
    check(run.testid('skill-version').inner_text() == f'v{version}', f'the published skill page shows {run.testid("skill-version").inner_text()}, not v{version}')


def desk_diff_and_rollback(run, slug):
    run.route(f'/skills/{slug}', 'skill')
    rows = run.page.locator('[data-testid="version-row"]')
    check(rows.count() >= 2, f'{slug} has {rows.count()} versions; the fixture needs two or more')
    versions = [rows.nth(i).get_attribute('data-version') for i in range(rows.count())]
    latest, second, first = versions[0], versions[-2], versions[-1]
    run.testid('diff-from').select_option(first)
    run.testid('diff-to').select_option(second)
    run.testid('diff-compare').click()
    run.wait_page('diff')
    check(run.page.locator('.diff-add').count() > 0 and run.page.locator('.diff-del').count() > 0, 'the diff shows no added and removed lines')
    run.route(f'/skills/{slug}', 'skill')
    run.page.locator(f'[data-testid="skill-rollback"][data-version="{first}"]').click()
    run.page.wait_for_function(
        """latest => { const v = document.querySelector('[data-testid="skill-version"]'); return v && v.textContent !== 'v' + latest; }""",
        arg=latest,
    )
    run.wait_page('skill')
    check(first in run.testid('provenance-rollback').inner_text(), 'the new latest version does not say it restores the first one')


def desk_user_sees_no_admin(run):
    for entry in ('nav-admin', 'nav-evolver'):
        check(run.testid(entry).count() == 0, f'a user sees the {entry} entry')
    for route in ('/admin', '/evolver'):
        run.route(route, 'forbidden')
        check(run.testid('user-list').count() == 0 and run.testid('review-queue').count() == 0, f'{route} shows admin data to a user')


def desk_xss(run, session_id, slug):
    run.route(f'/chat/{session_id}', 'chat')
    text = run.page_text()
    check(XSS_IMG in text and XSS_SCRIPT in text, 'the chat does not show the payloads as text')
    run.check_not_pwned('chat')
    run.route(f'/sessions/{session_id}', 'trajectory')
    run.testid('expand-all').click()
    run.page.locator('[data-testid="event-row"] .event-body').first.wait_for()
    text = run.page_text()
    check(XSS_IMG in text and XSS_SCRIPT in text, 'the trajectory does not show the payloads as text')
    run.check_not_pwned('trajectory')
    run.route(f'/skills/{slug}', 'skill')
    text = run.page_text()
    check(XSS_IMG in text or XSS_SCRIPT in text, 'the skill page does not show its payloads as text')
    run.check_not_pwned('skill')


def desk_user_pages(run, fixture):
    """Screenshots and keyboard checks of the pages a user sees."""
    slug = fixture['skill_slug']
    session_id = fixture['xss_session_id']
    pages = [
        ('chat', f'/chat/{session_id}', 'chat'),
        ('sessions', '/sessions', 'sessions'),
        ('trajectory', f'/sessions/{session_id}', 'trajectory'),
        ('skills', '/skills', 'skills'),
        ('skill', f'/skills/{slug}', 'skill'),
        ('tokens', '/tokens', 'tokens'),
        ('files', '/files', 'files'),
        ('not-found', '/no/such/page', 'not-found'),
    ]
    for name, route, page_name in pages:
        run.route(route, page_name)
        run.screenshot(name)
        run.check_keyboard(name)
    # The diff between the skill's first two versions (the latest is by now a copy of the
    # first, restored by the rollback).
    run.route(f'/skills/{slug}', 'skill')
    options = run.testid('diff-from').locator('option')
    first = options.nth(options.count() - 1).get_attribute('value')
    second = options.nth(options.count() - 2).get_attribute('value')
    run.route(f'/skills/{slug}/diff?from={first}&to={second}', 'diff')
    check(run.page.locator('.diff-add, .diff-del').count() > 0, f'the diff of {first} and {second} shows no change')
    run.screenshot('diff')
    run.check_keyboard('diff')


def scenario_desk(run, fixture):
    admin, user = fixture['admin'], fixture['user']
    run.load('/login')
    run.wait_page('login')
    run.screenshot('login')
    run.check_keyboard('login')

    run.sign_in(admin['name'], admin['password'])
    desk_review_candidate(run, fixture['candidate_id'])
    desk_diff_and_rollback(run, fixture['skill_slug'])
    run.route('/admin', 'admin')
    check(run.page.locator('[data-testid="user-row"]').count() >= 2, 'the admin page lists fewer than two users')
    run.screenshot('admin')
    run.check_keyboard('admin')
    run.sign_out()

    run.sign_in(user['name'], user['password'])
    desk_user_sees_no_admin(run)
    desk_xss(run, fixture['xss_session_id'], fixture['skill_slug'])
    desk_user_pages(run, fixture)
    run.check_no_errors()


SCENARIOS = {'chat': scenario_chat, 'desk': scenario_desk}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('scenario', choices=sorted(SCENARIOS))
    parser.add_argument('--base', required=True, help='the server, e.g. http://127.0.0.1:8080')
    parser.add_argument('--fixture', required=True, help='JSON file with the keys the scenario needs')
    parser.add_argument('--artifacts', required=True, help='folder for screenshots')
    args = parser.parse_args()
    os.makedirs(args.artifacts, exist_ok=True)
    stale = os.path.join(args.artifacts, 'failure.png')
    if os.path.exists(stale):
        os.remove(stale)
    with open(args.fixture) as f:
        fixture = json.load(f)

    with sync_playwright() as playwright:
        run = Run(playwright, args.base, args.artifacts)
        try:
            SCENARIOS[args.scenario](run, fixture)
        except (Failure, PlaywrightError, KeyError) as error:
            try:
                run.page.screenshot(path=os.path.join(args.artifacts, 'failure.png'), full_page=True)
            except PlaywrightError:
                pass
            detail = str(error) if isinstance(error, Failure) else f'{type(error).__name__}: {error}\n{traceback.format_exc()}'
            if run.errors and not isinstance(error, Failure):
                detail += '\nbrowser errors:\n  ' + '\n  '.join(run.errors)
            print(f'FAIL: {args.scenario}: {detail}', file=sys.stderr)
            try:
                print(f'  at {run.page.url}; alert: {run.status_text()!r}', file=sys.stderr)
            except PlaywrightError:
                pass
            return 1
        finally:
            run.close()
    print(f'ok: {args.scenario}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
