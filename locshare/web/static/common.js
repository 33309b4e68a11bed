// Helpers shared by the landing page and the join page: REST calls, per-tab storage,
// and the little text formatting both pages need. No DOM access beyond arguments.

/**
 * Calls the REST API. Resolves to {status, body}; status 0 means "no answer" (offline).
 * `body` is sent as JSON, unless `contentType` is given: then it goes as it is (a File).
 */
export async function api(method, path, { body, token, contentType } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = contentType || "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : contentType ? body : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    return { status: 0, body: null };
  }
  let parsed = null;
  if (response.status !== 204) {
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
  }
  return { status: response.status, body: parsed };
}

/** The server's error message, or a fallback that says what to do. */
export function errorMessage(result, fallback) {
  if (result.status === 0) return "The server cannot be reached. Check your connection and try again.";
  return result.body?.error?.message || fallback;
}

// sessionStorage is per tab: a reload keeps the participant, a second tab (or another
// person on the same computer) joins as someone new. It can throw (storage disabled),
// in which case the page still works, just without resuming.
const PREFIX = "locshare.";

export const tabStore = {
  get(kind, sessionId) {
    try {
      const raw = sessionStorage.getItem(`${PREFIX}${kind}.${sessionId}`);
      return raw === null ? null : JSON.parse(raw);
    } catch {
      return null;
    }
  },
  set(kind, sessionId, value) {
    try {
      sessionStorage.setItem(`${PREFIX}${kind}.${sessionId}`, JSON.stringify(value));
    } catch {
      /* storage unavailable: nothing to resume later, which is acceptable */
    }
  },
  remove(kind, sessionId) {
    try {
      sessionStorage.removeItem(`${PREFIX}${kind}.${sessionId}`);
    } catch {
      /* see set() */
    }
  },
};

/** Up to two letters for a marker: "Ann Lee" -> "AL", "bob" -> "BO", "🚲 Max" -> "🚲M". */
export function initials(name) {
  const graphemes = (text) =>
    typeof Intl.Segmenter === "function"
      ? Array.from(new Intl.Segmenter().segment(text), (s) => s.segment)
      : Array.from(text);
  const words = name.trim().split(/\s+/u).filter(Boolean);
  if (words.length === 0) return "?";
  const letters =
    words.length === 1
      ? graphemes(words[0]).slice(0, 2)
      : [graphemes(words[0])[0], graphemes(words[words.length - 1])[0]];
  return letters.join("").toLocaleUpperCase();
}

/** "5 h 12 min", "12 min", "less than a minute" (the server renders the same). */
export function formatDuration(ms) {
  const minutes = Math.floor(ms / 60000);
  if (minutes < 1) return "less than a minute";
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  if (hours && rest) return `${hours} h ${rest} min`;
  return hours ? `${hours} h` : `${rest} min`;
}

/** "420 m", "4.2 km", "42 km". */
export function formatDistance(metres) {
  if (metres < 1000) return `${Math.round(metres)} m`;
  const km = metres / 1000;
  return `${km < 10 ? km.toFixed(1) : Math.round(km)} km`;
}

/** "35 s", "4 min", "1 h 5 min". */
export function formatSeconds(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  return formatDuration(seconds * 1000);
}

/** "just now", "3 min ago", "2 h ago". */
export function formatAgo(date, now = Date.now()) {
  const seconds = Math.max(0, (now - date.getTime()) / 1000);
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

/** Keeps every <time class="time-left"> current; calls onOver once the time is up. */
export function tickTimeLeft(expiresAt, onOver) {
  const end = new Date(expiresAt).getTime();
  const update = () => {
    const left = end - Date.now();
    for (const el of document.querySelectorAll("time.time-left")) {
      el.textContent = formatDuration(Math.max(0, left));
    }
    if (left <= 0 && onOver) {
      onOver();
      onOver = null;
    }
  };
  update();
  return setInterval(update, 15000);
}

/** A modal yes/no question on the page's <dialog id="confirm">; resolves to a boolean. */
export function confirmDialog(text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}
