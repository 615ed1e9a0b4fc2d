"""The web demo: the event stream, request validation, the concurrency cap, disconnects, the CLI, a real browser."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (starlette, uvicorn) is not installed")

from webtools import chrome, events, info, post  # noqa: E402

from nanodlm import cli  # noqa: E402
from nanodlm.sampling.trajectory import MASK_TEXT  # noqa: E402
from nanodlm.web.serve import INSTALL_HINT  # noqa: E402


def test_stream_events_in_order_with_fixed_prompt(live):
    status, body = post(live.url, {"start": "The ", "steps": 6, "length": 16, "num_samples": 2, "seed": 3})
    assert status == 200
    evs = events(body)
    names = [name for name, _ in evs]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"step"}
    assert evs[0][1] == {"model": "main", "length": 16, "steps": 6, "num_samples": 2}
    steps = [data for name, data in evs if name == "step"]
    assert [s["step"] for s in steps] == sorted({s["step"] for s in steps}) and steps[0]["step"] == 0
    assert steps[0]["samples"][0]["masked"] == list(range(4, 16))  # step 0: the canvas as given
    passes = [s["forward_passes"] for s in steps]
    assert passes[0] == 0 and passes == sorted(passes) and passes[-1] >= 1
    for s in steps:
        for sample in s["samples"]:
            assert sample["tokens"][:4] == list("The ")  # the prompt never changes
            assert len(sample["tokens"]) == 16
            assert sample["masked"] == [i for i, t in enumerate(sample["tokens"]) if t is None]
    final, done = steps[-1], evs[-1][1]
    assert all(MASK_TEXT not in sample["text"] and not sample["masked"] for sample in final["samples"])
    assert done["texts"] == [sample["text"] for sample in final["samples"]]
    assert done["forward_passes"] == passes[-1] and done["steps"] == final["step"]


@pytest.mark.parametrize("request_values", [
    {"infill": "Th_ ___ is o_ it", "steps": 4},
    {"start": "A", "suffix": "end.", "length": 12, "steps": 4, "sampler": "confidence"},
])
def test_infill_and_suffix_positions_never_change(live, request_values):
    status, body = post(live.url, {**request_values, "num_samples": 1})
    assert status == 200, body
    steps = [data for name, data in events(body) if name == "step"]
    first = steps[0]["samples"][0]["tokens"]
    fixed = {i: t for i, t in enumerate(first) if t is not None}
    assert fixed and len(fixed) < len(first)
    for s in steps:
        assert {i: s["samples"][0]["tokens"][i] for i in fixed} == fixed
    assert MASK_TEXT not in steps[-1]["samples"][0]["text"]


def test_ar_stream_writes_one_token_per_pass(live):
    status, body = post(live.url, {"model": "ar", "start": "The", "length": 10, "num_samples": 1})
    assert status == 200, body
    steps = [data for name, data in events(body) if name == "step"]
    assert [s["step"] for s in steps] == list(range(8))
    for s in steps:
        masked = s["samples"][0]["masked"]
        assert masked == list(range(3 + s["step"], 10))  # left to right, one position per step
        assert s["forward_passes"] == s["step"]


def cli_error(capsys, out_dir: str, *flags: str) -> str:
    """The one-line message ``nanodlm sample`` prints for these flags."""
    capsys.readouterr()
    assert cli.main(["sample", f"--out_dir={out_dir}", "--device=cpu", *flags]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and "\n" not in line
    return line.removeprefix("error: ")


@pytest.mark.parametrize("values,flags", [
    ({"steps": -3}, ["--steps=-3"]),
    ({"sampler": "nope"}, ["--sampler=nope"]),
    ({"placeholder": "ab"}, ["--placeholder=ab"]),
    ({"start": "The ", "length": 3}, ["--start=The ", "--length=3"]),
    ({"temperature": -1}, ["--temperature=-1"]),
    ({"infill": "no gaps"}, ["--infill=no gaps"]),
])
def test_bad_values_get_the_cli_message(live, tiny_runs, capsys, values, flags):
    status, body = post(live.url, values)
    assert status == 400
    assert json.loads(body) == {"error": cli_error(capsys, tiny_runs["diffusion"], *flags)}


@pytest.mark.parametrize("body,expect", [
    (b'{"steps": 3,', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"temperature": NaN}', "not valid JSON"),
    ({"length": 10**9}, "above this server's limit of 16 (nanodlm serve --limit_length)"),
    ({"steps": 65}, "above this server's limit of 64"),
    ({"num_samples": 5}, "above this server's limit of 4"),
    ({"bogus": 1}, "unknown config key 'bogus'"),
    ({"out_dir": "/etc"}, "unknown config key 'out_dir'"),
    ({"start": "FILE:/etc/passwd"}, "starts with FILE:"),
    ({"temperature": -1}, "'temperature' must be >= 0"),
    ({"model": "ar", "suffix": "x"}, "writes left to right"),
    ({"model": "gpt-9"}, "model must be one of main, ar"),
    # every field of its JSON type: a string is not a number, a bool or null (the CLI's text conversion is not used)
    ({"length": "16"}, "key 'length' expects an integer or null; got the string '16'"),
    ({"steps": "many"}, "key 'steps' expects an integer; got the string 'many'"),
    ({"race": "yes"}, "key 'race' expects true or false; got the string 'yes'"),
    ({"predraft": "no"}, "key 'predraft' expects true or false; got the string 'no'"),
    ({"temperature": "0.5"}, "key 'temperature' expects a number; got the string '0.5'"),
    ({"top_k": "none"}, "key 'top_k' expects an integer or null; got the string 'none'"),
    ({"race": 1}, "'race' expects true/false"),
    ({"steps": 8.5}, "'steps' expects int"),
    ({"max_new_tokens": 99999999999, "model": "ar"}, "above this server's limit of 16"),
    # what cannot run is a 400 before any event: a sampler the panel's model cannot use
    ({"model": "ar", "sampler": "speculative"}, "needs a TiDAR model"),
    ({"model": "ar", "rolling_cache": True}, "--rolling_cache=True needs rotary positions"),  # learned positions
    ({"rolling_cache": "yes"}, "key 'rolling_cache' expects true or false; got the string 'yes'"),
    ({"race": True, "sampler": "ar"}, "is for AR models"),
])
def test_bad_requests_get_a_4xx_with_one_line(live, body, expect):
    status, text = post(live.url, body)
    assert 400 <= status < 500
    message = json.loads(text)["error"]
    assert expect in message and "\n" not in message and "Traceback" not in message


def test_static_files_are_a_fixed_list(live):
    for path in ("/static/app.js", "/static/canvas.css", "/"):
        with urllib.request.urlopen(live.url + path, timeout=10) as r:
            assert r.status == 200
    for path in ("/static/serve.py", "/static/..%2F..%2Fserve.py", "/static/index.html"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(live.url + path, timeout=10)
        assert e.value.code == 404


def test_twenty_concurrent_clients_finish_or_get_busy(live):
    results: list[tuple[int, str]] = []

    def client(i: int) -> None:
        results.append(post(live.url, {"start": "A", "steps": 8, "length": 16, "num_samples": 1, "seed": i}))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 20
    for status, body in results:
        if status == 200:
            assert events(body)[-1][0] == "done"
        else:
            assert status == 503 and json.loads(body)["error"].startswith("busy")
    assert any(status == 200 for status, _ in results)
    stats = info(live.url)["stats"]  # still up, nothing left running
    assert stats["running"] == 0 and stats["failed"] == 0
    assert stats["busy"] == sum(status == 503 for status, _ in results)


def test_disconnect_stops_the_generation(live):
    # the hook sits on lm_head, which both the full forward and the cached ``model.decode()`` call (a hook on the
    # model itself never fired for cached AR decoding, and the test rested on a race)
    ar = live.server.engines["ar"].model
    calls = []
    hook = ar.lm_head.register_forward_pre_hook(lambda module, args: calls.append(1) or time.sleep(0.5))
    try:
        before = info(live.url)["stats"]
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
        conn.request("POST", "/api/generate", json.dumps({"model": "ar", "start": "A", "length": 16}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        while b"event: step" not in response.readline():
            pass
        conn.sock.close()  # the client goes away mid-stream
        conn.close()
        for _ in range(300):  # a loaded CI machine may take seconds to notice; the run itself would end at 7.5 s
            stats = info(live.url)["stats"]
            if stats["running"] == 0:
                break
            time.sleep(0.1)
        assert stats["aborted"] == before["aborted"] + 1 and stats["finished"] == before["finished"]
        assert 1 <= len(calls) < 15  # the hook did slow it, and it stopped before writing all 15 tokens
    finally:
        hook.remove()


@pytest.mark.slow  # a server subprocess
def test_cli_serve_prints_limits_and_serves(tiny_runs, subprocess_env):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "nanodlm", "serve", f"--out_dir={tiny_runs['diffusion']}", f"--port={port}",
           "--device=cpu", "--limit_samples=2"]
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "limits: length <= 16, steps <= 1024, num_samples <= 2" in lines[1]
        assert lines[2].strip() == f"open http://localhost:{port}/"
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                assert info(url)["limits"]["num_samples"] == 2
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        status, body = post(url, {"steps": 4, "num_samples": 1})
        assert status == 200 and events(body)[-1][0] == "done"
        status, body = post(url, {"model": "ar"})
        assert status == 400
        assert json.loads(body)["error"] == "this server has no autoregressive model: start it with --ar_out_dir=DIR"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def drive_page(driver, url: str, prompt: str, screenshot: Path, timeout: float = 60, pace_ms: int = 10) -> str:
    """Open the page, type a prompt, press generate, wait for both panels to finish; screenshot; the final text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    box = driver.find_element(By.ID, "start")
    box.clear()
    box.send_keys(prompt)
    driver.execute_script(f"document.getElementById('pace').value = {pace_ms}")
    driver.find_element(By.ID, "generate").click()
    done = (By.CSS_SELECTOR, "#main-canvas[data-done='1']")
    wait.until(lambda d: d.find_elements(*done) or d.find_element(By.ID, "error").text)
    assert driver.find_element(By.ID, "error").text == ""
    if driver.find_element(By.ID, "race").is_selected():
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ar-canvas[data-done='1']"))
    driver.save_screenshot(str(screenshot))
    return driver.find_element(*done).get_attribute("data-text")


