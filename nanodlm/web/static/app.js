// The demo page: sends the form to POST /api/generate and replays the server-sent events in the panels.
// A race is one request ("race": true): the server runs the main model (diffusion or TiDAR), then the AR model,
// and tags every event with its model ("main" | "ar"); an error in either ends the job and unlocks the form. Replay is honest: with "ms per forward pass" > 0 each event is shown at
// pace x (its forward passes), so a step without a forward pass takes no time; with 0, at its measured time.
"use strict";

const $ = (id) => document.getElementById(id);
const NUMBERS = ["steps", "length", "temperature", "seed", "num_samples"];
let info = null;
let current = null;  // the running generation: {controller}

const OPTIONS = ["steps", "temperature"];  // the sampler options among NUMBERS: sent only when the sampler reads them

// The request body, or throws an Error naming an empty or invalid number field.
function fields() {
  const body = { sampler: $("sampler").value };
  const reads = info.reads[body.sampler] || [];
  for (const key of NUMBERS) {
    if (OPTIONS.includes(key) && !reads.includes(key)) continue;  // e.g. steps for a TiDAR model
    const text = $(key).value.trim();
    if (text === "" || !Number.isFinite(Number(text))) {
      throw new Error(key.replace("_", " ") + " is empty or not a number: enter one");
    }
    body[key] = Number(text);
  }
  if ($("infill").value) {
    body.infill = $("infill").value;
    body.placeholder = $("placeholder").value || "_";
  } else {
    if ($("start").value) body.start = $("start").value;
    if ($("suffix").value) body.suffix = $("suffix").value;
  }
  return body;
}

// Reads a text/event-stream response: calls onEvent(name, data) for each event.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

