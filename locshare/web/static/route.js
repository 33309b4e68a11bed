// The convoy's route and who is where along it (docs/protocol.md, route_set, convoy):
// the simplified line on the map, the order from the leader to the tail with the gaps
// between riders, and "off route" badges. The creator's tab also sets the route (a GPX
// or GeoJSON file, PUT as it is with its content type) and clears it, over REST.

import { api, confirmDialog, errorMessage, formatDistance, formatSeconds, initials } from "./common.js";

const $ = (id) => document.getElementById(id);

/** The Content-Type the server expects for a route file: by its name, else by its first character. */
export async function routeContentType(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith(".gpx")) return "application/gpx+xml";
  if (name.endsWith(".geojson")) return "application/geo+json";
  if (name.endsWith(".json")) return "application/json";
  const head = (await file.slice(0, 64).text()).trimStart();
  return head.startsWith("<") ? "application/gpx+xml" : "application/geo+json";
}

export class RouteView {
  /** live: {map, me(), nameOf(id), person(id), isCreator(), creatorToken(), sessionId, notify(text), showPoints(points)}. */
  constructor(live) {
    this.live = live;
    this.route = null; // as in route_set
    this.convoy = null; // as in convoy
    $("route-show").addEventListener("click", () => {
      if (this.route) this.live.showPoints(this._points());
    });
    $("route-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.upload();
    });
    $("route-clear").addEventListener("click", () => this.clear());
  }

  reset(route, convoy) {
    this.route = route;
    this.convoy = convoy;
    this.render();
  }

  handle(type, data) {
    if (type === "route_set") this.route = data;
    else if (type === "route_cleared") this.route = this.convoy = null;
    else if (type === "convoy") this.convoy = data;
    else if (type !== "participant_left") return;
    this.render();
  }

  _points() {
    return this.route.geometry.coordinates.map(([lng, lat]) => ({ lat, lng }));
  }

  render() {
    const creator = this.live.isCreator();
    const route = this.route;
    $("route").hidden = !route && !creator;
    $("route-form").hidden = !creator;
    $("route-clear").hidden = !route;
    $("route-show").hidden = !route;
    $("route-info").textContent = route ? formatDistance(route.length_m) : "";
    if (route) this.live.map.setShape("route", { type: "line", points: this._points(), className: "route" });
    else this.live.map.removeShape("route");
    this._renderConvoy();
  }

  _renderConvoy() {
    const list = $("convoy-list");
    const convoy = this.route ? this.convoy : null;
    const order = convoy?.order || [];
    const off = new Map((convoy?.off_route || []).map((o) => [o.user_id, o.distance_m]));
    // Off route riders not in the order (if the server leaves them out) go last.
    const ids = [...order, ...[...off.keys()].filter((id) => !order.includes(id))];
    $("route-empty").hidden = ids.length > 0;
    $("route-empty").textContent = this.route ? "Nobody is sharing a position on the route right now." : "No route yet.";
    list.replaceChildren(
      ...ids.map((id, i) => {
        const p = this.live.person(id);
        const li = document.createElement("li");
        li.dataset.userId = id;
        const avatar = document.createElement("span");
        avatar.className = "avatar";
        avatar.textContent = initials(p?.display_name || "?");
        if (p) avatar.style.backgroundColor = p.avatar_color;
        const who = document.createElement("span");
        who.className = "who";
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = id === this.live.me().user_id ? `${this.live.nameOf(id)} (you)` : this.live.nameOf(id);
        const gap = document.createElement("span");
        gap.className = "status gap";
        gap.textContent = this._gapText(order, i);
        who.append(name, gap);
        li.append(avatar, who);
        if (off.has(id)) {
          const badge = document.createElement("span");
          badge.className = "badge warn off-route";
          badge.textContent = `off route · ${formatDistance(off.get(id))}`;
          li.append(badge);
        }
        return li;
      }),
    );
  }

  /** "leader", or how far behind the rider ahead: "420 m behind Ann · 35 s". */
  _gapText(order, i) {
    if (i >= order.length) return "";
    if (i === 0) return order.length > 1 ? "leader" : "alone on the route";
    const metres = this.convoy.gaps_m[i - 1];
    const seconds = this.convoy.gaps_s?.[i - 1];
    const time = seconds === null || seconds === undefined ? "" : ` · ${formatSeconds(seconds)}`;
    const tail = i === order.length - 1 ? " (tail)" : "";
    return `${formatDistance(metres)} behind ${this.live.nameOf(order[i - 1])}${time}${tail}`;
  }

  // --- the creator's controls ----------------------------------------------------------------
  async upload() {
    const file = $("route-file").files[0];
    const error = $("route-error");
    const fail = (text) => {
      error.textContent = text;
      error.hidden = false;
    };
    if (!file) return fail("Choose a GPX or GeoJSON file.");
    const threshold = $("off-route-m").value.trim();
    const query = threshold ? `?off_route_m=${encodeURIComponent(threshold)}` : "";
    $("route-upload").disabled = true;
    const result = await api("PUT", `/api/sessions/${this.live.sessionId}/route${query}`, {
      body: file,
      contentType: await routeContentType(file),
      token: this.live.creatorToken(),
    });
    $("route-upload").disabled = false;
    if (result.status !== 200) return fail(errorMessage(result, "The route could not be set."));
    error.hidden = true;
    $("route-file").value = "";
    // The route itself arrives as route_set, like everyone else's.
  }

  async clear() {
    if (!(await confirmDialog("Clear the route for everyone?", "Clear route"))) return;
    const result = await api("DELETE", `/api/sessions/${this.live.sessionId}/route`, { token: this.live.creatorToken() });
    if (result.status !== 204) this.live.notify(errorMessage(result, "The route could not be cleared."));
  }
}
