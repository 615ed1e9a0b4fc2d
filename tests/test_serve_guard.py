"""The web demo's door and its jobs (issue 19): Host/Origin allow-list, JSON only, bodies that are too deep, too slow
or cut off, the race as one job, an escaped export, Hypothesis fuzzing of the request parser, and a browser that
presses Stop and tries a cross-origin post."""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import socket
import threading
import time

import pytest

pytest.importorskip("starlette", reason="the serve extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (starlette, uvicorn) is not installed")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from webtools import chrome, events, info, post  # noqa: E402

from nanodlm.core.errors import UserError  # noqa: E402
from nanodlm.web import serve, webguard  # noqa: E402
from nanodlm.web.serve import ServeConfig  # noqa: E402
from nanodlm.web.webguard import allowed_hosts, refusal  # noqa: E402


def raw(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


JSON = {"Content-Type": "application/json"}
SMALL = json.dumps({"steps": 2, "length": 8, "num_samples": 1}).encode()


@pytest.mark.parametrize("headers", [
    {"Host": "evil.example"},  # DNS rebinding: a foreign name that resolves to 127.0.0.1
    {"Host": "evil.example:8000"},
    {"Host": "127.0.0.1.evil.example"},
    {"Origin": "http://evil.example"},  # a cross-site page
    {"Origin": "http://127.0.0.1:1"},  # another port is another origin
    {"Origin": "null"},  # a sandboxed frame or a file:// page
])
def test_foreign_host_or_origin_is_refused_everywhere(live, headers):
    for method, path, body in (("POST", "/api/generate", SMALL), ("GET", "/api/info", b""), ("GET", "/", b"")):
        status, text = raw(live.port, method, path, body, {**JSON, **headers})
        assert status == 403, (path, text)
        assert "guard" in json.loads(text)["error"]


def test_own_origin_and_loopback_names_are_served(live):
    for host in (f"127.0.0.1:{live.port}", f"localhost:{live.port}", f"LOCALHOST:{live.port}"):
        status, text = raw(live.port, "POST", "/api/generate", SMALL,
                           {**JSON, "Host": host, "Origin": f"http://{host}"})
        assert status == 200 and events(text)[-1][0] == "done"


def test_allow_list_unit():
    served = allowed_hosts("0.0.0.0", ["demo.lan"])
    assert refusal({"host": "demo.lan:8000", "origin": "http://demo.lan:8000"}, served) is None
    assert refusal({"host": "0.0.0.0:8000"}, served) is not None  # a wildcard bind is no name
    assert refusal({"host": "10.0.0.5:8000"}, allowed_hosts("10.0.0.5")) is None  # the bound address
    assert refusal({"host": "localhost:8000", "origin": "ftp://localhost:8000"}, served) is not None  # scheme
    assert refusal({"host": "localhost:8000", "origin": "http://localhost:80:80"}, served) is not None
    assert refusal({}, served) is not None


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_generate_needs_a_json_content_type(live, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    status, text = raw(live.port, "POST", "/api/generate", SMALL, headers)
    assert status == 415 and "application/json" in json.loads(text)["error"]
    status, _ = raw(live.port, "POST", "/api/generate", SMALL, {"Content-Type": "application/json; charset=utf-8"})
    assert status == 200


@pytest.mark.parametrize("body,expect", [
    (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
    (b'{"steps": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    (b'{"steps": "' + b"[" * 5000 + b'"}', "expects an integer; got the string"),  # strings are not numbers
    (b'{"steps": "' + b"(" * 500 + b'1"}', "expects an integer; got the string"),
    (b'{"temperature": "1e999"}', "expects a number; got the string"),
    (b'{"temperature": 1e999}', "finite"),
    (b'{"noise": -1e999}', "finite"),
    (b'{"steps": ' + b"9" * 5000 + b"}", "not valid JSON"),
    (b'{"steps": "' + b"9" * 5000 + b'"}', "expects an integer; got the string"),
    (b'{"seed": "' + b"-" * 30_000 + b'1"}', "expects an integer; got the string"),
    (b'{"top_p": "1+1"}', "expects a number or null; got the string"),
], ids=lambda v: v[:12].decode() if isinstance(v, bytes) else v)
def test_deep_or_odd_numbers_get_400_not_500(live, body, expect):
    status, text = raw(live.port, "POST", "/api/generate", body, JSON)
    message = json.loads(text)["error"]
    assert status == 400 and expect in message and "\n" not in message and len(message) < 400


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_client_gone_mid_body_logs_no_traceback(live):
    # uvicorn logs "Exception in ASGI application" with the traceback on its own logger, which does not propagate
    # to pytest's caplog: listen there directly
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn", "nanodlm.web.serve")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
            s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 5000\r\n\r\n{\"steps\": ")
        time.sleep(0.5)
        status, _ = raw(live.port, "GET", "/api/info")  # still serving
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert status == 200
    assert not [r for r in handler.records if r.exc_info], [r.getMessage() for r in handler.records]


def test_slow_client_times_out_with_408(live, monkeypatch):
    monkeypatch.setattr(serve, "BODY_TIMEOUT_S", 0.5)
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as s:
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 5000\r\n\r\n{\"steps\": ")  # and then nothing more
        reply = ""
        while "took over" not in reply and (chunk := s.recv(4096)):
            reply += chunk.decode()
    assert reply.startswith("HTTP/1.1 408") and "took over 0.5 s" in reply


def test_slow_headers_are_cut_off(live, monkeypatch):
    monkeypatch.setattr(webguard, "HEADER_TIMEOUT_S", 0.5)
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as s:
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and the rest never comes
        assert s.recv(4096) == b""  # closed by the server (without the deadline: socket.timeout after 20 s)
    status, _ = raw(live.port, "GET", "/api/info")  # a complete request on a new connection is served
    assert status == 200


def test_race_is_one_job_in_one_stream(live):
    status, body = post(live.url, {"race": True, "start": "The", "length": 10, "steps": 4, "num_samples": 1})
    assert status == 200, body
    evs = events(body)
    starts = [d for name, d in evs if name == "start"]
    assert [s["model"] for s in starts] == ["main", "ar"]
    dones = [d for name, d in evs if name == "done"]
    assert [d["model"] for d in dones] == ["main", "ar"]
    ar_steps = [d for name, d in evs if name == "step" and d["model"] == "ar"]
    assert [s["forward_passes"] for s in ar_steps] == list(range(8))  # the canvas, then one pass per new token
    assert all(len(d["texts"][0]) == 10 for d in dones)  # the same length, prompt included
    status, body = post(live.url, {"race": True, "steps": 4, "num_samples": 1})  # no length: the canvas's, both
    assert status == 200 and [len(d["texts"][0]) for n, d in events(body) if n == "done"] == [16, 16]
    status, body = post(live.url, {"race": True, "infill": "a__b"})
    assert status == 400 and "left to right" in json.loads(body)["error"]


def test_a_race_takes_one_slot_of_two(live):
    """With the default two slots, a second visitor gets a generation while a race runs (it took both before)."""
    models = [live.server.engines[name].model for name in ("main", "ar")]
    hooks = [m.lm_head.register_forward_pre_hook(lambda module, args: time.sleep(0.2)) for m in models]
    result: list[tuple[int, str]] = []
    try:
        racer = threading.Thread(target=lambda: result.append(post(live.url, {"race": True, "length": 12,
                                                                              "steps": 8, "num_samples": 1})))
        racer.start()
        for _ in range(200):
            if info(live.url)["stats"]["running"]:
                break
            time.sleep(0.05)
        running = info(live.url)["stats"]["running"]
        status, body = post(live.url, {"steps": 2, "length": 8, "num_samples": 1})
        racer.join(timeout=60)
    finally:
        for h in hooks:
            h.remove()
    assert running == 1  # the race counts as one generation
    assert status == 200 and events(body)[-1][0] == "done"
    assert result and result[0][0] == 200


def test_export_escapes_every_angle_bracket(tiny_runs, tmp_path):
    from nanodlm.web.animate import write_html

    token = "<!--<script>"
    events_ = [{"step": 0, "forward_passes": 0, "elapsed": 0.0,
                "samples": [{"tokens": [token, "</script>", None], "revealed": [], "remasked": [], "masked": [2],
                             "text": token}]}]
    out = tmp_path / "a.html"
    write_html(out, events_, "t")
    page = out.read_text()
    data = page.split('id="nd-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and json.loads(data)["events"] == events_


# --- Hypothesis: any request body ends in jobs or a one-line UserError; the accepted ones run ---------------

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=6)
KEYS = st.sampled_from(["steps", "length", "temperature", "seed", "num_samples", "sampler", "start", "suffix", "infill",
                        "placeholder", "top_k", "top_p", "noise", "model", "race", "max_steps", "max_new_tokens",
                        "approx_cache", "semi_ar_block", "bogus"])
NUMBER_TEXT = st.from_regex(r"\A[-+0-9eE.x_()\[\]jinfa ]{0,12}\Z")
BODIES = st.one_of(
    st.binary(max_size=64),
    st.dictionaries(KEYS, JSON_VALUES | NUMBER_TEXT, max_size=5).map(lambda d: json.dumps(d).encode()),
    st.dictionaries(KEYS, st.integers(-3, 20) | st.floats(-1, 3) | st.sampled_from(
        ["remask", "ar", "confidence", "a_b", "_", "The"]), max_size=5).map(lambda d: json.dumps(d).encode()))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                               HealthCheck.too_slow])
@given(body=BODIES)
def test_fuzz_request_bodies(live, body):
    server = live.server
    try:
        jobs = server.prepare(body)
    except UserError as e:
        assert "\n" not in str(e) and str(e)
        return
    for _engine, job in jobs:
        if job.steps <= 16 and job.num_samples <= 2:
            out = job.run(lambda *a: None)
            assert len(out.texts) == job.num_samples


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                               HealthCheck.too_slow])
@given(body=BODIES, content_type=st.sampled_from(["application/json", "application/json; charset=latin-1",
                                                  "text/plain", ""]))
def test_fuzz_the_route_never_500s(live, body, content_type):
    status, text = raw(live.port, "POST", "/api/generate", body, {"Content-Type": content_type} if content_type
                       else {})
    assert status in (200, 400, 413, 415, 503), (status, text[:200])
    if status != 200:
        message = json.loads(text)["error"]
        assert message and "\n" not in message and "Traceback" not in message
    else:
        assert events(text)[-1][0] in ("done", "error")


# --- a real browser: Stop while the replay is slow, and a cross-origin page that tries to post --------------

class AttackerPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):  # noqa: N802
        page = f"""<!doctype html><body><script>
        const body = JSON.stringify({{steps: 2, length: 8, num_samples: 1}});
        const results = [];
        Promise.all([
          fetch("{self.target}/api/generate", {{method: "POST", mode: "no-cors", body,
                headers: {{"Content-Type": "text/plain"}}}}).then(() => results.push("sent"), e => results.push("x")),
          fetch("{self.target}/api/generate", {{method: "POST", body,
                headers: {{"Content-Type": "application/json"}}}}).then(r => results.push("read " + r.status),
                                                                         e => results.push("blocked")),
        ]).then(() => {{ document.body.dataset.done = results.join(","); }});
        </script></body>"""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *args):
        pass


