// The join page: the join form, then the live map over /ws (docs/protocol.md).
//
// Resume: the join response (user id + WebSocket token) is kept in this tab's
// sessionStorage, so a reload reconnects as the same participant instead of joining
// twice; a second tab is a second person. Everything user-provided reaches the DOM
// through textContent only.
//
// Places, the route and statuses live in places.js, route.js and status.js; they get a
// small `live` object (below) instead of this module's state.

import { api, confirmDialog, errorMessage, formatAgo, initials, tabStore, tickTimeLeft } from "./common.js";
import { LiveConnection } from "./connection.js";
import { LocMap } from "./map.js";
import { Places } from "./places.js";
import { RouteView } from "./route.js";
import { StatusView, statusLabel } from "./status.js";

// The server's palette (locshare/net/_validation.py): distinct, white initials readable.
const PALETTE = ["#E6194B", "#3CB44B", "#4363D8", "#F58231", "#911EB4", "#469990", "#9A6324", "#800000", "#000075", "#2E86C1"];
const MAX_FIX_AGE_MS = 5 * 60 * 1000; // an older fix is not "where I am" any more
const HINT_PADDING_PX = 48; // room for a pin (radius 19) and its label below it
const RESIZE_SETTLE_MS = 200;
const CONTROLS_GAP_PX = 8; // between the lowest marker's label and the control bar
const AGO_REFRESH_MS = 30000;
const WIDE_SCREEN = "(min-width: 800px)";
const SHOW_ZOOM = 15; // "Show" zooms in at least this far
const TOAST_MS = 8000;
// How to ask the Geolocation API per update_interval reason (docs/design.md, "Pacing").
// The web has no distance filter and no power modes: only GPS or not
// (enableHighAccuracy) and how old a cached fix may be (maximumAge). The interval
// itself is the server's `seconds`.
const PACING = {
  watched: { enableHighAccuracy: true, maximumAge: 1000 },
  stationary: { enableHighAccuracy: false, maximumAge: 5000 },
  at_place: { enableHighAccuracy: false, maximumAge: 10000 },
  nobody_watching: { enableHighAccuracy: false, maximumAge: 15000 },
};
const GEO_TIMEOUT_MS = 30000;
// locate_now: one fresh high-accuracy fix, never a cached one.
const LOCATE_NOW_OPTIONS = { enableHighAccuracy: true, maximumAge: 0, timeout: GEO_TIMEOUT_MS };
// Errors about something the person did: shown, with what the server said.
const ERROR_PREFIX = {
  invalid_place: "Place refused: ",
  invalid_status: "Status refused: ",
  forbidden: "Not allowed: ",
  unavailable: "Not saved: ",
};
// Place and status changes have their own budget (docs/protocol.md, place_add); a
// rate_limited error this soon after one is about it (else about the message rate).
const CHANGES = new Set(["place_add", "place_remove", "set_status"]);
const CHANGE_ERROR_WINDOW_MS = 3000;

const $ = (id) => document.getElementById(id);
const app = $("app");
const sessionId = app.dataset.sessionId;

const state = {
  me: null, // the join response: user_id, websocket_token, display_name, avatar_color
  people: new Map(), // user_id -> participant as in session_state, plus lastKnown {lat, lng}
  limits: { update_interval_s: 2 },
  pace: { seconds: 2, reason: null }, // the latest update_interval (reason null: none yet)
  hint: null, // the latest viewport hint, followed while `following`
  following: true,
  fix: null, // own latest position
  sharing: "off", // asking | starting | on | off | denied | unsupported
  watchId: null,
  leaving: false,
  endedReason: null,
};
let map = null;
let conn = null;
let places = null;
let route = null;
let statuses = null;
let sendTimer = 0;
let lastSentAt = 0;
let resizeTimer = 0;
let toastTimer = 0;
let lastChangeAt = 0;

// --- views ------------------------------------------------------------------------------
function show(view) {
  app.dataset.state = view;
  $("join-view").hidden = view !== "join";
  $("live-view").hidden = view !== "live";
  $("state-view").hidden = ["join", "live"].includes(view);
}

