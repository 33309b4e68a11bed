// One WebSocket to this origin's /ws, kept open with the reconnect policy of
// docs/protocol.md: exponential backoff from 0.5 s doubling to 30 s, each wait
// randomised by +-50 % (so a server restart is not met by every client at once),
// reset once a session_state arrives. Knows nothing about the page.
//
// The page's own origin is used, not the join response's websocket_url: the REST port
// serves the same protocol at /ws, so one reverse proxy (and one TLS certificate) is
// enough, and the CSP's connect-src stays "self".

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30000;
const BACKOFF_JITTER = 0.5;
// Application heartbeat: a ping every 20 s; a socket that has said nothing for 50 s is
// dead (a phone that lost its network often never gets a close event) and is replaced.
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 50000;
// After the network comes back or the tab becomes visible again, an open-looking socket
// may be dead: it gets this long to answer a ping before it is replaced.
const PROBE_TIMEOUT_MS = 5000;

// Close codes after which reconnecting with the same token is pointless.
export const FINAL_CLOSES = {
  1000: "left", // we sent leave
  4000: "ended",
  4001: "replaced", // the same participant connected elsewhere (another tab)
  4401: "unauthorized",
  4403: "left", // left or removed over REST
};

export class LiveConnection {
  /**
   * onFrame(type, data); onStatus("connecting" | "open" | "waiting", retryInMs);
   * onStop(reason) for a final close; onRefused() when a socket closed before it ever
   * opened (browsers hide the HTTP status of a refused upgrade: the page asks REST).
   */
  /**
   * `session`: the session id, sent as the `session` query parameter; the server
   * ignores it, a load balancer can route on it (deploy/compose/nginx.conf, #sticky).
   */
  constructor(token, { onFrame, onStatus, onStop, onRefused, onOpen, session }) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams({ token });
    if (session) query.set("session", session);
    this.url = `${scheme}://${location.host}/ws?${query}`;
    Object.assign(this, { onFrame, onStatus, onStop, onRefused, onOpen });
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = 0;
    this.pingTimer = 0;
    this.probeTimer = 0;
    this.lastHeard = 0;
    this.stopped = true; // until start()
    // Network back: do not sit out the rest of a 30 s backoff, and check the open socket.
    this.onOnline = () => {
      if (this.retryTimer) this.reconnectNow();
      else this._probe();
    };
    this.onVisible = () => {
      if (document.visibilityState === "visible") this.onOnline();
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    document.addEventListener("visibilitychange", this.onVisible);
    this._open();
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends one frame if the socket is open; never queues (stale positions are useless). */
  send(type, data) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(data === undefined ? { type } : { type, data }));
    return true;
  }

  /** Ends the connection for good (left, ended, replaced...). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.probeTimer);
    this.retryTimer = this.pingTimer = this.probeTimer = 0;
    window.removeEventListener("online", this.onOnline);
    document.removeEventListener("visibilitychange", this.onVisible);
    if (this.ws) {
      this._detach(this.ws);
      this.ws.close(1000);
      this.ws = null;
    }
  }

  /** Connects again at once: after a stop ("use it here"), or when the network is back. */
  reconnectNow() {
    this.attempt = 0;
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    if (this.ws) {
      this._detach(this.ws);
      this.ws.close();
      this.ws = null;
    }
    if (this.stopped) this.start();
    else this._open();
  }

  _open() {
    if (this.stopped) return;
    this.onStatus("connecting", 0);
    const ws = new WebSocket(this.url);
    let opened = false;
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.lastHeard = Date.now();
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this._heartbeat(), PING_EVERY_MS);
      this.onOpen();
    };
    ws.onmessage = (event) => {
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // the server only sends JSON; ignore anything else rather than crash
      }
      if (frame.type === "session_state") {
        this.attempt = 0;
        this.onStatus("open", 0);
      }
      this.onFrame(frame.type, frame.data || {});
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      const final = FINAL_CLOSES[event.code];
      if (final) {
        this.stop();
        this.onStop(final);
        return;
      }
      if (!opened) this.onRefused();
      this._scheduleRetry();
    };
    // onerror is always followed by onclose, which does the work.
    ws.onerror = () => {};
  }

  _heartbeat() {
    if (!this.ws) return;
    if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) this._replaceDead();
    else this.send("ping");
  }

  _probe() {
    if (!this.isOpen) return;
    const before = this.lastHeard;
    this.send("ping");
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => {
      if (this.lastHeard === before && this.ws) this._replaceDead();
    }, PROBE_TIMEOUT_MS);
  }

  /** A socket that stopped answering: drop it without waiting for a close handshake. */
  _replaceDead() {
    const dead = this.ws;
    this._detach(dead);
    dead.close();
    this.ws = null;
    clearInterval(this.pingTimer);
    this._scheduleRetry();
  }

  _scheduleRetry() {
    if (this.stopped || this.retryTimer) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = base * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * Math.random());
    this.attempt += 1;
    this.onStatus("waiting", delay);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = 0;
      this._open();
    }, delay);
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }
}