@pytest.mark.slow  # headless Chromium
def test_browser_stop_and_cross_origin_refusal(live, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome(tmp_path)
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AttackerPage)
    AttackerPage.target = live.url
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        # Stop: 64 steps at 400 ms per forward pass would hold the page for ~25 s; Stop must free it at once
        driver.get(live.url)
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        driver.execute_script("document.getElementById('pace').value = 400; document.getElementById('steps').value"
                              " = 64; document.getElementById('race').checked = false;")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.find_element(By.ID, "main-status").text.startswith("step "))
        driver.find_element(By.ID, "stop").click()
        WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "generate").is_enabled())
        assert driver.find_element(By.ID, "main-status").text.endswith("(stopped)")
        assert driver.find_element(By.ID, "main-canvas").get_attribute("data-done") is None
        status = driver.find_element(By.ID, "main-status").text
        time.sleep(1.0)  # nothing is drawn after Stop
        assert driver.find_element(By.ID, "main-status").text == status
        # an empty number field is an error, not a silent 0
        driver.execute_script("document.getElementById('steps').value = ''")
        driver.find_element(By.ID, "generate").click()
        assert "steps is empty" in driver.find_element(By.ID, "error").text

        # cross-origin: a page on another port posts as text/plain (no preflight) and as JSON (preflighted)
        before = info(live.url)["stats"]
        driver.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done"))
        outcome = driver.find_element(By.TAG_NAME, "body").get_attribute("data-done")
        after = info(live.url)["stats"]
        assert "read 200" not in outcome  # the JSON post never got a readable answer
        assert (after["finished"], after["aborted"], after["failed"]) == (before["finished"], before["aborted"],
                                                                         before["failed"])  # nothing ran
    finally:
        attacker.shutdown()
        driver.quit()