const STATES = {
  ended: ["This session has ended", "", null],
  left: ["You left the session", "The others no longer see you on their map.", "Join again"],
  removed: ["You are no longer in this session", "You were removed, or your place in it is no longer valid.", "Join again"],
  replaced: ["Open in another tab", "This participant is connected from another tab or window.", "Use it here"],
  gone: ["This session no longer exists", "The link may be mistyped, or the session was deleted.", null],
};
const ENDED_TEXT = {
  ended: "Its creator ended it.",
  expired: "It reached the end of its time.",
  inactive: "It ended after a long time without activity.",
};

function showState(kind, reason) {
  if (kind !== "replaced") shutdown(kind);
  const [title, text, action] = STATES[kind];
  $("state-title").textContent = title;
  $("state-text").textContent = kind === "ended" ? ENDED_TEXT[reason] || "It is over." : text;
  $("state-action").hidden = !action;
  $("state-action").textContent = action || "";
  $("state-action").onclick = kind === "replaced" ? useHere : rejoin;
  show(kind);
}

/** Stops everything live; forgets the participant unless it may come back (replaced). */
function shutdown(kind) {
  conn?.stop();
  stopWatching();
  clearTimeout(sendTimer);
  if (kind !== "replaced") {
    tabStore.remove("participant", sessionId);
    tabStore.remove("sharing", sessionId);
  }
  if (kind === "ended" || kind === "gone") tabStore.remove("creator", sessionId);
}

function rejoin() {
  location.reload(); // a fresh page: the stored participant is gone, so the form shows
}

function useHere() {
  show("live");
  conn.reconnectNow();
}

// --- the join form -----------------------------------------------------------------------
/**
 * Whether this device could have the locshare app (Android or iOS): only there does
 * "Open in app" lead anywhere; on a desktop, a locshare:// link does nothing or shows an
 * error. This is a question about the operating system, not the input: (pointer: coarse)
 * would offer the link on Windows tablets and touch-only kiosks and hide it on a tablet
 * with a keyboard. So: Chromium's client hints where they say "mobile" or "Android";
 * otherwise (Safari, Firefox, and Chromium when a user agent is overridden) the user
 * agent string, which still names Android, iPhone, iPad and iPod; iPadOS Safari calls
 * itself "Macintosh", and is told apart from a Mac (no touch screen) by its touch points.
 */
function appCanExist() {
  const hints = navigator.userAgentData;
  if (hints?.mobile || hints?.platform === "Android") return true;
  const ua = navigator.userAgent;
  return /Android|iPhone|iPad|iPod/.test(ua) || (/Macintosh/.test(ua) && navigator.maxTouchPoints > 1);
}

function setupJoinForm() {
  $("app-link").hidden = !appCanExist();
  const name = $("display-name");
  const color = $("color");
  color.value = PALETTE[Math.floor(Math.random() * PALETTE.length)].toLowerCase();
  const preview = () => {
    $("preview").textContent = initials(name.value || "?");
    $("preview").style.backgroundColor = color.value;
  };
  name.addEventListener("input", preview);
  color.addEventListener("input", preview);
  preview();
  $("creator-note").hidden = !tabStore.get("creator", sessionId);
  $("join-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("join-error");
    const displayName = name.value.trim();
    if (!displayName) {
      error.textContent = "Type the name the others should see.";
      error.hidden = false;
      name.focus();
      return;
    }
    $("join").disabled = true;
    const result = await api("POST", `/api/sessions/${sessionId}/join`, {
      body: { display_name: displayName, avatar_color: color.value.toUpperCase() },
    });
    $("join").disabled = false;
    if (result.status === 201) {
      tabStore.set("participant", sessionId, result.body);
      startLive(result.body);
    } else if (result.status === 410) {
      showState("ended", await endedReason());
    } else if (result.status === 404) {
      showState("gone");
    } else {
      const full = result.status === 409 ? "This session is full." : null;
      error.textContent = full || errorMessage(result, "Joining failed. Try again.");
      error.hidden = false;
    }
  });
}

