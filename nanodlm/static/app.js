// The demo page: sends the form to POST /api/generate and draws the server-sent events as they arrive.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let controllers = [];

function fields() {
  const body = { sampler: $("sampler").value, steps: Number($("steps").value), length: Number($("length").value),
    temperature: Number($("temperature").value), seed: Number($("seed").value),
    num_samples: Number($("num_samples").value) };
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

async function run(model, body, canvas, status) {
  const controller = new AbortController();
  controllers.push(controller);
  canvas.textContent = "";
  status.textContent = "starting\u2026";
  let prev = null;
  let total = null;  // the steps the server will run, from its start event
  try {
    const response = await fetch("/api/generate", { method: "POST", signal: controller.signal,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...body, model }) });
    if (!response.ok) {
      const err = await response.json().catch(() => ({ error: response.statusText }));
      $("error").textContent = (model === "ar" ? "AR: " : "") + err.error;
      status.textContent = "\u00a0";
      return;
    }
    // events are drawn in order, each step held for the chosen pace, so a fast model can still be watched;
    // the counts shown are the server's own (forward passes, elapsed), not the replay's
    let drawing = Promise.resolve();
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const pace = Math.max(0, Number($("pace").value) || 0);
    await readEvents(response, (name, data) => {
      drawing = drawing.then(() => draw(name, data)).then(() => (name === "step" && pace ? sleep(pace) : null));
    });
    await drawing;
  } catch (e) {
    if (e.name !== "AbortError") $("error").textContent = String(e);
    else status.textContent += " (stopped)";
  }

  function draw(name, data) {
    if (controller.signal.aborted) return;
    if (name === "start") {
      total = data.steps;
    } else if (name === "step") {
      NanoCanvas.render(canvas, data, prev);
      status.textContent = NanoCanvas.status(data, total);
      prev = data;
    } else if (name === "done") {  // the final text without this step's highlights
      const samples = prev ? prev.samples.map((s) => ({ ...s, revealed: [], remasked: [] })) : [];
      NanoCanvas.render(canvas, { step: data.steps, samples }, null, true);
      status.textContent = "done: " + data.steps + " steps \u00b7 " + data.forward_passes +
        " forward passes \u00b7 " + data.elapsed.toFixed(2) + " s";
      canvas.dataset.done = "1";
      canvas.dataset.text = data.texts.join("\n");
    } else if (name === "error") {
      $("error").textContent = data.error;
    }
  }
}

async function generate(event) {
  event.preventDefault();
  $("error").textContent = "";
  const body = fields();
  const race = $("race").checked && info.models.ar;
  $("ar-panel").classList.toggle("hidden", !race);
  for (const c of ["diffusion-canvas", "ar-canvas"]) delete $(c).dataset.done;
  $("generate").disabled = true;
  $("stop").disabled = false;
  controllers = [];
  const runs = [run("diffusion", body, $("diffusion-canvas"), $("diffusion-status"))];
  if (race) {
    const ar = { start: body.start, length: body.length, temperature: body.temperature, seed: body.seed,
      num_samples: body.num_samples };
    runs.push(run("ar", ar, $("ar-canvas"), $("ar-status")));
  }
  await Promise.all(runs);
  $("generate").disabled = false;
  $("stop").disabled = true;
}

async function init() {
  info = await (await fetch("/api/info")).json();
  const d = info.models.diffusion;
  $("model-line").textContent = "diffusion model: " + d.out_dir + " (" + d.n_params.toLocaleString() +
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
  $("stop").addEventListener("click", () => controllers.forEach((c) => c.abort()));
  document.body.dataset.ready = "1";
}

init().catch((e) => { $("error").textContent = "cannot reach the server: " + e; });
