"""The reports render in a real browser: headless Chromium, no console errors, a real screenshot.

``make test`` installs Debian's chromium package when it is missing (as root
with apt-get); without a browser these tests skip and say why. Chromium
reports console messages on stderr with --enable-logging=stderr; the reports'
content security policy turns any attempt to fetch or run something into
such a message, so "no console output" also means "self-contained".
"""

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from gatekeeper.cli import main

BROWSER = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium: `make test` installs Debian's chromium package as root with apt-get; here it could not",
)
PASS_BANNER = (0xDF, 0xF5, 0xE3)  # --ok-bg in report.css.j2


def render(page: Path, profile: Path, screenshot: Path) -> list[str]:
    """Open ``page``, save a 1280x2000 screenshot, return the console messages Chromium logged."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing may leave the machine
        "--enable-logging=stderr", "--v=0", f"--screenshot={screenshot}", "--window-size=1280,2000",
    ]
    done = subprocess.run([BROWSER, *flags, page.as_uri()], capture_output=True, text=True, timeout=180)
    assert screenshot.is_file(), done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def png_top_rows(path: Path, rows: int) -> tuple[int, int, list[list[tuple[int, ...]]]]:
    """Width, height and the first ``rows`` rows of pixels of an 8-bit RGB(A) PNG, decoded by hand."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and colour in (2, 6), "expected 8-bit RGB or RGBA"
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompressobj().decompress(idat, (stride + 1) * rows)
    previous, pixels = bytearray(stride), []
    for y in range(rows):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        pixels.append([tuple(line[x : x + 3]) for x in range(0, stride, bpp)])
        previous = line
    return width, height, pixels


@pytest.fixture(scope="module")
def pages(ranked_candidates, tmp_path_factory):
    """A real candidate's report.html and the diff.html of two candidates."""
    workdir, v1, v2 = ranked_candidates
    out = tmp_path_factory.mktemp("pages")
    diff = out / "diff.html"
    assert main(["diff", str(workdir / "reports" / "tiny" / "v1"), str(workdir / "reports" / "tiny" / "v2"),
                 "--html", str(diff)]) == 0
    return {"report": workdir / "reports" / "tiny" / "v1" / "report.html", "diff": diff}


@pytest.mark.parametrize("name", ["report", "diff"])
def test_page_renders_in_chromium_without_console_messages(pages, name, tmp_path):
    shot = tmp_path / f"{name}.png"
    assert render(pages[name], tmp_path / "profile", shot) == []
    width, height, top = png_top_rows(shot, 240)
    assert (width, height) == (1280, 2000)
    assert shot.stat().st_size > 40_000  # text, tables and plots compress far worse than a blank page
    assert top[6][6] == PASS_BANNER  # the styles applied: the verdict banner of a passing candidate
    assert len({pixel for row in top for pixel in row}) > 50  # text was drawn on it


def test_a_console_error_would_be_caught(tmp_path):
    """The check above can fail: a page that breaks its own policy shows up in the console log."""
    page = tmp_path / "broken.html"
    report_head = '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">'
    page.write_text(f"<!DOCTYPE html><html><head>{report_head}</head><body><img src=\"https://example.com/x.png\">"
                    "<script>console.error('boom')</script></body></html>")
    messages = render(page, tmp_path / "profile", tmp_path / "broken.png")
    assert any("example.com/x.png" in m for m in messages) and any("inline script" in m for m in messages)
