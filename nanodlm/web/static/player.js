// Plays a recorded trajectory in an exported HTML file (nanodlm sample --trajectory=FILE.html).
// The events are the /api/generate stream's step events, embedded as JSON in #nd-data.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("nd-data").textContent);
  const events = data.events;
  const canvas = document.getElementById("nd-canvas");
  const status = document.getElementById("nd-status");
  const slider = document.getElementById("nd-slider");
  const play = document.getElementById("nd-play");
  slider.max = events.length - 1;
  let i = 0;
  let timer = null;

  function show(k) {
    i = k;
    slider.value = k;
    NanoCanvas.render(canvas, events[k], k > 0 ? events[k - 1] : null, k === events.length - 1);
    status.textContent = NanoCanvas.status(events[k], events[events.length - 1].step);
  }

  function tick() {
    if (i + 1 < events.length) {
      show(i + 1);
      timer = setTimeout(tick, data.frame_ms);
    } else {
      timer = setTimeout(() => { show(0); tick(); }, data.hold_ms);  // hold the final text, then loop
    }
  }

  function toggle() {
    if (timer) { clearTimeout(timer); timer = null; play.textContent = "play"; }
    else { play.textContent = "pause"; tick(); }
  }

  play.addEventListener("click", toggle);
  slider.addEventListener("input", () => { if (timer) toggle(); show(Number(slider.value)); });
  show(0);
  toggle();
})();
