// The connection to /ws/transcribe and its protocol (docs/server.md): Start and Stop,
// the server's messages, and reconnecting with backoff while the user wants a transcript.

import { ui, rtlab, setState, showError } from "./page.js";
import { markListStale, refreshIfStale } from "./backends.js";
import { showTranscript, clearPartial } from "./transcript.js";
import {
  stream, recording, followSession, pickMimeType, openMicrophone, keepMicrophone, releaseMicrophone,
  attachRecording, confirmRecording, heardUpTo, serverStopped, cutRecording, stopRecorder, endGap, markGap,
} from "./audio.js";

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const NO_RETRY_CODES = new Set([1008]); // unauthorized: retrying cannot help
const RETRY_ERRORS = new Set(["server_busy", "server_shutdown"]);

let socket = null;
let wantRunning = false; // the user pressed Start and not Stop: resume after a reconnect
let transcribing = false; // start_transcription sent on this socket and not yet ended
// Bumped by every Start, Stop, failure and lost connection: a start still waiting for
// its connection or its microphone gives up when the number has moved on.
let generation = 0;
let attempt = 0;
let reconnectTimer = null;
let startClickedAt = 0;

const token = new URLSearchParams(location.search).get("token");

followSession({ wantsAudio: () => wantRunning, onMicrophoneLost });

function socketUrl() {
  const url = new URL("ws/transcribe", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

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
      refreshIfStale(); // the server may have restarted
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
  markListStale(); // the page did not close it: the server may be restarting
  transcribing = false;
  generation += 1;
  clearPartial(); // lost with the connection: the server will not commit them
  const why = `connection closed (code ${event.code}${event.reason ? ", " + event.reason : ""})`;
  if (wantRunning && !NO_RETRY_CODES.has(event.code)) {
    cutRecording();
    reconnectLater(why);
  } else {
    wantRunning = false; // not retried (or not wanted): the microphone is released below
    clearTimeout(reconnectTimer);
    endGap(recording);
    stopRecorder();
    if (rtlab.state !== "failed") setState("idle", `idle (${why})`);
  }
}

function reconnectLater(why) {
  const delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
  attempt += 1;
  markListStale();
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

// -- messages --------------------------------------------------------------------------

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
      confirmRecording(socket); // the server has the audio held now
      markGap(true); // before the words of the audio held meanwhile
      break;
    case "transcript":
      showTranscript(message);
      if (message.committed.length) heardUpTo(message.committed[message.committed.length - 1]);
      break;
    case "transcription_stopped":
      transcribing = false;
      if (wantRunning) { // the server is shutting down: it will not take more of this stream
        serverStopped(Number(message.summary.audio_seconds) || 0);
      }
      clearPartial();
      setState("idle", `stopped · ${message.summary.audio_seconds} s of audio` +
        (message.summary.rtf != null ? ` · RTF ${message.summary.rtf}` : ""));
      if (!wantRunning) closeSocket(); // else the server is shutting down: reconnect on its close
      break;
    case "transcription_failed":
      // A busy or restarting server is retried with backoff, as a dropped connection is.
      wantRunning = wantRunning && RETRY_ERRORS.has(message.error);
      generation += 1;
      transcribing = false;
      clearPartial(); // provisional words of an utterance that has ended: they will not change
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

// The browser ended the recording `mine` (the microphone was unplugged, or taken away):
// end the utterance with what was heard, rather than wait for the server's idle timeout.
function onMicrophoneLost(mine) {
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

// -- start and stop --------------------------------------------------------------------

export async function start() {
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
    keepMicrophone(media);
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
    if (!ui.committed.firstChild) clearPartial();
    attachRecording(media, socket);
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

export async function stop() {
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
