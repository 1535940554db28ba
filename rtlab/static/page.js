// The page's elements, window.rtlab (its bounds, and what tests read), the status line and
// the error box: what the other modules show their work through.

export const $ = (id) => document.getElementById(id);
export const ui = {
  status: $("status"), backend: $("backend"), model: $("model"), description: $("backend-description"),
  language: $("language"), languages: $("languages"),
  policy: $("policy"), policyDescription: $("policy-description"),
  start: $("start"), stop: $("stop"), error: $("error"),
  transcript: $("transcript"), committed: $("committed"), partial: $("partial"),
  history: $("history"), sessionTitle: $("session-title"), trimmed: $("trimmed"),
  copy: $("copy"), download: $("download"), clear: $("clear"), transcriptNote: $("transcript-note"),
  startLatency: $("start-latency"), latency: $("latency"), lag: $("lag"), held: $("held"), wordCount: $("word-count"),
};

// Exposed for tests and curious users: the latest messages received (at most maxMessages,
// so that a day-long session does not grow the page), and the current state.
// The other bounds are read where they apply, so a test may lower them.
export const rtlab = (window.rtlab = {
  messages: [], maxMessages: 1000, state: "idle", backends: null,
  backendRetryMs: [1000, 2000, 4000, 8000, 15000], // a failed /api/backends is fetched again after these
  maxShownChars: 20000, // of transcript in the box: older text leaves it (Copy and Download keep it)
  maxKeptChars: 1000000, // of transcript for Copy and Download: older text is dropped, and counted
  maxHeldSeconds: 30, // of audio recorded while no server takes it, sent once one does
  maxResendSpeed: 2, // times real time, at most, that held audio is sent at after a reconnect
});

let focusWanted = false; // Start or Stop had the focus when both were disabled

export function setState(state, text) {
  rtlab.state = state;
  ui.status.dataset.state = state;
  ui.status.textContent = text || state;
  const busy = state === "starting" || state === "running" || state === "stopping" || state === "reconnecting";
  const focused = [ui.start, ui.stop].includes(document.activeElement) ||
    (focusWanted && [document.body, null].includes(document.activeElement));
  ui.start.disabled = busy;
  ui.stop.disabled = !(state === "starting" || state === "running" || state === "reconnecting");
  ui.backend.disabled = ui.model.disabled = ui.policy.disabled = ui.language.disabled = busy;
  ui.clear.disabled = busy; // the session under way is not finished text
  // A disabled button drops the focus to the page: hand it to the button that can be
  // pressed now (Start -> Stop -> Start), so a keyboard user never has to search for it.
  if (focused) {
    const next = [ui.start, ui.stop].find((button) => !button.disabled);
    if (next && document.activeElement !== next) next.focus({ preventScroll: true }); // it sits beside the other
    focusWanted = !next; // both disabled while stopping: focus Start once it is enabled
  }
}

export function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}
