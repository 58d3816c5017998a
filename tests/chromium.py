"""Debian's headless Chromium, driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
messages ended by NUL on fds 3 and 4; no websocket library needed). `open_page` loads a file and tells
what the page did: every request it made, every console error and uncaught exception, what a script
found in the DOM after the page's own scripts ran, and a full-page screenshot."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

TIMEOUT_S = 60


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is missing: `make chromium` installs Debian's (apt-get install chromium)")
    return path


class DevTools:
    def __init__(self, profile: str):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]  # clear of 3 and 4
        for fd in (to_browser, from_browser):
            os.close(fd)
        to_browser, from_browser = high

        def fds():  # the browser reads commands on fd 3 and writes answers on fd 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._next()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._next()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _next(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._write)
        os.close(self._read)


def open_page(html: Path, screenshot: Path | None = None, probe: str = "null", width: int = 1280) -> dict:
    """Load `html` as file://; return {"requests": [urls], "errors": [texts], "probe": value of the
    `probe` expression after load}; write a full-page PNG to `screenshot`."""
    with tempfile.TemporaryDirectory(prefix="edgefashion-chromium-") as profile:
        tools = DevTools(profile)
        try:
            target = next(t for t in tools.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
            session = tools.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                tools.send(f"{domain}.enable", session=session)
            tools.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                              "mobile": False}, session)
            tools.events.clear()
            tools.send("Page.navigate", {"url": Path(html).resolve().as_uri()}, session)
            tools.wait_for("Page.loadEventFired")
            value = tools.send("Runtime.evaluate", {"expression": probe, "returnByValue": True}, session)
            if screenshot is not None:
                height = tools.send("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
                tools.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": int(min(height, 16000)),
                                                                  "deviceScaleFactor": 1, "mobile": False}, session)
                png = tools.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
                Path(screenshot).write_bytes(base64.b64decode(png))
            time.sleep(0.3)  # late console messages
            tools.send("Runtime.evaluate", {"expression": "1"}, session)
        finally:
            tools.close()
    return {"requests": _requests(tools.events), "errors": _errors(tools.events),
            "probe": value.get("result", {}).get("value")}


def _requests(events: list[dict]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            out.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            out.append(params["entry"].get("text", ""))
    return out


REPORT_PROBE = """JSON.stringify({
  rendered: document.documentElement.dataset.rendered || null,
  sections: Array.from(document.querySelectorAll("section[data-section]")).map(s => s.id),
  toc: Array.from(document.querySelectorAll("#toc a")).map(a => a.textContent),
  figures: document.querySelectorAll(".figure svg").length,
  tables: document.querySelectorAll("table").length,
  missing: Array.from(document.querySelectorAll("p.missing")).map(p => p.textContent),
  warnings: Array.from(document.querySelectorAll("p.warning")).map(p => p.textContent),
  width: document.documentElement.scrollWidth
})"""


def check_report(html: Path, screenshot: Path, sections: list[str]) -> dict:
    """Open a report in Chromium: it rendered (the script ran and built its contents), the `sections`
    are there, no console error, no request but the file itself. Returns what the probe found."""
    seen = open_page(html, screenshot, REPORT_PROBE)
    found = json.loads(seen["probe"])
    assert seen["errors"] == [], seen["errors"]
    leaving = [u for u in seen["requests"] if not u.startswith("data:")]  # inlined images are not requests out
    assert leaving == [Path(html).resolve().as_uri()], leaving
    assert found["rendered"] == str(len(found["sections"])) and len(found["toc"]) == len(found["sections"])
    assert set(sections) <= set(found["sections"]), found["sections"]
    assert found["width"] <= 1280, "the page scrolls sideways"
    assert screenshot.stat().st_size > 20_000  # a page with plots, not a blank one
    return found
