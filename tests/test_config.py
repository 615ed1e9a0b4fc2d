"""Config: dataclass defaults < config file < --key=value flags; bad input is a one-line UserError naming the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from nanodlm.cli import main
from nanodlm.core.errors import UserError
from nanodlm.training.config import (
    PRESET_DIR,
    TrainConfig,
    build_config,
    load_config,
    parse_overrides,
    read_config_file,
)


@dataclass
class Opts:
    """A small config with every supported field type, Optional ones included."""

    name: str = "x"
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    limit: int | None = None
    label: str | None = "a"


def test_defaults_construct() -> None:
    cfg = TrainConfig()
    assert cfg.model_type == "gpt2" and cfg.n_layer == 12 and cfg.n_embd == 768
    assert cfg.resolved_pos_emb == "learned"
    assert TrainConfig(model_type="diffusion").resolved_pos_emb == "rope"
    assert TrainConfig(model_type="diffusion", pos_emb="learned").resolved_pos_emb == "learned"


def test_py_config_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "my.py"
    path.write_text('"""docstring"""\n# a comment\nn_layer = 3\nlearning_rate = 2e-3\nout_dir = "somewhere"\n'
                    "bias = True\n")
    assert read_config_file(str(path)) == {"n_layer": 3, "learning_rate": 2e-3, "out_dir": "somewhere", "bias": True}
    cfg = load_config(TrainConfig, [str(path), "--n_layer=5"])  # flags beat the file
    assert (cfg.n_layer, cfg.learning_rate, cfg.out_dir, cfg.bias) == (5, 2e-3, "somewhere", True)


def test_preset_loads_by_bare_name() -> None:
    values = read_config_file(str(PRESET_DIR / "cpu.py"))
    assert values["device"] == "cpu"
    cfg = load_config(TrainConfig, ["cpu"])
    for key, value in values.items():
        assert getattr(cfg, key) == value, key
    assert isinstance(cfg.learning_rate, float)
    assert load_config(TrainConfig, ["cpu", "--device=auto"]).device == "auto"


@pytest.mark.parametrize("path", sorted(PRESET_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_every_preset_builds_a_valid_config(path: Path) -> None:
    cfg = load_config(TrainConfig, [path.stem])  # validation runs on construction
    assert cfg.out_dir and cfg.max_iters > 0


def test_json_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"n_layer": 2, "dropout": 0}')
    cfg = load_config(TrainConfig, [str(path)])
    assert cfg.n_layer == 2 and cfg.dropout == 0.0 and isinstance(cfg.dropout, float)
    for text, needle in (('{"n_layer": 2', "is not valid JSON"), ("[1, 2]", "holds a list, not a JSON dict")):
        path.write_text(text)
        with pytest.raises(UserError, match=needle):
            load_config(TrainConfig, [str(path)])


def test_overrides_equals_and_space_forms() -> None:
    assert parse_overrides(["cfg.py", "--n_layer=3", "--dropout", "0.1", "--out-dir=x"]) == (
        "cfg.py", {"n_layer": "3", "dropout": "0.1", "out_dir": "x"})
    cfg = load_config(TrainConfig, ["--n_layer", "3", "--dropout=0.1", "--bias", "true", "--out_dir=123"])
    assert cfg.n_layer == 3 and isinstance(cfg.n_layer, int)
    assert cfg.dropout == 0.1 and isinstance(cfg.dropout, float)
    assert cfg.bias is True
    assert cfg.out_dir == "123"  # a str key keeps digits as text


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--count=7"], {"count": 7}),
        (["--rate=3"], {"rate": 3.0}),  # an int literal for a float key becomes a float
        (["--rate=1e-3"], {"rate": 1e-3}),
        (["--flag=True"], {"flag": True}),
        (["--flag", "false"], {"flag": False}),
        (["--flag=1"], {"flag": True}),
        (["--name=hello world"], {"name": "hello world"}),
        (["--limit=12"], {"limit": 12}),
        (["--limit=None"], {"limit": None}),
        (["--label=none"], {"label": None}),
        (["--label=b"], {"label": "b"}),
    ],
)
def test_overrides_coerce_types(args: list[str], expected: dict) -> None:
    cfg = load_config(Opts, args)
    for key, value in expected.items():
        got = getattr(cfg, key)
        assert got == value and type(got) is type(value), (key, got)


def test_build_config_checks_python_values() -> None:
    assert build_config(Opts, {"rate": 2}).rate == 2.0
    with pytest.raises(UserError, match="'count'"):
        build_config(Opts, {"count": "3.5"})
    with pytest.raises(UserError, match="'flag'"):
        build_config(Opts, {"flag": 1})  # from a file, 1 is not a bool


def test_unknown_key_names_it() -> None:
    with pytest.raises(UserError, match="unknown config key 'n_layers'"):
        load_config(TrainConfig, ["--n_layers=3"])


@pytest.mark.parametrize(
    "flag, key",
    [("--n_layer=abc", "n_layer"), ("--n_layer=1.5", "n_layer"), ("--n_layer=True", "n_layer"),
     ("--dropout=true", "dropout"), ("--dropout=abc", "dropout"), ("--bias=maybe", "bias"),
     ("--learning_rate=[1]", "learning_rate")],
)
def test_wrong_type_names_key(flag: str, key: str) -> None:
    with pytest.raises(UserError, match=f"'{key}'"):
        load_config(TrainConfig, [flag])


@pytest.mark.parametrize("line", ["n_layer = os.getcwd()", "import os", "n_layer = 2 + x", "n_layer += 1"])
def test_non_literal_config_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "bad.py"
    path.write_text(f"dropout = 0.0\n{line}\n")
    with pytest.raises(UserError, match="line 2") as e:
        read_config_file(str(path))
    assert "literal" in str(e.value)


def test_missing_config_file_lists_presets() -> None:
    with pytest.raises(UserError, match="not found.*cpu"):
        read_config_file("no_such_preset")


@pytest.mark.parametrize("flag, key", [("--model_type=foo", "model_type"), ("--objective=bar", "objective"),
                                       ("--pos_emb=alibi", "pos_emb")])
def test_bad_choice(flag: str, key: str) -> None:
    with pytest.raises(UserError, match=f"'{key}' must be one of"):
        load_config(TrainConfig, [flag])


@pytest.mark.parametrize("flag", ["--n_head=5", "--batch_size=0", "--dropout=1.0", "--max_iters=-1"])
def test_invalid_values(flag: str) -> None:
    with pytest.raises(UserError):
        load_config(TrainConfig, [flag])


def test_bare_flag() -> None:
    # a bare `--flag` means true: fine for a bool key, a type error naming the key otherwise
    assert load_config(TrainConfig, ["--bias", "--n_layer=2"]).bias is True
    with pytest.raises(UserError, match="'n_layer'"):
        load_config(TrainConfig, ["--n_layer"])


@pytest.mark.parametrize(
    "args, needle",
    [(["--n_layers=3"], "n_layers"), (["--n_layer=abc"], "n_layer"), (["--dropout=true"], "dropout"),
     (["--model_type=foo"], "model_type"), (["BAD_FILE"], "BAD_FILE")],
)
def test_cli_config_errors_are_one_line(capsys: pytest.CaptureFixture, args: list[str], needle: str,
                                        tmp_path: Path) -> None:
    if args == ["BAD_FILE"]:
        bad = tmp_path / "bad.py"
        bad.write_text("n_layer = os.getcwd()\n")
        args, needle = [str(bad)], "literal"
    assert main(["train", *args]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert needle in lines[0]
    assert "Traceback" not in err + out


@pytest.mark.parametrize("preset, digest", [("cpu", "ee2ea621"), ("cpu_diffusion", "185200c1"),
                                            ("cpu_block_diffusion", "8de90e28")])
def test_config_hash_is_pinned(preset: str, digest: str) -> None:
    # bench runs live under runs/<name>-<hash>: refactoring the config must not rename them
    from nanodlm.bench.runs import config_hash

    assert config_hash(load_config(TrainConfig, [preset])) == digest
    assert config_hash(TrainConfig()) == "c38b3188"


def test_model_keys_have_one_home() -> None:
    # TrainConfig's model keys are ModelArgs' fields: one default, one check, and GPTConfig agrees
    from dataclasses import fields

    from nanodlm.model.config import GPTConfig, ModelArgs

    for f in fields(ModelArgs):
        assert getattr(TrainConfig(), f.name) == f.default
    cfg = load_config(TrainConfig, ["--model_type=diffusion", "--n_layer=2", "--n_head=2", "--n_embd=32"])
    gpt = GPTConfig.for_data(cfg, 65)
    assert (gpt.n_layer, gpt.pos_emb, gpt.vocab_size, gpt.mask_token_id) == (2, "rope", 66, 65)
    assert GPTConfig(**gpt.to_dict()) == gpt
    with pytest.raises(UserError, match="even head size"):  # the model's own check, as a one-line UserError
        load_config(TrainConfig, ["--model_type=diffusion", "--n_embd=30", "--n_head=10"])
