// Statuses (docs/protocol.md, set_status / status): the menu to set mine, and a banner
// for everyone else who needs help, with their last position and "Show on map".
// The statuses themselves live on the participants (join.js keeps them current).

import { formatAgo } from "./common.js";

export const STATUS_LABELS = {
  on_my_way: "On my way",
  arrived: "Arrived",
  break: "Taking a break",
  need_help: "Need help",
};
const NOTE_MAX = 80;

const $ = (id) => document.getElementById(id);

/** "Need help · flat tyre", or "" without a status. */
export function statusLabel(status) {
  if (!status?.status) return "";
  const label = STATUS_LABELS[status.status] || status.status;
  return status.text ? `${label} · ${status.text}` : label;
}

export class StatusView {
  /** live: {send(type, data), me(), people(), showAt(lat, lng)}. */
  constructor(live) {
    this.live = live;
    $("status-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const chosen = $("status-form").querySelector("input[name=status]:checked");
      if (!chosen) return $("status-form").querySelector("input[name=status]").focus();
      const text = $("status-note").value.trim().slice(0, NOTE_MAX) || null;
      live.send("set_status", { status: chosen.value, text });
      $("status-box").open = false;
    });
    $("status-clear").addEventListener("click", () => {
      live.send("set_status", { status: null, text: null });
      $("status-form").reset();
      $("status-box").open = false;
    });
  }

  render() {
    const people = this.live.people();
    const me = people.get(this.live.me().user_id);
    const mine = me?.status || null;
    $("my-status").textContent = statusLabel(mine) || "none";
    $("status-box").classList.toggle("need-help", mine?.status === "need_help");
    $("status-clear").disabled = !mine;
    this._renderAlerts([...people.values()].filter((p) => p !== me && p.status?.status === "need_help"));
  }

  _renderAlerts(helpless) {
    const box = $("alerts");
    const rows = new Map([...box.children].map((el) => [el.dataset.userId, el]));
    for (const [id, el] of rows) if (!helpless.some((p) => p.user_id === id)) el.remove();
    for (const p of helpless) {
      let el = rows.get(p.user_id);
      if (!el) {
        el = document.createElement("div");
        el.className = "alert";
        el.dataset.userId = p.user_id;
        el.setAttribute("role", "alert");
        const text = document.createElement("p");
        const title = document.createElement("strong");
        title.className = "alert-title";
        const note = document.createElement("span");
        note.className = "alert-note";
        const where = document.createElement("span");
        where.className = "alert-where";
        text.append(title, note, where);
        const show = document.createElement("button");
        show.type = "button";
        show.className = "small";
        show.textContent = "Show on map";
        show.addEventListener("click", () => {
          const at = this._position(this.live.people().get(p.user_id));
          if (at) this.live.showAt(at.lat, at.lng);
        });
        el.append(text, show);
        box.append(el);
      }
      const at = this._position(p);
      set(el.querySelector(".alert-title"), `${p.display_name} needs help`);
      set(el.querySelector(".alert-note"), p.status.text ? `“${p.status.text}”` : "");
      set(
        el.querySelector(".alert-where"),
        at ? `Last position ${at.lat.toFixed(5)}, ${at.lng.toFixed(5)}${at.timestamp ? ` (${formatAgo(new Date(at.timestamp))})` : ""}` : "Position unknown",
      );
      const show = el.querySelector("button");
      show.disabled = !at;
      show.setAttribute("aria-label", `Show on map: ${p.display_name}`);
    }
  }

  /** Their fresh position, or the last one this page saw. */
  _position(p) {
    return p?.location || p?.lastKnown || null;
  }
}

function set(el, text) {
  if (el.textContent !== text) el.textContent = text;
  el.hidden = !text;
}
