// chatcap chat page: plain JS, no build step, JSON codec (subprotocol chat.v1.json).
//
// How it talks to the server (docs/browser.md):
//   * the server base is ?server=http(s)://host:port, else this page's own origin;
//   * GET {base}/api/v1/token with HTTP Basic -> {token, user, expires_in_s, ...};
//   * new WebSocket({ws base}/api/v1/ws?token=..., ["chat.v1.json"]), one JSON object a frame.
//
// Rules the page keeps (chatcap/protocol/PROTOCOL.md):
//   * own lines come from the Ack: the server never sends the sending connection a Deliver
//     of its own message; the Ack carries the seq and stands for it;
//   * every line is keyed by its room seq (1, 2, 3, ... without gaps), so a line replayed
//     twice is shown once; `since_seq` on a re-Join is the highest seq up to which every
//     line has been seen;
//   * a Send that got no Ack before the socket closed is sent again with the same
//     client_msg_id after the re-Join (idempotent: never a second message);
//   * on close, reconnect with exponential backoff and jitter.
//
// Test hooks: window.chatcap.dropSocket({hold}), .resume(), .state() (see the bottom).
"use strict";

(() => {
  const SUBPROTOCOL = "chat.v1.json";
  const RECONNECT_BASE_MS = 250;
  const RECONNECT_CAP_MS = 8000;
  const TOKEN_RENEW_MARGIN_MS = 60_000;
  const TOKEN_FETCH_TIMEOUT_MS = 10_000;
  const SEND_TRIES_MAX = 4;
  const RETRYABLE = new Set(["rate_limited", "overloaded", "store_busy", "unavailable", "internal"]);
  const LOG_LINES_MAX = 500;
  const ERRORS_SHOWN_MAX = 5;
  const USER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

  const $ = (id) => document.getElementById(id);
  const el = {
    server: $("server"), conn: $("conn"), status: $("status"), errors: $("errors"),
    loginForm: $("login-form"), user: $("user"), password: $("password"), login: $("login"),
    roomForm: $("room-form"), room: $("room"), join: $("join"), joined: $("joined"),
    log: $("log"), sendForm: $("send-form"), body: $("body"), send: $("send"),
  };

  const state = {
    base: "", user: "", password: "", token: "", tokenExpiresAt: 0,
    ws: null, conn: "idle", opened: false, attempt: 0, reconnects: 0, timer: null,
    hold: false, held: false,
    room: "", joined: false, everJoined: false, joinSince: null,
    contiguous: null, // every seq <= this has been seen (null: no baseline yet)
    seen: new Set(), // seqs above `contiguous` already shown
    pending: new Map(), // client_msg_id -> {room, body, sentAtUs, t0, tries, li, seq}
    idPrefix: randomTag(), nextId: 1,
    lastError: null, // {kind, name, message}: what the page last showed, for tests
  };

  // ------------------------------------------------------------------ server address

  function serverBase() {
    const given = new URLSearchParams(location.search).get("server");
    if (!given) return location.origin;
    let url;
    try {
      url = new URL(given);
    } catch {
      throw new Error(`?server=${given} is not a URL (give http://host:port or https://host:port)`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new Error(`?server=${given}: the scheme must be http or https`);
    }
    return url.origin;
  }

  function randomTag() {
    const bytes = new Uint8Array(6);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function basicCredentials(user, password) {
    // UTF-8, as the server's challenge says (charset="UTF-8"); btoa alone takes Latin-1 only
    const bytes = new TextEncoder().encode(`${user}:${password}`);
    return btoa(String.fromCharCode(...bytes));
  }

  // ------------------------------------------------------------------ status and errors

  function setStatus(text) {
    el.status.textContent = text;
  }

  function showError(kind, text, detail = {}) {
    state.lastError = { kind, message: text, ...detail };
    const li = document.createElement("li");
    li.dataset.code = kind;
    li.textContent = text;
    el.errors.append(li);
    while (el.errors.children.length > ERRORS_SHOWN_MAX) el.errors.firstElementChild.remove();
  }

  function clearErrors() {
    el.errors.replaceChildren();
  }

  function setConn(conn, text) {
    state.conn = conn;
    el.conn.dataset.state = conn;
    el.conn.dataset.reconnects = String(state.reconnects);
    el.conn.textContent = text;
  }

  function updateControls() {
    const loggedIn = state.token !== "";
    el.user.disabled = el.password.disabled = el.login.disabled = loggedIn;
    el.room.disabled = el.join.disabled = !loggedIn;
    el.body.disabled = el.send.disabled = !state.everJoined;
    el.joined.dataset.room = state.joined ? state.room : "";
    el.joined.textContent = state.joined ? `in ${state.room}` : "";
  }

  // ------------------------------------------------------------------ REST: the token

  async function fetchToken() {
    let resp;
    try {
      resp = await fetch(`${state.base}/api/v1/token`, {
        headers: { Authorization: `Basic ${basicCredentials(state.user, state.password)}` },
        cache: "no-store",
        signal: AbortSignal.timeout(TOKEN_FETCH_TIMEOUT_MS),
      });
    } catch (err) {
      if (err.name === "TimeoutError") {
        throw Object.assign(
          new Error(`No answer from ${state.base} within ${TOKEN_FETCH_TIMEOUT_MS / 1000} s.`),
          { kind: "timeout", cause: err },
        );
      }
      // A refused origin and an unreachable server look the same to a page: the browser
      // hides the 403 that carries no Access-Control-Allow-Origin and says only TypeError.
      const sameOrigin = state.base === location.origin;
      const why = sameOrigin
        ? `Could not reach the server at ${state.base}.`
        : `Could not reach the server at ${state.base}, or it refused this page's origin ` +
          `${location.origin}: a page on another origin is let in only when the server's ` +
          `server.origins lists it (or "*").`;
      throw Object.assign(new Error(`${why} (${err.name}: ${err.message})`), {
        kind: "fetch_failed", cause: err,
      });
    }
    const answer = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const code = answer.error || `http_${resp.status}`;
      throw Object.assign(
        new Error(`Log-in refused (${resp.status} ${code}): ${answer.message || resp.statusText}`),
        { kind: code },
      );
    }
    state.token = answer.token;
    state.tokenExpiresAt = Date.now() + 1000 * Number(answer.expires_in_s ?? 0);
  }

  async function onLogin(ev) {
    ev.preventDefault();
    clearErrors();
    const user = el.user.value.trim();
    if (!USER_NAME.test(user)) {
      showError("bad_user", "User: 1 to 64 of A-Z a-z 0-9 _ . -");
      return;
    }
    state.user = user;
    state.password = el.password.value;
    el.login.disabled = true;
    setStatus("Logging in…");
    try {
      await fetchToken();
    } catch (err) {
      el.login.disabled = false;
      setStatus("Not logged in.");
      showError(err.kind || "login_failed", err.message, { name: err.cause?.name || err.name });
      return;
    }
    setStatus(`Logged in as ${state.user}.`);
    updateControls();
    connect();
    el.room.focus();
  }

  // ------------------------------------------------------------------ the socket

  function wsBase() {
    return state.base.replace(/^http/, "ws");
  }

  function connect() {
    clearTimeout(state.timer);
    state.timer = null;
    const url = `${wsBase()}/api/v1/ws?token=${encodeURIComponent(state.token)}`;
    setConn("connecting", "connecting…");
    const ws = new WebSocket(url, [SUBPROTOCOL]);
    state.ws = ws;
    state.opened = false;
    ws.onopen = () => {
      if (ws !== state.ws) return;
      state.opened = true;
      state.attempt = 0;
      setConn("open", state.reconnects ? `open (reconnected ${state.reconnects}×)` : "open");
      if (state.room) sendJoin();
    };
    ws.onmessage = (ev) => {
      if (ws === state.ws) onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== state.ws) return;
      state.ws = null;
      state.joined = false;
      updateControls();
      el.conn.dataset.closeCode = String(ev.code);
      scheduleReconnect(ev.code);
    };
    // an error is always followed by close, where the reconnect is decided
    ws.onerror = () => {};
  }

  function scheduleReconnect(code) {
    const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** state.attempt);
    const delayMs = ceiling / 2 + (Math.random() * ceiling) / 2;
    state.attempt += 1;
    const what = state.opened ? `closed (code ${code})` : "could not connect";
    if (state.hold) {
      state.held = true;
      setConn("closed", `${what}; reconnect on hold`);
      return;
    }
    setConn("closed", `${what}; reconnecting in ${(delayMs / 1000).toFixed(1)} s`);
    state.timer = setTimeout(reconnect, delayMs);
  }

  async function reconnect() {
    state.timer = null;
    state.reconnects += 1;
    // A handshake that failed may have met an expired or unknown token (a restarted
    // server with another secret): ask for a fresh one then, and before it expires.
    if (!state.opened || Date.now() > state.tokenExpiresAt - TOKEN_RENEW_MARGIN_MS) {
      try {
        await fetchToken();
      } catch (err) {
        showError(err.kind || "login_failed", err.message);
        state.opened = false;
        scheduleReconnect(0);
        return;
      }
    }
    connect();
  }

  function transmit(frame) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
    state.ws.send(JSON.stringify(frame));
    return true;
  }

  // ------------------------------------------------------------------ rooms

  function onJoin(ev) {
    ev.preventDefault();
    const room = el.room.value.trim();
    if (room.length < 1 || room.length > 128) {
      showError("bad_room", "Room: 1 to 128 characters");
      return;
    }
    if (room === state.room) {
      if (!state.joined) sendJoin(); // e.g. the last Join was answered `unavailable`
      return;
    }
    if (state.room) {
      transmit({ type: "leave", room: state.room });
      for (const [id, p] of state.pending) if (p.room === state.room) state.pending.delete(id);
      el.log.replaceChildren();
    }
    state.room = room;
    state.joined = false;
    state.contiguous = null;
    state.seen = new Set();
    updateControls();
    sendJoin();
  }

  function sendJoin() {
    const frame = { type: "join", room: state.room };
    if (state.contiguous !== null) frame.since_seq = state.contiguous;
    state.joinSince = frame.since_seq ?? null;
    if (transmit(frame)) {
      setStatus(
        state.joinSince === null
          ? `Joining ${state.room}…`
          : `Joining ${state.room} again; replaying what came after seq ${state.joinSince}…`,
      );
    }
  }

  function onJoined(msg) {
    if (msg.room !== state.room) return;
    state.joined = true;
    state.everJoined = true;
    if (state.contiguous === null) state.contiguous = msg.last_seq; // live from here
    advance();
    updateControls();
    setStatus(`Joined ${msg.room} (last seq ${msg.last_seq}).`);
    for (const p of state.pending.values()) {
      if (p.room === state.room && p.seq === null) transmitSend(p);
    }
    el.body.focus();
  }

  // ------------------------------------------------------------------ seqs seen

  function isSeen(seq) {
    return (state.contiguous !== null && seq <= state.contiguous) || state.seen.has(seq);
  }

  function markSeen(seq) {
    state.seen.add(seq);
    advance();
  }

  function advance() {
    if (state.contiguous === null) return;
    while (state.seen.has(state.contiguous + 1)) state.contiguous += 1;
    for (const seq of state.seen) if (seq <= state.contiguous) state.seen.delete(seq);
  }

  // ------------------------------------------------------------------ lines

  function line(from, body, cls) {
    const li = document.createElement("li");
    li.dataset.from = from;
    li.className = cls;
    if (from === state.user) li.dataset.own = "true";
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = from;
    const text = document.createElement("span");
    text.className = "body";
    text.textContent = body;
    const note = document.createElement("span");
    note.className = "note";
    li.append(who, text, note);
    return li;
  }

  function note(li, text) {
    li.querySelector(".note").textContent = text;
  }

  function place(li, seq) {
    // lines in seq order; lines still waiting for their Ack stay at the end
    li.dataset.seq = String(seq);
    li.title = `seq ${seq}`;
    li.remove();
    let before = null;
    for (let node = el.log.lastElementChild; node; node = node.previousElementSibling) {
      if (node.dataset.seq !== undefined && Number(node.dataset.seq) < seq) break;
      before = node;
    }
    el.log.insertBefore(li, before);
    while (el.log.children.length > LOG_LINES_MAX) el.log.firstElementChild.remove();
    el.log.scrollTop = el.log.scrollHeight;
  }

  // ------------------------------------------------------------------ sending

  function onSend(ev) {
    ev.preventDefault();
    const body = el.body.value;
    if (!body || !state.room) return;
    const id = `${state.idPrefix}-${state.nextId++}`;
    const li = line(state.user, body, "own pending");
    li.dataset.clientMsgId = id;
    li.dataset.state = "sending";
    el.log.append(li);
    el.log.scrollTop = el.log.scrollHeight;
    const p = { id, room: state.room, body, sentAtUs: 0, t0: 0, tries: 0, li, seq: null };
    state.pending.set(id, p);
    el.body.value = "";
    if (!(state.joined && transmitSend(p))) note(li, "waiting for the connection");
  }

  function transmitSend(p) {
    if (p.tries === 0) {
      p.t0 = performance.now();
      p.sentAtUs = Math.round((performance.timeOrigin + p.t0) * 1000);
    }
    const ok = transmit({
      type: "send", client_msg_id: p.id, room: p.room, body: p.body, sent_at_us: p.sentAtUs,
    });
    if (ok) {
      p.tries += 1;
      note(p.li, p.tries > 1 ? `sending again (try ${p.tries})` : "sending…");
    }
    return ok;
  }

  function settle(p, seq) {
    p.seq = seq;
    p.li.classList.remove("pending");
    p.li.dataset.state = "stored";
    place(p.li, seq);
  }

  function onAck(msg) {
    const p = state.pending.get(msg.client_msg_id);
    if (!p || msg.room !== state.room) return;
    state.pending.delete(p.id);
    if (p.seq === null) settle(p, msg.seq);
    const latencyMs = performance.now() - p.t0;
    p.li.dataset.state = "acked";
    p.li.dataset.latencyMs = latencyMs.toFixed(1);
    note(p.li, `ack ${latencyMs < 10 ? latencyMs.toFixed(1) : Math.round(latencyMs)} ms`);
    markSeen(msg.seq);
  }

  function onDeliver(msg) {
    if (msg.room !== state.room || isSeen(msg.seq)) return;
    const p = msg.sender === state.user ? state.pending.get(msg.client_msg_id) : undefined;
    if (p) {
      // our own Send, stored before the socket closed, now replayed: its Ack (to the
      // Send sent again) follows and adds the latency
      settle(p, msg.seq);
    } else {
      place(line(msg.sender, msg.body, msg.sender === state.user ? "own" : "other"), msg.seq);
    }
    markSeen(msg.seq);
  }

  function onErrorFrame(msg) {
    const retry = msg.retry_after_ms ? ` (retry after ${msg.retry_after_ms} ms)` : "";
    showError(msg.code, `${msg.code}: ${msg.message}${retry}`);
    const p = state.pending.get(msg.client_msg_id);
    if (!p) return;
    if (RETRYABLE.has(msg.code) && p.tries < SEND_TRIES_MAX) {
      const waitMs = Math.max(msg.retry_after_ms || 0, RECONNECT_BASE_MS * 2 ** (p.tries - 1));
      p.li.dataset.state = "retrying";
      note(p.li, `${msg.code}; again in ${Math.round(waitMs)} ms`);
      setTimeout(() => {
        if (state.pending.get(p.id) === p && p.seq === null && state.joined) transmitSend(p);
      }, waitMs);
    } else {
      state.pending.delete(p.id);
      p.li.dataset.state = "failed";
      p.li.classList.add("failed");
      note(p.li, `not sent: ${msg.code}`);
    }
  }

  // ------------------------------------------------------------------ frames

  function onFrame(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      showError("bad_frame", "The server sent a frame that is not JSON.");
      return;
    }
    switch (msg.type) {
      case "joined":
        return onJoined(msg);
      case "ack":
        return onAck(msg);
      case "deliver":
        return onDeliver(msg);
      case "history":
        for (const m of msg.messages || []) onDeliver({ ...m, room: m.room || msg.room });
        return;
      case "error":
        return onErrorFrame(msg);
      default: // "left", and kinds newer than this page: nothing to show
    }
  }

  // ------------------------------------------------------------------ start

  function start() {
    try {
      state.base = serverBase();
    } catch (err) {
      el.server.textContent = "?";
      showError("bad_server", err.message);
      el.login.disabled = true;
      return;
    }
    el.server.textContent = state.base;
    el.loginForm.addEventListener("submit", onLogin);
    el.roomForm.addEventListener("submit", onJoin);
    el.sendForm.addEventListener("submit", onSend);
    updateControls();
    el.user.focus();
  }

  window.chatcap = {
    /** Close the socket as if the network dropped it (code 4000); `hold` keeps the page
     * from reconnecting until resume(), so a test can act while it is away. */
    dropSocket({ hold = false } = {}) {
      state.hold = hold;
      if (state.ws) state.ws.close(4000, "dropped by the page's test hook");
    },
    resume() {
      state.hold = false;
      if (state.held) {
        state.held = false;
        reconnect();
      }
    },
    state() {
      return {
        base: state.base, user: state.user, conn: state.conn, room: state.room,
        joined: state.joined, sinceSeq: state.contiguous, pending: state.pending.size,
        reconnects: state.reconnects, lastError: state.lastError,
      };
    },
  };

  start();
})();
