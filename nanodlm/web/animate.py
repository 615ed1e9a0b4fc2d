"""Export a recorded trajectory (``trajectory.Recorder``) as a self-contained HTML animation or an animated GIF.

``write_trajectory(path, recorder, title)`` picks the format by suffix. The HTML file inlines the page's own
canvas renderer (``static/canvas.js`` / ``canvas.css``) and a small player, with the events as JSON: it opens
without a network or a server. The GIF is drawn with Pillow (an optional extra, imported here only):
masked positions as grey boxes, revealed positions on green, re-masked ones struck through on red.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.fileio import check_output_path
from ..sampling.trajectory import Frame, Recorder

FRAME_MS = 120  # each step on screen
HOLD_MS = 2500  # the final text, before the animation loops
MAX_GIF_FRAMES = 240  # longer trajectories keep every k-th step (and always the first and the last)
GIF_WIDTH = 760
FORMATS = (".html", ".gif")

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{css}
body {{ font: 14px system-ui, sans-serif; margin: 20px auto; max-width: 900px; padding: 0 12px; color: #222; }}
h1 {{ font-size: 18px; }} .nd-controls {{ display: flex; gap: 10px; align-items: center; margin: 6px 0; }}
#nd-slider {{ flex: 1; }}</style></head>
<body><h1>{title}</h1>
<div class="nd-controls"><button id="nd-play">play</button><input id="nd-slider" type="range" min="0" value="0">
<span class="nd-legend"><span class="nd-masked">&#9617; masked</span><span class="nd-revealed">revealed this step</span>
<span class="nd-remasked">re-masked</span></span></div>
<div class="nd-status" id="nd-status"></div><div class="nd-canvas" id="nd-canvas"></div>
<script type="application/json" id="nd-data">{data}</script>
<script>{canvas_js}</script>
<script>{player_js}</script>
</body></html>
"""


def _static(name: str) -> str:
    return (resources.files("nanodlm.web") / "static" / name).read_text(encoding="utf-8")


