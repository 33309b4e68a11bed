// The `baseline` scenario as a k6 script: a cross-check of the Python load client.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 benchmarks/k6/baseline.js
//   python -m benchmarks k6 [--quick]     (starts a server, runs this, then ours)
//
// Environment: BASE_URL (REST, required), WS_URL (optional: replaces the
// websocket_url handed out by join, e.g. ws://host:8080/ws for the single port),
// PARTICIPANTS (50), INTERVAL_S (2), DURATION_S (600), SETTLE_S (5), DRAIN_S (3).
//
// One session, one VU per participant. Every VU connects, waits SETTLE_S so that all
// are connected, sends a location_update every INTERVAL_S (phases spread over the
// interval) for DURATION_S, then listens DRAIN_S more and closes. Metrics:
//   update_latency        ms from the sender's stamp to receipt (Date.now(), ms)
//   updates_sent          location updates sent
//   updates_received      location entries received in `locations` frames
//   connect_to_state      ms from opening the socket to `session_state`
// Delivery ratio = updates_received / (updates_sent * PARTICIPANTS) (echo included).
import http from "k6/http";
import ws from "k6/ws";
import { check } from "k6";
import { Counter, Trend } from "k6/metrics";

const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8080";
const WS_URL = __ENV.WS_URL || "";
const PARTICIPANTS = parseInt(__ENV.PARTICIPANTS || "50", 10);
const INTERVAL_S = parseFloat(__ENV.INTERVAL_S || "2");
const DURATION_S = parseFloat(__ENV.DURATION_S || "600");
const SETTLE_S = parseFloat(__ENV.SETTLE_S || "5");
const DRAIN_S = parseFloat(__ENV.DRAIN_S || "3");

const updateLatency = new Trend("update_latency", true);
const connectToState = new Trend("connect_to_state", true);
const updatesSent = new Counter("updates_sent");
const updatesReceived = new Counter("updates_received");

export const options = {
  scenarios: {
    baseline: {
      executor: "per-vu-iterations",
      vus: PARTICIPANTS,
      iterations: 1,
      maxDuration: `${Math.ceil(SETTLE_S + DURATION_S + DRAIN_S + 120)}s`,
    },
  },
  setupTimeout: "120s",
  summaryTrendStats: ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)"],
};

const JSON_HEADERS = { headers: { "Content-Type": "application/json" } };

export function setup() {
  const made = http.post(
    `${BASE_URL}/api/sessions`,
    JSON.stringify({ name: "k6 baseline", max_participants: 50 }),
    JSON_HEADERS,
  );
  check(made, { "session created": (r) => r.status === 201 });
  const sessionId = made.json("session_id");
  const participants = [];
  for (let i = 0; i < PARTICIPANTS; i++) {
    const joined = http.post(
      `${BASE_URL}/api/sessions/${sessionId}/join`,
      JSON.stringify({ display_name: `k6 rider ${i}` }),
      JSON_HEADERS,
    );
    check(joined, { joined: (r) => r.status === 201 });
    const url = WS_URL || joined.json("websocket_url");
    participants.push(`${url}?token=${joined.json("websocket_token")}`);
  }
  // Every VU starts sending at the same wall-clock time, after all have connected.
  return { participants, startAt: Date.now() + SETTLE_S * 1000 };
}

// "2026-11-20T12:00:00.123456Z" -> epoch ms with a fraction (Date.parse keeps ms).
function stampMs(text) {
  const millis = Date.parse(text.slice(0, 23) + "Z");
  const rest = text.slice(23, -1);
  return rest ? millis + parseInt(rest, 10) / Math.pow(10, rest.length) : millis;
}

export default function (data) {
  const url = data.participants[__VU - 1];
  const opened = Date.now();
  let lat = 45.0 + Math.random() * 0.01;
  let lng = 6.0 + Math.random() * 0.01;
  const response = ws.connect(url, {}, function (socket) {
    let sending = false;
    socket.on("message", function (raw) {
      const now = Date.now();
      const message = JSON.parse(raw);
      if (message.type === "session_state") {
        connectToState.add(now - opened);
      } else if (message.type === "locations") {
        for (const entry of message.data.updates) {
          updatesReceived.add(1);
          updateLatency.add(now - stampMs(entry.timestamp));
        }
      }
    });
    const send = function () {
      if (!sending) return;
      lat += (Math.random() - 0.5) * 0.0004;
      lng += (Math.random() - 0.5) * 0.0004;
      socket.send(
        JSON.stringify({
          type: "location_update",
          data: { lat, lng, accuracy: 8.5, heading: 87.0, speed: 13.9, timestamp: new Date().toISOString() },
        }),
      );
      updatesSent.add(1);
    };
    const phaseMs = Math.random() * INTERVAL_S * 1000;
    socket.setTimeout(function () {
      sending = true;
      send();
      socket.setInterval(send, INTERVAL_S * 1000);
    }, Math.max(0, data.startAt - Date.now()) + phaseMs);
    socket.setTimeout(function () {
      sending = false;
    }, Math.max(0, data.startAt - Date.now()) + DURATION_S * 1000);
    socket.setTimeout(function () {
      socket.close(1000);
    }, Math.max(0, data.startAt - Date.now()) + (DURATION_S + DRAIN_S) * 1000);
  });
  check(response, { "status 101": (r) => r && r.status === 101 });
}
