"""edgefashion report: one self-contained report.html, opened in Debian's headless Chromium."""

from __future__ import annotations

import shutil

from chromium import check_report, open_page
from helpers import cli


def test_the_browser_check_sees_requests_and_errors(tmp_path):
    """The check the report tests rely on can fail: a page that fetches and throws is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/x.png"><script>notDefined();</script></body></html>')
    seen = open_page(page, tmp_path / "bad.png", "document.images.length")
    assert "http://127.0.0.1:9/x.png" in seen["requests"] and seen["probe"] == 1
    assert any("notDefined" in e for e in seen["errors"]), seen["errors"]


def test_report_of_an_exported_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    done = cli("report", run, check=0)
    html = run / "report.html"
    assert f"-> {html}" in done.stdout and "self-contained" in done.stdout
    found = check_report(html, tmp_path / "run.png", ["overview", "training", "export", "accuracy", "latency"])
    assert found["figures"] >= 1  # training curves
    # the stages not run here say so, and how to run them
    assert any("edgefashion verify" in m for m in found["missing"]) and any("edgefashion bench" in m
                                                                         for m in found["missing"])
    text = html.read_text()
    assert "<script src" not in text and "<link" not in text and "http://" not in text.split("<svg")[0]
    # a second report replaces its own file; a user's file of that name is never overwritten
    cli("report", run, check=0)
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    refused = cli("report", run, "--out", mine)
    assert refused.returncode == 2 and "is not an edgefashion report" in refused.stderr
    assert mine.read_text() == "<p>my notes</p>"
    assert cli("report", tmp_path / "nothing").returncode == 2
