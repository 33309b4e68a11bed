// Places (docs/protocol.md, place_added ...): meeting points, hazards and the like, on
// the map (a circle of its radius or its polygon, and an icon per kind) and in a list;
// who is at which place ("Ann is here"); the form to add one at a point of the map or
// at my position; drawing an area by tapping its corners.
//
// Adding and removing go over the socket (place_add, place_remove); the server's
// answer is the place_added / place_removed everyone gets, or an error the page shows.
// Only the creator's tab removes other people's places, over REST with its token.

import { api, confirmDialog, errorMessage } from "./common.js";

// One stroke icon per kind (24 x 24, drawn with currentColor: colours are in app.css).
export const KINDS = {
  meet: { label: "Meeting point", icon: "M6 21V4M6 4h12l-3 4.5L18 13H6" },
  poi: { label: "Point of interest", icon: "M12 3.5l2.6 5.4 5.9.8-4.3 4.1 1 5.8L12 16.8l-5.2 2.8 1-5.8-4.3-4.1 5.9-.8z" },
  hazard: { label: "Hazard", icon: "M12 3.5L2.5 20h19zM12 10v4.5M12 17.2v.3" },
  parking: { label: "Parking", icon: "M4 4h16v16H4zM9.5 17V7h3.5a3 3 0 010 6H9.5" },
  fuel: { label: "Fuel", icon: "M5 20V5.5A1.5 1.5 0 016.5 4h6A1.5 1.5 0 0114 5.5V20M3.5 20h12M5 10h9M14 8.5l3 3V17a1.5 1.5 0 003 0V9.5l-3-3" },
  food: { label: "Food", icon: "M7 3v18M4.5 3v5a2.5 2.5 0 005 0V3M16.5 21V3c-2.2 1.2-3.5 4-3.5 7.5 0 1.4.9 2.5 2.3 2.5h1.2" },
};
const RADIUS_M = { min: 10, max: 2000, default: 50 }; // the server's rules
const NAME_MAX = 60;
const MIN_CORNERS = 3;
const MAX_CORNERS = 500;
// 7 decimals are 1 cm, and keep 500 corners inside one 16 KiB message (docs/protocol.md).
const round7 = (degrees) => Math.round(degrees * 1e7) / 1e7;
const SVG_NS = "http://www.w3.org/2000/svg";
const M_PER_DEG_LAT = 111320;

const $ = (id) => document.getElementById(id);

export function kindIcon(kind) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", (KINDS[kind] || KINDS.poi).icon);
  svg.append(path);
  return svg;
}

/** "Ann is here", "You and Bob are here", "Ann, Bob and 3 more are here". */
export function hereText(names) {
  const shown = names.length > 3 ? [...names.slice(0, 2), `${names.length - 2} more`] : names;
  const list = shown.length === 1 ? shown[0] : `${shown.slice(0, -1).join(", ")} and ${shown.at(-1)}`;
  return `${list} ${names.length === 1 && names[0] !== "You" ? "is" : "are"} here`;
}

/** A GeoJSON ring as [{lat, lng}], without its closing point. */
function toRing(coordinates) {
  const ring = coordinates.map(([lng, lat]) => ({ lat, lng }));
  const [first, last] = [ring[0], ring.at(-1)];
  return ring.length > 1 && first.lat === last.lat && first.lng === last.lng ? ring.slice(0, -1) : ring;
}

/** A polygon's outline (its exterior ring). */
function ringOf(place) {
  return toRing(place.geometry.coordinates[0]);
}

/** Where a place's icon goes: a circle's centre, or the mean of a polygon's vertices. */
function anchorOf(place) {
  if (place.geometry.type === "Point") {
    const [lng, lat] = place.geometry.coordinates;
    return { lat, lng };
  }
  const ring = ringOf(place);
  const lng0 = ring[0].lng;
  const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;
  // Longitudes relative to the first vertex, so a polygon across the antimeridian works.
  const lng = lng0 + mean(ring.map((p) => ((((p.lng - lng0 + 540) % 360) + 360) % 360) - 180));
  return { lat: mean(ring.map((p) => p.lat)), lng: ((((lng + 180) % 360) + 360) % 360) - 180 };
}

/** Points to fit the view to: a polygon's vertices, or a circle's bounding box. */
function extentOf(place) {
  if (place.geometry.type !== "Point") return ringOf(place);
  const { lat, lng } = anchorOf(place);
  const dLat = place.radius_m / M_PER_DEG_LAT;
  const dLng = dLat / Math.max(0.01, Math.cos((lat * Math.PI) / 180));
  return [
    { lat: lat - dLat, lng: lng - dLng },
    { lat: lat + dLat, lng: lng + dLng },
  ];
}

export class Places {
  /**
   * live: {map, send(type, data), me(), nameOf(id), isCreator(), creatorToken(),
   * sessionId, notify(text), myPosition(), showPoints(points)}.
   */
  constructor(live) {
    this.live = live;
    this.places = new Map(); // place_id -> place (as in place_added)
    this.arrivals = new Map(); // place_id -> Set of user ids
    this.at = null; // where the form's place goes
    this.draft = null; // an area being drawn: {name, kind, points}
    this._bindForm();
    this._bindDrawing();
    $("place-here").addEventListener("click", () => this.openForm(live.myPosition() || live.map.centerPoint()));
  }

