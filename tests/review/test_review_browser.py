"""A real browser (the system Chromium, driven by Playwright) reviews 20 images in each mode with the
keyboard alone; the server is killed mid-session and restarted, and the page resumes at the right image.

Needs the OS package ``chromium`` (``apt-get install chromium``; Playwright's own browser download is not
used). Screenshots go to the test's folder, or to ``$REVIEW_SCREENSHOTS`` (``docs/`` for the README).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from review_data import add_memorisation_csv, review_folder

from dermdiff_lora.review.storage import current_answers, read_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs the OS package chromium (apt-get install chromium) "
                                                          "for the browser tests")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _start(folder: Path, reader: str, mode: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """``dermdiff-lora review`` in a subprocess on a free port; (process, the URL it printed)."""
    cmd = [sys.executable, "-m", "dermdiff_lora.cli", "review", str(folder), "--reader", reader, "--mode", mode,
           "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline, seen = time.monotonic() + 60, []
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            continue
        if seen[-1].startswith("open http"):
            return proc, seen[-1].split()[1]
    proc.kill()
    raise AssertionError(f"the review server did not print its URL: {''.join(seen)}")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _at(page, position: int) -> None:
    page.wait_for_function(f"document.body.dataset.position === '{position}'", timeout=10_000)


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    if os.environ.get("REVIEW_SCREENSHOTS"):
        shutil.copy(tmp_path / name, Path(os.environ["REVIEW_SCREENSHOTS"]) / name)


def _session(browser, folder, tmp_path, mode, keys_for, extra=()):
    """Answer 20 images with the keyboard: 10, kill -9 the server, restart, resume at 11, undo once, finish."""
    proc, url = _start(folder, "ana", mode, *extra)
    page = browser.new_page(viewport={"width": 1180, "height": 560})
    try:
        page.goto(url)
        _at(page, 0)
        for i in range(10):
            for key in keys_for(i):
                page.keyboard.press(key)
            _at(page, i + 1)
        _kill(proc)  # mid-session: every answer given so far must be on disk
        proc, url = _start(folder, "ana", mode, *extra)
        page.goto(url)
        _at(page, 10)  # resumes at the first unanswered image
        assert page.inner_text("#position") == "image 11 of 20"
        for i in range(10, 20):
            for key in keys_for(i):
                page.keyboard.press(key)
            if i < 19:
                _at(page, i + 1)
        page.wait_for_function("document.getElementById('progress').textContent.startsWith('20 / 20')")
        page.keyboard.press("u")  # undo the last answer: back to it, then answer it again
        _at(page, 19)
        page.wait_for_function("document.getElementById('progress').textContent.startsWith('19 / 20')")
        for key in keys_for(19):
            page.keyboard.press(key)
        page.wait_for_function("document.getElementById('progress').textContent.startsWith('20 / 20')")
        page.keyboard.press("ArrowLeft")
        _at(page, 18)
        if mode == "qc":
            page.wait_for_function("document.getElementById('nearest').naturalWidth === 384")
        _shot(page, tmp_path, f"review_{mode}.png")
    finally:
        page.close()
        _kill(proc)
    records = read_records(folder / "review" / mode / "ana" / "verdicts.jsonl")
    return records, current_answers(records)


def test_qc_session_by_keyboard_survives_a_killed_server(browser, tmp_path):
    folder = review_folder(tmp_path / "reb", n_real=4, n_synthetic=20)
    add_memorisation_csv(folder)  # QC shows each image's nearest training image beside it

    def keys(i):  # every third image rejected for reasons 2 (tone) and 4 (ruler/ink/text)
        return ["2", "4", "r"] if i % 3 == 0 else ["a"]

    records, answers = _session(browser, folder, tmp_path, "qc", keys)
    assert sorted(answers) == list(range(20))
    assert all(answers[i]["verdict"] == ("reject" if i % 3 == 0 else "accept") for i in range(20))
    assert answers[0]["reasons"] == ["tone", "marks"]
    assert [r["type"] for r in records].count("undo") == 1


def test_study_session_by_keyboard_survives_a_killed_server(browser, tmp_path):
    folder = review_folder(tmp_path / "reb", n_real=8, n_synthetic=10)

    def keys(i):  # real/synthetic, confidence, realism, diagnosis, tone group
        return ["s" if i % 2 else "e", "4", str(1 + i % 5), "2", "3"]

    records, answers = _session(browser, folder, tmp_path, "study", keys, extra=("--repeat-share", "0.12"))
    assert sorted(answers) == list(range(20)) and sum(a["repeat"] for a in answers.values()) == 2
    for i, a in answers.items():
        assert (a["source"], a["confidence"], a["realism"], a["diagnosis"], a["tone"]) == (
            "synthetic" if i % 2 else "real", 4, 1 + i % 5, "malignant", "darker")
