// The landing page: start a session, show its join link, let the creator join it.
// The creator token goes to this tab's sessionStorage: the map page offers "End session
// for everyone" while it is there (it is a capability; it never leaves this tab).

import { api, errorMessage, tabStore } from "./common.js";

const $ = (id) => document.getElementById(id);

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = $("create-error");
  const name = $("session-name").value.trim();
  const hours = Number($("duration").value);
  $("create").disabled = true;
  const result = await api("POST", "/api/sessions", {
    body: { name: name || null, expires_in_minutes: hours * 60 },
  });
  $("create").disabled = false;
  if (result.status !== 201) {
    error.textContent = errorMessage(result, "The session could not be created. Try again.");
    error.hidden = false;
    return;
  }
  const created = result.body;
  tabStore.set("creator", created.session_id, created.creator_token);
  error.hidden = true;
  $("create-form").hidden = true;
  $("created-name").textContent = created.name;
  $("created-until").textContent = new Date(created.expires_at).toLocaleString([], {
    weekday: "short",
    hour: "2-digit",
    minute: "2-digit",
  });
  $("join-link").value = created.join_link;
  // Same origin on purpose (not join_link's host): sessionStorage, and with it the
  // creator token, belongs to this origin.
  $("join-created").href = `/join/${encodeURIComponent(created.session_id)}`;
  $("created").hidden = false;
  $("join-link").focus();
  $("join-link").select();
});

$("copy").addEventListener("click", async () => {
  const link = $("join-link");
  let copied = false;
  try {
    await navigator.clipboard.writeText(link.value);
    copied = true;
  } catch {
    // Clipboard API missing (plain http on a LAN address): fall back to the selection.
    link.select();
    copied = document.execCommand("copy");
  }
  $("copy-status").textContent = copied ? "Link copied." : "Select the link and copy it.";
});
