#!/usr/bin/env python3
"""How fast the web UI draws a trajectory and a diff, in Chromium.

    render.py --base URL --fixture F.json [--runs 5]

The fixture names a user who can sign in and what to open:

    {"user": {"name", "password"} or {"token"},
     "sessions": {"100": SESSION_ID, "2000": SESSION_ID},   sessions of 100 and 2,000 events
     "diff": {"slug", "from", "to"}}                         two versions of a skill

Each measurement is a full page load: the time from the navigation's start to the page
marking itself drawn (`data-ready`, with every row in the DOM), read from
`performance.now()` as the page recorded it (`data-ready-ms`). Its anchor is the same
browser loading the API's JSON for that page with no UI (the end of that document's load
event), in the same run. Prints the median of each over the runs, UI over anchor, and
the UI's ratio of 2,000 events to 100.
"""

import argparse
import json
import os
import statistics
import sys

from playwright.sync_api import sync_playwright


def sign_in(page, base, user):
    page.goto(f'{base}/#/login')
    page.wait_for_selector('[data-page="login"][data-ready]')
    if user.get('password'):
        page.fill('[data-testid="login-username"]', user['name'])
        page.fill('[data-testid="login-password"]', user['password'])
        page.click('[data-testid="login-submit"]')
    else:
        page.fill('[data-testid="login-token"]', user['token'])
        page.click('[data-testid="login-token-submit"]')
    page.wait_for_selector('[data-page="chat"][data-ready]')


def measure(page, base, route, page_name):
    """One full load of `route`; returns milliseconds from navigation start to drawn."""
    page.goto('about:blank')
    page.goto(f'{base}/#{route}')
    root = page.wait_for_selector(f'#main > [data-page="{page_name}"][data-ready]', timeout=120_000)
    if page_name == 'trajectory':
        rows = page.locator('[data-testid="event-row"]').count()
        expected = int(root.get_attribute('data-events'))
        if rows != expected:
            raise SystemExit(f'FAIL: {rows} rows drawn for {expected} events')
    ready_ms = root.get_attribute('data-ready-ms')
    if ready_ms is None:
        raise SystemExit(f'FAIL: the {page_name} page recorded no data-ready-ms')
    return float(ready_ms)


def measure_anchor(page, base, path):
    """One full load of the API's JSON behind a page, shown by the browser as is."""
    page.goto('about:blank')
    response = page.goto(f'{base}{path}')
    if not response or response.status != 200:
        raise SystemExit(f'FAIL: {path} answered {response.status if response else "nothing"}')
    page.wait_for_function("() => performance.getEntriesByType('navigation')[0].loadEventEnd > 0")
    return page.evaluate("() => performance.getEntriesByType('navigation')[0].loadEventEnd")


def median_of(runs, measure):
    measure()  # a warm-up load, not counted
    times = [measure() for _ in range(runs)]
    return statistics.median(times), times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--base', required=True)
    parser.add_argument('--fixture', required=True)
    parser.add_argument('--runs', type=int, default=5)
    args = parser.parse_args()
    with open(args.fixture) as f:
        fixture = json.load(f)
    base = args.base.rstrip('/')
    diff = fixture['diff']

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get('SKILLHIVE_CHROMIUM', '/usr/bin/chromium'),
            args=['--no-sandbox'],
        )
        page = browser.new_page(viewport={'width': 1280, 'height': 800})
        sign_in(page, base, fixture['user'])
        sessions = fixture['sessions']
        targets = [
            ('100 events', f"/sessions/{sessions['100']}", 'trajectory', f"/api/sessions/{sessions['100']}/trajectory"),
            ('2000 events', f"/sessions/{sessions['2000']}", 'trajectory', f"/api/sessions/{sessions['2000']}/trajectory"),
            ('diff', f"/skills/{diff['slug']}/diff?from={diff['from']}&to={diff['to']}", 'diff',
             f"/api/skills/{diff['slug']}/diff?from={diff['from']}&to={diff['to']}"),
        ]
        medians = {}
        for name, route, page_name, api_path in targets:
            ui, ui_runs = median_of(args.runs, lambda: measure(page, base, route, page_name))
            anchor, anchor_runs = median_of(args.runs, lambda: measure_anchor(page, base, api_path))
            medians[name] = ui
            print(f'{name:>12}: UI median {ui:7.1f} ms, anchor (the JSON, no UI) {anchor:7.1f} ms, UI/anchor {ui / anchor:5.2f}')
            print(f'{"":>12}  UI runs: {", ".join(f"{t:.1f}" for t in ui_runs)}; anchor runs: {", ".join(f"{t:.1f}" for t in anchor_runs)}')
        browser.close()
    print(f'{"ratio":>12}: {medians["2000 events"] / medians["100 events"]:.2f} (UI, 2000 events / 100 events)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
