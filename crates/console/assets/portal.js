// hookline customer portal: the only script on its pages, loaded from this origin (the
// CSP allows no inline script). It does two things:
//
// 1. On the page the portal link opens, it takes the access key out of the URL's
//    fragment (which browsers never send to a server), removes it from the address bar
//    and history at once, and exchanges it once for a session cookie by posting it in a
//    request body; then it loads the portal. The key never reaches a URL the server
//    sees, a log, or a Referer.
// 2. Reveals an endpoint's signing secret only when asked, so it is never part of a page:
//    that is console.js's handler, which the server serves in front of this file as one
//    `portal.js` (so this file is never loaded alone, and console.js's "use strict"
//    covers it).

async function openPortal(status) {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  // Off the address bar and out of history before anything else happens.
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  const title = document.getElementById("opening-title");
  if (!key) {
    title.textContent = "Portal link needed";
    status.textContent =
      "Open this portal with the link you were given: it holds your access key. Links expire; ask for a new one if yours has.";
    return;
  }
  try {
    const resp = await fetch(status.dataset.session, {
      method: "POST",
      body: new URLSearchParams({ key }),
      credentials: "same-origin",
      cache: "no-store",
    });
    // Read the answer to its end first: leaving the page mid-answer aborts the request.
    const data = await resp.json().catch(() => ({}));
    if (resp.ok) {
      location.replace(location.pathname);
      return;
    }
    title.textContent = "This portal link cannot be opened";
    status.textContent = data.detail || "The link was refused (" + resp.status + ").";
  } catch (e) {
    title.textContent = "This portal link cannot be opened";
    status.textContent = "The server could not be reached; try again.";
  }
  status.classList.add("error");
}

const opening = document.getElementById("opening");
if (opening) openPortal(opening);
