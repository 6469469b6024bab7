"""Read the built book in a real browser, as a first-time reader would, and fail on what they would trip over.

Serves ``book/_build/html`` on a loopback address, opens every page in headless Chromium (the
system package; installed with apt-get when absent and run as root, as in CI) and talks to it over
the Chrome DevTools protocol. A page fails on:

- raw TeX in the rendered text (maths the renderer did not typeset, in the page or the sidebar);
- an image that does not load, a link to a page or anchor of the book that does not exist;
- a console error or uncaught exception from the book's own scripts, or any request that leaves
  the machine (the book must read offline);
- an absolute path of some machine (``/home/...``, ``/work/...``, ``C:\\Users\\...``);
- a page wider than the window, or a text output that scrolls sideways (a conclusion out of sight).

Screenshots of a few pages go to ``--shots`` for a person to look at. Usage::

    python scripts/check_book.py [--html book/_build/html] [--shots outputs/book_check]
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import websocket  # websocket-client

WIDTH, HEIGHT = 1280, 900
SHOTS = {"intro": "book/intro.html", "method": "notebooks/01_high_frequency_suppressor.html",
         "results": "results/latest/20_results.html"}
RAW_TEX = re.compile(r"\\[()\[\]]|\$\$|\\(?:[A-Za-z]{2,})\b|\$[^$\s][^$\n]{0,80}?\$")
MACHINE_PATH = re.compile(r"(?<![\w.~-])(?:/(?:home|root|work|Users|mnt|srv|scratch|private|tmp)/[\w.-]+"
                          r"|[A-Z]:\\(?:Users|home)\\)")
SKIP_PAGES = {"genindex.html", "search.html"}
REDIRECT = re.compile(r'http-equiv="refresh" content="\d+;\s*url=([^"]+)"', re.IGNORECASE)

# One pass over the live page: the text a reader sees (outside code, where TeX would be a bug), all
# text (for machine paths, collapsed outputs included), images, links and what overflows sideways.
PAGE_SCRIPT = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  window.scrollTo(0, document.body.scrollHeight);
  await new Promise(r => setTimeout(r, 150));
  window.scrollTo(0, 0);
  const skipProse = "pre, code, script, style, textarea, kbd, mjx-container, .MathJax";
  const prose = [], all = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest("script, style")) continue;
    all.push(node.textContent);
    if (!parent.closest(skipProse)) prose.push(node.textContent);
  }
  const images = [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  const links = [...document.querySelectorAll("a[href]")].map(a => a.href);
  const sideways = [...document.querySelectorAll(".cell_output pre, .output pre")]
    .filter(p => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 2)
    .map(p => p.textContent.split("\n").find(line => line.length > 100) || p.textContent.slice(0, 100));
  const doc = document.documentElement;
  return {prose: prose.join(" "), all: all.join(" "), images, links, sideways,
          width: doc.scrollWidth, window: window.innerWidth, ids: [...document.querySelectorAll("[id]")].map(e => e.id)};
})()
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", default="book/_build/html", help="the built book (default: book/_build/html)")
    parser.add_argument("--shots", default="outputs/book_check", help="where screenshots and report.json go")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a page may take to load")
    args = parser.parse_args(argv)
    html, shots = Path(args.html).resolve(), Path(args.shots)
    if not (html / "index.html").is_file():
        print(f"no built book at {html}: run `make book` first", file=sys.stderr)
        return 2
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if not p.relative_to(html).parts[0].startswith("_") and p.name not in SKIP_PAGES)
    shots.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with _serve(html) as origin, _chromium() as browser:
        problems = {page: _check_page(browser, origin, page, shots, args.timeout) for page in pages}
    failed = {page: found for page, found in problems.items() if found}
    (shots / "report.json").write_text(json.dumps({"pages": pages, "problems": failed}, indent=1))
    for page, found in failed.items():
        print(f"{page}:", *(f"  - {p}" for p in found), sep="\n")
    print(f"{len(pages)} pages read in headless Chromium in {time.time() - start:.0f} s: "
          f"{len(failed)} with problems; screenshots of {', '.join(SHOTS)} in {shots}")
    return 1 if failed else 0


class _Browser:
    """A headless Chromium page driven over the DevTools protocol: commands in order, events kept."""

    def __init__(self, url: str):
        self.socket = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.events: list[dict] = []
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float) -> bool:
        deadline = time.time() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.time() > deadline:
                return False
            self.socket.settimeout(max(0.1, deadline - time.time()))
            try:
                self.events.append(json.loads(self.socket.recv()))
            except websocket.WebSocketTimeoutException:
                return False
        return True


def _check_page(browser: _Browser, origin: str, page: str, shots: Path, timeout: float) -> list[str]:
    redirect = REDIRECT.search(_fetch(f"{origin}/{page}") or "")
    if redirect:  # index.html: a bare redirect to the root page, which is read in its own right
        target = urllib.parse.urljoin(f"{origin}/{page}", redirect.group(1))
        return [] if _fetch(target) is not None else [f"redirects to a missing page: {redirect.group(1)}"]
    browser.events.clear()
    browser.call("Page.navigate", url=f"{origin}/{page}")
    if not browser.wait_for("Page.loadEventFired", timeout):
        return [f"did not finish loading in {timeout:.0f} s"]
    seen = browser.call("Runtime.evaluate", expression=PAGE_SCRIPT, awaitPromise=True, returnByValue=True)
    if "exceptionDetails" in seen:
        return [f"the check's own script failed: {seen['exceptionDetails'].get('text')}"]
    seen = seen["result"]["value"]
    problems = [f"raw TeX in the text: ...{seen['prose'][max(0, m.start() - 40):m.end() + 40]!r}..."
                for m in list(RAW_TEX.finditer(seen["prose"]))[:3]]
    problems += [f"an absolute path of a machine: {m.group(0)!r}" for m in MACHINE_PATH.finditer(seen["all"])][:3]
    problems += [f"image does not load: {i['src'][:120]}" for i in seen["images"] if not i["ok"]]
    problems += _broken_links(origin, page, seen["links"], set(seen["ids"]))
    problems += _errors(browser.events, origin)
    if seen["width"] > seen["window"] + 1:
        problems.append(f"page is {seen['width']} px wide in a {seen['window']} px window")
    problems += [f"output scrolls sideways: {line[:100]!r}..." for line in seen["sideways"]]
    for name, shown in SHOTS.items():
        if shown == page:
            _screenshot(browser, shots / f"{name}.png")
    return problems


def _broken_links(origin: str, page: str, links: list[str], ids: set[str]) -> list[str]:
    out = []
    for link in dict.fromkeys(links):
        if not link.startswith(origin + "/"):
            continue  # outside the book (the paper, a repository): not followed offline
        target, _, anchor = link.partition("#")
        if target == f"{origin}/{page}":
            found = anchor in ids if anchor else True
        else:
            body = _fetch(target)
            found = body is not None and (not anchor or f'id="{anchor}"' in body)
        if not found:
            out.append(f"broken link: {link[len(origin) + 1:]}")
    return out


@functools.lru_cache(maxsize=None)
def _fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None


def _errors(events: list[dict], origin: str) -> list[str]:
    """Console errors and uncaught exceptions of the book's scripts, and requests leaving the machine."""
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            out.append(f"uncaught exception in {details.get('url') or 'an inline script'}: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            frames = (params.get("stackTrace") or {}).get("callFrames") or [{}]
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            out.append(f"console error from {frames[0].get('url') or 'an inline script'}: {text[:200]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error" \
                and not params["entry"].get("url", "").endswith("/favicon.ico"):  # the browser's own guess, not the book's
            out.append(f"browser error: {params['entry']['text'][:200]} {params['entry'].get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith((origin, "data:", "blob:", "about:")):
                out.append(f"fetches from outside the machine (the book must read offline): {url[:120]}")
    return list(dict.fromkeys(out))


def _screenshot(browser: _Browser, path: Path, max_height: int = 6000) -> None:
    """The page from the top, as tall as it is (up to ``max_height``), in a window that tall: capturing
    beyond the viewport instead shifts this theme's layout sideways."""
    height = min(max_height, int(browser.call("Page.getLayoutMetrics")["cssContentSize"]["height"]))
    browser.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1, mobile=False)
    browser.call("Runtime.evaluate", expression="new Promise(r => requestAnimationFrame(() => setTimeout(r, 200)))",
                 awaitPromise=True)
    shot = browser.call("Page.captureScreenshot", format="png")
    browser.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
    path.write_bytes(base64.b64decode(shot["data"]))


class _serve:
    """The built book over HTTP on 127.0.0.1 (a free port), in a thread, for the duration of a with."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _chromium:
    """Headless Chromium with a fresh profile and a DevTools port, driven through one page."""

    def __enter__(self) -> _Browser:
        binary = _find_chromium()
        self.profile = tempfile.mkdtemp(prefix="check_book_")
        command = [binary, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                   "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={self.profile}",
                   f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
        if os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root (CI containers)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.is_file() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{binary} did not open a DevTools port in 30 s")
        port = port_file.read_text().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        self.browser = _Browser(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.browser.call(f"{domain}.enable")
        self.browser.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        return self.browser

    def __exit__(self, *exc) -> None:
        self.browser.socket.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


def _find_chromium() -> str:
    """The system Chromium; as root with apt-get (CI), install Debian's package when it is missing."""
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next(filter(None, map(shutil.which, names)), None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing chromium from the system packages (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], check=True, env=env)
        found = next(filter(None, map(shutil.which, names)), None)
    if not found:
        raise SystemExit("no Chromium found: install the system package (apt-get install chromium) and rerun")
    return found


if __name__ == "__main__":
    sys.exit(main())
