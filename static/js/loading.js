// Load progress in stages (downloading, verifying, starting / compiling shaders, ready) with elapsed time,
// and the quiet end state: once the model is verified and running, the per-file rows fold into one line
// ("SmolLM2 135M · 91 MB verified · ready in 7.0 s") that opens for the detail.

import { formatBytes } from "./format.js";

const LABELS = { downloading: "Downloading", verifying: "Verifying", starting: "Starting the engine", ready: "Ready" };
const TICK_MS = 200;

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

export class LoadTimeline {
  constructor(state) {
    this.state = state; // window.lantern.load: plain data for tests
    this.timer = 0;
  }

  /** Start a new load (a download, or a check of stored files before a start). */
  reset() {
    clearInterval(this.timer);
    this.timer = 0;
    Object.assign(this.state, { startedAt: null, stages: [], readySeconds: null, summary: null });
    this.render();
  }

  /** Enter a stage; the same stage again only updates its label (web-llm reports its own steps). */
  stage(name, label = LABELS[name]) {
    const now = performance.now();
    if (this.state.startedAt == null) this.state.startedAt = now;
    const current = this.state.stages.at(-1);
    if (current && current.name === name) {
      current.label = label;
    } else {
      if (current) current.seconds = (now - current.at) / 1000;
      this.state.stages.push({ name, label, at: now, seconds: name === "ready" ? 0 : null });
    }
    if (name === "ready") {
      this.state.readySeconds = (now - this.state.startedAt) / 1000;
      clearInterval(this.timer);
      this.timer = 0;
    } else if (!this.timer) {
      this.timer = setInterval(() => this.render(), TICK_MS);
    }
    this.render();
  }

  stop() {
    clearInterval(this.timer);
    this.timer = 0;
    this.render();
  }

  render() {
    const list = document.getElementById("load-stages");
    const now = performance.now();
    list.hidden = !this.state.stages.length;
    list.replaceChildren(...this.state.stages.map((s) => {
      const li = document.createElement("li");
      li.dataset.stage = s.name;
      const running = s.seconds == null && this.timer;
      li.textContent = s.name === "ready" ? `${s.label} (${seconds(this.state.readySeconds * 1000)} in all)`
        : `${s.label}${running ? "…" : ""} ${seconds(s.seconds != null ? s.seconds * 1000 : now - s.at)}`;
      if (running) li.setAttribute("aria-current", "step");
      return li;
    }));
  }
}

/** Fold the download panel into one line, opened on demand (a <details>). */
export function collapseDownload(load, modelName, bytes) {
  const panel = document.getElementById("download");
  load.summary = `${modelName} · ${formatBytes(bytes)} verified · ready in ${(load.readySeconds ?? 0).toFixed(1)} s`;
  document.getElementById("download-summary").textContent = load.summary;
  panel.hidden = false;
  panel.open = false;
  panel.dataset.collapsed = "yes";
}

/** Unfold it while a download runs. */
export function expandDownload() {
  const panel = document.getElementById("download");
  panel.open = true;
  panel.dataset.collapsed = "no";
  document.getElementById("download-summary").textContent = "Model files";
}
