// Draws one step event of the /api/generate stream (see nanodlm/trajectory.py) into an element.
// Shared by the demo page (app.js) and the exported animations (player.js).
"use strict";

const NanoCanvas = (() => {
  const MASK_GLYPH = "\u2591";
  const PARTIAL_GLYPH = "\u2592";  // a prime model's partly known character (some of its digits revealed)
  const NEWLINE_GLYPH = "\u21b5";

  function cell(cls, text) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text.replace(/\n/g, NEWLINE_GLYPH);
    return span;
  }

  // event: {step, samples: [{tokens, revealed, remasked}]}; prev: the event before it (old text of re-masked
  // positions), or null. Masked positions dim, partly known ones (prime) blue with their candidates as a tooltip,
  // revealed this step highlighted, re-masked struck through.
  // A newline shows as a glyph; only with breaks (the final text) does it also break the line, so that
  // positions do not jump around while the canvas fills in.
  function render(el, event, prev, breaks = false) {
    el.textContent = "";
    event.samples.forEach((s, b) => {
      const row = document.createElement("div");
      row.className = "nd-row";
      const old = prev && prev.samples[b] ? prev.samples[b].tokens : null;
      const revealed = new Set(s.revealed);
      const remasked = new Set(s.remasked);
      const partial = new Map(s.partial || []);  // position -> the texts it may still become
      s.tokens.forEach((t, i) => {
        let span;
        if (remasked.has(i)) {
          span = cell("nd-remasked", old && old[i] !== null ? old[i] : MASK_GLYPH);
          span.title = "re-masked at step " + event.step;
        } else if (partial.has(i)) {
          const left = partial.get(i);
          span = cell("nd-partial", left.length === 1 ? left[0] : PARTIAL_GLYPH);
          span.title = "partly known: one of " + left.map((c) => JSON.stringify(c)).join(" ");
        } else if (t === null) {
          span = cell("nd-masked", MASK_GLYPH);
        } else {
          span = cell(revealed.has(i) ? "nd-revealed" : "nd-token", t);
        }
        row.appendChild(span);
        if (breaks && t !== null && t.includes("\n")) row.appendChild(document.createElement("br"));
      });
      el.appendChild(row);
    });
  }

  function status(event, total) {
    const passes = event.forward_passes === null ? "?" : event.forward_passes;
    const of = total ? "/" + total : "";
    return "step " + event.step + of + " \u00b7 " + passes + " forward passes \u00b7 " +
      event.elapsed.toFixed(2) + " s";
  }

  return { render, status };
})();
