"""The demo in a real browser: the server starts, headless Chromium (Debian's ``chromium``) driven by Playwright
uploads a generated video, asks a question, waits for the streamed answer and saves a screenshot.

Skipped where Playwright, Gradio or ``/usr/bin/chromium`` is missing (``.ci/run`` installs all three).
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmaccel.demo import SHAPES_VIDEO_EXAMPLES
from tests.eval.fixtures import write_video

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = Path(os.environ.get("MMACCEL_SCREENSHOT_DIR", REPO / "artifacts"))

pytest.importorskip("gradio")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo_server():
    """``python demos/video_chat.py`` on a free local port; yields its URL, stops it after the test."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, str(REPO / "demos" / "video_chat.py"), "--port", str(port),
                                "--fps", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the demo exited: {process.stdout.read()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the demo did not start listening within 120 s")
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _video(tmp_path: Path) -> Path:
    from mmaccel.zoo.world import render_video, sample_video

    frames = render_video(sample_video(np.random.default_rng(7), num_frames=8), size=128, seed=0)
    path = tmp_path / "shapes.mp4"
    write_video(path, frames, fps=4, pix_fmt="yuv420p")  # one the browser can play
    return path


def test_upload_ask_and_see_the_answer_stream_in(demo_server, tmp_path: Path):
    video = _video(tmp_path)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(demo_server, wait_until="domcontentloaded")
        page.locator("#question textarea").wait_for(timeout=60_000)

        # a bad upload is reported and the demo goes on
        page.locator("#video input[type=file]").set_input_files(str(bad))
        page.locator("#status").get_by_text("Could not read this video").wait_for(timeout=60_000)
        page.locator("#video video").wait_for(state="detached", timeout=60_000)  # the demo took it off the player

        page.locator("#video input[type=file]").set_input_files(str(video))
        page.locator("#status").get_by_text("Video ingested").wait_for(timeout=120_000)
        assert "frames ingested" in page.locator("#stats").inner_text()

        assert page.get_by_text("questions in the prompt the model was trained on").count()
        page.locator("#question textarea").fill(SHAPES_VIDEO_EXAMPLES[0])  # its options fit the video's shapes
        page.locator("#question textarea").press("Enter")
        answer = page.locator("#chat .message.bot, #chat [data-testid='bot']").last
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = answer.inner_text() if answer.count() else ""
            if text and (not seen or text != seen[-1]):
                seen.append(text)
            if text and page.locator("#stats").get_by_text("last time to first token").count() and \
                    "ms" in page.locator("#stats").inner_text().split("last time to first token")[1][:30]:
                break
            time.sleep(0.05)
        playable = "() => { const v = document.querySelector('#video video'); return !!v && v.error === null; }"
        assert page.evaluate(playable), "the browser could not play the good video"
        for close in page.locator("[data-testid='toast-close']").all():  # Gradio's notice about the bad upload
            close.click()
        page.get_by_text("Video not playable").wait_for(state="hidden", timeout=30_000)
        page.screenshot(path=str(SCREENSHOT_DIR / "demo_video_chat.png"), full_page=True)
        browser.close()
    assert seen and seen[-1].strip(), "no answer appeared in the chat"
