// The microphone and the recordings the server hears: held while no server has taken
// them, sent once one does (paced, not in one burst), and the audio lost while the
// connection was down, counted and marked in the transcript.
//
// `stream` and `recording` are read by connection.js (an imported binding is live, and
// read-only there); they change only here.

import { ui, rtlab } from "./page.js";
import { appendGapMark } from "./transcript.js";

const SLICE_MS = 250; // MediaRecorder timeslice: 100-250 ms keeps latency low

export let stream = null;
export let recording = null; // the MediaRecorder streaming or holding audio: see startRecording
let firstAudioAt = null; // performance.now() of the stream's first audio slice (server clock zero)

// What the session logic (connection.js) tells the recorder: whether the user still wants
// a transcript (the microphone is then kept for a reconnect), and what to do when the
// browser ends a recording on its own.
const session = { wantsAudio: () => false, onMicrophoneLost: () => {} };

export function followSession(hooks) {
  Object.assign(session, hooks);
}

export function pickMimeType() {
  const candidates = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"];
  return candidates.find((type) => window.MediaRecorder && MediaRecorder.isTypeSupported(type)) || "";
}

// The microphone: the stream kept from before a reconnect, or a new one. Rejects with
// an error whose message says what the user can do.
export async function openMicrophone() {
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

// The microphone opened for a start, kept for a reconnect.
export function keepMicrophone(media) {
  stream = media;
}

export function releaseMicrophone(media) {
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
//
// A recording is sent paced (see sendDue): held audio goes out at most
// rtlab.maxResendSpeed times faster than real time, and the live slices queue behind it
// until the page has caught up. Sent at once, up to maxHeldSeconds of audio would reach
// the server in one burst, which it takes in one pass, the stream's lag jumping by the
// whole outage (and every client of a restarted server would do so at the same moment).
function startRecording(media) {
  stream = media;
  const mimeType = pickMimeType();
  const mine = {
    recorder: new MediaRecorder(media, mimeType ? { mimeType, audioBitsPerSecond: 32000 } : undefined),
    startedAt: performance.now(),
    firstSliceAt: null,
    // Slices { data, at }: `at`, the seconds of the recording when the slice came (its
    // audio ends there).
    held: [], // null once a server has confirmed the stream, or it is over the bound
    socket: null, // the connection it streams to, once start_transcription is sent there
    unsent: [], // slices not yet sent there: they wait for their turn (sendDue)
    sendingSince: 0, // performance.now() when the page began sending it there
    sentUpTo: 0, // `at` of the latest slice sent there
    timer: null, // the next sendDue while slices wait
    transcribed: 0, // seconds of the stream the server has transcribed
  };
  mine.recorder.ondataavailable = (event) => onSlice(mine, event.data);
  mine.recorder.addEventListener("stop", () => {
    // The browser ended the recording (the microphone was unplugged, or taken away).
    if (recording !== mine) return;
    recording = null;
    showHeld();
    sendAll(mine); // the utterance ends with what was heard: all of it
    session.onMicrophoneLost(mine);
  });
  mine.recorder.start(SLICE_MS);
  recording = mine;
  return mine;
}

function onSlice(mine, data) {
  if (!data.size) return;
  const now = performance.now();
  if (mine.firstSliceAt === null) mine.firstSliceAt = now;
  const slice = { data, at: (now - mine.startedAt) / 1000 };
  if (mine.held) {
    mine.held.push(slice);
    if (slice.at > rtlab.maxHeldSeconds) {
      if (!mine.socket) return dropRecording(mine);
      mine.held = null; // the server holds it while its model loads; the page no longer can
    }
  }
  if (mine.socket) {
    mine.unsent.push(slice);
    sendDue(mine);
  }
  showHeld();
}

// Held audio goes out at most this many times faster than real time: a number above 1
// (Infinity: at once), else 2. At 2, a backlog of H seconds is caught up in H seconds, and
// the N clients of a restarted server send it at most 2N streams' worth of audio meanwhile.
function resendSpeed() {
  const speed = Number(rtlab.maxResendSpeed);
  return speed > 1 ? speed : 2;
}

// Sends the slices whose turn has come: the one that ends `at` seconds into the recording
// is sent no sooner than at / speed seconds after the page began sending the recording on
// this connection: held ones are spread out, and once the page has caught up, a live
// slice is due as it comes.
function sendDue(mine) {
  clearTimeout(mine.timer);
  mine.timer = null;
  if (!mine.socket || mine.socket.readyState !== WebSocket.OPEN) return;
  const elapsed = (performance.now() - mine.sendingSince) / 1000;
  const speed = resendSpeed();
  while (mine.unsent.length) {
    const wait = mine.unsent[0].at / speed - elapsed;
    if (wait > 0) {
      mine.timer = setTimeout(() => sendDue(mine), wait * 1000);
      break;
    }
    sendSlice(mine, mine.unsent.shift());
  }
  showHeld();
}

// Everything not yet sent, at once: the stream ends here (Stop, or the microphone went
// away) and the server transcribes what it has in its flush.
function sendAll(mine) {
  clearTimeout(mine.timer);
  mine.timer = null;
  if (!mine.socket) return;
  mine.unsent.splice(0).forEach((slice) => sendSlice(mine, slice));
}

function sendSlice(mine, slice) {
  if (mine.socket.readyState !== WebSocket.OPEN) return;
  if (firstAudioAt === null) firstAudioAt = mine.firstSliceAt;
  mine.socket.send(slice.data);
  mine.sentUpTo = slice.at;
}

// Streams the recording on `socket` once start_transcription is sent there: the one held
// (sent first, paced), or a new one.
export function attachRecording(media, socket) {
  let mine = recording;
  if (!mine || !mine.held || mine.socket) {
    endRecording(mine);
    mine = startRecording(media);
  }
  mine.socket = socket;
  mine.sendingSince = performance.now();
  mine.sentUpTo = 0;
  mine.unsent = mine.held.slice();
  firstAudioAt = null;
  sendDue(mine);
}

// The "held" readout: seconds of audio the page holds that no server has yet, while it
// reconnects or catches up after a reconnect; "–" when it has none.
function showHeld() {
  const mine = recording;
  let seconds = 0;
  if (mine && !mine.socket && mine.held && mine.held.length) seconds = (performance.now() - mine.startedAt) / 1000;
  else if (mine && mine.socket && mine.unsent.length) seconds = mine.unsent[mine.unsent.length - 1].at - mine.sentUpTo;
  ui.held.textContent = seconds > 0 ? `${seconds.toFixed(1)} s` : "–";
}

// The server on `socket` has confirmed the stream (transcription_started): it has the
// audio held, and the page need not hold more.
export function confirmRecording(socket) {
  if (recording && recording.socket === socket) recording.held = null;
}

// Committed words: the server has transcribed the recording up to the last one's end;
// the commit latency is its arrival minus that end (in the recording's time).
export function heardUpTo(last) {
  if (recording) recording.transcribed = Math.max(recording.transcribed, last.end);
  if (firstAudioAt !== null) {
    const latency = (performance.now() - firstAudioAt) / 1000 - last.end;
    ui.latency.textContent = `${latency.toFixed(2)} s`;
  }
}

// The server stopped (shutting down) after transcribing `seconds` of the recording, while
// the user still wants a transcript: it will not take more of this stream.
export function serverStopped(seconds) {
  if (!recording) return;
  recording.transcribed = Math.max(recording.transcribed, seconds);
  cutRecording();
}

// The server takes no more of the current recording (its connection is gone, or it ended
// the utterance) while the user still wants a transcript: one it never confirmed is kept
// for the next connection; otherwise what it did not transcribe is counted as lost and a
// new recording starts.
export function cutRecording() {
  const mine = recording;
  if (!mine) return;
  mine.socket = null;
  clearTimeout(mine.timer);
  mine.unsent = []; // a server that confirmed the stream has gone: counted below
  if (mine.held) return showHeld(); // held whole for the next connection
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
  clearTimeout(mine.timer);
  mine.unsent = [];
  if (mine.recorder.state !== "inactive") mine.recorder.stop();
  showHeld();
}

// Stops the recording (its last slice is delivered first, and then whatever is still
// waiting for its turn), and the microphone unless the user still wants a transcript.
export function stopRecorder() {
  return new Promise((resolve) => {
    const mine = recording;
    const active = mine && mine.recorder;
    recording = null;
    showHeld();
    const release = () => {
      if (mine) sendAll(mine);
      if (!session.wantsAudio()) releaseMicrophone(stream); // kept for a reconnect
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

// -- lost audio ------------------------------------------------------------------------

// Audio no server transcribed since a connection was cut: { since, lost } (seconds),
// marked in the transcript once the page transcribes again, or gives up.
let gap = null;

function openGap(since) {
  if (!gap) gap = { since, lost: 0 };
  return gap;
}

// The page no longer waits for a server (Stop, a refusal, no microphone): a gap still
// open ends here, with the audio of `held` (a recording no server will get) in it.
export function endGap(held) {
  if (gap && held && held.held) gap.lost += (performance.now() - held.startedAt) / 1000;
  markGap(false);
}

// Marks an open gap in the transcript: `resumed`, the page transcribes again.
export function markGap(resumed) {
  if (!gap) return;
  const after = ((performance.now() - gap.since) / 1000).toFixed(1);
  const lost = gap.lost.toFixed(1);
  gap = null;
  appendGapMark(resumed ? after : null, lost);
}
