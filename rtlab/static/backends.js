// The backend list (/api/backends): the backends, models, languages and policies offered.
//
// The list can go stale: a failed fetch leaves it empty, and a server that restarted may
// have other plugins. It is fetched again after a failure (rtlab.backendRetryMs, then
// left until something else asks), when a connection opens after one was lost, and when
// the page is shown again; the user's choices stay where the new list still offers them.

import { $, ui, rtlab, showError } from "./page.js";

let listing = 0; // bumped by each fetch: the answer of an older one is ignored
let listFailures = 0;
let listTimer = null;
let listStale = false; // a connection was lost since the list was fetched
let listError = ""; // the error shown for the list, cleared once it loads

export function refreshBackends() {
  listFailures = 0;
  loadBackends();
}

// A connection was lost: the server may be restarting, with other plugins.
export function markListStale() {
  listStale = true;
}

// A connection opened: the list is fetched again if it may be stale, or never loaded.
export function refreshIfStale() {
  if (listStale || !rtlab.backends) refreshBackends();
}

export async function loadBackends() {
  clearTimeout(listTimer);
  const mine = ++listing;
  try {
    const response = await fetch("api/backends", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const info = await response.json();
    if (mine !== listing) return;
    listBackends(info);
    listFailures = 0;
    listStale = false;
    if (listError && ui.error.textContent === listError) showError("");
    listError = "";
  } catch (error) {
    if (mine === listing) listFailed(error);
  }
}

function listFailed(error) {
  const delay = rtlab.backendRetryMs[listFailures];
  listFailures += 1;
  listStale = true;
  if (delay !== undefined) listTimer = setTimeout(loadBackends, delay);
  if (rtlab.backends) return; // the list shown meanwhile is the last one the server gave
  const shown = !ui.error.textContent || ui.error.textContent === listError; // not over a server's error
  listError = `Could not load the backend list (${error.message}); is the server running? ` +
    (delay !== undefined ? `Trying again in ${(delay / 1000).toFixed(1)} s.` : "Reload the page to try again.");
  if (shown) showError(listError);
}

function listBackends(info) {
  const first = !rtlab.backends;
  const chosen = ui.backend.value;
  rtlab.backends = info;
  ui.backend.replaceChildren();
  for (const backend of info.backends) {
    if (!mayName("backends", backend.name)) continue;
    const option = new Option(backend.name, backend.name);
    option.dataset.description = backend.description || "";
    option.dataset.model = backend.options.model || "";
    ui.backend.add(option);
  }
  // The models the server lets clients name, offered as suggestions.
  const models = $("models");
  models.replaceChildren(...((info.allowed && info.allowed.models) || []).map((m) => new Option(m, m)));
  if (!first && Array.from(ui.backend.options, (o) => o.value).includes(chosen)) {
    ui.backend.value = chosen; // with the model typed and the policy chosen, where offered
    describeBackend();
    listPolicies();
    listLanguages();
    return;
  }
  const preferred = info.backends.some((b) => b.name === info.default.backend) ? info.default.backend : "";
  if (preferred) ui.backend.value = preferred;
  describeBackend();
  if (!first) ui.model.value = ""; // typed for a backend that is gone
  if (info.default.model && ui.backend.value === info.default.backend) ui.model.value = info.default.model;
  listPolicies(info.default.policy);
  listLanguages();
}

// Whether the server lets a client name this backend or policy ("allowed" in
// /api/backends; "*" allows all, and a server that does not say allows all).
function mayName(kind, name) {
  const allowed = rtlab.backends && rtlab.backends.allowed && rtlab.backends.allowed[kind];
  return !Array.isArray(allowed) || allowed.includes("*") || allowed.includes(name);
}

export function describeBackend() {
  const option = ui.backend.selectedOptions[0];
  ui.description.textContent = option ? option.dataset.description : "";
  ui.model.placeholder = option && option.dataset.model ? option.dataset.model : "backend default";
}

// The languages of the server's own model (once loaded), offered while it is the one
// chosen; empty means "detect" (an English-only model transcribes English either way).
export function listLanguages() {
  const info = rtlab.backends;
  const own = info && ui.backend.value === info.default.backend &&
    [info.default.model || "", ""].includes(ui.model.value.trim()) ? info.default.languages : null;
  const languages = Array.isArray(own) ? own : [];
  ui.languages.replaceChildren(...languages.map((code) => new Option(code, code)));
  ui.language.placeholder = languages.length === 1 ? `${languages[0]} (only)` : "detect";
}

// The policies the chosen backend can run: a server that does not say which (no
// "policies" per backend) offers every policy.
export function listPolicies(preferred) {
  const info = rtlab.backends;
  if (!info || !info.policies) return;
  const backend = info.backends.find((b) => b.name === ui.backend.value);
  const able = backend && Array.isArray(backend.policies) ? new Set(backend.policies) : null;
  const current = preferred || ui.policy.value;
  ui.policy.replaceChildren();
  for (const policy of info.policies) {
    if ((able && !able.has(policy.name)) || !mayName("policies", policy.name)) continue;
    const option = new Option(policy.name, policy.name);
    option.dataset.description = policy.description || "";
    ui.policy.add(option);
  }
  const names = Array.from(ui.policy.options, (o) => o.value);
  ui.policy.value = names.includes(current) ? current : names.includes(info.default.policy) ? info.default.policy : names[0] || "";
  describePolicy();
}

export function describePolicy() {
  const option = ui.policy.selectedOptions[0];
  ui.policyDescription.textContent = option ? option.dataset.description : "";
}
