"""The web demo's jobs (nanodlm/web/jobs.py): every pairing the README shows races, each panel reads the settings
``sampling/settings.py`` says it reads, what cannot run is a 400, what is not read is a warning, and an error in
either panel ends the job."""

from __future__ import annotations

import json
import threading

import pytest

from nanodlm.core.errors import UserError
from nanodlm.sampling.trajectory import Recorder
from nanodlm.web.serve import ServeConfig, Server, load_server


@pytest.fixture(scope="module")
def servers(tiny_runs, tidar_run) -> dict[str, Server]:
    """The README's two pairings: a diffusion run or a TiDAR run (``--out_dir``) against a plain AR run."""
    return {kind: load_server(ServeConfig(out_dir=main, ar_out_dir=tiny_runs["gpt2"], ckpt="last", device="cpu"))
            for kind, main in (("diffusion", tiny_runs["diffusion"]), ("tidar", tidar_run))}


def prepare(server: Server, **body):
    return server.prepare(json.dumps(body).encode())


def run(engine, job) -> list[str]:
    rec = Recorder(lambda i: engine.tok.decode([i]), mask_token_id=engine.mask_token_id, length=job.length,
                   model=engine.model)
    return job.run(rec).texts


@pytest.mark.parametrize("kind, sampler", [("diffusion", None), ("diffusion", "remask"), ("diffusion", "confidence"),
                                           ("tidar", None), ("tidar", "speculative"), ("tidar", "ar")])
def test_every_pairing_races_and_the_opponent_samples_as_ar(servers, kind: str, sampler: str | None) -> None:
    server = servers[kind]
    body = {"race": True, "start": "th", "steps": 4, "num_samples": 1, **({"sampler": sampler} if sampler else {})}
    if kind == "tidar":
        body.pop("steps")  # the page sends only what the sampler reads (info["reads"])
    jobs = prepare(server, **body)
    assert [e.name for e, _ in jobs] == ["main", "ar"] and jobs[0][1].length == jobs[1][1].length == 16
    assert all(not job.warnings for _, job in jobs)
    texts = [run(e, job) for e, job in jobs]
    assert [len(t[0]) for t in texts] == [16, 16]


def test_info_names_the_main_model_by_its_kind(servers) -> None:
    info = servers["tidar"].info()
    assert info["models"]["main"]["kind"] == "tidar" and info["models"]["ar"]["kind"] == "gpt2"
    assert "steps" not in info["reads"]["speculative"] and "draft_len" in info["reads"]["speculative"]
    assert "steps" in servers["diffusion"].info()["reads"]["remask"]


@pytest.mark.parametrize("kind, body, says", [
    ("tidar", {"race": True, "sampler": "remask"}, "is a diffusion sampler"),
    ("tidar", {"model": "ar", "sampler": "speculative"}, "needs a TiDAR model"),
    ("diffusion", {"race": True, "sampler": "ar"}, "is for AR models"),
    ("diffusion", {"race": True, "sampler": "speculative"}, "is for AR models"),
    ("tidar", {"draft_len": 16}, "--draft_len=16 does not fit"),
    ("tidar", {"max_new_tokens": 99999999999}, "above this server's limit"),
    ("diffusion", {"model": "ar", "max_new_tokens": 99999999999}, "above this server's limit"),
])
def test_what_cannot_run_is_refused_before_any_event(servers, kind: str, body: dict, says: str) -> None:
    with pytest.raises(UserError, match=says):
        prepare(servers[kind], **body)


def test_a_bare_ar_request_writes_within_the_limit(servers) -> None:
    (engine, job), = prepare(servers["diffusion"], model="ar", num_samples=1)  # no length: the server's limit
    assert job.length == 16 and len(run(engine, job)[0]) == 16
    (engine, job), = prepare(servers["diffusion"], model="ar", start="th", max_new_tokens=5, num_samples=1)
    assert job.length == 7 and not job.warnings
    (_, job), = prepare(servers["tidar"], start="th", max_new_tokens=5, num_samples=1)  # TiDAR reads it too
    assert job.length == 7 and not job.warnings


@pytest.mark.parametrize("kind, body, says", [
    ("tidar", {"steps": 8}, "--steps=8"),
    ("diffusion", {"race": True, "max_new_tokens": 30}, "--max_new_tokens=30"),
    ("diffusion", {"model": "ar", "sampler": "remask"}, "--sampler=remask"),
    ("diffusion", {"model": "ar", "steps": 8}, "--steps=8"),
    ("tidar", {"use_kv_cache": False}, "--use_kv_cache=False"),
    ("diffusion", {"model": "ar", "length": 9, "max_new_tokens": 3}, "--max_new_tokens=3"),
])
def test_a_setting_given_and_not_read_is_a_warning(servers, kind: str, body: dict, says: str) -> None:
    jobs = prepare(servers[kind], num_samples=1, **body)
    warnings = [w for _, job in jobs for w in job.warnings]
    assert len([w for w in warnings if w.startswith(says)]) == 1, warnings


def test_an_error_in_either_panel_ends_the_job(servers) -> None:
    server = servers["diffusion"]
    jobs = prepare(server, race=True, steps=2, num_samples=1)
    hook = server.engines["ar"].model.lm_head.register_forward_pre_hook(
        lambda module, args: (_ for _ in ()).throw(RuntimeError("boom")))
    events, ended = [], threading.Event()

    def emit(event, data):
        events.append((event, data))
        if event is None:
            ended.set()

    try:
        assert server.slots.acquire(blocking=False)
        server.start(jobs, emit, threading.Event())
        assert ended.wait(60)
    finally:
        hook.remove()
    names = [(e, d.get("model")) for e, d in events if e != "step"]
    assert names == [("done", "main"), ("error", "ar"), (None, None)]  # the AR panel failed: the job ends
    assert "RuntimeError" in events[-2][1]["error"]
    assert server.slots.acquire(blocking=False)  # its slot is free again
    server.slots.release()


def test_a_capped_server_setting_is_said(tiny_runs) -> None:
    server = load_server(ServeConfig(out_dir=tiny_runs["diffusion"], ckpt="last", device="cpu", limit_length=1000))
    assert server.limits()["length"] == 16
    assert server.capped() == ["--limit_length=1000 is above the main model's block_size 16: requests are capped "
                               "at 16"]
    assert load_server(ServeConfig(out_dir=tiny_runs["diffusion"], ckpt="last", device="cpu",
                                   limit_length=8)).capped() == []
