// The transcript: the words shown and kept, session by session, with Copy, Download and
// Clear.
//
// Each Start begins a session; the earlier ones stay above it, finished, until Clear.
// Two bounds keep a day-long page small: the box shows at most rtlab.maxShownChars of
// text (the oldest leaves first, earlier sessions before the current one, and the box
// says how many words it no longer shows), and Copy and Download have at most
// rtlab.maxKeptChars (the oldest dropped first, and counted).

import { ui, rtlab } from "./page.js";

const kept = { sessions: [], chars: 0, droppedWords: 0 };
let session = null; // the kept session of the latest Start: { title, parts: [{ text, words }] }
let sessionCount = 0;
// Characters in the box (earlier sessions, and #committed with its words), and the words
// that have left it.
const shown = { historyChars: 0, chars: 0, words: 0, hiddenWords: 0 };
let wordCount = 0; // committed words of the current session

export function beginSession() {
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

// Words as text: separated by spaces, but a word marked `joins` goes on from the one
// before it (the rest of a word heard over one already committed).
function joinWords(words) {
  return words.reduce((text, w) => text + (text && !w.joins ? " " : "") + w.text, "");
}

// A transcript message: its committed words appended, its partial words shown.
export function showTranscript(message) {
  // Follow the newest words, unless the user has scrolled back to read earlier ones.
  const box = ui.transcript;
  const following = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  if (message.committed.length) {
    const text = joinWords(message.committed);
    const joins = Boolean(message.committed[0].joins);
    const words = message.committed.filter((w) => !w.joins).length;
    // A new text node per commit: the live region then announces the new words only
    // (rewriting the whole text would have screen readers read it all again).
    // firstChild, not textContent: reading the whole transcript on every message would
    // cost more and more as a long session goes on.
    appendCommitted((ui.committed.firstChild && !joins ? " " : "") + text, text, words, joins);
    wordCount += words;
    ui.wordCount.textContent = String(wordCount);
  }
  // partial_joins: the partial goes on from the last committed word (the rest of it).
  const space = ui.committed.firstChild && !message.partial_joins ? " " : "";
  ui.partial.textContent = message.partial ? space + message.partial : "";
  ui.lag.textContent = `${Number(message.lag).toFixed(2)} s`;
  if (following) box.scrollTop = box.scrollHeight;
}

// The provisional words, gone with the utterance or the connection: no server will
// commit them.
export function clearPartial() {
  ui.partial.textContent = "";
}

// A mark where the connection was lost: for how long (`after` seconds, null when the page
// gave up waiting) and the seconds of audio missing there (`lost`, a string).
export function appendGapMark(after, lost) {
  const mark = document.createElement("span");
  mark.className = "gap";
  mark.dataset.lostSeconds = lost;
  mark.textContent = `[connection lost${after !== null ? ` for ${after} s` : ""}: ` +
    (Number(lost) > 0 ? `about ${lost} s of audio is missing here]` : "no audio is missing]");
  appendCommitted(mark, mark.textContent, 0);
}

// Committed words (a string) or a mark (an element) at the end of the transcript; text
// and words are what it adds to the kept transcript (`joins`: its first word goes on
// from the last one kept).
function appendCommitted(item, text, words, joins = false) {
  ui.committed.append(item);
  shown.chars += typeof item === "string" ? item.length : item.textContent.length;
  shown.words += words;
  keep(text, words, joins);
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

function keep(text, words, joins) {
  if (!session) return;
  session.parts.push({ text, words, joins });
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
    if (parts.length) blocks.push(`${title}\n${joinWords(parts)}`);
  }
  return blocks.join("\n\n") + "\n";
}

function noteTranscript(text) {
  ui.transcriptNote.textContent = text;
}

export async function copyTranscript() {
  try {
    await navigator.clipboard.writeText(transcriptText());
    noteTranscript("Copied.");
  } catch (error) {
    // No clipboard on a page that is not secure, or the browser refused it.
    noteTranscript(`Copy did not work here (${(error && error.message) || error}): use Download.`);
  }
}

export function downloadTranscript() {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([transcriptText()], { type: "text/plain;charset=utf-8" }));
  link.download = `rtlab-transcript-${new Date().toISOString().slice(0, 19).replace(/:/g, "-")}.txt`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000); // the download has read it by then
}

export function clearTranscript() {
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