@pytest.mark.slow  # headless Chromium
def test_browser_types_a_prompt_and_watches_it_write(live, tmp_path):
    from selenium.webdriver.common.by import By

    driver = chrome(tmp_path)
    try:
        shot = tmp_path / "page.png"
        text = drive_page(driver, live.url, "The ", shot)
        assert text.startswith("The ") and MASK_TEXT not in text and len(text) == 16
        canvas = driver.find_element(By.ID, "main-canvas").text
        assert canvas.startswith("The ") and "\u2591" not in canvas  # no masked cell left on the page
        assert "forward passes" in driver.find_element(By.ID, "ar-status").text
        assert shot.stat().st_size > 10_000  # a real picture (look at it: pytest --basetemp keeps it)
    finally:
        driver.quit()


def readme_serve_commands() -> list[str]:
    """The README's ``nanodlm serve --out_dir=... --ar_out_dir=...`` lines (the pairings it shows), as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return [line.split("#")[0].strip() for line in readme.splitlines()
            if line.startswith("nanodlm serve --out_dir=") and "--ar_out_dir=" in line]


@pytest.mark.slow  # a server subprocess and headless Chromium
@pytest.mark.parametrize("command", readme_serve_commands())
def test_browser_races_as_the_readme_says(command, tiny_runs, tidar_run, subprocess_env, tmp_path):
    """Exactly the README's command (its run folders mapped to tiny runs), the page's defaults (race on, the
    main model's default sampler): both panels write, no error."""
    import shlex
    import socket

    from selenium.webdriver.common.by import By

    runs = {"out-cpu-tidar": tidar_run, "out-cpu-diffusion": tiny_runs["diffusion"], "out-cpu": tiny_runs["gpt2"]}
    argv = shlex.split(command)
    assert argv[:2] == ["nanodlm", "serve"] and len(argv) == 4, command
    flags = [f"{key}={runs[value]}" for key, value in (a.split("=", 1) for a in argv[2:])]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "nanodlm", "serve", *flags, f"--port={port}", "--ckpt=last",
                             "--device=cpu"], env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    driver = chrome(tmp_path)
    try:
        first = proc.stdout.readline()
        kind = "TiDAR model" if "tidar" in command else "diffusion model"
        assert first.startswith(f"nanodlm serve: {kind}"), first
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                info(url)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        text = drive_page(driver, url, "th", tmp_path / "race.png")  # waits for both panels, asserts no error
        assert text.startswith("th") and MASK_TEXT not in text
        assert driver.find_element(By.ID, "race").is_selected()
        assert driver.find_element(By.ID, "ar-canvas").get_attribute("data-done") == "1"
        assert driver.find_element(By.ID, "warning").text == ""  # the page sends only what the sampler reads
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow  # headless Chromium
def test_browser_an_error_in_either_panel_ends_the_job_and_unlocks_the_form(tiny_runs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from webtools import LiveServer

    from nanodlm.web.serve import ServeConfig, load_server

    server = LiveServer(load_server(ServeConfig(out_dir=tiny_runs["diffusion"], ar_out_dir=tiny_runs["gpt2"],
                                                device="cpu")))
    driver = chrome(tmp_path)
    try:
        driver.get(server.url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        driver.execute_script("document.getElementById('pace').value = 0; document.getElementById('steps').value = 4;")
        for failing in ("ar", "main"):
            model = server.server.engines[failing].model
            hook = model.lm_head.register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(RuntimeError("boom")))
            try:
                driver.find_element(By.ID, "generate").click()
                wait.until(lambda d: "RuntimeError" in d.find_element(By.ID, "error").text)
                wait.until(lambda d: d.find_element(By.ID, "generate").is_enabled())  # the form is unlocked
                assert not driver.find_element(By.ID, "stop").is_enabled()
                assert driver.find_element(By.ID, f"{failing}-status").text == "stopped: error"
            finally:
                hook.remove()
    finally:
        driver.quit()
        server.close()


def test_browser_plays_an_exported_animation_offline(tiny_runs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path / "anim.html"
    assert cli.main(["sample", f"--out_dir={tiny_runs['diffusion']}", "--device=cpu", "--start=The", "--length=16",
                     "--steps=8", "--num_samples=1", f"--trajectory={out}"]) == 0
    driver = chrome(tmp_path)
    try:
        driver.get(out.as_uri())  # file://: no server, no network
        status = driver.find_element(By.ID, "nd-status")
        seen = set()
        WebDriverWait(driver, 30).until(lambda d: seen.add(status.text) or len(seen) >= 3)  # it plays by itself
        assert all(text.startswith("step ") for text in seen)
        assert driver.find_element(By.ID, "nd-canvas").text.startswith("The")
    finally:
        driver.quit()


def test_missing_extra_is_a_one_line_install_hint(monkeypatch, capsys, tiny_runs):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the serve extra were not installed
    assert cli.main(["serve", f"--out_dir={tiny_runs['diffusion']}"]) == 1
    assert capsys.readouterr().err.strip() == "error: " + INSTALL_HINT