def check_trajectory_path(path: str) -> None:
    """UserError unless ``path`` ends in a format we write (and, for a GIF, Pillow is installed)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"--trajectory={path}: the file must end in .html or .gif")
    check_output_path(path, "--trajectory", (suffix,), binary_ok=("a GIF image",), make_folder=True)
    if suffix == ".gif":
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise UserError("--trajectory=FILE.gif needs Pillow: pip install -e '.[gif]' (or pip install Pillow)") \
                from None


def write_html(path: str | Path, events: list[dict[str, Any]], title: str) -> None:
    data = json.dumps({"events": events, "frame_ms": FRAME_MS, "hold_ms": HOLD_MS}, separators=(",", ":"))
    # any "<" as \u003c: neither "</script>" nor "<!--<script>" in a token may end or derail the script element
    data = data.replace("<", "\\u003c")
    page = _HTML.format(title=html.escape(title), css=_static("canvas.css"), data=data,
                        canvas_js=_static("canvas.js"), player_js=_static("player.js"))
    Path(path).write_text(page, encoding="utf-8")


# --- GIF ------------------------------------------------------------------------------------------------------

COLORS = {"bg": (251, 251, 248), "text": (29, 29, 27), "mask": (214, 214, 206), "revealed_bg": (183, 240, 177),
          "revealed": (11, 61, 7), "remasked_bg": (255, 214, 214), "remasked": (176, 0, 32), "status": (90, 90, 90)}


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _layout(frame: Frame, prev: Frame | None, recorder: Recorder, font, width: int, line_h: int,
            top: int) -> tuple[list[tuple[int, int, int, str, str]], int]:
    """Cells (x, y, w, kind, text) for every position of every row, and the height used."""
    cells: list[tuple[int, int, int, str, str]] = []
    cell_w = int(font.getlength("M"))
    y = top
    for b, row in enumerate(frame.tokens):
        x = 10
        revealed, remasked = set(frame.revealed[b]), set(frame.remasked[b])
        for i, token in enumerate(row):
            text = recorder.text_of(token)
            kind = "token"
            if i in remasked:
                old = recorder.text_of(prev.tokens[b][i]) if prev is not None else None
                kind, text = "remasked", old or " "
            elif text is None:
                kind, text = "mask", " "
            elif i in revealed:
                kind = "revealed"
            shown = text.replace("\n", "\u21b5")
            w = max(cell_w, int(font.getlength(shown))) if kind == "mask" else int(font.getlength(shown))
            if x + w > width - 10:
                x, y = 10, y + line_h
            cells.append((x, y, w, kind, shown))  # a newline is a glyph, not a line break: nothing jumps
            x += w
        y += line_h + line_h // 2  # a gap between samples
    return cells, y


def _fit(text: str, font, width: int) -> str:
    while text and font.getlength(text) > width:
        text = text[:-2] + "\u2026"
    return text


def write_gif(path: str | Path, recorder: Recorder, title: str, width: int = GIF_WIDTH) -> None:
    from PIL import Image, ImageDraw

    frames = recorder.frames
    if len(frames) > MAX_GIF_FRAMES:
        k = -(-len(frames) // MAX_GIF_FRAMES)
        frames = frames[::k] + ([frames[-1]] if (len(frames) - 1) % k else [])
    font, small = _font(16), _font(13)
    line_h, top = 24, 52
    laid = [_layout(f, frames[j - 1] if j else None, recorder, font, width, line_h, top) for j, f in enumerate(frames)]
    height = max(h for _, h in laid) + 6
    total = frames[-1].step
    images = []
    for frame, (cells, _) in zip(frames, laid):
        img = Image.new("RGB", (width, height), COLORS["bg"])
        draw = ImageDraw.Draw(img)
        passes = "?" if frame.forward_passes is None else frame.forward_passes
        draw.text((10, 6), f"step {frame.step}/{total} · {passes} forward passes", font=font, fill=COLORS["text"])
        draw.text((10, 28), _fit(title, small, width - 20), font=small, fill=COLORS["status"])
        for x, y, w, kind, text in cells:
            if kind == "mask":
                draw.rectangle((x + 1, y + 3, x + w - 2, y + line_h - 4), fill=COLORS["mask"])
                continue
            if kind in ("revealed", "remasked"):
                draw.rectangle((x, y + 1, x + w, y + line_h - 2), fill=COLORS[f"{kind}_bg"])
            draw.text((x, y + 2), text, font=font, fill=COLORS["text" if kind == "token" else kind])
            if kind == "remasked":
                draw.line((x, y + line_h // 2, x + w, y + line_h // 2), fill=COLORS["remasked"], width=2)
        images.append(img)
    palette = _palette(images)  # one palette for all frames: about 5x smaller than a palette per frame
    frames_p = [img.quantize(palette=palette, dither=Image.Dither.NONE) for img in images]
    durations = [FRAME_MS] * (len(images) - 1) + [HOLD_MS]
    frames_p[0].save(path, save_all=True, append_images=frames_p[1:], duration=durations, loop=0, optimize=True)


def _palette(images: list):
    """A 64-colour palette from a dozen of the frames plus a swatch of every colour in COLORS."""
    from PIL import Image

    sample = images[:: max(1, len(images) // 12)] + [images[-1]]
    w, h = images[0].size
    sheet = Image.new("RGB", (max(w, 8 * len(COLORS)), h * len(sample) + 8), COLORS["bg"])
    for i, img in enumerate(sample):
        sheet.paste(img, (0, i * h))
    for j, color in enumerate(COLORS.values()):
        sheet.paste(color, (8 * j, h * len(sample), 8 * j + 8, h * len(sample) + 8))
    return sheet.quantize(colors=64)


def write_trajectory(path: str | Path, recorder: Recorder, title: str) -> None:
    """Write the recorded frames to ``path`` (.html or .gif)."""
    check_trajectory_path(str(path))
    if not recorder.frames:
        raise UserError("--trajectory: nothing was recorded (the canvas had no position to fill)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if Path(path).suffix.lower() == ".gif":
        write_gif(path, recorder, title)
    else:
        write_html(path, recorder.events(), title)