// One panel: draws the step and done events of one model, each at its scheduled time.
function panel(model) {
  const canvas = $(model + "-canvas");
  const status = $(model + "-status");
  let prev = null;
  let total = null;
  return {
    canvas, status,
    reset(text) { canvas.textContent = ""; status.textContent = text; delete canvas.dataset.done; prev = null; },
    start(data) { total = data.steps; },
    step(data) { NanoCanvas.render(canvas, data, prev); status.textContent = NanoCanvas.status(data, total); prev = data; },
    done(data) {  // the final text without this step's highlights
      const samples = prev ? prev.samples.map((s) => ({ ...s, revealed: [], remasked: [] })) : [];
      NanoCanvas.render(canvas, { step: data.steps, samples }, null, true);
      status.textContent = "done: " + data.steps + " steps \u00b7 " + data.forward_passes +
        " forward passes \u00b7 " + data.elapsed.toFixed(2) + " s";
      canvas.dataset.done = "1";
      canvas.dataset.text = data.texts.join("\n");
    },
  };
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

// POST the body; on 503 busy, wait Retry-After seconds and try again (until stopped). The response, or null.
async function post(body, job, panels) {
  for (;;) {
    const response = await fetch("/api/generate", { method: "POST", signal: job.controller.signal,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (response.ok) return response;
    const err = await response.json().catch(() => ({ error: response.statusText }));
    const wait = Number(response.headers.get("Retry-After"));
    if (response.status !== 503 || !wait) {
      $("error").textContent = err.error;
      for (const p of panels) p.status.textContent = "\u00a0";
      return null;
    }
    for (const p of panels) p.status.textContent = "busy: retrying in " + wait + " s\u2026 (stop to give up)";
    await sleep(wait * 1000, job.controller.signal);
    if (job.controller.signal.aborted) return null;
  }
}

async function generate(event) {
  event.preventDefault();
  $("error").textContent = "";
  $("warning").textContent = "";
  let body;
  try {
    body = fields();
  } catch (e) {
    $("error").textContent = e.message;
    return;
  }
  const templated = body.infill !== undefined || body.suffix !== undefined;
  const race = $("race").checked && Boolean(info.models.ar);
  const sitsOut = templated && !info.models.ar?.infills;  // an AR model trained with objective=fim infills too
  $("ar-panel").classList.toggle("hidden", !race);
  const panels = { main: panel("main"), ar: panel("ar") };
  panels.main.reset("starting\u2026");
  panels.ar.reset(sitsOut ? "the AR model writes left to right: it cannot keep a suffix or fill a template, " +
    "so it sits this one out (an AR model trained with objective=fim can)" : "starting\u2026");
  body.race = race && !sitsOut;
  const job = { controller: new AbortController() };
  current = job;
  $("generate").disabled = true;
  $("stop").disabled = false;
  const active = body.race ? [panels.main, panels.ar] : [panels.main];
  const pace = Math.max(0, Number($("pace").value) || 0);
  const t0 = performance.now();
  let last = Promise.resolve();
  try {
    const response = await post(body, job, active);
    if (response) {
      // each event at its own time: pace x forward passes, or its measured elapsed seconds (pace 0); a model's
      // done event after its last step; one lane per model draws its events strictly in order (timers of the
      // same due time may fire in any order), and events that arrive late are drawn at once
      const lanes = {};
      const seen = {};
      await readEvents(response, (name, data) => {
        const p = panels[data.model];
        if (name === "warning") { $("warning").textContent = "ignored: " + data.warnings.join("; "); return; }
        if (name === "error") {  // either panel: the job ends here, the form unlocks
          $("error").textContent = data.error;
          for (const p of active) if (!p.canvas.dataset.done) p.status.textContent = "stopped: error";
          job.controller.abort();
          return;
        }
        if (name === "start") { p.start(data); return; }
        if (name === "step") seen[data.model] = data;
        const ref = name === "step" ? data : seen[data.model] || { forward_passes: 0, elapsed: 0 };
        const at = pace ? pace * (ref.forward_passes || 0) : 1000 * ref.elapsed;
        lanes[data.model] = (lanes[data.model] || Promise.resolve()).then(async () => {
          const wait = t0 + at - performance.now();
          if (wait > 0) await sleep(wait, job.controller.signal);
          if (!job.controller.signal.aborted) p[name](data);
        });
      });
      last = Promise.all(Object.values(lanes));
    }
  } catch (e) {
    if (e.name !== "AbortError") $("error").textContent = String(e);
  }
  const aborted = job.controller.signal.aborted ? Promise.resolve()
    : new Promise((resolve) => job.controller.signal.addEventListener("abort", resolve));
  await Promise.race([last, aborted]);
  if (current === job) finish();
}

function finish() {
  $("generate").disabled = false;
  $("stop").disabled = true;
  current = null;
}

function stop() {
  const job = current;
  if (!job) return;
  job.controller.abort();  // ends the stream (the server stops the generation at its next step) and the replay
  for (const model of ["main", "ar"]) {
    const s = $(model + "-status");
    if (!$(model + "-canvas").dataset.done && !s.textContent.endsWith("(stopped)")) s.textContent += " (stopped)";
  }
  finish();
}

async function init() {
  info = await (await fetch("/api/info")).json();
  const d = info.models.main;
  if (d.draft_len) {  // a TiDAR model (issue 18): its masks draft, its AR stream verifies, in one pass
    document.querySelector(".panel h2").textContent = "TiDAR: diffusion drafts, AR verifies";
    document.querySelector(".nd-legend .nd-revealed").textContent = "written this pass (accepted drafts, AR's token)";
    document.querySelector(".nd-legend .nd-remasked").textContent = "a rejected draft";
  }
  $("model-line").textContent = (d.draft_len ? "TiDAR model: " : "diffusion model: ") + d.out_dir + " (" + d.n_params.toLocaleString() +
    " parameters, block_size " + d.block_size + ")" + (info.models.ar ? "; AR model: " + info.models.ar.out_dir : "") +
    ". Limits: length \u2264 " + info.limits.length + ", steps \u2264 " + info.limits.steps + ", samples \u2264 " +
    info.limits.num_samples + ".";
  for (const name of info.samplers) $("sampler").add(new Option(name, name));
  const defaults = info.defaults;
  $("sampler").value = defaults.sampler;
  $("steps").value = Math.min(defaults.steps, info.limits.steps);
  $("length").value = info.limits.length;
  $("steps").max = info.limits.steps;
  $("length").max = info.limits.length;
  $("num_samples").max = info.limits.num_samples;
  $("temperature").value = defaults.temperature;
  $("seed").value = defaults.seed;
  $("num_samples").value = 1;
  $("placeholder").value = defaults.placeholder;
  $("race").disabled = !info.models.ar;
  $("race").checked = Boolean(info.models.ar);
  $("form").addEventListener("submit", generate);
  $("stop").addEventListener("click", stop);
  document.body.dataset.ready = "1";
}

init().catch((e) => { $("error").textContent = "cannot reach the server: " + e; });