async function endedReason() {
  const result = await api("GET", `/api/sessions/${sessionId}`);
  return result.body?.ended_reason || null;
}

// --- live --------------------------------------------------------------------------------
/** What places.js, route.js and status.js may use of this page. */
const live = {
  sessionId,
  get map() {
    return map;
  },
  send(type, data) {
    if (CHANGES.has(type)) lastChangeAt = Date.now();
    return conn?.send(type, data);
  },
  me: () => state.me,
  people: () => state.people,
  person: (id) => state.people.get(id),
  nameOf: (id) => state.people.get(id)?.display_name || "someone who left",
  creatorToken: () => tabStore.get("creator", sessionId),
  isCreator: () => Boolean(tabStore.get("creator", sessionId)),
  myPosition: () => (state.sharing === "on" && state.fix ? { lat: state.fix.lat, lng: state.fix.lng } : null),
  notify,
  showAt(lat, lng) {
    setFollowing(false);
    map.setView(lat, lng, Math.max(map.zoom, SHOW_ZOOM), { animate: true });
  },
  showPoints(points) {
    setFollowing(false);
    map.fitPoints(points, { padding: HINT_PADDING_PX });
  },
};

/** A short message over the map (what the server refused, and why). */
function notify(text) {
  const toast = $("toast");
  toast.textContent = text;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    toast.hidden = true;
  }, TOAST_MS);
}

function startLive(me) {
  state.me = me;
  app.dataset.userId = me.user_id;
  show("live");
  $("people").open = window.matchMedia(WIDE_SCREEN).matches;
  $("end-session").hidden = !live.isCreator();
  map = new LocMap($("map"), {
    tileUrl: app.dataset.tileUrl,
    attribution: app.dataset.tileAttribution,
    onUserMove: () => setFollowing(false),
    onResize: () => {
      measureSafeArea();
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(sendViewport, RESIZE_SETTLE_MS);
    },
    onTap: (at) => places.tap(at),
    onContext: (at) => places.openForm(at),
  });
  places = new Places(live);
  // Drawing an area from the keyboard: Enter on the map adds its centre as a corner.
  map.el.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && places.tap(map.centerPoint())) e.preventDefault();
  });
  route = new RouteView(live);
  statuses = new StatusView(live);
  route.render();
  measureSafeArea();
  setFollowing(true);
  document.addEventListener("visibilitychange", sendVisibility);
  conn = new LiveConnection(me.websocket_token, {
    session: sessionId,
    onOpen: () => {
      sendViewport();
      sendVisibility(); // a new connection counts as visible until told otherwise
    },
    onFrame: handleFrame,
    onStatus: showConnection,
    onStop: (reason) => {
      if (reason === "ended") showState("ended", state.endedReason);
      else if (reason === "left") showState(state.leaving ? "left" : "removed");
      else if (reason === "replaced") showState("replaced");
      else showState("removed");
    },
    onRefused: checkStanding,
  });
  conn.start();
  const preference = tabStore.get("sharing", sessionId);
  if (preference === "on") startSharing();
  else setSharing(preference === "off" ? "off" : "asking");
  renderNote();
}

/** A socket that never opened: ask REST why (browsers hide the refusal's status). */
async function checkStanding() {
  const result = await api("GET", `/api/sessions/${sessionId}/participants`, { token: state.me.websocket_token });
  if (result.status === 401 || result.status === 403) showState("removed");
  else if (result.status === 404) showState("gone");
  else if (result.status === 410) showState("ended", await endedReason());
  // Anything else (200, offline, 5xx): keep retrying with backoff.
}

function showConnection(status, retryInMs) {
  app.dataset.connection = status;
  const pill = $("conn");
  pill.className = `pill ${status}`;
  pill.textContent =
    status === "open" ? "Live" : status === "connecting" ? "Connecting…" : `Reconnecting in ${Math.ceil(retryInMs / 1000)} s`;
}

