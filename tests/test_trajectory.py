"""The trajectory recorder and its exports: ``nanodlm sample --trajectory=FILE.html|FILE.gif``."""

from __future__ import annotations

import json
import re
import threading

import pytest
import torch

from nanodlm import cli
from nanodlm.sampling.trajectory import MASK_TEXT, Aborted, Recorder, count_forward_passes
from nanodlm.web.animate import write_html

M = 9  # the mask id of the fake vocabulary "abcdefgh" + [MASK]


def decode_one(i: int) -> str:
    return "abcdefgh"[i]


def test_recorder_adds_the_start_canvas_and_lists_positions():
    rec = Recorder(decode_one, mask_token_id=M)
    rec(1, torch.tensor([[0, 1, M, M]]), torch.tensor([[False, True, False, False]]), torch.zeros(1, 4, dtype=bool))
    rec(2, torch.tensor([[0, M, 2, 3]]), torch.tensor([[False, False, True, True]]),
        torch.tensor([[False, True, False, False]]))
    ev = rec.events()
    assert [e["step"] for e in ev] == [0, 1, 2]
    assert ev[0]["samples"][0] == {"text": "a" + MASK_TEXT * 3, "tokens": ["a", None, None, None],
                                   "masked": [1, 2, 3], "revealed": [], "remasked": []}
    assert ev[0]["forward_passes"] is None and ev[0]["elapsed"] == 0.0  # not a Module: passes not counted
    assert ev[2]["samples"][0] == {"text": "a" + MASK_TEXT + "cd", "tokens": ["a", None, "c", "d"],
                                   "masked": [1], "revealed": [2, 3], "remasked": [1]}
    assert [e["elapsed"] for e in ev] == sorted(e["elapsed"] for e in ev)


def test_growing_rows_are_padded_to_length():
    rec = Recorder(decode_one, mask_token_id=None, length=4)  # an AR model: no mask id, one more token per step
    rec(1, torch.tensor([[0, 1]]), torch.tensor([[False, True]]), torch.zeros(1, 2, dtype=bool))
    first, second = rec.events()
    assert first["samples"][0]["tokens"] == ["a", None, None, None]
    assert second["samples"][0]["tokens"] == ["a", "b", None, None] and second["samples"][0]["revealed"] == [1]


def test_should_stop_aborts_inside_the_sampler():
    stop = threading.Event()
    rec = Recorder(decode_one, mask_token_id=M, should_stop=stop.is_set)
    rec(1, torch.tensor([[0, M]]), torch.tensor([[True, False]]), torch.zeros(1, 2, dtype=bool))
    stop.set()
    with pytest.raises(Aborted):
        rec(2, torch.tensor([[0, 1]]), torch.tensor([[False, True]]), torch.zeros(1, 2, dtype=bool))
    assert len(rec.frames) == 2


def test_forward_passes_are_counted_per_thread():
    model = torch.nn.Linear(2, 2)
    counts = {}

    def work(name: str, n: int) -> None:
        passes = count_forward_passes(model)
        for _ in range(n):
            model(torch.zeros(1, 2))
        counts[name] = passes()

    threads = [threading.Thread(target=work, args=(f"t{n}", n)) for n in (3, 5, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == {"t3": 3, "t5": 5, "t7": 7}
    assert len(model._forward_hooks) == 1  # one hook for all of them


def test_html_keeps_a_script_tag_in_the_text_inert(tmp_path):
    event = {"step": 0, "forward_passes": 0, "elapsed": 0.0,
             "samples": [{"text": "</script><b>", "tokens": ["</script><b>"], "masked": [], "revealed": [],
                          "remasked": []}]}
    write_html(tmp_path / "a.html", [event], "<title>")
    page = (tmp_path / "a.html").read_text()
    data = re.search(r'<script type="application/json" id="nd-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data)["events"][0]["samples"][0]["text"] == "</script><b>"
    assert "<h1>&lt;title&gt;</h1>" in page


def test_sample_writes_a_self_contained_html_animation(tiny_runs, tmp_path, capsys):
    out = tmp_path / "anim.html"
    assert cli.main(["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--start=The", "--length=16",
                     "--steps=5", "--num_samples=2", f"--trajectory={out}"]) == 0
    page = out.read_text()
    assert not re.search(r"https?://", page)  # nothing to fetch: opens without a network
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # every script and style is inline
    assert "NanoCanvas" in page and "nd-play" in page
    data = json.loads(re.search(r'id="nd-data">(.*?)</script>', page, re.S).group(1))
    evs = data["events"]
    assert [e["step"] for e in evs][0] == 0 and len(evs) >= 2
    assert all(s["tokens"][:3] == ["T", "h", "e"] for e in evs for s in e["samples"])
    assert all(MASK_TEXT not in s["text"] for s in evs[-1]["samples"])
    printed = capsys.readouterr().out
    assert evs[-1]["samples"][0]["text"] in printed  # the animation ends on the text that was printed


def test_sample_writes_an_animated_gif(tiny_runs, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    out = tmp_path / "anim.gif"
    assert cli.main(["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--length=16", "--steps=6",
                     "--num_samples=1", "--sampler=remask", f"--trajectory={out}"]) == 0
    with Image.open(out) as img:
        assert img.format == "GIF" and img.n_frames > 1 and img.is_animated
        first = img.convert("RGB")
        img.seek(img.n_frames - 1)
        assert img.convert("RGB").tobytes() != first.tobytes()


def test_trajectory_of_an_ar_model_reveals_one_position_per_step(tiny_runs, tmp_path):
    out = tmp_path / "ar.html"
    assert cli.main(["sample", f"--out_dir={tiny_runs['gpt2']}", "--device=cpu", "--start=The", "--max_new_tokens=5",
                     "--num_samples=1", f"--trajectory={out}"]) == 0
    evs = json.loads(re.search(r'id="nd-data">(.*?)</script>', out.read_text(), re.S).group(1))["events"]
    assert [e["step"] for e in evs] == list(range(6))
    assert [len(e["samples"][0]["tokens"]) for e in evs] == list(range(3, 9))  # the text grows by one token
    assert all(e["samples"][0]["revealed"] == [2 + e["step"]] for e in evs[1:])


def test_trajectory_format_error_is_one_line(tiny_runs, capsys):
    assert cli.main(["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--trajectory=anim.mp4"]) == 1
    err = capsys.readouterr().err.strip()
    assert "the file must end in .html or .gif" in err and "\n" not in err