  // --- what the server says --------------------------------------------------------------
  reset(places, arrivals) {
    for (const id of this.places.keys()) this._undraw(id);
    this.places = new Map(places.map((p) => [p.place_id, p]));
    this.arrivals = new Map();
    for (const { user_id, place_id } of arrivals) this._arrive(user_id, place_id);
    this.render();
  }

  handle(type, data) {
    switch (type) {
      case "place_added":
        this.places.set(data.place_id, data);
        break;
      case "place_removed":
        this.places.delete(data.place_id);
        this.arrivals.delete(data.place_id);
        this._undraw(data.place_id);
        break;
      case "arrived":
        this._arrive(data.user_id, data.place_id);
        break;
      case "departed":
        this.arrivals.get(data.place_id)?.delete(data.user_id);
        break;
      case "participant_left":
        for (const here of this.arrivals.values()) here.delete(data.user_id);
        break;
      default:
        return;
    }
    this.render();
  }

  _arrive(userId, placeId) {
    if (!this.arrivals.has(placeId)) this.arrivals.set(placeId, new Set());
    this.arrivals.get(placeId).add(userId);
  }

  /** Who is at a place, "You" first. */
  _here(placeId) {
    const me = this.live.me().user_id;
    const ids = [...(this.arrivals.get(placeId) || [])];
    const names = ids.filter((id) => id !== me).map((id) => this.live.nameOf(id));
    return ids.includes(me) ? ["You", ...names] : names;
  }

  // --- drawing and the list --------------------------------------------------------------
  render() {
    const list = $("places-list");
    $("places-count").textContent = String(this.places.size);
    const rows = new Map([...list.children].map((li) => [li.dataset.placeId, li]));
    for (const [id, row] of rows) if (!this.places.has(id)) row.remove();
    for (const place of this.places.values()) {
      const here = this._here(place.place_id);
      this._draw(place, here);
      let row = rows.get(place.place_id);
      if (!row) {
        row = this._row(place);
        list.append(row);
      }
      const badge = row.querySelector(".place-badge");
      badge.textContent = here.length ? hereText(here) : "";
      badge.hidden = !here.length;
      row.querySelector(".remove").hidden = !this._mayRemove(place);
    }
  }

  _draw(place, here) {
    const { map } = this.live;
    const id = place.place_id;
    const className = `place kind-${place.kind}${here.length ? " occupied" : ""}`;
    if (place.geometry.type === "Point") {
      const { lat, lng } = anchorOf(place);
      map.setShape(id, { type: "circle", lat, lng, radiusM: place.radius_m, className });
    } else {
      map.setShape(id, { type: "polygon", rings: place.geometry.coordinates.map(toRing), className });
    }
    let el = map.anchors.get(id)?.el;
    if (!el) {
      el = document.createElement("div");
      el.dataset.placeId = id;
      const icon = document.createElement("span");
      icon.className = "place-icon";
      icon.append(kindIcon(place.kind));
      const name = document.createElement("span");
      name.className = "place-name";
      name.textContent = place.name;
      const badge = document.createElement("span");
      badge.className = "place-badge";
      el.append(icon, name, badge);
      el.setAttribute("role", "img");
    }
    el.className = `place-marker kind-${place.kind}`;
    const badge = el.querySelector(".place-badge");
    badge.textContent = here.length ? hereText(here) : "";
    badge.hidden = !here.length;
    el.setAttribute("aria-label", `${KINDS[place.kind]?.label || "Place"} ${place.name}${here.length ? `: ${hereText(here)}` : ""}`);
    const { lat, lng } = anchorOf(place);
    map.setAnchor(id, el, lat, lng);
  }

  _undraw(id) {
    this.live.map.removeShape(id);
    this.live.map.removeAnchor(id);
  }

  _row(place) {
    const li = document.createElement("li");
    li.dataset.placeId = place.place_id;
    li.className = `kind-${place.kind}`;
    const icon = document.createElement("span");
    icon.className = "place-icon";
    icon.append(kindIcon(place.kind));
    const who = document.createElement("span");
    who.className = "who";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = place.name;
    const about = document.createElement("span");
    about.className = "status";
    const size = place.geometry.type === "Point" ? `${Math.round(place.radius_m)} m` : "area";
    const author = place.author === null ? "the organiser" : place.author === this.live.me().user_id ? "you" : this.live.nameOf(place.author);
    about.textContent = `${KINDS[place.kind]?.label || place.kind} · ${size} · added by ${author}`;
    const badge = document.createElement("span");
    badge.className = "place-badge";
    who.append(name, about, badge);
    const show = button("Show", `Show ${place.name} on the map`, "show");
    show.addEventListener("click", () => this.live.showPoints(extentOf(this.places.get(place.place_id) || place)));
    const remove = button("Remove", `Remove ${place.name}`, "remove danger");
    remove.addEventListener("click", () => this.remove(place.place_id));
    li.append(icon, who, show, remove);
    return li;
  }