function handleFrame(type, data) {
  const people = state.people;
  switch (type) {
    case "session_state": {
      state.limits = data.limits;
      const previous = people;
      state.people = new Map();
      for (const p of data.participants) {
        // Keep a stale person's last position (display only): the server forgot it.
        const lastKnown = p.location || (p.stale ? previous.get(p.user_id)?.lastKnown : null) || null;
        state.people.set(p.user_id, { ...p, status: p.status || null, lastKnown });
      }
      for (const id of previous.keys()) if (!state.people.has(id)) removePerson(id);
      state.hint = data.viewport;
      if (state.following) follow(false);
      sendFix(true); // a new connection: the latest position at once
      // The base interval until the first update_interval; after a reconnect, the last
      // one holds until the server sends the next (right after this frame).
      const { seconds, reason } = state.pace;
      setPace(reason === null ? state.limits.update_interval_s : seconds, reason);
      for (const p of state.people.values()) renderPerson(p);
      places.reset(data.places || [], data.arrivals || []);
      route.reset(data.route || null, data.convoy || null);
      break;
    }
    case "locations":
      for (const u of data.updates) {
        const p = people.get(u.user_id);
        if (!p) continue;
        Object.assign(p, { location: u, stale: false, last_seen: u.timestamp, lastKnown: u });
        renderPerson(p);
      }
      break;
    case "participant_joined":
      people.set(data.user_id, { ...data, location: null, stale: false, last_seen: data.joined_at, lastKnown: null });
      renderPerson(people.get(data.user_id));
      break;
    case "participant_left":
      people.delete(data.user_id);
      removePerson(data.user_id);
      places.handle(type, data);
      route.handle(type, data);
      break;
    case "presence":
      if (people.has(data.user_id)) {
        people.get(data.user_id).online = data.online;
        renderPerson(people.get(data.user_id));
      }
      break;
    case "participant_stale":
      if (people.has(data.user_id)) {
        Object.assign(people.get(data.user_id), { stale: true, location: null, last_seen: data.last_seen });
        renderPerson(people.get(data.user_id));
      }
      break;
    case "viewport":
      state.hint = data;
      if (state.following) follow(true);
      break;
    case "session_ended":
      state.endedReason = data.reason;
      showState("ended", data.reason);
      break;
    case "update_interval":
      setPace(data.seconds, data.reason);
      break;
    case "locate_now":
      locateNow();
      break;
    case "status":
      if (data.user_id === state.me.user_id) $("toast").hidden = true;
      if (people.has(data.user_id)) {
        people.get(data.user_id).status = data.status ? { status: data.status, text: data.text, at: data.at } : null;
        renderPerson(people.get(data.user_id));
      }
      break;
    case "place_added":
      if (data.author === state.me.user_id) $("toast").hidden = true; // an older refusal is moot
      places.handle(type, data);
      break;
    case "place_removed":
    case "arrived":
    case "departed":
      places.handle(type, data);
      break;
    case "route_set":
    case "route_cleared":
    case "convoy":
      route.handle(type, data);
      break;
    case "error":
      // Refusals of what the person did are shown; a refused location update is not.
      if (ERROR_PREFIX[data.code]) notify(ERROR_PREFIX[data.code] + (data.message || data.code));
      else if (data.code === "rate_limited" && Date.now() - lastChangeAt < CHANGE_ERROR_WINDOW_MS) {
        notify("Too many changes at once: wait a moment and try again.");
      }
      return;
    default: // pong, newer message types
      return;
  }
  renderNote();
  statuses.render();
}

// --- following the server's viewport hints -------------------------------------------------
function setFollowing(on) {
  state.following = on;
  $("fit-all").setAttribute("aria-pressed", String(on));
  map.el.dataset.following = String(on);
  if (on) follow(true);
}

function follow(animate) {
  if (state.hint) {
    map.setView(state.hint.center.lat, state.hint.center.lng, state.hint.zoom, { animate });
  } else {
    // Nobody is fresh, so there is no hint: show whoever we still have a last position for.
    const known = [...state.people.values()].map((p) => p.lastKnown).filter(Boolean);
    map.fitPoints(known, { padding: HINT_PADDING_PX, animate });
  }
}

