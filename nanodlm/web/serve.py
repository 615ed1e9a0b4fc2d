"""``nanodlm serve``: a local web page that shows a model writing, step by step.

The main model (``--out_dir``, ``"model": "main"`` in requests and events; ``diffusion`` is an alias) is a
diffusion model or a TiDAR model (objective=tidar), which writes with the speculative sampler: its accepted drafts
shown as revealed, the position of a rejected draft as re-masked. An AR model (``--ar_out_dir``, ``"ar"``) may
write beside it (``jobs.py``).

The page (``nanodlm/web/static/``) posts its form to ``POST /api/generate``, which streams the trajectory as
server-sent events (README, "Web demo"): ``warning`` when a given setting will not be read, ``start``, then one
``step`` per canvas update (the event format of ``nanodlm.sampling.trajectory``), then ``done`` (or ``error``).
``GET /api/info`` describes the models, what each sampler reads and the limits. Starlette and uvicorn are an
optional extra (``pip install -e ".[serve]"``), imported only here.

Safe by default: binds 127.0.0.1 and answers only requests whose Host and Origin are this server
(``webguard``: no DNS rebinding, no cross-site posts; JSON bodies only); requests never name a file; every
sampling value is validated by the same config as ``nanodlm sample`` (same one-line messages, as a 400), each of
its JSON type; length, steps and samples are capped by the model and the ``limit_*`` keys (above them: a 400); at
most ``limit_concurrent`` generations run at once (others get 503 "busy" with Retry-After); a race (``"race":
true``: the main model, then the AR model, in one stream) is one generation, and an error in either ends it; each
runs in a worker thread that stops at its next step when the client disconnects. Every event of a generation
carries its ``model``, so the page replays each panel by its own forward passes or measured time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch

from ..core.errors import UserError, check_finite
from ..runs.checkpoint import load_model
from ..sampling.generate import Prompt, SamplerOptions
from ..sampling.samplers import CAUSAL_SAMPLERS, DIFFUSION_SAMPLERS
from ..sampling.settings import options_read
from ..sampling.trajectory import Aborted, Recorder
from ..training.config import load_config
from ..training.distributed import resolve_device
from .jobs import KINDS, Engine, Job, check_limits, plan_job
from .request import GenerateRequest, parse_request, request_keys
from .webguard import BodyError, Guard, allowed_hosts, header_timeout_protocol, is_json, read_body

log = logging.getLogger("nanodlm.web.serve")
STATIC = {"canvas.js": "text/javascript", "canvas.css": "text/css", "app.js": "text/javascript"}  # all it serves
MAX_BODY = 64 * 1024  # bytes of JSON in a request
BODY_TIMEOUT_S = 10.0  # a client that takes longer to send its body gets 408 (slow or stalled clients)
INSTALL_HINT = "nanodlm serve needs Starlette and uvicorn: pip install -e '.[serve]' (or pip install starlette uvicorn)"


@dataclass
class ServeConfig:
    out_dir: str = "out"  # the main model: a diffusion model or a TiDAR model (objective=tidar)
    ar_out_dir: str | None = None  # optional: an autoregressive model that writes the same length beside it
    ckpt: str = "best"  # best | last
    host: str = "127.0.0.1"  # this machine only; 0.0.0.0 lets anyone who can reach it use the model
    port: int = 8000
    device: str = "auto"
    limit_length: int | None = None  # most tokens per sample (default and at most: the model's block_size)
    limit_steps: int = 1024  # most denoising steps per request
    limit_samples: int = 4  # most samples per request
    limit_concurrent: int = 2  # generations running at once (a race is one); further requests get 503 "busy"
    allowed_hosts: str = ""  # comma-separated extra Host names to answer (localhost and --host always are)
    threads: int = 1  # torch CPU threads (1: a busy machine stays responsive; 0 = torch's default, one per core)

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf floats, seeds outside torch's range
        for key in ("limit_length", "limit_steps", "limit_samples", "limit_concurrent"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise UserError(f"--{key} must be >= 1; got {value}")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port must be in 0..65535 (0 = any free port); got {self.port}")
        if not self.host.strip():
            raise UserError("--host is empty; give an address such as 127.0.0.1")
        if self.threads < 0:
            raise UserError(f"--threads must be >= 0 (0 = torch's default); got {self.threads}")


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event; the JSON is on one line (json.dumps escapes newlines)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Server:
    """The models, the limits and the concurrency cap behind the routes."""

    def __init__(self, engines: dict[str, Engine], cfg: ServeConfig) -> None:
        self.engines, self.cfg = engines, cfg
        self.slots = threading.BoundedSemaphore(cfg.limit_concurrent)
        self.stats = {"running": 0, "finished": 0, "aborted": 0, "failed": 0, "busy": 0}
        self.lock = threading.Lock()

    def limits(self) -> dict[str, int]:
        block_size = self.engines["main"].model.config.block_size
        return {"length": min(self.cfg.limit_length or block_size, block_size), "steps": self.cfg.limit_steps,
                "num_samples": self.cfg.limit_samples, "concurrent": self.cfg.limit_concurrent}

    def capped(self) -> list[str]:
        """The server's settings it cannot honour as given, one line each (printed at start)."""
        block_size = self.engines["main"].model.config.block_size
        if self.cfg.limit_length is not None and self.cfg.limit_length > block_size:
            return [f"--limit_length={self.cfg.limit_length} is above the main model's block_size {block_size}: "
                    f"requests are capped at {block_size}"]
        return []

    def info(self) -> dict[str, Any]:
        main = self.engines["main"]
        samplers = CAUSAL_SAMPLERS if main.kind == "tidar" else DIFFUSION_SAMPLERS
        defaults = {"sampler": "speculative" if main.kind == "tidar" else SamplerOptions.sampler,
                    "steps": SamplerOptions.steps, "seed": GenerateRequest.seed,
                    "temperature": SamplerOptions.temperature, "placeholder": Prompt.placeholder,
                    "num_samples": GenerateRequest.num_samples}
        with self.lock:
            stats = dict(self.stats)
        return {"models": {name: e.describe() for name, e in self.engines.items()}, "limits": self.limits(),
                "samplers": list(samplers), "defaults": defaults, "keys": request_keys(), "stats": stats,
                # the sampler options the main model reads with each sampler (settings.py): the page sends only these
                "reads": {name: sorted(options_read(main.model.config.model_type, name)) for name in samplers}}

    def _count(self, key: str, delta: int = 1) -> None:
        with self.lock:
            self.stats[key] += delta

    def prepare(self, body: bytes) -> list[tuple[Engine, Job]]:
        """Validate a request body (UserError with the CLI's message on any problem): the jobs it asks for, one
        (its model's) or, for a race, the main model's job and then the AR job on the same prompt and length."""
        request, options, prompt, given = parse_request(body)
        names = ["main", "ar"] if request.race else [request.model]
        if "ar" in names and "ar" not in self.engines:
            raise UserError("this server has no autoregressive model: start it with --ar_out_dir=DIR")
        if request.race and (prompt.suffix is not None or prompt.infill is not None) \
                and not self.engines["ar"].infills:
            raise UserError("race: this autoregressive model writes left to right, so it cannot keep a suffix or fill "
                            "an infill template; race an AR model trained with objective=fim, or turn the race off")
        jobs: list[tuple[Engine, Job]] = []
        limits = self.limits()
        for name in names:
            race_length = jobs[0][1].length if jobs else None  # a race: the AR model writes the main panel's length
            job = plan_job(self.engines[name], request, options, prompt, given, limits["length"], race_length)
            check_limits(job, limits)
            jobs.append((self.engines[name], job))
        return jobs

    def start(self, jobs: list[tuple[Engine, Job]], emit: Callable[[str | None, dict[str, Any]], None],
              stop: threading.Event) -> None:
        """Run ``jobs`` one after the other in a worker thread that emits events (each with its ``model``); the
        caller holds one slot, released here when the last ends."""

        def run_one(engine: Engine, job: Job) -> None:
            def on_frame(frame: Any) -> None:
                emit("step", {"model": engine.name, **recorder.event(frame)})

            recorder = Recorder(lambda i: engine.tok.decode([i]), mask_token_id=engine.mask_token_id,
                                length=job.length, model=engine.model, keep=False, should_stop=stop.is_set,
                                on_frame=on_frame)
            recorder.start()
            out = job.run(recorder)
            last = recorder.last.step if recorder.last else 0
            emit("done", {"model": engine.name, "steps": last, "forward_passes": recorder.passes(),
                          "elapsed": round(recorder.elapsed(), 4), "texts": out.texts,
                          "steps_used": out.info.get("steps_used")})

        def work() -> None:
            self._count("running")
            outcome, panel = "failed", jobs[0][0].name
            try:
                for engine, job in jobs:
                    panel = engine.name
                    run_one(engine, job)
                outcome = "finished"
            except Aborted:
                outcome = "aborted"
            except UserError as e:  # an error in either panel ends the job (the stream ends after it)
                emit("error", {"model": panel, "error": str(e)})
            except Exception as e:  # a bug: logged here with its traceback, one line to the client
                log.exception("generation failed")
                emit("error", {"model": panel, "error": f"generation failed ({type(e).__name__}); see the server's "
                                                        "log"})
            finally:
                self._count("running", -1)
                self._count(outcome)
                self.slots.release()
                emit(None, {})

        threading.Thread(target=work, name=f"nanodlm-{'-'.join(e.name for e, _ in jobs)}", daemon=True).start()


