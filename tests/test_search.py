"""The protocol's budgeted search: screens then finals, lanes, the estimate, and choices only on dev."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nanodlm.bench import search
from nanodlm.core.errors import UserError


class FakeLanes:
    """Runs finish at once, in submission order; remembers what was submitted."""

    def __init__(self) -> None:
        self.submitted: list[search.Job] = []
        self.queue: list[search.Job] = []

    def submit(self, job: search.Job) -> None:
        self.submitted.append(job)
        self.queue.append(job)

    def completed(self):
        while self.queue:
            job = self.queue.pop(0)
            job.run = {"out_dir": job.plan["out_dir"], "reused": False, "cfg": job.plan["cfg"]}
            yield job

    def close(self) -> None:
        pass


def _plan(role: str, values: dict[str, Any]) -> dict[str, Any]:
    name = "-".join(f"{k}={values[k]}" for k in sorted(values))
    cfg = SimpleNamespace(max_iters=values["max_iters"], n_layer=2, n_embd=32, batch_size=4, block_size=16,
                          gradient_accumulation_steps=1)
    return {"cfg": cfg, "out_dir": f"{role}/{name}", "done": False}


def test_the_screen_winner_alone_trains_the_final_grid_at_full_budget() -> None:
    searches = {"ar": {"screen": {"learning_rate": [1e-3, 2e-3, 3e-3]}, "final": {"dropout": [0.0, 0.2]}},
                "judge": {"screen": {}, "final": {}}}
    base = {"ar": {"max_iters": 100}, "judge": {"max_iters": 300}}
    dev = {1e-3: 2.0, 2e-3: 1.5, 3e-3: 1.7}  # the 2e-3 screen wins on dev

    def dev_loss(run: dict[str, Any]) -> dict[str, float]:
        lr = float(run["out_dir"].split("learning_rate=")[1].split("-")[0])
        return {"loss": dev[lr], "stderr": 0.0, "split": "dev"}

    lanes = FakeLanes()
    finals, screens = search.search_all(searches, base, 10, _plan, dev_loss, lanes, on_event=lambda _: None)
    assert lanes.submitted[0].role == "judge"  # the longest run goes first
    assert [j.stage for j in lanes.submitted if j.role == "ar"] == ["screen"] * 3 + ["final"] * 2
    assert all(r["cfg"].max_iters == 10 for r in screens["ar"])  # screens: the short budget
    assert [r["search"] for r in finals["ar"]] == [{"learning_rate": 2e-3, "dropout": 0.0},
                                                   {"learning_rate": 2e-3, "dropout": 0.2}]
    assert all(r["cfg"].max_iters == 100 for r in finals["ar"]) and len(finals["judge"]) == 1


def test_no_screen_trains_every_candidate_at_full_budget() -> None:
    searches = {"ar": {"screen": {"pos_emb": ["learned", "rope"]}, "final": {}}}
    finals, screens = search.search_all(searches, {"ar": {"max_iters": 50}}, 0, _plan,
                                        lambda run: pytest.fail("no screen, no screen loss"), FakeLanes(),
                                        on_event=lambda _: None)
    assert [r["search"] for r in finals["ar"]] == [{"pos_emb": "learned"}, {"pos_emb": "rope"}]
    assert screens == {"ar": []}


def test_estimate_packs_runs_on_lanes_and_skips_cached_ones() -> None:
    assert search.makespan([4.0, 3.0, 3.0, 2.0], 2) == 6.0
    assert search.makespan([4.0, 3.0], 1) == 7.0
    searches = {"ar": {"screen": {"learning_rate": [1e-3, 2e-3]}, "final": {"dropout": [0.0, 0.1]}}}
    est = search.estimate(searches, {"ar": {"max_iters": 100}}, 10, _plan, lanes=2)
    assert est["runs"] == 4 and est["cached"] == 0 and est["train_wall_s"] < est["serial_train_s"]

    def cached(role: str, values: dict[str, Any]) -> dict[str, Any]:
        return {**_plan(role, values), "done": True}

    assert search.estimate(searches, {"ar": {"max_iters": 100}}, 10, cached, 2)["train_wall_s"] == 0.0


def test_the_screen_refuses_a_choice_made_on_test() -> None:
    searches = {"ar": {"screen": {"learning_rate": [1e-3, 2e-3]}, "final": {}}}
    with pytest.raises(UserError, match="chooses on dev only"):
        search.search_all(searches, {"ar": {"max_iters": 100}}, 10, _plan,
                          lambda run: {"loss": 1.0, "stderr": 0.0, "split": "test"}, FakeLanes(),
                          on_event=lambda _: None)


def test_a_failed_training_lane_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lanes = search.Lanes(2, ["false"], tmp_path / "jobs")  # a launcher that fails at once
    cfg = SimpleNamespace()
    job = search.Job("ar", "final", {}, {"cfg": cfg, "out_dir": str(tmp_path / "ar-x"), "done": False})
    monkeypatch.setattr(search, "config_to_dict", lambda c: {"max_iters": 1})
    lanes.submit(job)
    with pytest.raises(UserError, match="failed .exit 1.; its output is in"):
        list(lanes.completed())
    lanes.close()


def test_a_launcher_does_not_inherit_the_thread_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # cpu-slot sizes its slots with nproc, which reads OMP_NUM_THREADS: an inherited 1 would serialise the lanes
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(search, "config_to_dict", lambda c: {"max_iters": 1})
    monkeypatch.setattr(search, "finish_run", lambda plan: {"out_dir": plan["out_dir"]})
    launcher = ["sh", "-c", 'echo "OMP=${OMP_NUM_THREADS-unset}"', "launcher"]
    lanes = search.Lanes(2, launcher, tmp_path / "jobs")
    lanes.submit(search.Job("ar", "final", {}, {"cfg": SimpleNamespace(), "out_dir": str(tmp_path / "ar-x"),
                                                "done": False}))
    assert len(list(lanes.completed())) == 1
    lanes.close()
    assert (tmp_path / "jobs" / "ar-x.log").read_text().strip() == "OMP=unset"
