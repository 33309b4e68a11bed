// A small Web Mercator map: raster tiles as positioned <img>s, markers as DOM elements,
// fractional zoom, drag / wheel / pinch / keyboard. Coordinates are kept as "world"
// units (0..1 in both axes, the whole Mercator square) so that zoom is just a scale.
//
// Written for locshare instead of pulling in a map library: the page needs a tenth of
// what Leaflet does, must run under a CSP without inline styles or a CDN, and has to
// show markers on a neutral background when there are no tiles at all.
//
// The current camera is mirrored on the map element as data-center-lat, data-center-lng
// and data-zoom (and data-width/data-height), which the browser tests read.
//
// Besides people, it draws shapes (circles in metres, polygons, lines: places and the
// route) in one SVG layer, and "anchors": DOM elements the caller builds (place icons)
// kept at a point. Lines and polygons are unwrapped (each vertex within 180 degrees of
// the one before), so one that crosses the antimeridian is drawn in one piece.

const TILE_PX = 256;
const MAX_LAT = 85.0511287798;
const MIN_ZOOM = 1;
const MAX_ZOOM = 19;
const MAX_TILE_ZOOM = 19;
const EARTH_CIRCUMFERENCE_M = 40075016.686;
const KEY_PAN_PX = 96;
const FLY_MS = 400;
// A mouse wheel "notch" is about 100 px of deltaY: half a zoom level feels right;
// trackpad pinches (ctrlKey wheel events) send small deltas and need a larger factor.
const WHEEL_PX_PER_ZOOM = 200;
const PINCH_WHEEL_PX_PER_ZOOM = 50;
// Name labels. A label sits LABEL_OFFSET_PX below its pin's centre (radius 19 px plus a
// gap; app.css has the same default) and is up to 180 px wide, while fits leave only a
// pin's worth of room at the map's sides (48 px, join.js). So near a side a label slides
// inwards, keeping LABEL_EDGE_PX from the edge, but never so far that less than
// LABEL_ANCHOR_PX of it is left on either side of its pin's centre: it stays attached to
// its pin, and goes out of view only with it. Near the bottom (or the control bar) it
// flips above the pin.
const LABEL_OFFSET_PX = 22;
const LABEL_EDGE_PX = 4;
const LABEL_ANCHOR_PX = 12;
// A press that moves less than this is a tap (or a long press), not a drag.
const TAP_SLOP_PX = 8;
// A touch held this long without moving opens the context action (right-click's twin).
const LONG_PRESS_MS = 550;
// Chrome on Android also fires contextmenu on a long press: ignore it this soon after a touch.
const TOUCH_CONTEXTMENU_MS = 1500;
const SVG_NS = "http://www.w3.org/2000/svg";

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const wrap = (x) => x - Math.floor(x);
const reducedMotion = () => window.matchMedia("(prefers-reduced-motion: reduce)").matches;

