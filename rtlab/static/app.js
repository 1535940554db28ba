// rtlab demo page: microphone -> MediaRecorder (webm/opus slices) -> WebSocket -> transcript.
// Plain JavaScript modules, no build step. The protocol is described in docs/server.md.
//
//   page.js        the page's elements, window.rtlab (bounds, state, messages), status and errors
//   backends.js    the backend list from /api/backends, fetched again when it may be stale
//   transcript.js  the transcript: sessions, the bounds on it, Copy, Download and Clear
//   audio.js       the microphone, recordings sent or held, the audio lost in an outage
//   connection.js  the WebSocket and its messages, Start, Stop and reconnecting
//
// This module wires the page's controls to them.

import { ui, setState } from "./page.js";
import { loadBackends, refreshBackends, describeBackend, listPolicies, listLanguages, describePolicy } from "./backends.js";
import { beginSession, copyTranscript, downloadTranscript, clearTranscript } from "./transcript.js";
import { start, stop } from "./connection.js";

ui.start.addEventListener("click", () => {
  beginSession();
  start().catch(() => {});
});
ui.stop.addEventListener("click", () => stop());
ui.copy.addEventListener("click", () => copyTranscript());
ui.download.addEventListener("click", () => downloadTranscript());
ui.clear.addEventListener("click", () => clearTranscript());
ui.backend.addEventListener("change", () => { ui.model.value = ""; describeBackend(); listPolicies(); listLanguages(); });
ui.model.addEventListener("input", () => listLanguages());
ui.policy.addEventListener("change", () => describePolicy());

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refreshBackends(); // back from another tab, maybe hours later
});

setState("idle");
loadBackends();
