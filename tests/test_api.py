"""The public API (``nanodlm/__init__.py``): lazy names, and README's "Python" example run as written."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nanodlm

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    """The first ```python block of README's "## Python" section."""
    section = README.read_text(encoding="utf-8").split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python section has no ```python block"
    return match.group(1)


def test_every_public_name_is_the_object_its_module_defines() -> None:
    assert sorted(nanodlm.__all__) == sorted(nanodlm._API)
    for name, module in nanodlm._API.items():
        assert getattr(nanodlm, name) is getattr(importlib.import_module(module), name), name
    assert set(nanodlm.__all__) <= set(dir(nanodlm))
    with pytest.raises(AttributeError, match="no attribute 'checkpoint_dict'"):
        nanodlm.checkpoint_dict  # noqa: B018 (internals are not reachable from the top)


def test_import_nanodlm_does_not_import_torch(subprocess_env) -> None:
    code = "import sys, nanodlm; print('torch' in sys.modules); nanodlm.GPTConfig; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]  # torch comes with the first name that needs it


def test_readme_example_runs(tiny_runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = readme_example()
    assert len(code.strip().splitlines()) <= 10 and 'load_model("out-cpu-diffusion")' in code
    (tmp_path / "out-cpu-diffusion").symlink_to(tiny_runs["diffusion"])  # the run the README names, here tiny
    monkeypatch.chdir(tmp_path)
    outputs = []
    for _ in range(2):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
        outputs.append(buf.getvalue())
    assert outputs[0] == outputs[1]  # seed=0: the same texts twice
    completion, counts, checks = outputs[0].rsplit("\n", 3)[-4:-1]
    assert completion and "█" not in completion  # every position revealed
    assert re.fullmatch(r"\d+ steps, \d+ forward passes", counts)
    assert checks == "2 True True"  # tiny_runs trains 2 iterations
