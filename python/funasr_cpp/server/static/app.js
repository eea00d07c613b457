// The page: live transcription of the microphone over the OpenAI Realtime transcription protocol
// (/v1/realtime), and a file box for /v1/audio/transcriptions. No dependencies, no build step.
// body[data-state]: idle | connecting | live | stopping | closed (tests wait on it).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    key: $("api-key"), language: $("language"), hotwords: $("hotwords"), turn: $("turn"),
    start: $("start"), commit: $("commit"), stop: $("stop"), status: $("status"),
    finals: $("finals"), partial: $("partial"), errors: $("errors"),
    fileForm: $("file-form"), file: $("file"), format: $("format"), sendFile: $("send-file"),
    fileResult: $("file-result"),
  };
  const RATE = 24000;             // what the worklet sends: audio/pcm at 24 kHz
  const STOP_QUIET_MS = 500;      // after Stop: events still on their way come within this
  const STOP_WAIT_MS = 20000;     // after Stop: the longest wait for the last finals
  const COMPLETED = "conversation.item.input_audio_transcription.completed";

  // The API key lives in this tab only (sessionStorage), never in localStorage or a cookie.
  const KEY_SLOT = "funasr-cpp-api-key";
  ui.key.value = sessionStorage.getItem(KEY_SLOT) || "";
  ui.key.addEventListener("change", () => {
    const key = ui.key.value.trim();
    if (key) sessionStorage.setItem(KEY_SLOT, key); else sessionStorage.removeItem(KEY_SLOT);
  });
  const apiKey = () => ui.key.value.trim();
  const language = () => (ui.language.value === "auto" ? null : ui.language.value);

  function showError(text) {
    const li = document.createElement("li");
    li.className = "error";
    li.textContent = text;
    ui.errors.append(li);
  }

  function setState(state, text) {
    document.body.dataset.state = state;
    ui.status.textContent = text || state;
    const busy = state === "connecting" || state === "live" || state === "stopping";
    ui.start.disabled = busy;
    ui.turn.disabled = busy;
    ui.stop.disabled = !(state === "connecting" || state === "live");
    ui.commit.disabled = state !== "live";
  }

  // mm:ss.s of session audio
  function clock(ms) {
    const s = Math.max(0, ms) / 1000, m = Math.floor(s / 60);
    return `${String(m).padStart(2, "0")}:${(s - 60 * m).toFixed(1).padStart(4, "0")}`;
  }

  function base64(buffer) {
    const bytes = new Uint8Array(buffer);
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  // One live session: microphone -> worklet -> WebSocket, and the server's events -> the page.
  class Live {
    constructor() {
      this.items = new Map();   // item_id -> {seq, start, end, text, el, done, committed, commitSent}
      this.seq = 0;
      this.sinceCommit = 0;     // samples appended since the last commit
      this.sentMs = 0;          // audio appended, in ms (the timeline of the server's audio_start_ms)
      this.doneMs = 0;          // manual mode: where the last completed item ended
      this.lastEvent = performance.now();
      this.closing = false;
    }

    async start() {
      setState("connecting", "starting the microphone…");
      if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
        // browsers give the microphone and AudioWorklets to secure pages only
        throw new Error("the microphone needs a secure page: open it as https://… or on this machine as " +
                        "http://localhost:PORT/ (the file box works either way)");
      }
      // created in the click's turn: browsers let a user gesture start audio
      this.ctx = new AudioContext();
      this.ctx.resume();
      await this.ctx.audioWorklet.addModule("static/pcm-worklet.js");
      // the raw microphone: echo cancellation, noise suppression and gain control change what the
      // recogniser hears for the worse and are meant for calls
      this.media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      if (this.closing) return this.cleanup();
      this.node = new AudioWorkletNode(this.ctx, "pcm16-24k");
      this.node.port.onmessage = (e) => this.onPcm(e.data);
      setState("connecting", "connecting…");
      this.connect();
    }

    connect() {
      const url = new URL("v1/realtime?intent=transcription", location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      // browsers cannot set headers on a WebSocket: the key goes as a subprotocol (OpenAI's way)
      const protocols = ["realtime"];
      if (apiKey()) protocols.push("openai-insecure-api-key." + apiKey());
      this.ws = new WebSocket(url, protocols);
      this.ws.onmessage = (e) => this.onEvent(e.data);
      this.ws.onclose = (e) => this.onClose(e);
      this.ws.onerror = () => {};  // onclose follows with the code
    }

    send(event) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(event));
    }

    sessionUpdate(session) {
      const input = session.audio.input;
      let turn = null;
      if (ui.turn.value === "server_vad") {
        // the server's own VAD settings when it offers them
        turn = input.turn_detection && input.turn_detection.type === "server_vad"
          ? input.turn_detection : { type: "server_vad" };
      }
      this.manual = turn === null;
      this.send({
        type: "session.update",
        session: {
          type: "transcription",
          audio: {
            input: {
              format: { type: "audio/pcm", rate: RATE },
              transcription: {
                model: input.transcription.model, language: language(), prompt: ui.hotwords.value.trim(),
              },
              turn_detection: turn,
            },
          },
        },
      });
    }

    onPcm({ pcm, last }) {
      if (pcm.byteLength) {
        this.send({ type: "input_audio_buffer.append", audio: base64(pcm) });
        this.sinceCommit += pcm.byteLength / 2;
        this.sentMs += (1000 * pcm.byteLength) / 2 / RATE;
      }
      if (last && this.flushed) this.flushed();
    }

    item(id) {
      let it = this.items.get(id);
      if (!it) {
        it = { seq: this.seq++, start: null, end: null, text: "", el: null, done: false, committed: false,
               commitSent: false };
        this.items.set(id, it);
      }
      return it;
    }

    times(it) {
      if (it.start === null) return "";
      return it.end === null ? `${clock(it.start)}–` : `${clock(it.start)}–${clock(it.end)}`;
    }

    showPartial(id, it) {
      if (!it.el) {
        it.el = document.createElement("div");
        it.el.className = "item";
        it.el.innerHTML = '<span class="time"></span><span class="partial"></span>';
        it.el.lastChild.dataset.itemId = id;
        ui.partial.append(it.el);
      }
      it.el.firstChild.textContent = this.times(it);
      it.el.lastChild.textContent = it.text;
    }

    showFinal(id, it, transcript) {
      if (it.el) it.el.remove();
      it.el = null;
      const li = document.createElement("li");
      li.className = "item";
      li.dataset.seq = it.seq;
      li.innerHTML = '<span class="time"></span><span class="final"></span>';
      li.firstChild.textContent = this.times(it);
      li.lastChild.dataset.itemId = id;
      li.lastChild.textContent = transcript;
      // in item order, should a final overtake an earlier one
      const later = [...ui.finals.children].find((x) => Number(x.dataset.seq) > it.seq);
      ui.finals.insertBefore(li, later || null);
    }

    onEvent(data) {
      this.lastEvent = performance.now();
      let ev;
      try { ev = JSON.parse(data); } catch { return showError("the server sent a frame that is not JSON"); }
      const id = ev.item_id;
      switch (ev.type) {
        case "session.created":
          this.sessionUpdate(ev.session);
          break;
        case "session.updated":
          if (document.body.dataset.state === "connecting") this.goLive();
          break;
        case "input_audio_buffer.speech_started": {
          const it = this.item(id);
          it.start = ev.audio_start_ms;
          this.showPartial(id, it);
          break;
        }
        case "input_audio_buffer.speech_stopped": {
          const it = this.item(id);
          it.end = ev.audio_end_ms;
          if (!it.done) this.showPartial(id, it);
          break;
        }
        case "input_audio_buffer.committed": {
          const it = this.item(id);
          it.committed = true;
          this.awaitCommitted = false;
          if (!it.done) this.showPartial(id, it);
          break;
        }
        case "conversation.item.input_audio_transcription.delta": {
          const it = this.item(id);
          if (it.done) break;
          it.text = ev.replace ? ev.delta : it.text + ev.delta;  // replace: a revised hypothesis, whole
          this.showPartial(id, it);
          break;
        }
        case COMPLETED: {
          const it = this.item(id);
          it.done = true;
          if (it.start === null && ev.usage && typeof ev.usage.seconds === "number") {
            // no VAD, no speech_started: items are back to back, each as long as its audio
            it.start = this.doneMs;
            it.end = it.start + 1000 * ev.usage.seconds;
            this.doneMs = it.end;
          }
          this.showFinal(id, it, ev.transcript);
          break;
        }
        case "conversation.item.input_audio_transcription.failed": {
          const it = this.item(id);
          it.done = true;
          if (it.el) it.el.remove();
          showError(`transcription failed: ${(ev.error && ev.error.message) || id}`);
          break;
        }
        case "input_audio_buffer.cleared":
          for (const [, it] of this.items) {
            if (!it.done && it.end === null && it.el) { it.el.remove(); it.done = true; }
          }
          break;
        case "error": {
          const e = ev.error || {};
          if (e.code === "input_audio_buffer_commit_empty") {
            this.awaitCommitted = false;
            if (this.closing) break;  // Stop's commit raced the VAD's own end of the item: nothing wrong
          }
          showError(`${e.code || e.type || "error"}: ${e.message || JSON.stringify(ev)}`);
          // a refused session.update: this page's settings do not run on this server
          if (document.body.dataset.state === "connecting") this.stop();
          break;
        }
        default:
          break;
      }
    }

    goLive() {
      this.ctx.createMediaStreamSource(this.media).connect(this.node);
      this.node.connect(this.ctx.destination);  // silence out: a node nobody pulls may not run
      setState("live", this.manual ? "live (Commit ends a segment)" : "live");
    }

    commit() {
      if (this.sinceCommit === 0) return;  // nothing appended since the last commit
      this.send({ type: "input_audio_buffer.commit" });
      this.sinceCommit = 0;
    }

    // Stop: the microphone's last samples go out, then the items still open are committed and their
    // finals, and those on their way, are waited for (bounded); then the socket closes.
    async stop() {
      if (this.closing) return;
      this.closing = true;
      const wasLive = document.body.dataset.state === "live";
      setState("stopping", "finishing…");
      if (wasLive && this.node) {
        await new Promise((resolve) => {
          this.flushed = resolve;
          this.node.port.postMessage("flush");
          setTimeout(resolve, 1000);  // an audio thread that no longer runs
        });
      }
      this.releaseMic();
      if (wasLive) await this.finishItems();
      if (this.ws) this.ws.close(1000); else this.cleanup();
    }

    async finishItems() {
      const t0 = performance.now(), since = (t) => performance.now() - t;
      const open = () => this.ws.readyState === WebSocket.OPEN;
      if (this.manual && this.sinceCommit > 0) {
        this.commit();
        this.awaitCommitted = true;  // cleared by the committed event (or an error)
      }
      let waiting = true;
      while (open() && since(t0) < STOP_WAIT_MS) {
        if (!this.manual) {
          // an item the VAD has open with audio in it: commit it. One that opens at the very end has
          // none (after a commit the VAD's speech goes on as a new item): it is left to close with
          // the socket. An event on its way at Stop shows up within the quiet time.
          for (const it of this.items.values()) {
            if (!it.done && !it.committed && !it.commitSent && it.start !== null && it.start < this.sentMs - 100) {
              this.send({ type: "input_audio_buffer.commit" });
              it.commitSent = true;
            }
          }
        }
        waiting = this.awaitCommitted ||
          [...this.items.values()].some((it) => !it.done && (it.committed || it.commitSent));
        if (!waiting && since(t0) >= STOP_QUIET_MS && since(this.lastEvent) >= STOP_QUIET_MS) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      if (waiting && open()) showError("stopped before every final came");
    }

    onClose(e) {
      if (!this.closing) {
        // 1006: no close frame, e.g. refused before the upgrade (a wrong API key: HTTP 401)
        const why = e.code === 1006 ? "the connection failed (server down, or a wrong API key?)"
          : `the server closed the session (${e.code}${e.reason ? ": " + e.reason : ""})`;
        showError(why);
      }
      this.cleanup();
    }

    releaseMic() {
      if (this.media) this.media.getTracks().forEach((t) => t.stop());
      if (this.node) this.node.disconnect();
      if (this.ctx && this.ctx.state !== "closed") this.ctx.close();
    }

    cleanup() {
      this.closing = true;
      this.releaseMic();
      for (const [, it] of this.items) if (!it.done && it.el) it.el.remove();
      if (live === this) live = null;
      setState("closed");
    }
  }

  let live = null;

  ui.start.addEventListener("click", () => {
    if (live) return;
    ui.finals.replaceChildren();
    ui.partial.replaceChildren();
    live = new Live();
    const session = live;
    session.start().catch((e) => {
      showError(`could not start: ${e.message || e}`);
      session.cleanup();
    });
  });
  ui.stop.addEventListener("click", () => { if (live) live.stop(); });
  ui.commit.addEventListener("click", () => { if (live) live.commit(); });

  // The file box: the same endpoint and key as any OpenAI client.
  ui.fileForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = ui.file.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("response_format", ui.format.value);
    if (language()) form.append("language", language());
    if (ui.hotwords.value.trim()) form.append("prompt", ui.hotwords.value.trim());
    const headers = apiKey() ? { Authorization: "Bearer " + apiKey() } : {};
    ui.sendFile.disabled = true;
    ui.fileResult.dataset.status = "pending";
    ui.fileResult.textContent = "transcribing…";
    try {
      const r = await fetch("v1/audio/transcriptions", { method: "POST", body: form, headers });
      const text = await r.text();
      if (!r.ok) {
        let message = text;
        try { message = JSON.parse(text).error.message; } catch { /* not OpenAI's error body */ }
        throw new Error(`HTTP ${r.status}: ${message}`);
      }
      const json = ui.format.value === "json" || ui.format.value === "verbose_json";
      ui.fileResult.textContent = json ? JSON.stringify(JSON.parse(text), null, 2) : text;
      ui.fileResult.dataset.status = "done";
    } catch (e) {
      ui.fileResult.textContent = e.message || String(e);
      ui.fileResult.dataset.status = "error";
      showError(`file: ${e.message || e}`);
    } finally {
      ui.sendFile.disabled = false;
    }
  });

  setState("idle");
})();
