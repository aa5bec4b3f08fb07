// Settings that shape answers (system prompt, temperature, length), kept in localStorage. The temperature
// slider follows the model's own default (its build config) until the user moves it.

import { $ } from "./view.js";

const SETTINGS_KEY = "lantern.settings";
let userTemperature = false;

/** {systemPrompt, temperature, maxTokens} as set now. */
export function settings() {
  const maxTokens = parseInt($("max-tokens").value, 10);
  return {
    systemPrompt: $("system-prompt").value.trim(),
    temperature: Number($("temperature").value),
    maxTokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : null,
  };
}

export function applyModelDefaults(variant) {
  const t = variant && variant.generation ? variant.generation.temperature : undefined;
  if (userTemperature || !Number.isFinite(t)) return;
  $("temperature").value = String(t);
  $("temperature-value").textContent = $("temperature").value;
}

export function loadSettings() {
  try {
    const saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
    if (typeof saved.systemPrompt === "string") $("system-prompt").value = saved.systemPrompt;
    if (Number.isFinite(saved.temperature)) {
      $("temperature").value = String(saved.temperature);
      userTemperature = true;
    }
    if (Number.isFinite(saved.maxTokens)) $("max-tokens").value = String(saved.maxTokens);
  } catch {
    /* defaults */
  }
  $("temperature-value").textContent = $("temperature").value;
}

export function saveSettings() {
  $("temperature-value").textContent = $("temperature").value;
  const { temperature, ...rest } = settings();
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(userTemperature ? { ...rest, temperature } : rest));
}

/** Listen to the settings fields; from the first move of the slider, its value is the user's. */
export function bindSettings() {
  $("system-prompt").addEventListener("change", saveSettings);
  $("temperature").addEventListener("input", () => {
    userTemperature = true;
    saveSettings();
  });
  $("max-tokens").addEventListener("change", saveSettings);
}