/** The strip the control bar covers; hints are fitted to the map above it. */
function measureSafeArea() {
  const mapBottom = map.el.getBoundingClientRect().bottom;
  const barTop = $("map-controls").getBoundingClientRect().top;
  map.safeBottom = Math.max(0, Math.round(mapBottom - barTop) + CONTROLS_GAP_PX);
}

function sendViewport() {
  if (!conn?.isOpen || !map) return;
  const width = Math.min(16384, Math.max(64, Math.round(map.width)));
  const height = Math.min(16384, Math.max(64, Math.round(map.height - map.safeBottom)));
  const padding = Math.max(0, Math.min(HINT_PADDING_PX, Math.floor((Math.min(width, height) - 1) / 2)));
  // include_places: the server's fit covers the meeting points and areas too, so the
  // camera shows where the group is going, not only where it is.
  conn.send("viewport_size", { width, height, padding, include_places: true });
}

// --- people: markers and the list --------------------------------------------------------------
function statusText(p) {
  if (p.location) return p.location.accuracy ? `sharing · ±${Math.round(p.location.accuracy)} m` : "sharing";
  if (p.stale) return `last seen ${formatAgo(new Date(p.last_seen))}`;
  return p.online ? "not sharing" : "offline";
}

function renderPerson(p) {
  const isMe = p.user_id === state.me.user_id;
  const position = p.location || (p.stale ? p.lastKnown : null);
  if (position) {
    map.setMarker(p.user_id, {
      lat: position.lat,
      lng: position.lng,
      accuracy: p.location?.accuracy ?? null,
      color: p.avatar_color,
      initials: initials(p.display_name),
      name: isMe ? `${p.display_name} (you)` : p.display_name,
      note: p.stale ? `last seen ${formatAgo(new Date(p.last_seen))}` : statusLabel(p.status),
      stale: p.stale,
      self: isMe,
    });
  } else {
    map.removeMarker(p.user_id);
  }
  let row = $("people-list").querySelector(`li[data-user-id="${CSS.escape(p.user_id)}"]`);
  if (!row) {
    row = document.createElement("li");
    row.dataset.userId = p.user_id;
    const who = element("span", "who", element("span", "name"), element("span", "chip"), element("span", "status"));
    const button = element("button", "small show");
    button.type = "button";
    row.append(element("span", "avatar"), who, button);
    row.querySelector(".show").addEventListener("click", () => {
      const target = state.people.get(p.user_id);
      const at = target?.location || (target?.stale && target.lastKnown);
      if (!at) return;
      setFollowing(false);
      map.setView(at.lat, at.lng, Math.max(map.zoom, 15), { animate: true });
    });
    if (isMe) $("people-list").prepend(row);
    else $("people-list").append(row);
  }
  row.classList.toggle("stale", p.stale);
  row.classList.toggle("offline", !p.online);
  const avatar = row.querySelector(".avatar");
  avatar.textContent = initials(p.display_name);
  avatar.style.backgroundColor = p.avatar_color;
  row.querySelector(".name").textContent = isMe ? `${p.display_name} (you)` : p.display_name;
  const chip = row.querySelector(".chip");
  chip.textContent = statusLabel(p.status);
  chip.hidden = !p.status;
  chip.dataset.status = p.status?.status || "";
  row.querySelector(".status").textContent = isMe && state.sharing !== "on" && !p.location ? "you are not sharing" : statusText(p);
  const showButton = row.querySelector(".show");
  showButton.textContent = "Show";
  showButton.setAttribute("aria-label", `Show ${p.display_name} on the map`);
  showButton.hidden = !position;
}

function element(tag, className, ...children) {
  const el = document.createElement(tag);
  el.className = className;
  el.append(...children);
  return el;
}

function removePerson(id) {
  map?.removeMarker(id);
  $("people-list").querySelector(`li[data-user-id="${CSS.escape(id)}"]`)?.remove();
}

function renderNote() {
  if (!map) return;
  const count = state.people.size;
  $("people-count").textContent = String(count);
  const note = $("map-note");
  note.hidden = map.markers.size > 0;
  note.textContent = count > 1 ? "Nobody is sharing a location right now." : "Waiting for locations…";
}

