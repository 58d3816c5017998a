"""edgefashion report: one self-contained report.html, opened in Debian's headless Chromium."""

from __future__ import annotations

import shutil

from chromium import check_report, open_page
from helpers import FIXTURES, cli


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
    assert refused.returncode == 2 and "is not an edgefashion output" in refused.stderr
    assert mine.read_text() == "<p>my notes</p>"
    assert cli("report", tmp_path / "nothing").returncode == 2
    cli("report", run, "--out", mine, "--force", check=0)  # asked for: replaced
    assert "edgefashion report" in mine.read_text()


def test_compare_plot_replaces_its_own_plot_and_a_users_only_with_force(tmp_path):
    bench = tmp_path / "bench.json"
    cli("bench", FIXTURES / "run" / "export" / "model_int8.tflite", "--runs", 5, "--warmup", 1, "--min-time", 0,
        "--out", bench, check=0)
    for _ in range(2):  # the second time the plot is its own
        cli("compare", bench, bench, "--plot", tmp_path / "compare.png", check=0)
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG a user's picture")
    assert "not an edgefashion output" in cli("compare", bench, bench, "--plot", photo, check=2).stderr
    assert photo.read_bytes() == b"\x89PNG a user's picture"
    cli("compare", bench, bench, "--plot", photo, "--force", check=0)
    assert len(photo.read_bytes()) > 5000
