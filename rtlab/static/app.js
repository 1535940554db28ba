// rtlab demo page: microphone -> MediaRecorder (webm/opus slices) -> WebSocket -> transcript.
// Plain JavaScript, no build step. The protocol is described in docs/server.md.
"use strict";

(function () {
  const SLICE_MS = 250; // MediaRecorder timeslice: 100-250 ms keeps latency low
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
  const NO_RETRY_CODES = new Set([1008]); // unauthorized: retrying cannot help
  const RETRY_ERRORS = new Set(["server_busy", "server_shutdown"]);

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"), backend: $("backend"), model: $("model"), description: $("backend-description"),
    language: $("language"), languages: $("languages"),
    policy: $("policy"), policyDescription: $("policy-description"),
    start: $("start"), stop: $("stop"), error: $("error"),
    transcript: $("transcript"), committed: $("committed"), partial: $("partial"),
    history: $("history"), sessionTitle: $("session-title"), trimmed: $("trimmed"),
    copy: $("copy"), download: $("download"), clear: $("clear"), transcriptNote: $("transcript-note"),
    startLatency: $("start-latency"), latency: $("latency"), lag: $("lag"), wordCount: $("word-count"),
  };

  // Exposed for tests and curious users: the latest messages received (at most maxMessages,
  // so that a day-long session does not grow the page), and the current state.
  // The other bounds are read where they apply, so a test may lower them.
  const rtlab = (window.rtlab = {
    messages: [], maxMessages: 1000, state: "idle", backends: null,
    backendRetryMs: [1000, 2000, 4000, 8000, 15000], // a failed /api/backends is fetched again after these
    maxShownChars: 20000, // of transcript in the box: older text leaves it (Copy and Download keep it)
    maxKeptChars: 1000000, // of transcript for Copy and Download: older text is dropped, and counted
    maxHeldSeconds: 30, // of audio recorded while no server takes it, sent once one does
  });

  let socket = null;
  let recording = null; // the MediaRecorder streaming or holding audio: see startRecording
  let stream = null;
  let wantRunning = false; // the user pressed Start and not Stop: resume after a reconnect
  let transcribing = false; // start_transcription sent on this socket and not yet ended
  // Bumped by every Start, Stop, failure and lost connection: a start still waiting for
  // its connection or its microphone gives up when the number has moved on.
  let generation = 0;
  let attempt = 0;
  let reconnectTimer = null;
  let startClickedAt = 0;
  let firstAudioAt = null; // performance.now() of the stream's first audio slice (server clock zero)
  let wordCount = 0;
  let focusWanted = false; // Start or Stop had the focus when both were disabled

  const token = new URLSearchParams(location.search).get("token");

  function setState(state, text) {
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

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  function socketUrl() {
    const url = new URL("ws/transcribe", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  // -- backends ------------------------------------------------------------------------

  // The list can go stale: a failed fetch leaves it empty, and a server that restarted may
  // have other plugins. It is fetched again after a failure (rtlab.backendRetryMs, then
  // left until something else asks), when a connection opens after one was lost, and when
  // the page is shown again; the user's choices stay where the new list still offers them.
  let listing = 0; // bumped by each fetch: the answer of an older one is ignored
  let listFailures = 0;
  let listTimer = null;
  let listStale = false; // a connection was lost since the list was fetched
  let listError = ""; // the error shown for the list, cleared once it loads

  function refreshBackends() {
    listFailures = 0;
    loadBackends();
  }

  async function loadBackends() {
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

  function describeBackend() {
    const option = ui.backend.selectedOptions[0];
    ui.description.textContent = option ? option.dataset.description : "";
    ui.model.placeholder = option && option.dataset.model ? option.dataset.model : "backend default";
  }

  // The languages of the server's own model (once loaded), offered while it is the one
  // chosen; empty means "detect" (an English-only model transcribes English either way).
  function listLanguages() {
    const info = rtlab.backends;
    const own = info && ui.backend.value === info.default.backend &&
      [info.default.model || "", ""].includes(ui.model.value.trim()) ? info.default.languages : null;
    const languages = Array.isArray(own) ? own : [];
    ui.languages.replaceChildren(...languages.map((code) => new Option(code, code)));
    ui.language.placeholder = languages.length === 1 ? `${languages[0]} (only)` : "detect";
  }

  // The policies the chosen backend can run: a server that does not say which (no
  // "policies" per backend) offers every policy.
  function listPolicies(preferred) {
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

  function describePolicy() {
    const option = ui.policy.selectedOptions[0];
    ui.policyDescription.textContent = option ? option.dataset.description : "";
  }

  // -- connection ----------------------------------------------------------------------

  // The page's socket once open; a socket still connecting is waited for, not doubled.
  function connect() {
    if (socket) return socket.ready;
    const ws = new WebSocket(socketUrl());
    ws.binaryType = "arraybuffer";
    socket = ws;
    ws.ready = new Promise((resolve, reject) => {
      let opened = false;
      ws.onopen = () => {
        opened = true;
        if (listStale || !rtlab.backends) refreshBackends(); // the server may have restarted
        resolve(ws);
      };
      ws.onmessage = (event) => onMessage(JSON.parse(event.data));
      ws.onclose = (event) => {
        onClose(ws, event); // schedules a reconnect first when one is wanted
        if (!opened) reject(new Error(`could not connect to the server (code ${event.code})`));
      };
    });
    ws.ready.catch(() => {}); // a start that gave up no longer waits for it
    return ws.ready;
  }

  function onClose(ws, event) {
    if (ws !== socket) return;
    socket = null;
    listStale = true; // the page did not close it: the server may be restarting
    transcribing = false;
    generation += 1;
    ui.partial.textContent = ""; // lost with the connection: the server will not commit them
    const why = `connection closed (code ${event.code}${event.reason ? ", " + event.reason : ""})`;
    if (wantRunning && !NO_RETRY_CODES.has(event.code)) {
      cutRecording();
      reconnectLater(why);
    } else {
      endGap(recording);
      stopRecorder();
      if (rtlab.state !== "failed") setState("idle", `idle (${why})`);
    }
  }

  function reconnectLater(why) {
    const delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
    attempt += 1;
    listStale = true;
    setState("reconnecting", `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(() => { if (wantRunning) start().catch(() => {}); }, delay);
  }

  // The page's own close, once it has nothing to transcribe: the server would otherwise
  // close the idle connection itself after --start-timeout with a transcription_failed
  // start_timeout, which would replace what the page shows (a summary, or the real error).
  function closeSocket() {
    const ws = socket;
    socket = null; // onClose ignores a socket that is no longer the page's
    transcribing = false;
    if (ws) ws.close(1000);
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  // -- messages ------------------------------------------------------------------------

  function onMessage(message) {
    rtlab.messages.push(message);
    if (rtlab.messages.length > rtlab.maxMessages) rtlab.messages.splice(0, rtlab.messages.length - rtlab.maxMessages);
    const starting = ["transcription_starting", "model_loading_started", "transcription_started"];
    if (!wantRunning && starting.includes(message.type)) return; // Stop was pressed: stay "stopping"
    switch (message.type) {
      case "transcription_starting":
        setState("starting", "starting…");
        break;
      case "model_loading_started":
        setState("starting", message.cached ? `starting ${message.backend}…` :
          `loading ${message.backend} ${message.model || ""}…`);
        break;
      case "transcription_started":
        attempt = 0; // back to the shortest wait only once the server transcribes again: a
        // server that accepts connections and refuses them (busy) is retried ever less often
        setState("running", `listening (${message.backend}${message.model ? " " + message.model : ""})`);
        ui.startLatency.textContent = `${Math.round(performance.now() - startClickedAt)} ms`;
        if (recording && recording.socket === socket) recording.held = null; // the server has it now
        markGap(true); // before the words of the audio held meanwhile
        break;
      case "transcript":
        onTranscript(message);
        break;
      case "transcription_stopped":
        transcribing = false;
        if (wantRunning && recording) { // the server is shutting down: it will not take more of this stream
          recording.transcribed = Math.max(recording.transcribed, Number(message.summary.audio_seconds) || 0);
          cutRecording();
        }
        ui.partial.textContent = "";
        setState("idle", `stopped · ${message.summary.audio_seconds} s of audio` +
          (message.summary.rtf != null ? ` · RTF ${message.summary.rtf}` : ""));
        if (!wantRunning) closeSocket(); // else the server is shutting down: reconnect on its close
        break;
      case "transcription_failed":
        // A busy or restarting server is retried with backoff, as a dropped connection is.
        wantRunning = wantRunning && RETRY_ERRORS.has(message.error);
        generation += 1;
        transcribing = false;
        ui.partial.textContent = ""; // provisional words of an utterance that has ended: they will not change
        if (wantRunning) {
          cutRecording();
        } else {
          endGap(recording); // refused: what this connection was sent is lost too
          stopRecorder();
        }
        setState("failed", `failed: ${message.error}`);
        showError(`${message.error}: ${message.message}`);
        closeSocket();
        if (wantRunning) reconnectLater(message.error === "server_busy" ? "server busy" : "server stopped");
        break;
      case "error":
        showError(`${message.error}: ${message.message}`);
        break;
      default:
        break; // unknown types are additions from a newer server: ignore them
    }
  }

  function onTranscript(message) {
    // Follow the newest words, unless the user has scrolled back to read earlier ones.
    const box = ui.transcript;
    const following = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    if (message.committed.length) {
      const text = message.committed.map((w) => w.text).join(" ");
      // A new text node per commit: the live region then announces the new words only
      // (rewriting the whole text would have screen readers read it all again).
      // firstChild, not textContent: reading the whole transcript on every message would
      // cost more and more as a long session goes on.
      appendCommitted((ui.committed.firstChild ? " " : "") + text, text, message.committed.length);
      wordCount += message.committed.length;
      ui.wordCount.textContent = String(wordCount);
      const last = message.committed[message.committed.length - 1];
      if (recording) recording.transcribed = Math.max(recording.transcribed, last.end);
      if (firstAudioAt !== null) {
        const latency = (performance.now() - firstAudioAt) / 1000 - last.end;
        ui.latency.textContent = `${latency.toFixed(2)} s`;
      }
    }
    ui.partial.textContent = message.partial ? (ui.committed.firstChild ? " " : "") + message.partial : "";
    ui.lag.textContent = `${Number(message.lag).toFixed(2)} s`;
    if (following) box.scrollTop = box.scrollHeight;
  }

  // -- transcript ----------------------------------------------------------------------

  // Each Start begins a session; the earlier ones stay above it, finished, until Clear.
  // Two bounds keep a day-long page small: the box shows at most rtlab.maxShownChars of
  // text (the oldest leaves first, earlier sessions before the current one, and the box
  // says how many words it no longer shows), and Copy and Download have at most
  // rtlab.maxKeptChars (the oldest dropped first, and counted).
  const kept = { sessions: [], chars: 0, droppedWords: 0 };
  let session = null; // the kept session of the latest Start: { title, parts: [{ text, words }] }
  let sessionCount = 0;
  // Characters in the box (earlier sessions, and #committed with its words), and the words
  // that have left it.
  const shown = { historyChars: 0, chars: 0, words: 0, hiddenWords: 0 };

  function beginSession() {
    if (ui.committed.firstChild) {
      // The nodes move, unread: the current words become an earlier session.
      const section = document.createElement("section");
      const title = document.createElement("h2");
      const text = document.createElement("p");
      title.className = "session-title";
      title.textContent = session.title;
      text.append(...ui.committed.childNodes);
      section.className = "session";
      section.append(title, text);
      section.dataset.chars = String(shown.chars + session.title.length);
      section.dataset.words = String(shown.words);
      ui.history.append(section);
      shown.historyChars += shown.chars + session.title.length;
      shown.chars = shown.words = 0;
    }
    if (session && !session.parts.length) kept.chars -= kept.sessions.pop().title.length; // nothing to keep of it
    sessionCount += 1;
    session = { title: `Session ${sessionCount} · started ${new Date().toLocaleTimeString()}`, parts: [] };
    kept.sessions.push(session);
    kept.chars += session.title.length;
    ui.sessionTitle.textContent = session.title;
    ui.sessionTitle.hidden = !ui.history.firstChild;
    ui.partial.textContent = "";
    wordCount = 0;
    ui.wordCount.textContent = "0";
    trimShown();
  }

  // Committed words (a string) or a mark (an element) at the end of the transcript; text
  // and words are what it adds to the kept transcript.
  function appendCommitted(item, text, words) {
    ui.committed.append(item);
    shown.chars += typeof item === "string" ? item.length : item.textContent.length;
    shown.words += words;
    keep(text, words);
    trimShown();
  }

  function trimShown() {
    while (shown.historyChars + shown.chars > rtlab.maxShownChars) {
      const section = ui.history.firstElementChild;
      const node = section || ui.committed.firstChild;
      const newest = section ? !section.nextElementSibling && !ui.committed.firstChild : node === ui.committed.lastChild;
      if (!node || newest) break; // the newest words stay, however long
      if (section) {
        shown.historyChars -= Number(section.dataset.chars);
        shown.hiddenWords += Number(section.dataset.words);
      } else {
        const text = node.textContent; // one commit's words, or one mark: not the transcript
        const words = node.nodeType === Node.TEXT_NODE ? countWords(text) : 0;
        shown.chars -= text.length;
        shown.words -= words;
        shown.hiddenWords += words;
      }
      node.remove();
    }
    describeTrimmed();
  }

  function countWords(text) {
    const trimmed = text.trim();
    return trimmed ? trimmed.split(/\s+/).length : 0;
  }

  function keep(text, words) {
    if (!session) return;
    session.parts.push({ text, words });
    kept.chars += text.length + 1;
    const limit = rtlab.maxKeptChars;
    if (kept.chars <= limit) return;
    // Down to nine tenths: dropping from the front of an array costs its length, so the
    // oldest parts go in batches. The newest part stays, however long.
    while (kept.chars > 0.9 * limit) {
      const oldest = kept.sessions[0];
      const last = oldest === session ? oldest.parts.length - 1 : oldest.parts.length;
      let n = 0;
      for (; n < last && kept.chars > 0.9 * limit; n += 1) {
        kept.chars -= oldest.parts[n].text.length + 1;
        kept.droppedWords += oldest.parts[n].words;
      }
      oldest.parts.splice(0, n);
      if (oldest === session || oldest.parts.length) break;
      kept.sessions.shift();
      kept.chars -= oldest.title.length;
    }
    describeTrimmed();
  }

  let trimmedSaid = "";
  function describeTrimmed() {
    const hidden = shown.hiddenWords;
    const dropped = kept.droppedWords;
    const said = !hidden ? "" : `${hidden} earlier words are not shown here; ` + (dropped ?
      `Copy and Download have all but the first ${dropped} (the page keeps the latest ${rtlab.maxKeptChars} characters).` :
      "Copy and Download have them.");
    if (said === trimmedSaid) return; // the note is not rewritten on every message
    trimmedSaid = ui.trimmed.textContent = said;
    ui.trimmed.hidden = !said;
  }

  // Every kept session's committed words (not the provisional ones), as plain text.
  function transcriptText() {
    const blocks = [];
    if (kept.droppedWords) {
      blocks.push(`[the first ${kept.droppedWords} words are not here: the page keeps the latest ${rtlab.maxKeptChars} characters]`);
    }
    for (const { title, parts } of kept.sessions) {
      if (parts.length) blocks.push(`${title}\n${parts.map((part) => part.text).join(" ")}`);
    }
    return blocks.join("\n\n") + "\n";
  }

  function noteTranscript(text) {
    ui.transcriptNote.textContent = text;
  }

  async function copyTranscript() {
    try {
      await navigator.clipboard.writeText(transcriptText());
      noteTranscript("Copied.");
    } catch (error) {
      // No clipboard on a page that is not secure, or the browser refused it.
      noteTranscript(`Copy did not work here (${(error && error.message) || error}): use Download.`);
    }
  }

  function downloadTranscript() {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([transcriptText()], { type: "text/plain;charset=utf-8" }));
    link.download = `rtlab-transcript-${new Date().toISOString().slice(0, 19).replace(/:/g, "-")}.txt`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000); // the download has read it by then
  }

  function clearTranscript() {
    kept.sessions = [];
    kept.chars = kept.droppedWords = 0;
    session = null;
    Object.assign(shown, { historyChars: 0, chars: 0, words: 0, hiddenWords: 0 });
    ui.history.replaceChildren();
    ui.committed.replaceChildren();
    ui.partial.textContent = "";
    ui.sessionTitle.hidden = true;
    wordCount = 0;
    ui.wordCount.textContent = "0";
    describeTrimmed();
    noteTranscript("");
  }

  // -- microphone ----------------------------------------------------------------------

  function pickMimeType() {
    const candidates = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"];
    return candidates.find((type) => window.MediaRecorder && MediaRecorder.isTypeSupported(type)) || "";
  }

  // The microphone: the stream kept from before a reconnect, or a new one. Rejects with
  // an error whose message says what the user can do.
  async function openMicrophone() {
    if (stream && stream.getTracks().some((track) => track.readyState === "live")) return stream;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw microphoneError("This page cannot use a microphone here: browsers offer one only to secure " +
        "pages. Open it over https, or on this machine as http://localhost.");
    }
    if (!window.MediaRecorder) throw microphoneError("This browser cannot record audio (it has no MediaRecorder).");
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    } catch (error) {
      const name = (error && error.name) || "Error";
      const advice = {
        NotAllowedError: "Microphone access was refused: allow it for this site (in the address bar) and press Start again.",
        NotFoundError: "No microphone was found: connect one and press Start again.",
        NotReadableError: "The microphone could not be opened (another application may be using it): free it and press Start again.",
      }[name] || `The microphone could not be opened (${name}: ${error && error.message}).`;
      throw microphoneError(advice);
    }
  }

  function microphoneError(text) {
    const error = new Error(text);
    error.microphone = true;
    return error;
  }

  function releaseMicrophone(media) {
    if (media) media.getTracks().forEach((track) => track.stop());
    if (media === stream) stream = null;
  }

  // A recording is one MediaRecorder: one WebM stream, which a server transcribes only
  // from its first slice on (the container header). Until a server has confirmed a stream
  // (transcription_started), its slices are held as well as sent, so that a connection
  // lost or refused before then gets the whole stream again on the next one. A stream a
  // server was transcribing cannot go on in another one: once its connection is cut, the
  // page counts what the server did not transcribe, records a new stream at once and holds
  // it for the reconnect. Audio is held for rtlab.maxHeldSeconds at most: past it, a
  // recording no server has taken is dropped (and counted) for a new one.
  function startRecording(media) {
    stream = media;
    const mimeType = pickMimeType();
    const mine = {
      recorder: new MediaRecorder(media, mimeType ? { mimeType, audioBitsPerSecond: 32000 } : undefined),
      startedAt: performance.now(),
      firstSliceAt: null,
      held: [], // null once a server has confirmed the stream, or it is over the bound
      socket: null, // the connection it streams to, once start_transcription is sent there
      transcribed: 0, // seconds of the stream the server has transcribed
    };
    mine.recorder.ondataavailable = (event) => onSlice(mine, event.data);
    mine.recorder.addEventListener("stop", () => { if (recording === mine) onMicrophoneLost(); });
    mine.recorder.start(SLICE_MS);
    recording = mine;
    return mine;
  }

  function onSlice(mine, data) {
    if (!data.size) return;
    const now = performance.now();
    if (mine.firstSliceAt === null) mine.firstSliceAt = now;
    if (mine.held) {
      mine.held.push(data);
      if ((now - mine.startedAt) / 1000 > rtlab.maxHeldSeconds) {
        if (!mine.socket) return dropRecording(mine);
        mine.held = null; // the server holds it while its model loads; the page no longer can
      }
    }
    if (mine.socket) sendSlice(mine, data);
  }

  function sendSlice(mine, data) {
    if (mine.socket.readyState !== WebSocket.OPEN) return;
    if (firstAudioAt === null) firstAudioAt = mine.firstSliceAt;
    mine.socket.send(data);
  }

  // Streams the recording on the page's socket once start_transcription is sent there:
  // the one held (sent whole first), or a new one.
  function attachRecording(media) {
    let mine = recording;
    if (!mine || !mine.held || mine.socket) {
      endRecording(mine);
      mine = startRecording(media);
    }
    mine.socket = socket;
    firstAudioAt = null;
    mine.held.forEach((data) => sendSlice(mine, data));
  }

  // The server takes no more of the current recording (its connection is gone, or it ended
  // the utterance) while the user still wants a transcript: one it never confirmed is kept
  // for the next connection; otherwise what it did not transcribe is counted as lost and a
  // new recording starts.
  function cutRecording() {
    const mine = recording;
    if (!mine) return;
    mine.socket = null;
    if (mine.held) return;
    const now = performance.now();
    openGap(now).lost += Math.max(0, (now - mine.startedAt) / 1000 - mine.transcribed);
    endRecording(mine);
    if (stream && stream.active) startRecording(stream);
  }

  // Held past the bound with no server to take it: dropped, and counted, for a new one.
  function dropRecording(mine) {
    if (recording !== mine) return;
    openGap(mine.startedAt).lost += (performance.now() - mine.startedAt) / 1000;
    endRecording(mine);
    if (stream && stream.active) startRecording(stream);
  }

  // Stops a recording that is no longer needed, keeping the microphone.
  function endRecording(mine) {
    if (!mine) return;
    if (recording === mine) recording = null; // not the microphone going away
    mine.held = null;
    mine.socket = null;
    if (mine.recorder.state !== "inactive") mine.recorder.stop();
  }

  // -- lost audio ----------------------------------------------------------------------

  // Audio no server transcribed since a connection was cut: { since, lost } (seconds),
  // marked in the transcript once the page transcribes again, or gives up.
  let gap = null;

  function openGap(since) {
    if (!gap) gap = { since, lost: 0 };
    return gap;
  }

  // The page no longer waits for a server (Stop, a refusal, no microphone): a gap still
  // open ends here, with the audio of `held` (a recording no server will get) in it.
  function endGap(held) {
    if (gap && held && held.held) gap.lost += (performance.now() - held.startedAt) / 1000;
    markGap(false);
  }

  function markGap(resumed) {
    if (!gap) return;
    const after = ((performance.now() - gap.since) / 1000).toFixed(1);
    const lost = gap.lost.toFixed(1);
    gap = null;
    const mark = document.createElement("span");
    mark.className = "gap";
    mark.dataset.lostSeconds = lost;
    mark.textContent = `[connection lost${resumed ? ` for ${after} s` : ""}: ` +
      (Number(lost) > 0 ? `about ${lost} s of audio is missing here]` : "no audio is missing]");
    appendCommitted(mark, mark.textContent, 0);
  }

  // The browser ended the recording (the microphone was unplugged, or taken away): end
  // the utterance with what was heard, rather than wait for the server's idle timeout.
  function onMicrophoneLost() {
    const mine = recording;
    recording = null;
    wantRunning = false;
    generation += 1;
    endGap(mine.socket && transcribing ? null : mine); // a transcribing server is sent Stop below
    releaseMicrophone(stream);
    showError("The microphone stopped (unplugged, or taken by another application): what it heard is " +
      "transcribed; press Start to go on.");
    if (transcribing && socket && socket.readyState === WebSocket.OPEN) {
      setState("stopping", "stopping…");
      send({ type: "stop_transcription" });
    } else {
      closeSocket();
      setState("failed", "failed: microphone");
    }
  }

  function stopRecorder() {
    return new Promise((resolve) => {
      const active = recording && recording.recorder;
      recording = null;
      const release = () => {
        if (!wantRunning) releaseMicrophone(stream); // kept for a reconnect
        resolve();
      };
      if (active && active.state !== "inactive") {
        active.onstop = release; // the last slice is delivered before onstop
        active.stop();
      } else {
        release();
      }
    });
  }

  // -- start and stop ------------------------------------------------------------------

  async function start() {
    const mine = ++generation;
    const current = () => mine === generation;
    showError("");
    wantRunning = true;
    try {
      // The microphone before the connection: a missing or refused one starts nothing on
      // the server, and a permission prompt left open does not idle a connection.
      setState("starting", "opening the microphone…");
      const media = await openMicrophone();
      if (!current()) return releaseMicrophone(media); // Stop while the browser asked
      stream = media;
      setState("starting", "connecting…");
      startClickedAt = performance.now();
      await connect();
      if (!current()) {
        if (!wantRunning) closeSocket(); // Stop while connecting: nothing to transcribe
        return;
      }
      const model = ui.model.value.trim();
      // Naming the container lets the server's FFmpeg skip probing (faster first words).
      const mimeType = pickMimeType();
      const format = mimeType.startsWith("audio/webm") ? "webm" : mimeType.startsWith("audio/ogg") ? "ogg" : "auto";
      send({ type: "start_transcription", backend: ui.backend.value || null, model: model || null,
        language: ui.language.value.trim() || null, policy: ui.policy.value || null, format });
      transcribing = true;
      if (!ui.committed.firstChild) ui.partial.textContent = "";
      attachRecording(media);
    } catch (error) {
      if (!current()) return; // a later Start, Stop or failure has taken over
      // (A lost connection has moved the generation on and is retried by onClose.)
      wantRunning = false;
      endGap(recording);
      stopRecorder();
      closeSocket();
      setState("failed", error.microphone ? "failed: microphone" : "failed");
      showError(String((error && error.message) || error));
    }
  }

  async function stop() {
    wantRunning = false;
    generation += 1;
    clearTimeout(reconnectTimer);
    // Held audio not yet sent anywhere is lost; a server that has it transcribes it on Stop.
    endGap(recording && !recording.socket ? recording : null);
    setState("stopping", "stopping…");
    await stopRecorder();
    if (transcribing && socket && socket.readyState === WebSocket.OPEN) {
      send({ type: "stop_transcription" }); // transcription_stopped ends "stopping"
    } else {
      // Nothing started on this socket: close it (one still connecting is closed by the
      // start that waits for it).
      if (socket && socket.readyState === WebSocket.OPEN) closeSocket();
      setState("idle");
    }
  }

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
})();