export function project(lat, lng) {
  const phi = (clamp(lat, -MAX_LAT, MAX_LAT) * Math.PI) / 180;
  return {
    x: wrap((lng + 180) / 360),
    y: (1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2,
  };
}

export function unproject(x, y) {
  return {
    lat: (Math.atan(Math.sinh(Math.PI * (1 - 2 * y))) * 180) / Math.PI,
    lng: wrap(x) * 360 - 180,
  };
}

/** World points of a line with x continuous: no jump of a whole world at the antimeridian. */
function unwrapped(points) {
  const out = [];
  for (const { lat, lng } of points) {
    const p = project(lat, lng);
    if (out.length) p.x -= Math.round(p.x - out[out.length - 1].x);
    out.push(p);
  }
  return out;
}

export class LocMap {
  /**
   * onUserMove(): the person panned or zoomed; onResize(width, height);
   * onTap({lat, lng}): a click or tap that did not drag; onContext({lat, lng}): a
   * right-click, or a touch held still for LONG_PRESS_MS.
   */
  constructor(el, { tileUrl = "", attribution = "", onUserMove = () => {}, onResize = () => {}, onTap = () => {}, onContext = () => {} } = {}) {
    this.el = el;
    this.tileUrl = tileUrl;
    this.onUserMove = onUserMove;
    this.onResize = onResize;
    this.onTap = onTap;
    this.onContext = onContext;
    this.dblclickZoom = true; // off while taps place the corners of an area
    this.shapes = new Map(); // id -> {node, type, rings (of world points), lat, radiusM}
    this.anchors = new Map(); // id -> {el, p}
    this.press = null; // the pointer that may become a tap or a long press
    this.center = project(20, 0);
    this.zoom = 2;
    this.placed = false; // false until the first real view: that one is not animated
    // Pixels at the bottom covered by controls: views are centred in the map above them.
    this.safeBottom = 0;
    this.width = el.clientWidth;
    this.height = el.clientHeight;
    this.tiles = new Map(); // "z/x/y" (x unwrapped) -> {img, z, x, y, loaded, done}
    this.markers = new Map(); // user id -> {el, pin, label, circle, p, lat, accuracy}
    this.pointers = new Map(); // pointer id -> last {x, y}, for drag and pinch
    this.animation = 0;
    this.frame = 0;
    const layer = (name) => {
      const div = document.createElement("div");
      div.className = name;
      el.append(div);
      return div;
    };
    this.tileLayer = layer("map-tiles");
    this.shapeLayer = document.createElementNS(SVG_NS, "svg");
    this.shapeLayer.setAttribute("class", "map-shapes");
    this.shapeLayer.setAttribute("aria-hidden", "true");
    el.append(this.shapeLayer);
    this.anchorLayer = layer("map-anchors");
    this.circleLayer = layer("map-circles");
    this.markerLayer = layer("map-markers");
    if (tileUrl && attribution) layer("map-attribution").textContent = attribution;
    this._bindInput();
    new ResizeObserver(() => this.resize()).observe(el);
    this.render();
  }

  get worldPx() {
    return TILE_PX * 2 ** this.zoom;
  }

  /** Screen offset of a world point, using the copy of the world nearest the centre. */
  toScreen(p) {
    let dx = p.x - this.center.x;
    dx -= Math.round(dx);
    return {
      left: this.width / 2 + dx * this.worldPx,
      top: this.height / 2 + (p.y - this.center.y) * this.worldPx,
    };
  }

  resize() {
    const width = this.el.clientWidth;
    const height = this.el.clientHeight;
    if (width === this.width && height === this.height) return;
    this.width = width;
    this.height = height;
    this.render();
    this.onResize(width, height);
  }

  // --- camera -------------------------------------------------------------------------
  setView(lat, lng, zoom, { animate = false } = {}) {
    this._goTo({ ...project(lat, lng), zoom: clamp(zoom, MIN_ZOOM, MAX_ZOOM) }, animate);
  }

  /** Client-side fit, for when the server has no hint (nobody fresh) or for stale markers. */
  fitPoints(points, { padding = 48, maxZoom = 17, animate = true } = {}) {
    if (points.length === 0) return;
    const ps = points.map((p) => project(p.lat, p.lng));
    // Unwrap x around the first point, so a group across the antimeridian stays together.
    const xs = ps.map((p) => p.x - Math.round(p.x - ps[0].x));
    const ys = ps.map((p) => p.y);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const fit = (span, avail) => (span > 0 ? Math.log2(Math.max(1, avail - 2 * padding) / (span * TILE_PX)) : maxZoom);
    const safeHeight = this.height - this.safeBottom;
    const zoom = clamp(Math.min(maxZoom, fit(x1 - x0, this.width), fit(y1 - y0, safeHeight)), MIN_ZOOM, MAX_ZOOM);
    this._goTo({ x: wrap((x0 + x1) / 2), y: (y0 + y1) / 2, zoom }, animate);
  }

  zoomBy(delta) {
    this._user(() => this._zoomAround(this.zoom + delta, this.width / 2, this.height / 2));
  }

  /** Moves the camera so that `target` sits in the middle of the uncovered area. */
  _goTo(target, animate) {
    this._stopAnimation();
    target = { ...target, y: target.y + this.safeBottom / 2 / (TILE_PX * 2 ** target.zoom) };
    if (!animate || !this.placed || document.hidden || reducedMotion()) {
      this.center = { x: target.x, y: target.y };
      this.zoom = target.zoom;
      this.placed = true;
      this.render();
      return;
    }
    const from = { x: this.center.x, y: this.center.y, zoom: this.zoom };
    let dx = target.x - from.x;
    dx -= Math.round(dx);
    const start = performance.now();
    const step = (now) => {
      const t = Math.min(1, (now - start) / FLY_MS);
      const k = 1 - (1 - t) ** 3; // ease-out
      this.center = { x: wrap(from.x + dx * k), y: from.y + (target.y - from.y) * k };
      this.zoom = from.zoom + (target.zoom - from.zoom) * k;
      this.render();
      this.animation = t < 1 ? requestAnimationFrame(step) : 0;
    };
    this.animation = requestAnimationFrame(step);
  }

  _stopAnimation() {
    if (this.animation) cancelAnimationFrame(this.animation);
    this.animation = 0;
  }

  _panBy(dx, dy) {
    this.center = {
      x: wrap(this.center.x - dx / this.worldPx),
      y: clamp(this.center.y - dy / this.worldPx, 0, 1),
    };
  }

  /** Zoom keeping the world point under screen (px, py) where it is. */
  _zoomAround(zoom, px, py) {
    const before = this.worldPx;
    this.zoom = clamp(zoom, MIN_ZOOM, MAX_ZOOM);
    const after = this.worldPx;
    const ox = px - this.width / 2;
    const oy = py - this.height / 2;
    this.center = {
      x: wrap(this.center.x + ox / before - ox / after),
      y: clamp(this.center.y + oy / before - oy / after, 0, 1),
    };
  }

  /** Every camera change made by the person (not by hints) goes through here. */
  _user(change) {
    this._stopAnimation();
    change();
    this.placed = true;
    this.render();
    this.onUserMove();
  }

  // --- input --------------------------------------------------------------------------
  _bindInput() {
    const el = this.el;
    const local = (e) => {
      const rect = el.getBoundingClientRect();
      return { x: e.clientX - rect.left, y: e.clientY - rect.top };
    };
    el.addEventListener("pointerdown", (e) => {
      if (e.pointerType === "mouse" && e.button !== 0) return;
      el.setPointerCapture(e.pointerId);
      this.pointers.set(e.pointerId, local(e));
      this._endPress();
      if (this.pointers.size > 1) return; // a pinch is neither a tap nor a long press
      const press = { id: e.pointerId, at: local(e), timer: 0 };
      if (e.pointerType !== "mouse") {
        this.lastTouchAt = Date.now();
        press.timer = setTimeout(() => {
          this._endPress();
          this.pointers.delete(press.id); // the finger lifting later must not pan
          this.onContext(this.pointAt(press.at.x, press.at.y));
        }, LONG_PRESS_MS);
      }
      this.press = press;
    });
    el.addEventListener("contextmenu", (e) => {
      e.preventDefault(); // the browser's own menu has nothing for a map
      if (Date.now() - (this.lastTouchAt || 0) < TOUCH_CONTEXTMENU_MS) return; // the long press did it
      const at = local(e);
      this.onContext(this.pointAt(at.x, at.y));
    });
    el.addEventListener("pointermove", (e) => {
      const last = this.pointers.get(e.pointerId);
      if (!last) return;
      const now = local(e);
      if (now.x === last.x && now.y === last.y) return;
      const press = this.press;
      if (press && Math.hypot(now.x - press.at.x, now.y - press.at.y) > TAP_SLOP_PX) this._endPress();
      if (this.pointers.size === 1) {
        this._user(() => this._panBy(now.x - last.x, now.y - last.y));
      } else if (this.pointers.size === 2) {
        // Pinch: the midpoint pans, the distance ratio zooms around the midpoint.
        const other = [...this.pointers].find(([id]) => id !== e.pointerId)[1];
        const mid0 = { x: (last.x + other.x) / 2, y: (last.y + other.y) / 2 };
        const mid1 = { x: (now.x + other.x) / 2, y: (now.y + other.y) / 2 };
        const d0 = Math.hypot(last.x - other.x, last.y - other.y) || 1;
        const d1 = Math.hypot(now.x - other.x, now.y - other.y) || 1;
        this._user(() => {
          this._panBy(mid1.x - mid0.x, mid1.y - mid0.y);
          this._zoomAround(this.zoom + Math.log2(d1 / d0), mid1.x, mid1.y);
        });
      }
      this.pointers.set(e.pointerId, now);
    });
    el.addEventListener("pointerup", (e) => {
      this.pointers.delete(e.pointerId);
      const press = this.press;
      if (press?.id !== e.pointerId) return;
      this._endPress();
      this.onTap(this.pointAt(press.at.x, press.at.y));
    });
    el.addEventListener("pointercancel", (e) => {
      this.pointers.delete(e.pointerId);
      this._endPress();
    });
    el.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault(); // the page must not scroll under the map
        const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? this.height : 1;
        const perZoom = e.ctrlKey ? PINCH_WHEEL_PX_PER_ZOOM : WHEEL_PX_PER_ZOOM;
        const delta = clamp((-e.deltaY * unit) / perZoom, -1, 1);
        const at = local(e);
        this._user(() => this._zoomAround(this.zoom + delta, at.x, at.y));
      },
      { passive: false },
    );
    el.addEventListener("dblclick", (e) => {
      if (!this.dblclickZoom) return;
      const at = local(e);
      this._user(() => this._zoomAround(this.zoom + 1, at.x, at.y));
    });
    el.addEventListener("keydown", (e) => {
      if (e.altKey || e.ctrlKey || e.metaKey) return;
      const step = e.shiftKey ? KEY_PAN_PX * 3 : KEY_PAN_PX;
      const pans = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
      if (pans[e.key]) {
        this._user(() => this._panBy(...pans[e.key]));
      } else if (e.key === "+" || e.key === "=") {
        this.zoomBy(1);
      } else if (e.key === "-" || e.key === "_") {
        this.zoomBy(-1);
      } else {
        return;
      }
      e.preventDefault();
    });
  }

  _endPress() {
    if (this.press) clearTimeout(this.press.timer);
    this.press = null;
  }

  /** The place under map pixel (x, y). */
  pointAt(x, y) {
    const world = this.worldPx;
    return unproject(this.center.x + (x - this.width / 2) / world, clamp(this.center.y + (y - this.height / 2) / world, 0, 1));
  }

  /** The place in the middle of the map above the control bar (where views are centred). */
  centerPoint() {
    return this.pointAt(this.width / 2, (this.height - this.safeBottom) / 2);
  }

  // --- drawing ------------------------------------------------------------------------
  render() {
    const world = this.worldPx;
    // The neutral background is a grid of tile squares moving with the map, so panning
    // and zooming stay visible when there are no tiles.
    const period = TILE_PX * 2 ** (this.zoom - Math.round(this.zoom));
    const ox = (((this.width / 2 - this.center.x * world) % period) + period) % period;
    const oy = (((this.height / 2 - this.center.y * world) % period) + period) % period;
    this.el.style.backgroundSize = `${period}px ${period}px`;
    this.el.style.backgroundPosition = `${ox}px ${oy}px`;
    this._renderTiles();
    for (const shape of this.shapes.values()) this._placeShape(shape);
    for (const anchor of this.anchors.values()) this._placeAnchor(anchor);
    for (const marker of this.markers.values()) this._placeMarker(marker);
    const c = unproject(this.center.x, this.center.y);
    Object.assign(this.el.dataset, {
      centerLat: c.lat.toFixed(6),
      centerLng: c.lng.toFixed(6),
      zoom: this.zoom.toFixed(3),
      width: String(this.width),
      height: String(this.height),
    });
  }

  _scheduleRender() {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  _renderTiles() {
    if (!this.tileUrl || !this.width || !this.height) return;
    const z = clamp(Math.round(this.zoom), 0, MAX_TILE_ZOOM);
    const n = 2 ** z;
    const size = this.worldPx / n;
    const left = this.center.x * this.worldPx - this.width / 2;
    const top = this.center.y * this.worldPx - this.height / 2;
    const wanted = new Set();
    const yEnd = Math.min(n - 1, Math.floor((top + this.height) / size));
    const xEnd = Math.floor((left + this.width) / size);
    for (let y = Math.max(0, Math.floor(top / size)); y <= yEnd; y++) {
      for (let x = Math.floor(left / size); x <= xEnd; x++) {
        const key = `${z}/${x}/${y}`;
        wanted.add(key);
        if (!this.tiles.has(key)) this.tiles.set(key, this._newTile(z, x, y));
      }
    }
    // Tiles of the previous zoom level stay, scaled, until the new level is in, so a
    // zoom never flashes the empty background.
    const ready = [...wanted].every((key) => this.tiles.get(key).done);
    for (const [key, tile] of this.tiles) {
      if (!wanted.has(key) && (ready || tile.z === z || !tile.loaded)) {
        tile.img.remove();
        this.tiles.delete(key);
      } else {
        this._placeTile(tile);
      }
    }
  }

  _newTile(z, x, y) {
    const img = document.createElement("img");
    const tile = { img, z, x, y, loaded: false, done: false };
    img.className = "tile";
    img.dataset.z = String(z);
    img.alt = "";
    img.draggable = false;
    img.decoding = "async";
    img.addEventListener("load", () => {
      tile.loaded = tile.done = true;
      img.classList.add("loaded");
      this._scheduleRender();
    });
    // A failed tile just stays hidden: the markers on the neutral background still work.
    img.addEventListener("error", () => {
      tile.done = true;
      img.classList.add("failed");
      this._scheduleRender();
    });
    const n = 2 ** z;
    const wx = ((x % n) + n) % n;
    img.src = this.tileUrl
      .replace(/\{z\}/g, String(z))
      .replace(/\{x\}/g, String(wx))
      .replace(/\{y\}/g, String(y))
      .replace(/\{s\}/g, "abc"[(wx + y) % 3])
      .replace(/\{r\}/g, "");
    this.tileLayer.append(img);
    return tile;
  }

  _placeTile(tile) {
    const size = this.worldPx / 2 ** tile.z;
    const originX = this.center.x * this.worldPx - this.width / 2;
    const originY = this.center.y * this.worldPx - this.height / 2;
    // Rounded edges (not a rounded size) so neighbouring tiles never leave a hairline gap.
    const l = Math.round(tile.x * size - originX);
    const t = Math.round(tile.y * size - originY);
    const s = tile.img.style;
    s.transform = `translate(${l}px, ${t}px)`;
    s.width = `${Math.round((tile.x + 1) * size - originX) - l}px`;
    s.height = `${Math.round((tile.y + 1) * size - originY) - t}px`;
  }

  // --- shapes and anchors ---------------------------------------------------------------
  /**
   * Adds or replaces a shape: {type: "circle", lat, lng, radiusM} (radius in metres),
   * {type: "line", points} (an SVG polyline) or {type: "polygon", rings} (an SVG path:
   * the outline, then any holes), points being [{lat, lng}]. `className` styles it
   * (app.css); the SVG element gets data-shape-id.
   */
  setShape(id, { type, lat, lng, radiusM, points, rings, className = "" }) {
    const tag = { circle: "circle", polygon: "path", line: "polyline" }[type];
    let shape = this.shapes.get(id);
    if (!shape || shape.node.tagName !== tag) {
      shape?.node.remove();
      const node = document.createElementNS(SVG_NS, tag);
      node.dataset.shapeId = id;
      this.shapeLayer.append(node);
      shape = { node };
      this.shapes.set(id, shape);
    }
    shape.node.setAttribute("class", `shape ${className}`.trim());
    if (type === "circle") Object.assign(shape, { type, rings: [[project(lat, lng)]], lat, radiusM });
    else if (type === "line") Object.assign(shape, { type, rings: [unwrapped(points)] });
    else {
      // Holes on the same copy of the world as the outline.
      const [outline, ...holes] = rings.map(unwrapped);
      for (const hole of holes) {
        const dx = Math.round(hole[0].x - outline[0].x);
        for (const p of hole) p.x -= dx;
      }
      Object.assign(shape, { type, rings: [outline, ...holes] });
    }
    this._placeShape(shape);
  }

  removeShape(id) {
    this.shapes.get(id)?.node.remove();
    this.shapes.delete(id);
  }

  /** Keeps the caller's element `el` at (lat, lng) (translated to that point). */
  setAnchor(id, el, lat, lng) {
    let anchor = this.anchors.get(id);
    if (!anchor || anchor.el !== el) {
      anchor?.el.remove();
      anchor = { el };
      this.anchors.set(id, anchor);
      this.anchorLayer.append(el);
    }
    anchor.p = project(lat, lng);
    this._placeAnchor(anchor);
  }

  removeAnchor(id) {
    this.anchors.get(id)?.el.remove();
    this.anchors.delete(id);
  }

  _placeAnchor(anchor) {
    const { left, top } = this.toScreen(anchor.p);
    anchor.el.style.transform = `translate(${left}px, ${top}px)`;
  }

  _placeShape(shape) {
    const world = this.worldPx;
    if (shape.type === "circle") {
      const { left, top } = this.toScreen(shape.rings[0][0]);
      const metresPerPx = (EARTH_CIRCUMFERENCE_M * Math.cos((shape.lat * Math.PI) / 180)) / world;
      shape.node.setAttribute("cx", left.toFixed(1));
      shape.node.setAttribute("cy", top.toFixed(1));
      shape.node.setAttribute("r", (shape.radiusM / metresPerPx).toFixed(1));
      return;
    }
    // The copy of the world nearest the centre, for the whole shape (not per vertex).
    const xs = shape.rings[0].map((p) => p.x);
    const shift = Math.round(this.center.x - (Math.min(...xs) + Math.max(...xs)) / 2);
    const screen = (p) =>
      `${(this.width / 2 + (p.x + shift - this.center.x) * world).toFixed(1)},${(this.height / 2 + (p.y - this.center.y) * world).toFixed(1)}`;
    if (shape.type === "line") {
      shape.node.setAttribute("points", shape.rings[0].map(screen).join(" "));
    } else {
      shape.node.setAttribute("d", shape.rings.map((ring) => `M${ring.map(screen).join("L")}Z`).join(" "));
    }
  }

  // --- markers ------------------------------------------------------------------------
  /** Adds or updates a marker. All text goes through textContent. */
  setMarker(id, { lat, lng, accuracy = null, color, initials, name, note = "", stale = false, self = false }) {
    let m = this.markers.get(id);
    if (!m) {
      m = { el: document.createElement("div"), pin: document.createElement("span"), label: document.createElement("span"), circle: document.createElement("div") };
      m.el.className = "marker";
      m.el.setAttribute("role", "img");
      m.pin.className = "pin";
      m.label.className = "marker-label";
      m.circle.className = "accuracy";
      m.el.append(m.pin, m.label);
      this.markerLayer.append(m.el);
      this.circleLayer.append(m.circle);
      this.markers.set(id, m);
    }
    Object.assign(m, { p: project(lat, lng), lat, accuracy: stale ? null : accuracy });
    Object.assign(m.el.dataset, { userId: id, lat: String(lat), lng: String(lng) });
    m.el.classList.toggle("stale", stale);
    m.el.classList.toggle("self", self);
    m.el.setAttribute("aria-label", note ? `${name}, ${note}` : name);
    m.pin.textContent = initials;
    m.pin.style.backgroundColor = color;
    m.circle.style.borderColor = color;
    m.circle.style.backgroundColor = `${color}22`;
    const text = note ? `${name} · ${note}` : name;
    if (m.label.textContent !== text) {
      m.label.textContent = text;
      m.labelSize = null; // measured again when next placed
    }
    this._placeMarker(m);
  }

  removeMarker(id) {
    const m = this.markers.get(id);
    if (!m) return;
    m.el.remove();
    m.circle.remove();
    this.markers.delete(id);
  }

  _placeMarker(m) {
    const { left, top } = this.toScreen(m.p);
    m.el.style.transform = `translate(${left}px, ${top}px)`;
    this._placeLabel(m, left, top);
    const metresPerPx = (EARTH_CIRCUMFERENCE_M * Math.cos((m.lat * Math.PI) / 180)) / this.worldPx;
    // Circles smaller than the pin say nothing; huge ones are capped to stay cheap.
    const d = m.accuracy ? Math.min((2 * m.accuracy) / metresPerPx, 4 * Math.max(this.width, this.height)) : 0;
    m.circle.hidden = d < 24;
    if (!m.circle.hidden) {
      m.circle.style.width = m.circle.style.height = `${d}px`;
      m.circle.style.transform = `translate(${left - d / 2}px, ${top - d / 2}px)`;
    }
  }

  /**
   * Keeps a label inside the map next to its pin at screen (x, y) (see LABEL_OFFSET_PX).
   * Its size is measured once per text (a layout read), not on every frame.
   */
  _placeLabel(m, x, y) {
    if (!m.labelSize) {
      const box = m.label.getBoundingClientRect();
      if (!box.width) {
        m.label.style.transform = ""; // not laid out (page hidden): app.css centres it below
        return;
      }
      m.labelSize = { width: box.width, height: box.height };
    }
    const { width: w, height: h } = m.labelSize;
    const anchor = Math.min(LABEL_ANCHOR_PX, w / 2);
    const inside = clamp(x - w / 2, LABEL_EDGE_PX, this.width - LABEL_EDGE_PX - w);
    const left = clamp(inside, x - w + anchor, x - anchor);
    const bottom = this.height - this.safeBottom;
    const below = y + LABEL_OFFSET_PX + h <= bottom || y - LABEL_OFFSET_PX - h < 0;
    const top = below ? LABEL_OFFSET_PX : -LABEL_OFFSET_PX - h;
    m.label.style.transform = `translate(${left - x}px, ${top}px)`;
    m.label.classList.toggle("above", !below);
  }
}