@pytest.mark.slow  # headless Chromium
def test_browser_retries_when_busy_and_sits_the_ar_out_in_infill_mode(live, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome(tmp_path)
    release = threading.Event()
    model = live.server.engines["main"].model
    hook = model.lm_head.register_forward_pre_hook(lambda module, args: release.wait(30) and None)
    busy = [threading.Thread(target=post, args=(live.url, {"steps": 2, "length": 8, "num_samples": 1, "seed": i}))
            for i in range(2)]  # both slots held until release
    try:
        driver.get(live.url)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        for t in busy:
            t.start()
        for _ in range(200):
            if info(live.url)["stats"]["running"] == 2:
                break
            time.sleep(0.05)
        driver.execute_script("document.getElementById('pace').value = 0; document.getElementById('steps').value"
                              " = 4; document.getElementById('race').checked = false;")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: "retrying" in d.find_element(By.ID, "main-status").text)
        assert driver.find_element(By.ID, "error").text == ""  # busy is not an error: it waits its turn
        hook.remove()
        release.set()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#main-canvas[data-done='1']"))

        # infill with the race on: the AR model cannot fill a template, its panel says so and stays empty
        driver.execute_script("document.getElementById('race').checked = true;"
                              "document.getElementById('infill').value = 'ab__cd__';")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#main-canvas[data-done='1']"))
        assert "sits this one out" in driver.find_element(By.ID, "ar-status").text
        assert driver.find_element(By.ID, "ar-canvas").text == ""
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        hook.remove()
        release.set()
        for t in busy:
            t.join(timeout=30)
        driver.quit()


@pytest.mark.slow  # headless Chromium
def test_narrow_form_fits_420px(live, tmp_path):
    from selenium.webdriver.common.by import By

    driver = chrome(tmp_path)
    try:
        driver.set_window_size(420, 900)
        driver.get(live.url)
        width = driver.execute_script("return document.documentElement.clientWidth")
        form = driver.find_element(By.ID, "form")
        right = driver.execute_script("return arguments[0].getBoundingClientRect().right", form)
        scroll = driver.execute_script("return document.documentElement.scrollWidth")
        assert right <= width and scroll <= width
    finally:
        driver.quit()


def test_serve_config_rejects_bad_port_and_threads():
    for bad in ({"port": 99999}, {"port": -1}, {"threads": -1}, {"host": " "}):
        with pytest.raises(UserError):
            ServeConfig(**bad)
