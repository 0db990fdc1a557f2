// hookline console: the only script, loaded from this origin (the CSP allows no
// inline script). Pages work without it except for revealing a secret, which is
// fetched only when asked so that it is never part of a page.
"use strict";

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.reveal) return;
  event.preventDefault();
  const out = document.getElementById(form.dataset.reveal);
  try {
    const resp = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
    });
    const data = await resp.json();
    out.textContent = resp.ok ? data.key : "Could not read the secret: " + data.detail;
  } catch (e) {
    out.textContent = "Could not read the secret.";
  }
  out.hidden = false;
  form.hidden = true;
});
