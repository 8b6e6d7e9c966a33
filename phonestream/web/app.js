// The live page: microphone -> AudioWorklet (server's rate) -> WebSocket -> phonemes on screen.
// Protocol (see docs/server.md): hello <- | config -> | ready <- | binary f32le frames -> | events <- |
// {"type":"end"} -> | summary <- | close.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SHOWN = 400; // committed phonemes kept on screen
let session = null;

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  document.body.dataset.state = text;
}

function fmt(x, digits) { return x.toFixed(digits); }

function addPhoneme(p, delay) {
  const span = document.createElement("span");
  span.className = "phoneme";
  span.title = `${p.phoneme}: ${fmt(p.start, 2)}-${fmt(p.end, 2)} s, confidence ${fmt(p.confidence, 2)}`;
  span.style.opacity = String(0.35 + 0.65 * p.confidence);
  span.textContent = p.phoneme;
  const small = document.createElement("small");
  small.textContent = `${fmt(p.start, 2)}s ${Math.round(p.confidence * 100)}%`;
  span.appendChild(small);
  $("committed").appendChild(span);
  while ($("committed").childElementCount > MAX_SHOWN) $("committed").firstElementChild.remove();
  const row = document.createElement("tr");
  for (const v of [p.index, p.phoneme, fmt(p.start, 2), fmt(p.end, 2), fmt(p.confidence, 3), fmt(delay, 2)]) {
    const td = document.createElement("td");
    td.textContent = v;
    row.appendChild(td);
  }
  $("rows").prepend(row);
  while ($("rows").childElementCount > 50) $("rows").lastElementChild.remove();
}

function showTail(symbols) {
  $("tail").replaceChildren(...symbols.map((s) => {
    const span = document.createElement("span");
    span.className = "phoneme";
    span.textContent = s;
    return span;
  }));
}

// The expected sentence, word by word, coloured by the server's "word" verdicts (pronunciation check).
const WORD = /[\p{L}\p{N}]+(?:['\u2019][\p{L}\p{N}]+)*/gu; // the server's tokenisation (phonestream.check)

function showExpected(text) {
  $("words").replaceChildren(...(text.match(WORD) || []).map((w, i) => {
    const span = document.createElement("span");
    span.className = i === 0 ? "word current" : "word";
    span.id = `word-${i}`;
    span.textContent = w;
    return span;
  }).flatMap((span) => [span, document.createTextNode(" ")]));
}

function showVerdict(w) {
  const span = $(`word-${w.index}`);
  if (!span) return;
  span.className = `word ${w.verdict}`;
  span.title = `${w.verdict}${w.score === null ? "" : `, score ${fmt(w.score, 2)}`}: expected /${w.expected.join(" ")}/` +
               `, heard /${w.heard.join(" ")}/` + (w.source === "cmudict" ? "" : ` (${w.source})`);
  if (w.verdict === "mispronounced") {
    const small = document.createElement("small");
    small.textContent = w.heard.join(" ");
    span.append(" ", small); // spaced, so the word and what was heard read (and copy) as two words
  }
  const next = $(`word-${w.index + 1}`);
  if (next && next.className === "word") next.className = "word current";
}

async function start() {
  const expected = $("expected").value.trim();
  showExpected(expected);
  $("committed").replaceChildren();
  $("rows").replaceChildren();
  $("summary").textContent = "";
  showTail([]);
  setStatus("connecting");
  const health = await (await fetch("/health")).json();
  const rate = health.sample_rate;
  let ctx;
  const params = new URLSearchParams(location.search);
  try {
    if (params.get("resampler") === "worklet") throw new Error("asked for the worklet's resampler");
    ctx = new AudioContext({ sampleRate: rate }); // the browser resamples the microphone for us
  } catch (e) {
    ctx = new AudioContext(); // this browser keeps its own rate: the worklet converts
  }
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  await ctx.audioWorklet.addModule("/static/worklet.js");
  const source = ctx.createMediaStreamSource(media);
  const node = new AudioWorkletNode(ctx, "capture-processor", { processorOptions: { targetRate: rate } });
  const mute = ctx.createGain();
  mute.gain.value = 0; // keep the graph pulled without playing the microphone back
  source.connect(node).connect(mute).connect(ctx.destination);
  if (ctx.state !== "running") await ctx.resume();

  const token = params.get("token");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws` +
              (token ? `?token=${encodeURIComponent(token)}` : "");
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const s = { ctx, media, node, ws, rate, sent: 0, ready: false, count: 0, stopping: false };
  session = s;

  node.port.onmessage = (e) => {
    if (!s.ready || s.stopping || ws.readyState !== WebSocket.OPEN) return;
    ws.send(e.data.buffer);
    s.sent += e.data.length;
    $("sent").textContent = `${fmt(s.sent / rate, 1)} s`;
  };
  ws.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    const sentS = s.sent / rate;
    if (ev.type === "hello") {
      const config = { type: "config", sample_rate: rate, format: "f32le" };
      if (expected) config.expected = expected;
      ws.send(JSON.stringify(config));
    } else if (ev.type === "ready") {
      s.ready = true;
      setStatus(`streaming (${ev.chunk_ms}/${ev.left_ms}/${ev.right_ms} ms windows, mic at ${ctx.sampleRate} Hz)`);
    } else if (ev.type === "phoneme") {
      const delay = sentS - ev.end; // audio spoken since this phoneme ended
      $("delay").textContent = `${fmt(delay, 2)} s`;
      $("lag").textContent = `${fmt(sentS - ev.committed_at, 2)} s`;
      $("count").textContent = String(++s.count);
      addPhoneme(ev, delay);
    } else if (ev.type === "partial") {
      showTail(ev.phonemes);
      $("lag").textContent = `${fmt(sentS - ev.received, 2)} s`;
    } else if (ev.type === "word") {
      showVerdict(ev);
    } else if (ev.type === "summary") {
      showTail([]);
      $("summary").textContent = (ev.check ? `words ok: ${ev.check.ok} of ${ev.check.words}\n` : "") +
                                 JSON.stringify(ev, null, 1);
    } else if (ev.type === "error") {
      setStatus(`error: ${ev.message}`, true);
    }
  };
  ws.onclose = () => {
    teardown(s);
    if (!document.body.dataset.state.startsWith("error")) setStatus("stopped");
    $("toggle").textContent = "Start";
  };
  ws.onerror = () => setStatus("connection failed", true);
  $("toggle").textContent = "Stop";
}

function teardown(s) {
  s.media.getTracks().forEach((t) => t.stop());
  s.node.port.onmessage = null;
  if (s.ctx.state !== "closed") s.ctx.close();
  if (session === s) session = null;
}

function stop() {
  const s = session;
  if (!s) return;
  s.stopping = true;
  setStatus("finishing");
  if (s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify({ type: "end" }));
  else teardown(s);
}

$("toggle").addEventListener("click", () => {
  if (session) stop();
  else start().catch((e) => { setStatus(`error: ${e.message || e}`, true); $("toggle").textContent = "Start"; });
});
setStatus("idle");
