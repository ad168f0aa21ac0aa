"""Headless Chromium driven over the DevTools protocol (CDP), for the web view's tests.

No driver or extra package: Debian's `chromium` with --remote-debugging-port, and the
`websockets` client that viser already depends on. WebGL runs on SwiftShader (CPU).
"""
from __future__ import annotations

import base64
import itertools
import json
import os
from pathlib import Path
import shutil
import subprocess
import tempfile
import time
import urllib.request

CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessBrowser:
    """One headless Chromium with one page; `with HeadlessBrowser() as b: b.open(url)`."""

    def __init__(self, width: int = 1280, height: int = 800, executable: str | None = None):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise FileNotFoundError('no chromium executable on PATH '
                                    f'(tried {", ".join(CHROMIUM_NAMES)})')
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix='zerograsp_chromium_')
        self.log_path = Path(self.profile) / 'chromium.log'
        self._ids = itertools.count(1)
        self.proc = None
        self.ws = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self, timeout: float = 60.0):
        args = [self.executable, '--headless=new', '--no-sandbox', '--no-first-run',
                '--no-default-browser-check', '--disable-dev-shm-usage',
                '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
                '--ignore-gpu-blocklist', f'--window-size={self.width},{self.height}',
                f'--user-data-dir={self.profile}', '--remote-debugging-port=0',
                '--remote-allow-origins=*', 'about:blank']
        self.log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        port_file = Path(self.profile) / 'DevToolsActivePort'
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'chromium did not start: {self.log_path.read_text()[-2000:]}')
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=10) as r:
            pages = [p for p in json.load(r) if p.get('type') == 'page']
        from websockets.sync.client import connect

        self.ws = connect(pages[0]['webSocketDebuggerUrl'], max_size=None, open_timeout=10)
        self.call('Page.enable')
        self.call('Runtime.enable')
        self.call('Emulation.setDeviceMetricsOverride', width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, timeout: float = 240.0, **params) -> dict:
        """One CDP command; its result (events arriving meanwhile are dropped).

        The long default: software WebGL took 15 s for one screenshot on 2 busy cores.
        """
        msg_id = next(self._ids)
        self.ws.send(json.dumps({'id': msg_id, 'method': method, 'params': params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get('id') == msg_id:
                if 'error' in reply:
                    raise RuntimeError(f'{method}: {reply["error"]}')
                return reply.get('result', {})

    def open(self, url: str):
        self.call('Page.navigate', url=url)

    def evaluate(self, expression: str):
        result = self.call('Runtime.evaluate', expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result.get('result', {}).get('value')

    def has_button(self, text: str) -> bool:
        return bool(self.evaluate(
            f'[...document.querySelectorAll("button")].some('
            f'e => e.textContent.trim() === {json.dumps(text)})'))

    def dismiss_notifications(self) -> None:
        """Close the page's pop-up notifications (Mantine's close buttons)."""
        self.evaluate('document.querySelectorAll(".mantine-Notification-closeButton")'
                      '.forEach(e => e.click())')

    def click_checkbox(self, label: str) -> bool:
        """Click the checkbox of the <label> whose text is `label`; False if there is none."""
        return bool(self.evaluate(
            f'(() => {{ const l = [...document.querySelectorAll("label")].find('
            f'e => e.textContent.trim() === {json.dumps(label)}); '
            f'const box = l && document.getElementById(l.htmlFor); '
            f'if (box) {{ box.click(); return true; }} return false; }})()'))

    def click_button(self, text: str) -> bool:
        """Click the first <button> whose text is `text`; False if there is none (yet)."""
        return bool(self.evaluate(
            f'(() => {{ const b = [...document.querySelectorAll("button")].find('
            f'e => e.textContent.trim() === {json.dumps(text)}); '
            f'if (b) {{ b.click(); return true; }} return false; }})()'))

    def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        data = self.call('Page.captureScreenshot', format='png')['data']
        return base64.b64decode(data)

    def close(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # the browser may already be gone
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, 'log', None):
            self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def decode_png(data: bytes):
    """PNG bytes -> (H, W, 3) uint8 (imageio is a viser dependency)."""
    import io

    import imageio.v3 as iio

    return iio.imread(io.BytesIO(data))[..., :3]


if __name__ == '__main__':  # manual check: python test/support/headless_browser.py URL OUT
    import sys

    with HeadlessBrowser() as browser:
        browser.open(sys.argv[1])
        time.sleep(float(os.environ.get('WAIT', '8')))
        Path(sys.argv[2]).write_bytes(browser.screenshot())