// --- own location ------------------------------------------------------------------------
const SHARE_TEXT = {
  asking: "Not sharing your location yet",
  starting: "Waiting for your location…",
  on: "Sharing your location",
  off: "Watching only: not sharing your location",
  denied: "Watching only: location permission was refused. Allow it for this site in the browser settings to share.",
  unsupported: "Watching only: this browser cannot share its location",
};

function setSharing(mode) {
  state.sharing = mode;
  app.dataset.sharing = mode;
  $("share-ask").hidden = mode !== "asking";
  $("share-text").textContent = SHARE_TEXT[mode];
  $("share-state").className = `share-state ${mode}`;
  $("share-start").hidden = !["off", "denied"].includes(mode);
  $("share-stop").hidden = !["on", "starting"].includes(mode);
  $("center-me").disabled = mode !== "on";
  places?.setHere(mode === "on" && Boolean(state.fix));
  showPace();
  if (state.me && state.people.has(state.me.user_id)) renderPerson(state.people.get(state.me.user_id));
}

function startSharing() {
  tabStore.set("sharing", sessionId, "on");
  if (!("geolocation" in navigator)) return setSharing("unsupported");
  setSharing("starting");
  stopWatching();
  state.watchId = navigator.geolocation.watchPosition(onFix, onFixError, geoOptions());
}

function geoOptions(reason = state.pace.reason) {
  return { ...(PACING[reason] || PACING.watched), timeout: GEO_TIMEOUT_MS };
}

/**
 * Follows update_interval: send every `seconds` (at once if the last one is older than
 * that: a speed-up takes effect now), and ask the Geolocation API for what the reason
 * needs (a new watch only if that changed). `reason` null: session_state's base interval.
 */
function setPace(seconds, reason) {
  const before = geoOptions();
  state.pace = { seconds, reason: reason in PACING ? reason : null };
  app.dataset.interval = String(seconds);
  app.dataset.pace = state.pace.reason || "";
  scheduleSend(); // at once if the last send is older than the new interval
  const after = geoOptions();
  if (state.watchId !== null && (before.enableHighAccuracy !== after.enableHighAccuracy || before.maximumAge !== after.maximumAge)) {
    navigator.geolocation.clearWatch(state.watchId);
    state.watchId = navigator.geolocation.watchPosition(onFix, onFixError, after);
  }
  showPace();
}

const PACE_TEXT = {
  stationary: "you are standing still",
  at_place: "you are at a meeting point",
  nobody_watching: "nobody is looking",
};

function showPace() {
  if (state.sharing !== "on") return;
  const { seconds, reason } = state.pace;
  const why = PACE_TEXT[reason];
  $("share-text").textContent = why ? `Sharing every ${seconds} s: ${why}` : `${SHARE_TEXT.on} every ${seconds} s`;
}

/** locate_now: someone started looking; one fresh fix, sent at once. */
function locateNow() {
  if (state.sharing !== "on" || !("geolocation" in navigator)) return;
  navigator.geolocation.getCurrentPosition(
    (position) => {
      takeFix(position);
      sendFix(true);
    },
    () => {}, // no fresh fix: the watch goes on as before
    LOCATE_NOW_OPTIONS,
  );
}

function sendVisibility() {
  conn?.send("visibility", { visible: document.visibilityState === "visible" });
}

function stopWatching() {
  if (state.watchId !== null) navigator.geolocation.clearWatch(state.watchId);
  state.watchId = null;
}

function stopSharing(mode = "off") {
  stopWatching();
  state.fix = null;
  tabStore.set("sharing", sessionId, "off");
  setSharing(mode);
}

const inRange = (v, lo, hi) => (Number.isFinite(v) && v >= lo && v <= hi ? v : null);

function takeFix(position) {
  const c = position.coords;
  state.fix = {
    lat: c.latitude,
    lng: c.longitude,
    accuracy: inRange(c.accuracy, 0, 1e7),
    heading: inRange(c.heading, 0, 360),
    speed: inRange(c.speed, 0, 1e4),
    time: position.timestamp,
  };
}