def create_app(server: Server):
    """The Starlette application: ``/``, ``/static/<one of STATIC>``, ``/api/info``, ``/api/generate``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    static = resources.files("nanodlm.web") / "static"

    async def index(request: Request) -> Response:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:  # a fixed list: the client never names a file on disk
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response((static / name).read_text(encoding="utf-8"), media_type=STATIC[name])

    async def info(request: Request) -> Response:
        return JSONResponse(server.info())

    async def generate(request: Request) -> Response:
        if not is_json(request.headers.get("content-type")):  # also what makes a cross-site post need a preflight
            return JSONResponse({"error": "send the request as JSON (Content-Type: application/json)"},
                                status_code=415)
        try:
            body = await read_body(request.stream, MAX_BODY, BODY_TIMEOUT_S)
        except BodyError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        try:
            jobs = server.prepare(body)
        except UserError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        if not server.slots.acquire(blocking=False):
            server._count("busy")
            limit = server.cfg.limit_concurrent
            return JSONResponse({"error": f"busy: {limit} generation(s) running, the most this server runs at once "
                                          "(nanodlm serve --limit_concurrent); try again in a moment"},
                                status_code=503, headers={"Retry-After": "1"})
        loop, queue, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

        def emit(event: str | None, data: dict[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (event, data))
            except RuntimeError:  # the event loop is gone (server shutting down)
                stop.set()

        server.start(jobs, emit, stop)

        async def stream():
            try:
                for engine, job in jobs:  # settings given and not read, then every panel's size up front
                    if job.warnings:
                        yield sse("warning", {"model": engine.name, "warnings": [w.removeprefix("--")
                                                                                 for w in job.warnings]})
                for engine, job in jobs:
                    yield sse("start", {"model": engine.name, "length": job.length, "steps": job.steps,
                                        "num_samples": job.num_samples})
                while True:
                    event, data = await queue.get()
                    if event is None:
                        break
                    yield sse(event, data)
            finally:  # finished, or the client went away: either way the worker stops at its next step
                stop.set()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    app = Starlette(routes=[Route("/", index), Route("/static/{name}", asset), Route("/api/info", info),
                            Route("/api/generate", generate, methods=["POST"])])
    return Guard(app, allowed_hosts(server.cfg.host, server.cfg.allowed_hosts.split(",")))


def uvicorn_options() -> dict[str, Any]:
    """How uvicorn serves the demo (the tests' server too): idle keep-alive connections closed after 5 s, at most
    64 connections, a deadline for request headers (``webguard.header_timeout_protocol``)."""
    return {"timeout_keep_alive": 5, "limit_concurrency": 64, "http": header_timeout_protocol()}


def load_server(cfg: ServeConfig) -> Server:
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    engines = {}
    for name, out_dir in (("main", cfg.out_dir), ("ar", cfg.ar_out_dir)):
        if out_dir is None:
            continue
        model, _, tok = load_model(out_dir, cfg.ckpt, device)
        engine = Engine(name, out_dir, model, tok, device)
        if name == "main" and engine.kind == "gpt2":
            raise UserError(f"--out_dir={out_dir} holds a gpt2 model; it must be a diffusion model or a TiDAR model "
                            "(objective=tidar); serve an AR model beside one with --ar_out_dir")
        if name == "ar" and engine.kind == "diffusion":
            raise UserError(f"--ar_out_dir={out_dir} holds a diffusion model; it must be a gpt2 model")
        engines[name] = engine
    return Server(engines, cfg)


def main(argv: list[str]) -> int:
    cfg = load_config(ServeConfig, argv)
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    server = load_server(cfg)
    app = create_app(server)
    main_kind = KINDS[server.engines["main"].kind]
    print(f"nanodlm serve: {main_kind} {cfg.out_dir} (\"model\": \"main\")" +
          (f", AR model {cfg.ar_out_dir} (\"model\": \"ar\")" if cfg.ar_out_dir else ""))
    limits = server.limits()
    for line in server.capped():
        print(f"warning: {line}")
    print(f"limits: length <= {limits['length']}, steps <= {limits['steps']}, num_samples <= {limits['num_samples']}, "
          f"{limits['concurrent']} generation(s) at once")
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {cfg.host}: anyone who can reach this machine can use the model")
    print(f"open http://{'localhost' if cfg.host in ('127.0.0.1', '0.0.0.0') else cfg.host}:{cfg.port}/", flush=True)
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", **uvicorn_options())
    except OSError as e:
        raise UserError(f"cannot listen on {cfg.host}:{cfg.port} ({e.strerror or type(e).__name__}); choose "
                        "another --port or --host") from None
    except SystemExit:  # uvicorn logged why (address in use, no such address) and exits: one line of ours after it
        raise UserError(f"cannot listen on {cfg.host}:{cfg.port} (uvicorn's reason is above); choose another --port "
                        "or --host") from None
    return 0
