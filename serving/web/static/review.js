// Touchstone review: the work page's keys, zoom, heatmap and lease. Plain JavaScript, no
// framework; every page still works without it (the verdict buttons submit directly).
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  // Inline styles are barred by the page's CSP; widths are set from script instead.
  document.querySelectorAll("[data-width]").forEach((el) => {
    el.style.width = el.dataset.width + "%";
  });

  const work = document.querySelector(".work");
  if (!work) return;
  const taskId = work.dataset.task;

  const NOT_TEXT = ["checkbox", "radio", "button", "submit", "reset"];
  function typing(event) {
    // Only fields that take text: a ticked checkbox must not turn the shortcuts off.
    const el = event.target;
    if (el instanceof HTMLInputElement) return !NOT_TEXT.includes(el.type);
    return el instanceof HTMLTextAreaElement || el.isContentEditable;
  }

  // -- the lease -----------------------------------------------------------------------------
  const leaseText = document.getElementById("lease-left");
  const form = document.getElementById("verdict-form");
  let lastActivity = Date.now();
  ["keydown", "mousemove", "mousedown", "scroll", "wheel"].forEach((name) =>
    window.addEventListener(name, () => { lastActivity = Date.now(); }, { passive: true }),
  );
  const IDLE_MS = 15 * 60 * 1000; // an abandoned tab must not hold an item for ever
  let leaseEnd = null;

  function showLease() {
    if (!leaseText || leaseEnd === null) return;
    const left = Math.max(0, Math.round((leaseEnd - performance.now()) / 1000));
    leaseText.textContent = left > 0 ? Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0") : "ran out";
    leaseText.closest(".lease").classList.toggle("low", left < 120);
  }

  function lost(message) {
    const note = document.getElementById("lease-note");
    if (note) note.textContent = message;
    if (form) form.classList.add("locked");
    leaseEnd = performance.now();
    showLease();
  }

  async function heartbeat() {
    if (Date.now() - lastActivity > IDLE_MS) {
      document.getElementById("lease-note").textContent = "not renewed: you seem to be away";
      return;
    }
    try {
      const answer = await fetch(`/review/tasks/${taskId}/heartbeat`, {
        method: "POST",
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
        credentials: "same-origin",
      });
      if (answer.ok) {
        const body = await answer.json();
        leaseEnd = performance.now() + body.seconds_left * 1000;
        document.getElementById("lease-note").textContent = "kept alive each minute while you work here";
      } else if (answer.status === 409) {
        lost("lost: the item went back to the queue. Claim again from the queue.");
      } else if (answer.status === 401) {
        lost("you are signed out: sign in again.");
      }
    } catch (err) {
      document.getElementById("lease-note").textContent = "could not reach the service; retrying";
    }
  }

  if (work.dataset.leaseLeft !== undefined) {
    leaseEnd = performance.now() + Number(work.dataset.leaseLeft) * 1000;
    setInterval(showLease, 1000);
    setInterval(heartbeat, 60 * 1000);
  }

  // -- the verdict: a key chooses, Enter confirms --------------------------------------------
  const keys = { a: "authentic", c: "counterfeit", i: "inconclusive", m: "needs_more_photos" };
  const confirmBox = document.getElementById("confirm");
  let chosen = null;
  let sent = false;

  function choose(outcome) {
    if (!form || form.classList.contains("locked")) return;
    chosen = form.querySelector(`button.outcome[value="${outcome}"]`);
    form.querySelectorAll("button.outcome").forEach((b) => b.setAttribute("aria-pressed", String(b === chosen)));
    document.getElementById("confirm-outcome").textContent = chosen.textContent.replace(/^\s*\S+\s*/, "");
    confirmBox.hidden = false;
  }

  function cancel() {
    chosen = null;
    if (!form) return;
    form.querySelectorAll("button.outcome").forEach((b) => b.setAttribute("aria-pressed", "false"));
    confirmBox.hidden = true;
  }

  function record() {
    if (!chosen || sent) return;
    sent = true; // one verdict, however often Enter is pressed
    form.requestSubmit(chosen);
  }

  if (form) {
    form.querySelectorAll("button.outcome").forEach((button) =>
      button.addEventListener("click", (event) => {
        event.preventDefault();
        choose(button.value);
      }),
    );
    document.getElementById("confirm-yes").addEventListener("click", record);
    document.getElementById("confirm-no").addEventListener("click", cancel);
    const next = document.getElementById("then-next");
    next.checked = localStorage.getItem("touchstone.then-next") === "yes";
    next.addEventListener("change", () => localStorage.setItem("touchstone.then-next", next.checked ? "yes" : "no"));
  }

  // -- heatmaps ------------------------------------------------------------------------------
  const heatmapsAllowed = work.dataset.heatmap === "yes";
  let heatOn = false;
  const heatUrls = new Map(); // sha256 -> object URL, or null while loading or refused

  async function loadHeat(frame) {
    const sha = frame.dataset.sha;
    if (heatUrls.has(sha)) return;
    heatUrls.set(sha, null);
    const note = frame.closest(".photo").querySelector(".heat-note");
    note.hidden = false;
    note.textContent = "heatmap: computing…";
    const answer = await fetch(`/review/tasks/${taskId}/photos/${sha}/heatmap.png`, {
      credentials: "same-origin",
      headers: { Accept: "image/png, application/json" },
    });
    if (!answer.ok) {
      let message = "heatmap unavailable";
      try { message = (await answer.json()).message; } catch (err) { /* not JSON */ }
      note.textContent = message;
      return;
    }
    const url = URL.createObjectURL(await answer.blob());
    heatUrls.set(sha, url);
    note.hidden = true;
    const overlay = frame.querySelector("img.heat");
    overlay.src = url;
    overlay.hidden = !heatOn;
    syncLightboxHeat();
  }

  function toggleHeat() {
    if (!heatmapsAllowed) return;
    heatOn = !heatOn;
    document.querySelectorAll(".photo .frame").forEach((frame) => {
      if (heatOn) loadHeat(frame);
      const overlay = frame.querySelector("img.heat");
      overlay.hidden = !heatOn || !overlay.getAttribute("src");
    });
    syncLightboxHeat();
  }

  // -- zoom ----------------------------------------------------------------------------------
  const lightbox = document.getElementById("lightbox");
  const lbFrame = document.getElementById("lb-frame");
  const lbPhoto = document.getElementById("lb-photo");
  const lbHeat = document.getElementById("lb-heat");
  const frames = Array.from(document.querySelectorAll(".photo .frame"));
  let current = -1;

  function syncLightboxHeat() {
    if (current < 0) return;
    const url = heatUrls.get(frames[current].dataset.sha);
    lbHeat.hidden = !(heatOn && url);
    if (url) lbHeat.src = url;
  }

  function open(index) {
    current = (index + frames.length) % frames.length;
    const frame = frames[current];
    lbPhoto.src = frame.querySelector("img").src;
    document.getElementById("lb-caption").textContent = frame.dataset.caption;
    lbFrame.classList.remove("zoomed");
    syncLightboxHeat();
    if (!lightbox.open) lightbox.showModal();
  }

  frames.forEach((frame, index) => frame.addEventListener("click", () => open(index)));
  lightbox.addEventListener("close", () => { current = -1; });
  lbFrame.addEventListener("click", (event) => {
    lbFrame.classList.toggle("zoomed");
    pan(event);
  });
  lbFrame.addEventListener("mousemove", pan);

  function pan(event) {
    // Zoom about the pointer: moving over the photo moves the loupe.
    const box = lbFrame.getBoundingClientRect();
    const origin = `${((event.clientX - box.left) / box.width) * 100}% ${((event.clientY - box.top) / box.height) * 100}%`;
    lbPhoto.style.transformOrigin = origin;
    lbHeat.style.transformOrigin = origin;
  }

  // -- keys ----------------------------------------------------------------------------------
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (lightbox.open) {
      if (key === "ArrowRight") open(current + 1);
      else if (key === "ArrowLeft") open(current - 1);
      else if (key === "h") toggleHeat();
      return; // Escape closes the dialog by itself
    }
    if (key in keys) {
      event.preventDefault();
      choose(keys[key]);
    } else if (key === "Enter" && chosen) {
      event.preventDefault();
      record();
    } else if (key === "Escape") {
      cancel();
    } else if (key === "h") {
      toggleHeat();
    } else if (key === "n" && document.getElementById("notes")) {
      event.preventDefault();
      document.getElementById("notes").focus();
    }
  });
})();
