"""The web console in headless Chromium (Debian's, driven by Playwright): the page loads
with no console error, shows a topic made through the API, and a produce (and a receive)
shows in the rate chart. Saves a screenshot. Usage: ui_check.py BASE_URL SCREENSHOT."""

import json
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

base, shot = sys.argv[1], sys.argv[2]


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def until(what, check, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


api("PUT", "/v1/topics/console-topic", {"queues": 2})
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                args=["--no-sandbox", "--disable-dev-shm-usage"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/ui")
    page.wait_for_selector("#topics >> text=console-topic", timeout=30000)
    page.wait_for_selector("#members >> text=leader", timeout=30000)
    for _ in range(5):
        api("POST", "/v1/topics/console-topic/messages",
            {"messages": [{"body": f"m{i}"} for i in range(50)]})
    api("POST", "/v1/groups/console-group/topics/console-topic/receive",
        {"consumer": "c", "max": 100})
    rate = "Math.max(0, ...window.raftmqRates.{})"
    until("the produce in the rate chart", lambda: page.evaluate(rate.format("produced")) > 0)
    until("the receive in the rate chart", lambda: page.evaluate(rate.format("consumed")) > 0)
    page.wait_for_selector("#groups >> text=console-group", timeout=30000)
    page.screenshot(path=shot, full_page=True)
    browser.close()
assert not errors, f"console errors: {errors}"
print(f"web console: ok (screenshot {shot})")
