// Keyboard shortcuts for the review page. Without this file the page works the same with
// the mouse: every key only clicks a button of a plain form (POST, then redirect).
// Text is set with textContent only; nothing from the server is parsed as HTML.
(() => {
  "use strict";
  const byKey = new Map();
  for (const button of document.querySelectorAll("button[data-keys]")) {
    for (const key of button.dataset.keys.split(" ")) {
      byKey.set(key, button);
    }
  }
  let sent = false; // one answer per page: a held-down key must not answer twice
  document.addEventListener("keydown", (event) => {
    if (sent || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) {
      return;
    }
    const tag = event.target && event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") {
      return;
    }
    const button = byKey.get(event.key) || byKey.get(event.key.toLowerCase());
    if (!button) {
      return;
    }
    event.preventDefault(); // Backspace must not navigate back
    sent = true;
    button.classList.add("pressed");
    button.click();
  });

  const photo = document.getElementById("photo");
  const note = document.getElementById("photo-note");
  const unavailable = () => {
    photo.hidden = true;
    note.hidden = false;
  };
  if (photo && note) {
    photo.addEventListener("error", unavailable);
    if (photo.complete && photo.naturalWidth === 0) {
      unavailable(); // failed before this script ran
    }
  }
})();
