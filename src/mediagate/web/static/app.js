// The page: sign in, upload what is chosen or dropped, list, play and delete media.

import { Api, ApiError } from "./api.js";
import { Upload, forgetUpload, unfinishedUploads } from "./uploader.js";

const TOKEN_KEY = "mediagate.token";
const $ = (id) => document.getElementById(id);

const sizeFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

// IEC units, as the command line and the server's logs print sizes.
function formatSize(bytes) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${sizeFormat.format(value)} ${units[unit]}`;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function sentence(text) {
  return text.endsWith(".") ? text : `${text}.`;
}

// What to do about a refused token, by the `reason` of the server's 401 problem.
const TOKEN_HINTS = {
  malformed: "Paste the whole token, as `mediagate token` printed it.",
  "bad-signature": "Ask for a token made by this server.",
  expired: "Ask for a new one.",
  // The identity provider's tokens (MEDIAGATE_JWT_JWKS_URL on the server).
  algorithm: "Use a token made by this server or by the sign-in service it is set up with.",
  "unknown-key": "Sign in again to get a new token.",
  "wrong-issuer": "Use a token from the sign-in service this server is set up with.",
  "wrong-audience": "Use a token made for this server.",
  "not-yet-valid": "The clocks of this server and of the sign-in service disagree.",
  "user-id": "Your user name cannot be used here: ask the administrator.",
};

function messageOf(error) {
  if (!(error instanceof Error)) return String(error);
  const hint = error instanceof ApiError && error.status === 401 && TOKEN_HINTS[error.problem.reason];
  return hint ? `${error.message}. ${hint}` : error.message;
}

// The token's claims, for display only: the server is the one that checks them.
function claimsOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return {};
  }
}

// A link ending in #token=… offers a token; the fragment never reaches the server,
// and is taken out of the address bar (and the history) before anything else runs.
function takeTokenFromAddress() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token === null) return "";
  history.replaceState(null, "", location.pathname + location.search);
  return token.trim();
}

// A link can carry anyone's token (login CSRF): signed in as one user, switching
// to another takes the user's yes, with both names shown. Escape keeps the account.
function askToSwitch(current, offered) {
  const dialog = $("switch-dialog");
  const from = claimsOf(current).sub || "?";
  const to = claimsOf(offered).sub || "an unknown user";
  $("switch-current").textContent = from;
  $("switch-offered").textContent = to;
  $("switch-keep").textContent = `Stay signed in as ${from}`;
  $("switch-accept").textContent = `Switch to ${to}`;
  return new Promise((resolve) => {
    const answer = (yes) => () => {
      dialog.close();
      resolve(yes);
    };
    const keep = answer(false);
    $("switch-keep").onclick = keep;
    $("switch-accept").onclick = answer(true);
    dialog.oncancel = (event) => {
      event.preventDefault();
      keep();
    };
    dialog.showModal();
    $("switch-keep").focus();
  });
}

// The token to sign in with: the saved one, or the link's if it is the same user
// (a fresh token) or the user agreed to switch.
async function chooseToken(saved, offered) {
  if (!offered || offered === saved || !saved) return offered || saved;
  const sameUser = claimsOf(saved).sub !== undefined && claimsOf(saved).sub === claimsOf(offered).sub;
  if (sameUser || (await askToSwitch(saved, offered))) return offered;
  const notice = $("notice");
  notice.textContent = `The link for ${claimsOf(offered).sub || "another user"} was not used: you are still signed in as ${claimsOf(saved).sub || "before"}.`;
  notice.hidden = false;
  return saved;
}

let api = null;
let user = "";
let nextCursor = null;
let playingId = null;
const activeUploads = new Set();

async function signIn(token, { remember }) {
  const candidate = new Api(token);
  await candidate.listMedia(); // proves the token before anything is shown
  if (remember) localStorage.setItem(TOKEN_KEY, token);
  api = candidate;
  user = claimsOf(token).sub || "";
  $("who").replaceChildren(
    element("span", { class: "who-prefix", text: "Signed in as " }),
    element("strong", { text: user || "?" }),
  );
  $("account").hidden = false;
  $("sign-in").hidden = true;
  $("workspace").hidden = false;
  showUnfinished();
  await loadMedia();
}

function signOut(reason = "", { forget = true } = {}) {
  $("notice").hidden = true;
  if (forget) localStorage.removeItem(TOKEN_KEY);
  api = null;
  user = "";
  for (const upload of activeUploads) upload.cancel(); // stays resumable for the next sign-in
  stopPlayer();
  $("uploads").replaceChildren();
  $("media-list").replaceChildren();
  $("account").hidden = true;
  $("workspace").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = reason;
  $("token").value = "";
  $("token").focus();
}

// A token that expired or was refused while the page was open: back to sign-in.
function handleError(error, show) {
  if (error instanceof ApiError && error.status === 401) {
    signOut(sentence(`Please sign in again: ${messageOf(error)}`));
    return;
  }
  show(messageOf(error));
}

// ----- media list -----

// "1:05 · 1920×1080" from what the server's probing found; "" if it found nothing.
function describeMedia(facts) {
  if (!facts) return "";
  const words = [];
  if (facts.duration_s != null) {
    const total = Math.round(facts.duration_s);
    const [hours, minutes, seconds] = [Math.floor(total / 3600), Math.floor(total / 60) % 60, total % 60];
    const mmss = `${String(minutes).padStart(hours ? 2 : 1, "0")}:${String(seconds).padStart(2, "0")}`;
    words.push(hours ? `${hours}:${mmss}` : mmss);
  }
  if (facts.video) words.push(`${facts.video.width}×${facts.video.height}`);
  return words.join(" · ");
}

function mediaItem(media) {
  const when = dateFormat.format(new Date(media.created_at));
  const facts = describeMedia(media.media);
  const open = element(
    "button",
    { type: "button", class: "media-open" },
    element("span", { class: "media-name", text: media.filename }),
    element("span", {
      class: "media-meta",
      text: [formatSize(media.size), facts, media.content_type, when].filter(Boolean).join(" · "),
    }),
  );
  if (media.poster_url) {
    open.prepend(element("img", { class: "media-poster", src: media.poster_url, alt: "" }));
  }
  if (media.media_id === playingId) open.setAttribute("aria-current", "true");
  open.addEventListener("click", () => play(media.media_id));
  const remove = element("button", {
    type: "button",
    class: "button-danger",
    "aria-label": `Delete ${media.filename}`,
    text: "Delete",
  });
  remove.addEventListener("click", () => deleteMedia(media));
  return element("li", { class: "media-item", "data-media-id": media.media_id }, open, remove);
}

async function loadMedia({ append = false } = {}) {
  const status = $("library-status");
  status.textContent = append ? "Loading more…" : "Loading…";
  try {
    const page = await api.listMedia(append ? nextCursor : undefined);
    const items = page.items.map(mediaItem);
    if (append) $("media-list").append(...items);
    else $("media-list").replaceChildren(...items);
    nextCursor = page.next_cursor;
    $("more").hidden = !nextCursor;
    const count = $("media-list").children.length;
    status.textContent = count ? "" : "No media yet. Files you upload appear here.";
  } catch (error) {
    handleError(error, (message) => (status.textContent = `Could not load your media: ${message}`));
  }
}

async function deleteMedia(media) {
  if (!confirm(`Delete “${media.filename}”? This cannot be undone.`)) return;
  try {
    await api.deleteMedia(media.media_id);
    if (media.media_id === playingId) stopPlayer();
    await loadMedia();
    const status = $("library-status");
    status.textContent = `Deleted ${media.filename}. ${status.textContent}`.trim();
    $("library-title").focus(); // its button is gone; keep the keyboard in the list
  } catch (error) {
    handleError(error, (message) => {
      $("library-status").textContent = `Could not delete ${media.filename}: ${message}`;
    });
  }
}

// ----- player -----

async function play(mediaId) {
  $("player-error").textContent = "";
  try {
    // A fresh signed link: the list's may be older than its expiry.
    const info = await api.info(mediaId);
    playingId = mediaId;
    for (const button of document.querySelectorAll(".media-open")) {
      const current = button.closest("li").dataset.mediaId === mediaId;
      if (current) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    $("playing-name").textContent = info.filename;
    $("playing-size").textContent = `${formatSize(info.size)} (${info.size.toLocaleString()} bytes)`;
    $("playing-type").textContent = info.content_type;
    $("playing-date").textContent = dateFormat.format(new Date(info.created_at));
    $("playing-link").href = info.stream_url;
    $("player-empty").hidden = true;
    $("player-body").hidden = false;
    $("player").classList.remove("idle");
    const video = $("video");
    if (info.poster_url) video.poster = info.poster_url;
    else video.removeAttribute("poster");
    video.src = info.stream_url;
    $("player-body").scrollIntoView({ block: "nearest", behavior: "smooth" });
    await video.play().catch(() => {}); // a refusal (autoplay rules, no codec) shows on the element
  } catch (error) {
    handleError(error, (message) => ($("player-error").textContent = `Cannot play it: ${message}`));
  }
}

function stopPlayer() {
  playingId = null;
  const video = $("video");
  video.removeAttribute("src");
  video.removeAttribute("poster");
  video.load();
  $("player-body").hidden = true;
  $("player-empty").hidden = false;
  $("player").classList.add("idle");
}

$("video").addEventListener("error", () => {
  if (!$("video").getAttribute("src")) return;
  $("player-error").textContent =
    "This browser cannot play this file (its format or codec is not supported).";
});

// ----- uploads -----

function uploadItem(name, size) {
  const progress = element("progress", { max: "1", value: "0", "aria-label": `Upload of ${name}` });
  const state = element("span", { class: "upload-state", text: "Starting…" });
  const note = element("p", { class: "upload-note muted" });
  const error = element("p", { class: "error", role: "alert" });
  const action = element("button", {
    type: "button",
    class: "button-quiet",
    "aria-label": `Cancel the upload of ${name}`,
    text: "Cancel",
  });
  const item = element(
    "li",
    { class: "upload-item" },
    element(
      "div",
      { class: "upload-head" },
      element("span", { class: "upload-name", text: name }),
      element("span", { class: "upload-size", text: formatSize(size) }),
    ),
    progress,
    element("div", { class: "upload-foot" }, state, action),
    note,
    error,
  );
  return { item, progress, state, note, error, action };
}

function showUnfinished() {
  for (const earlier of $("uploads").querySelectorAll("[data-key]")) earlier.remove();
  for (const entry of unfinishedUploads(user)) {
    const view = uploadItem(entry.name, entry.size);
    view.item.dataset.key = entry.key;
    view.item.classList.add("stopped");
    view.state.textContent = "Interrupted";
    view.note.textContent = `Choose ${entry.name} again to resume where it stopped.`;
    view.action.textContent = "Discard";
    view.action.setAttribute("aria-label", `Discard the upload of ${entry.name}`);
    view.action.addEventListener("click", async () => {
      forgetUpload(entry.key);
      view.item.remove();
      await api.abort(entry.session_id).catch(() => {});
    });
    $("uploads").append(view.item);
    api
      .sessionStatus(entry.session_id)
      .then((status) => {
        view.progress.value = status.size ? status.bytes_received / status.size : 0;
        const percent = Math.floor(100 * view.progress.value);
        view.state.textContent = `Interrupted at ${percent} %`;
      })
      .catch((error) => {
        // Expired or gone: nothing left to resume.
        if (error instanceof ApiError && !error.retryable) {
          forgetUpload(entry.key);
          view.item.remove();
        }
      });
  }
}

async function startUpload(file) {
  const view = uploadItem(file.name, file.size);
  const upload = new Upload(api, user, file, {
    onProgress(sent, total) {
      view.progress.value = total ? sent / total : 1;
      view.state.textContent =
        sent === total ? "Finishing…" : `Uploading ${Math.floor(100 * view.progress.value)} %`;
    },
    onNote(text) {
      view.note.textContent = text;
    },
  });
  // The same file chosen again replaces its "interrupted" line.
  for (const earlier of $("uploads").querySelectorAll("[data-key]")) {
    if (earlier.dataset.key === upload.key) earlier.remove();
  }
  $("uploads").prepend(view.item);
  let cancelled = false;
  activeUploads.add(upload);
  view.action.addEventListener("click", async () => {
    cancelled = true;
    view.action.disabled = true;
    view.state.textContent = "Cancelling…";
    await upload.discard();
    view.item.remove();
  });
  try {
    const finished = await upload.run();
    view.progress.value = 1;
    view.state.textContent = finished.state === "finalizing" ? "Uploaded (finishing storage)" : "Uploaded";
    view.item.classList.add("done");
    const playButton = element("button", {
      type: "button",
      class: "button-quiet",
      "aria-label": `Play ${file.name}`,
      text: "Play",
    });
    playButton.addEventListener("click", () => play(finished.media_id));
    view.action.replaceWith(playButton);
    await loadMedia();
  } catch (error) {
    if (cancelled) return;
    view.action.textContent = "Discard";
    view.action.setAttribute("aria-label", `Discard the upload of ${file.name}`);
    view.state.textContent = "Stopped";
    view.item.classList.add("stopped");
    view.item.dataset.key = upload.key;
    handleError(error, (message) => {
      view.error.textContent = `Upload failed: ${message}. Choose the file again to resume.`;
    });
  } finally {
    activeUploads.delete(upload);
  }
}

function startUploads(files) {
  for (const file of files) startUpload(file);
}

// ----- wiring -----

const dropZone = $("drop-zone");
$("files").addEventListener("change", (event) => {
  startUploads([...event.target.files]);
  event.target.value = ""; // so that choosing the same file again fires again
});
for (const name of ["dragenter", "dragover"]) {
  dropZone.addEventListener(name, (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
}
for (const name of ["dragleave", "drop"]) {
  dropZone.addEventListener(name, () => dropZone.classList.remove("dragging"));
}
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  startUploads([...event.dataTransfer.files]);
});
// A file dropped beside the zone would otherwise replace the page.
for (const name of ["dragover", "drop"]) window.addEventListener(name, (event) => event.preventDefault());

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  try {
    await signIn($("token").value.trim(), { remember: true });
  } catch (error) {
    $("sign-in-error").textContent = `Could not sign in: ${messageOf(error)}`;
  }
});
$("sign-out").addEventListener("click", () => signOut());
$("refresh").addEventListener("click", () => loadMedia());
$("more").addEventListener("click", () => loadMedia({ append: true }));

async function start() {
  const offered = takeTokenFromAddress();
  const saved = localStorage.getItem(TOKEN_KEY);
  const token = await chooseToken(saved, offered);
  if (!token) {
    signOut();
    return;
  }
  // The link's token is remembered only once the server took it.
  const fromLink = token !== saved;
  try {
    await signIn(token, { remember: fromLink });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      const what = fromLink ? "Could not sign in with the link" : "Please sign in again";
      signOut(sentence(`${what}: ${messageOf(error)}`), { forget: !fromLink });
    } else {
      signOut(`Could not reach the server: ${messageOf(error)}. Reload the page to try again.`, {
        forget: false,
      });
    }
  }
}

// A #token=… link opened in this tab while the page is open changes only the fragment.
window.addEventListener("hashchange", () => {
  if (new URLSearchParams(location.hash.slice(1)).has("token")) start();
});
start();
