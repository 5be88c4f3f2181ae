"""Load a report in headless Chromium: does the page load, does every image render, any console errors?

The report folder is served on a free local port next to a small harness page that opens the report
in a frame (same origin), waits for it, and writes what it found into its own DOM for `--dump-dom`.
"""

import functools
import json
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HARNESS = "__parallax_check.html"
_SCRIPT = """<!doctype html><html><body><iframe id=f src="%s" width=1200 height=900></iframe>
<pre id=result>pending</pre><script>
document.getElementById('f').addEventListener('load', () => {
  const d = document.getElementById('f').contentDocument;
  const imgs = Array.from(d.images);
  const out = {title: d.title, images: imgs.length,
               broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'))};
  document.getElementById('result').textContent = JSON.stringify(out);
});
</script></body></html>"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--disable-component-update", "--disable-sync", "--enable-logging=stderr",
                  "--v=0", "--virtual-time-budget=10000"]


@dataclass(frozen=True)
class PageCheck:
    title: str
    images: int
    broken: list[str]
    console_errors: list[str]

    @property
    def ok(self) -> bool:
        return bool(self.title) and not self.broken and not self.console_errors


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def check_page(page: Path, timeout_s: float = 60.0) -> PageCheck:
    """Open `page` (an HTML file) in headless Chromium and report what rendered."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("chromium is not installed; `apt-get install chromium` (make setup does it)")
    folder = page.parent
    harness = folder / HARNESS
    harness.write_text(_SCRIPT % page.name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with tempfile.TemporaryDirectory(prefix="parallax-chromium-") as profile:
            url = f"http://127.0.0.1:{server.server_address[1]}/{HARNESS}"
            proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                                  capture_output=True, text=True, timeout=timeout_s)
    finally:
        server.shutdown()
        server.server_close()
        harness.unlink(missing_ok=True)
    m = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    if m is None or m.group(1) == "pending":
        return PageCheck("", 0, [], [f"the page did not load (chromium exit {proc.returncode})"])
    found = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    errors = [line for line in proc.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or ":ERROR:" in line or "error" in line.lower())]
    return PageCheck(found["title"], found["images"], found["broken"], errors)