  _mayRemove(place) {
    return place.author === this.live.me().user_id || this.live.isCreator();
  }

  async remove(placeId) {
    const place = this.places.get(placeId);
    if (!place) return;
    if (!(await confirmDialog(`Remove “${place.name}” for everyone?`, "Remove"))) return;
    if (place.author === this.live.me().user_id) {
      this.live.send("place_remove", { place_id: placeId });
      return;
    }
    const result = await api("DELETE", `/api/sessions/${this.live.sessionId}/places/${placeId}`, { token: this.live.creatorToken() });
    if (result.status !== 204 && result.status !== 404) this.live.notify(errorMessage(result, "The place could not be removed."));
  }

  /** The "Add a place" button names where it adds: my position, or the map's centre. */
  setHere(hasFix) {
    $("place-here").textContent = hasFix ? "Add a place at my position" : "Add a place at the map’s centre";
  }

  // --- the form ----------------------------------------------------------------------------
  openForm(at) {
    if (this.draft) return this._addCorner(at); // drawing: a long press is a corner too
    this.at = at;
    $("place-name").value = "";
    $("place-kind").value = "meet";
    $("place-radius").value = String(RADIUS_M.default);
    $("place-error").hidden = true;
    $("place-dialog").showModal();
    $("place-name").focus();
  }

  _bindForm() {
    const dialog = $("place-dialog");
    /** The form's name, or null after showing what is wrong (radius too, if asked). */
    const check = (withRadius) => {
      const name = $("place-name").value.trim();
      const radius = Number($("place-radius").value);
      let problem = null;
      if (!name) problem = ["Give the place a name.", "place-name"];
      else if (name.length > NAME_MAX) problem = [`At most ${NAME_MAX} characters.`, "place-name"];
      else if (withRadius && !(radius >= RADIUS_M.min && radius <= RADIUS_M.max)) {
        problem = [`The radius is ${RADIUS_M.min} to ${RADIUS_M.max} metres.`, "place-radius"];
      }
      $("place-error").hidden = !problem;
      if (!problem) return name;
      $("place-error").textContent = problem[0];
      $(problem[1]).focus();
      return null;
    };
    // The only submit button is "Add place", so Enter in a field adds the place.
    $("place-form").addEventListener("submit", (event) => {
      const name = check(true);
      if (name === null) return event.preventDefault(); // the dialog stays open
      const { lat, lng } = this.at;
      const radius_m = Number($("place-radius").value);
      this.live.send("place_add", { name, kind: $("place-kind").value, lat, lng, radius_m });
    });
    $("place-area").addEventListener("click", () => {
      const name = check(false);
      if (name === null) return;
      dialog.close();
      this._startDrawing(name, $("place-kind").value, this.at);
    });
    $("place-cancel").addEventListener("click", () => dialog.close());
  }

  // --- drawing an area ----------------------------------------------------------------------
  _bindDrawing() {
    $("draw-undo").addEventListener("click", () => {
      this.draft?.points.pop();
      this._drawDraft();
    });
    $("draw-cancel").addEventListener("click", () => this._stopDrawing());
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.draft) this._stopDrawing();
    });
    $("draw-done").addEventListener("click", () => {
      const { name, kind, points } = this.draft;
      const ring = points.map((p) => [round7(p.lng), round7(p.lat)]);
      this.live.send("place_add", { name, kind, geometry: { type: "Polygon", coordinates: [[...ring, ring[0]]] } });
      this._stopDrawing();
    });
  }

  /** Map taps (and Enter on the map: its centre) add corners while drawing. */
  tap(at) {
    if (!this.draft) return false;
    this._addCorner(at);
    return true;
  }

  _startDrawing(name, kind, first) {
    this.draft = { name, kind, points: first ? [first] : [] };
    this.live.map.dblclickZoom = false;
    this.live.map.el.dataset.drawing = "true";
    $("draw-bar").hidden = false;
    this._drawDraft();
  }

  _addCorner(at) {
    if (this.draft.points.length >= MAX_CORNERS) return;
    this.draft.points.push(at);
    this._drawDraft();
  }

  _drawDraft() {
    const { points, name } = this.draft;
    const n = points.length;
    $("draw-text").textContent = `Tap the corners of “${name}”: ${n} so far.`;
    $("draw-done").disabled = n < MIN_CORNERS;
    $("draw-undo").disabled = n === 0;
    if (!n) this.live.map.removeShape("draft");
    else if (n < MIN_CORNERS) this.live.map.setShape("draft", { type: "line", points, className: "draft" });
    else this.live.map.setShape("draft", { type: "polygon", rings: [points], className: "draft" });
  }

  _stopDrawing() {
    this.draft = null;
    this.live.map.removeShape("draft");
    this.live.map.dblclickZoom = true;
    delete this.live.map.el.dataset.drawing;
    $("draw-bar").hidden = true;
  }
}

function button(text, label, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `small ${className}`;
  b.textContent = text;
  b.setAttribute("aria-label", label);
  return b;
}