function onFix(position) {
  takeFix(position);
  if (state.sharing !== "on") setSharing("on");
  // Send at once unless one went out within the interval; the timer sends the rest.
  sendFix();
}

function onFixError(error) {
  if (error.code === error.PERMISSION_DENIED) stopSharing("denied");
  // TIMEOUT / POSITION_UNAVAILABLE: the watch keeps trying; the text already says "waiting".
}

/**
 * The latest fix only: nothing is queued while offline (docs/protocol.md). Never sooner
 * than the interval after the last one, unless `now` (a new connection, locate_now).
 * Returns whether it sent; each send schedules the next one an interval later.
 */
function sendFix(now = false) {
  const fix = state.fix;
  if (!fix || state.sharing !== "on" || Date.now() - fix.time > MAX_FIX_AGE_MS) return false;
  if (!now && Date.now() - lastSentAt < state.pace.seconds * 1000) return false;
  const { lat, lng, accuracy, heading, speed } = fix;
  if (!conn?.send("location_update", { lat, lng, accuracy, heading, speed, timestamp: new Date(fix.time).toISOString() })) return false;
  lastSentAt = Date.now();
  scheduleSend();
  return true;
}

/**
 * One timer: the next send is due an interval after the last one (so a new interval
 * applies at once); with nothing to send then, it tries again an interval later (and a
 * new fix is sent as soon as it is due).
 */
function scheduleSend(delay = Math.max(0, lastSentAt + state.pace.seconds * 1000 - Date.now())) {
  clearTimeout(sendTimer);
  sendTimer = setTimeout(() => {
    if (!sendFix(true)) scheduleSend(state.pace.seconds * 1000);
  }, delay);
}

// --- buttons ------------------------------------------------------------------------------
function setupControls() {
  $("share-yes").addEventListener("click", startSharing);
  $("share-start").addEventListener("click", startSharing);
  $("share-no").addEventListener("click", () => stopSharing("off"));
  $("share-stop").addEventListener("click", () => stopSharing("off"));
  $("zoom-in").addEventListener("click", () => map.zoomBy(1));
  $("zoom-out").addEventListener("click", () => map.zoomBy(-1));
  $("fit-all").addEventListener("click", () => setFollowing(true));
  $("center-me").addEventListener("click", () => {
    const mine = state.fix || state.people.get(state.me.user_id)?.location;
    if (!mine) return;
    setFollowing(false);
    map.setView(mine.lat, mine.lng, Math.max(map.zoom, 15), { animate: true });
  });
  $("leave").addEventListener("click", async () => {
    if (!(await confirmDialog("Leave this session? The others will see that you left.", "Leave"))) return;
    state.leaving = true;
    const me = state.me;
    const result = await api("DELETE", `/api/sessions/${sessionId}/participants/${me.user_id}`, { token: me.websocket_token });
    if ([204, 401, 404, 410].includes(result.status)) showState("left");
    else {
      state.leaving = false;
      $("map-note").hidden = false;
      $("map-note").textContent = errorMessage(result, "Leaving failed. Try again.");
    }
  });
  $("end-session").addEventListener("click", async () => {
    if (!(await confirmDialog("End this session for everyone? Every map closes and the link stops working.", "End session"))) return;
    const result = await api("DELETE", `/api/sessions/${sessionId}`, { token: tabStore.get("creator", sessionId) });
    if (result.status === 204 || result.status === 410) showState("ended", "ended");
    else {
      $("map-note").hidden = false;
      $("map-note").textContent = errorMessage(result, "Ending the session failed.");
    }
  });
}

// --- start -------------------------------------------------------------------------------
setupControls();
tickTimeLeft(app.dataset.expiresAt, () => {
  if (app.dataset.state === "join") showState("ended", "expired");
});
setInterval(() => {
  if (map) for (const p of state.people.values()) if (p.stale) renderPerson(p);
}, AGO_REFRESH_MS);
const stored = tabStore.get("participant", sessionId);
if (stored?.websocket_token) startLive(stored);
else setupJoinForm();
