// srfeat serve: the page. Everything it loads comes from this server; nothing from the internet.
"use strict";

const $ = (id) => document.getElementById(id);

// One session per tab: the server keeps this page's jobs while the page keeps asking for them, and
// cancels them when the page goes away. A reload keeps the session (and so the images): the id
// waits in sessionStorage from pagehide to the next load, which takes it out again, so that a
// duplicated tab (which copies sessionStorage) starts a session of its own.
const SESSION_KEY = "srfeat-session";
const UNSENT_KEY = "srfeat-unsent"; // names of uploads a reload cut off
const session = takeSession();
// This load of the page: its goodbye names it, so that its own questions still on their way (one is
// sent as the tab is hidden, on its way out) do not count as the page coming back; a reload's do.
const pageId = randomId();
const q = (extra = "") => `session=${session}${extra}`;

function takeSession() {
  try {
    const kept = sessionStorage.getItem(SESSION_KEY);
    sessionStorage.removeItem(SESSION_KEY);
    if (kept && /^[0-9a-f]{32}$/.test(kept)) return kept;
  } catch (error) {
    // storage turned off: a reload starts afresh, as before
  }
  return randomId();
}

// 32 random hex digits. Not crypto.randomUUID: a browser offers it only in a secure context (https, or
// this machine's own address), and on a page opened at a network address (`--host 0.0.0.0`) every upload
// threw before it was sent.
function randomId() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

let config = { max_upload_bytes: Infinity, max_pixels: Infinity, upload_header: "X-SRFeat-Upload" };
let serverJobs = []; // as the server last described them
const localItems = []; // uploads in flight or refused before they became jobs
let uploadChain = Promise.resolve(); // uploads go one after another, so the queue keeps their order
let roomWaiters = []; // uploads held back (the page's queue is full), woken when one of its jobs leaves the queue
let selectedId = null;
// The files this page sent, by the upload's ref (and by job id, for an "again" of one; by its card's id, for a job
// a restarted server no longer holds): a job that failed sends its file once more on "Try again", from the
// browser, which still holds it (the server keeps no failed upload).
const sentFiles = new Map();
// Jobs removed (x) on this page: kept out of the list, and removed again should the server still have
// them (the remove was sent while the connection was down; the next answer came with the job in it).
const removedIds = new Set();
let receivedAt = performance.now(); // when the last update came
let connected = true; // whether the server answers (false: it stopped, or the network is down)
let lostContact = false; // the server did not answer since the last update: the next may come from a restarted server

// ---- settings ------------------------------------------------------------------------------

function currentChoice() {
  const model = document.querySelector('input[name="model"]:checked').value;
  if (model === "strength") return { model: "default", strength: Number($("strength").value).toFixed(2) };
  return { model };
}

function choiceQuery(choice) {
  return `&model=${choice.model}` + (choice.strength !== undefined ? `&strength=${choice.strength}` : "");
}

function showStrength() {
  const inBetween = document.querySelector('input[name="model"]:checked').value === "strength";
  $("strength-control").hidden = !inBetween;
}

// ---- uploads -------------------------------------------------------------------------------

function formatBytes(n) {
  return n >= 2 ** 20 ? `${+(n / 2 ** 20).toFixed(2)} MB` : `${Math.ceil(n / 1024)} KB`;
}

function upload(file) {
  // "waiting" until its turn: uploads go one at a time (every card said "uploading" at once).
  const item = { localId: `local-${randomId()}`, name: file.name, state: "waiting", error: null };
  localItems.push(item);
  sentFiles.set(item.localId, file);
  render();
  const choice = currentChoice();
  uploadChain = uploadChain.then(async () => {
    if (!localItems.includes(item)) return; // removed (x) while it waited its turn: not sent
    item.state = "uploading";
    render();
    if (file.size > config.max_upload_bytes) {
      refuse(item, `${file.name} is ${formatBytes(file.size)}, larger than this server's upload limit of ` +
        `${formatBytes(config.max_upload_bytes)} (start the server with a larger --max-upload-mb)`);
      return;
    }
    try {
      const ref = encodeURIComponent(item.localId);
      const name = encodeURIComponent(file.name);
      const url = `/api/jobs?${q()}&name=${name}&ref=${ref}${choiceQuery(choice)}`;
      const roomUrl = `/api/sessions/${session}/room?name=${name}&bytes=${file.size}`;
      let response, body;
      for (;;) {
        // Asked first, without the file: an upload held back sends its bytes once, when there is room
        // (it sent the whole file again every 2 s), and one the server would refuse is not sent at all.
        response = await fetch(roomUrl, { cache: "no-store" });
        if (response.ok) {
          response = await fetch(url, { method: "POST", body: file, headers: { [config.upload_header]: "1" } });
        }
        body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
        // 429 after the room was there: an "again" took it meanwhile; wait for room again.
        if (response.status !== 429) break;
        // This page has as many images waiting as the server queues (--max-queued): hold this
        // one (and those after it) until one of them is done, instead of refusing it.
        item.state = "held";
        item.error = "waiting to upload: the queue is full (--max-queued); it goes when there is room";
        render();
        // Woken when one of this page's jobs leaves the queue; asks again after 2 s anyway (the queue may
        // have emptied before this upload began to wait).
        await Promise.race([
          new Promise((resolve) => roomWaiters.push(resolve)),
          new Promise((resolve) => setTimeout(resolve, 2000)),
        ]);
        if (!localItems.includes(item)) return; // removed while it waited
        item.state = "uploading";
        render();
      }
      if (!response.ok) {
        refuse(item, body.error || `upload failed (${response.status})`);
        return;
      }
      if (!localItems.includes(item)) {
        // Removed (x) while it was being sent: the job the server made of it goes too.
        removedIds.add(body.id);
        fetch(`/api/jobs/${body.id}/remove?${q()}`, { method: "POST" }).catch(() => {});
        return;
      }
      localItems.splice(localItems.indexOf(item), 1);
      learned(body);
      render();
    } catch (error) {
      // A file the browser cannot read (a folder dropped, a file moved or deleted since it was chosen)
      // fails the same way as a server that is gone: which one it was is told apart here.
      // (Its first piece is read; a slice of a deleted file still reads in Chromium.)
      const readable = await readsFirstPiece(file);
      refuse(
        item,
        readable
          ? `${file.name} was not uploaded: the server did not answer (is srfeat serve still running?)`
          : `${file.name} could not be read from this computer (a folder, or a file moved or deleted since it ` +
              "was chosen): add the image file itself again",
      );
    }
  });
  return item;
}

async function readsFirstPiece(file) {
  try {
    const reader = file.stream().getReader();
    await reader.read();
    reader.cancel();
    return true;
  } catch (error) {
    return false;
  }
}

function refuse(item, message) {
  item.state = "refused";
  item.error = message;
  render();
}

// "Again" requests on their way, by job and choice: a double click sends one, not two identical jobs.
// A key is kept a while after the answer, since a double click's second click can come after it
// (a fast server, a busy browser): two identical jobs ran then.
const againSent = new Set();
const AGAIN_REPEAT_MS = 2000;

function again(job) {
  const choice = currentChoice();
  const key = `${job.id}${choiceQuery(choice)}`;
  if (againSent.has(key)) return;
  againSent.add(key);
  fetch(`/api/jobs/${job.id}/again?${q()}${choiceQuery(choice)}`, {
    method: "POST",
    headers: { [config.upload_header]: "1" },
  })
    .catch(() => {
      throw new Error(`${job.name} was not run again: the server did not answer (is srfeat serve still running?)`);
    })
    .then(async (response) => {
      const body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
      if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
      if (fileOf(job)) sentFiles.set(body.id, fileOf(job)); // the same file: should this one fail, it can try again
      learned(body);
      render();
      if (response.status === 200) showExisting(body);
    })
    .catch((error) => {
      const item = { localId: `local-${Math.random()}`, name: job.name, state: "refused", error: error.message };
      localItems.push(item);
      render();
    })
    .finally(() => setTimeout(() => againSent.delete(key), AGAIN_REPEAT_MS));
}

const NUDGE_MS = 2000; // how long the detail chooser is outlined after "Again" with the setting a card has

// "Again" with a setting its image has a card of already: the server ran nothing (the same network on the same
// file makes the same result), and that card's result is shown, as a second, identical card would have shown it.
function showExisting(described) {
  const existing = serverJobs.find((other) => other.id === described.id) || described;
  if (existing.state === "done") select(existing);
  announce(`${existing.name} has a card with ${existing.label} already: choose another detail`);
  // Where to choose it, outlined for a moment: pressed on the card shown already, nothing else would change.
  $("detail").classList.add("nudge");
  setTimeout(() => $("detail").classList.remove("nudge"), NUDGE_MS);
}

// The file a job was made of, while this page holds it (not after a reload, nor for another page's upload);
// for a card of a job the server no longer holds, the file that job was made of (kept under the card's id).
function fileOf(job) {
  return sentFiles.get(job.id) || sentFiles.get(job.ref) || sentFiles.get(job.localId);
}

// Where sending the same file again may work: a job that failed for want of memory, a setting whose network
// did not load, a result the server had no room to hold. Not an upload that is no image the server reads
// (its card says to upload another file), nor a job whose file this page no longer holds. A job a restarted
// server no longer holds (its card is the page's own) is sent to the new one the same way.
function canTryAgain(job) {
  return job.state === "failed" && !job.upload_unreadable && Boolean(fileOf(job));
}

// "Try again": the failed job's file sent once more, with the detail chosen now, as a new upload in its card's
// stead. Keyboard focus goes to the new card (the button it was on is gone with the failed one).
function tryAgain(job) {
  const file = fileOf(job);
  if (!file) return;
  const hadFocus = cardHasFocus(job);
  forget(job);
  const item = upload(file);
  if (hadFocus) focusCard(cards.get(item.localId));
}

function focusCard(card) {
  card.li.tabIndex = -1; // focusable by script, not a stop of its own for Tab
  card.li.focus();
}

// ---- the list of jobs ----------------------------------------------------------------------

function formatSeconds(s) {
  s = Math.round(s); // first: 119.7 s was "1 min 60 s"
  if (s < 60) return `${Math.max(1, s)} s`;
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

function statusText(job) {
  if (!connected && (job.state === "queued" || job.state === "running")) {
    return "waiting for the server: the connection is lost";
  }
  switch (job.state) {
    case "waiting":
      return "waiting to upload: the images before it go first";
    case "uploading":
      return "uploading";
    case "held":
      return job.error;
    case "refused":
    case "failed":
    case "cancelled":
      return job.error;
    case "queued":
      return job.ahead > 0
        ? `queued: place ${job.ahead + 1} in line (${job.ahead} ahead)`
        : "queued: next in line";
    case "running": {
      if (job.loading) return `loading the ${job.label} network`;
      const parts = [];
      if (job.tiles_total > 1) parts.push(`tile ${job.tiles_done} of ${job.tiles_total}`);
      if (job.seconds_left !== null) {
        // Counted down between the server's updates, which come once per tile.
        const left = job.seconds_left - (performance.now() - receivedAt) / 1000;
        parts.push(`about ${formatSeconds(Math.max(1, left))} left`);
      } else if (job.tiles_total > 1) {
        parts.push("estimating time left");
      }
      return parts.length ? `upscaling: ${parts.join(", ")}` : "upscaling";
    }
    case "done": {
      // What the result lost (16 bits a JPEG cannot hold, frames after the first...), as `srfeat upscale`
      // warns, and why it is a PNG where the upload's name said JPEG: without it the card looked as if
      // the file were whole, or the download's name were a mistake.
      const notes = job.notes && job.notes.length ? `; note: ${job.notes.join("; ")}` : "";
      return `${job.result_width}\u00d7${job.result_height}, ${formatSeconds(job.seconds)}${notes}`;
    }
    default:
      return job.state;
  }
}

function button(text, onClick, className = "") {
  const b = document.createElement("button");
  b.textContent = text;
  b.className = className;
  b.addEventListener("click", (event) => {
    event.stopPropagation();
    onClick();
  });
  return b;
}

function resultUrl(job, download) {
  return `/api/jobs/${job.id}/result?${q()}${download ? "&download=1" : ""}`;
}

// The list is updated in place (not rebuilt), so a click is never lost to an update.
const cards = new Map(); // key -> { li, parts }

function makeCard(job) {
  const li = document.createElement("li");
  const name = document.createElement("span");
  name.className = "name";
  const remove = button("\u00d7", () => removeItem(li.job), "remove");
  const bar = document.createElement("progress");
  const status = document.createElement("span");
  status.className = "status";
  const actions = document.createElement("span");
  actions.className = "actions";
  const download = document.createElement("a");
  download.className = "button download";
  download.textContent = "Download";
  const compare = button("Compare", () => select(li.job));
  const rerun = button("Again with the chosen detail", () => again(li.job));
  const retry = button("Try again with the chosen detail", () => tryAgain(li.job));
  actions.append(compare, download, rerun, retry);
  li.append(name, remove, bar, status, actions);
  li.addEventListener("click", () => li.job.state === "done" && select(li.job));
  return { li, name, remove, bar, status, actions, download, compare, rerun, retry };
}

function updateCard(card, job) {
  const { li, name, remove, bar, status, actions, download, compare, rerun, retry } = card;
  li.job = job;
  li.className = job.state + (job.id && job.id === selectedId ? " selected" : "");
  li.dataset.state = job.state;
  if (job.id) li.dataset.job = job.id;
  name.textContent = name.title = job.name + (job.label ? ` \u00b7 ${job.label}` : "");
  remove.title = job.state === "queued" || job.state === "running" ? "cancel" : "remove from the list";
  // Each control names its image: a screen reader listing the buttons hears which one is which.
  remove.setAttribute("aria-label", `${remove.title}: ${job.name}`);
  compare.setAttribute("aria-label", `Compare ${job.name}`);
  rerun.setAttribute("aria-label", `Again with the chosen detail: ${job.name}`);
  retry.setAttribute("aria-label", `Try again with the chosen detail: ${job.name}`);
  download.setAttribute("aria-label", `Download ${job.result_name || job.name}`);
  bar.setAttribute("aria-label", `upscaling ${job.name}`); // a bar alone says how far, not which image
  bar.hidden = !(connected && job.state === "running" && job.tiles_total > 1);
  bar.max = Math.max(1, job.tiles_total || 1);
  bar.value = job.tiles_done || 0;
  const text = statusText(job);
  if (status.textContent !== text) status.textContent = text; // unchanged text is not rewritten (screen readers)
  if (card.state !== undefined && card.state !== job.state) announceChange(job, text);
  card.state = job.state;
  if (job.state === "refused" || job.state === "failed") status.setAttribute("role", "alert");
  else status.removeAttribute("role");
  const retryable = canTryAgain(job);
  actions.hidden = job.state !== "done" && !retryable;
  compare.hidden = download.hidden = rerun.hidden = job.state !== "done";
  retry.hidden = !retryable;
  if (job.state === "done") linkDownload(download, job);
}

// A download link while the server is unreachable would end in a failed download (or the
// browser's error page): it is greyed out until the page is back in touch.
function linkDownload(link, job) {
  if (connected) {
    link.href = resultUrl(job, true);
    link.download = job.result_name;
    link.removeAttribute("aria-disabled");
    link.removeAttribute("title");
  } else {
    link.removeAttribute("href");
    link.setAttribute("aria-disabled", "true");
    link.title = "the server is unreachable";
  }
}

// What a screen reader hears: a job that is done or stopped, once (the list itself is not a live
// region: its countdown changes every second). Refusals and failures are alerts on their cards.
function announceChange(job, text) {
  if (job.state === "done") announce(`${job.name}: done, ${text}`);
  else if (job.state === "cancelled") announce(`${job.name}: ${text}`);
}

// Said together: the lines of one update (two images done between two of the page's questions) go into the live
// region at once, joined. Each written over the last, only the last was heard.
let announcing = [];

function announce(text) {
  if (!announcing.length) {
    queueMicrotask(() => {
      $("announce").textContent = announcing.join(". ");
      announcing = [];
    });
  }
  announcing.push(text);
}

function render() {
  const list = $("jobs");
  // An upload the server's list already shows as a job (its answer not yet in) is shown once, as the job.
  const shown = new Set(serverJobs.map((job) => job.ref));
  const items = [...serverJobs, ...localItems.filter((item) => !shown.has(item.localId))];
  const keys = new Set();
  const focused = list.contains(document.activeElement) ? document.activeElement : null;
  let previous = null;
  for (const job of items) {
    const key = job.id || job.localId;
    keys.add(key);
    // An upload that became a job keeps its card (and the keyboard focus on it).
    let card = cards.get(key);
    if (!card && job.ref && cards.has(job.ref)) {
      card = cards.get(job.ref);
      cards.delete(job.ref);
    }
    if (!card) card = makeCard(job);
    cards.set(key, card);
    updateCard(card, job);
    const expectedPlace = previous ? previous.nextSibling : list.firstChild;
    if (expectedPlace !== card.li) list.insertBefore(card.li, expectedPlace);
    previous = card.li;
  }
  // A card moved in the list loses the focus (the node left the page for a moment): it is given back.
  if (focused && focused.isConnected && document.activeElement !== focused) focused.focus();
  for (const [key, card] of cards) {
    if (!keys.has(key)) {
      card.li.remove();
      cards.delete(key);
    }
  }
  $("download-all").disabled = !connected || !serverJobs.some((job) => job.state === "done");
  if (view.job) linkDownload($("download"), view.job);
}

function removeItem(job) {
  const card = cards.get(job.id || job.localId);
  const hadFocus = cardHasFocus(job);
  const place = card ? [...$("jobs").children].indexOf(card.li) : -1;
  forget(job);
  render();
  if (hadFocus) {
    // Keyboard use: focus goes to the next card's x (or the one before, or "choose files"), not to the page.
    const left = $("jobs").children;
    const next = left[Math.min(place, left.length - 1)];
    (next ? next.querySelector(".remove") : $("choose-files")).focus();
  }
}

function cardHasFocus(job) {
  const card = cards.get(job.id || job.localId);
  return Boolean(card) && card.li.contains(document.activeElement);
}

// A job or upload taken off the page (x, or "Try again" in its stead): the server's job is removed there too.
function forget(job) {
  if (job.localId) {
    const index = localItems.indexOf(job);
    if (index >= 0) localItems.splice(index, 1);
    sentFiles.delete(job.localId);
  } else {
    removedIds.add(job.id);
    fetch(`/api/jobs/${job.id}/remove?${q()}`, { method: "POST" }).catch(() => {});
    serverJobs = serverJobs.filter((other) => other.id !== job.id);
    if (selectedId === job.id) clearViewer();
    sentFiles.delete(job.id);
    sentFiles.delete(job.ref);
  }
}

// ---- news from the server -----------------------------------------------------------------

// The page asks for its jobs every half second; it does not hold an event stream open. A stream holds one
// of the 6 connections Chromium allows per server (HTTP/1.1) for as long as the page is open: a 7th tab
// never loaded, and uploads waited behind the streams. A question holds a connection only while it is
// answered, so any number of tabs and windows work, with nothing shared between them (a leader tab or
// a SharedWorker would be, and Web Locks, to choose a leader, need https outside localhost). Each answer
// is the page's whole list (or "unchanged", by the queue's version), so an update cannot be lost or taken
// twice. A hidden tab, whose timers the browser slows (to once a minute after 5 minutes in Chromium), says
// so, and the server waits for it longer; it asks at once when it is shown again.
const POLL_MS = 500;
const RETRY_MS = 1000; // while the server does not answer ("trying again every second")
let version = ""; // the queue's version in the last answer
let pollsSent = 0;
let polling = false; // a question is on its way
let pollTimer = null;

async function poll() {
  if (polling) return; // its answer is near; the next question follows it
  clearTimeout(pollTimer);
  polling = true;
  const sent = ++pollsSent;
  let next = POLL_MS;
  try {
    // After a lost contact, the whole list: the answer may come from a restarted server.
    const since = lostContact ? "" : `&since=${encodeURIComponent(version)}`;
    const hidden = document.hidden ? "&hidden=1" : "";
    const response = await fetch(`/api/sessions/${session}/jobs?page=${pageId}${since}${hidden}`, {
      cache: "no-store",
    });
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
    const answer = await response.json();
    version = answer.version;
    lostContact = false;
    setConnected(true);
    if (!answer.unchanged) update(answer.jobs, sent);
  } catch (error) {
    setConnected(false);
    lostContact = true;
    next = RETRY_MS;
  }
  polling = false;
  pollTimer = setTimeout(poll, next);
}

// At once when the tab is hidden (the server hears that it may be slow to ask) and when it is shown.
document.addEventListener("visibilitychange", () => poll());

// A job the page learned of from an upload's (or an "again"'s) answer: an answer to a question sent
// before it came may not have it yet, and does not take it away (the card vanished and came back).
function learned(job) {
  job.learnedAfter = pollsSent;
  if (!serverJobs.some((other) => other.id === job.id)) serverJobs.push(job);
}

function update(described, sent) {
  const jobs = described.filter((job) => {
    if (!removedIds.has(job.id)) return true;
    fetch(`/api/jobs/${job.id}/remove?${q()}`, { method: "POST" }).catch(() => {}); // it was sent while offline
    return false;
  });
  const known = new Set(jobs.map((job) => job.id));
  jobs.push(...serverJobs.filter((job) => job.learnedAfter >= sent && !known.has(job.id)));
  forgetMissing(jobs);
  const queued = (list) => list.filter((job) => job.state === "queued").length;
  if (queued(jobs) < queued(serverJobs)) wakeHeldUploads();
  serverJobs = jobs;
  // A refused upload that is a job after all (the reload or the network cut it off as its answer came):
  // the job stands for it, and its card, which said it was not uploaded, is not shown again.
  const refs = new Set(jobs.map((job) => job.ref));
  for (const item of localItems.filter((local) => local.state === "refused" && refs.has(local.localId))) {
    localItems.splice(localItems.indexOf(item), 1);
  }
  receivedAt = performance.now();
  if (selectedId && !serverJobs.some((job) => job.id === selectedId)) clearViewer();
  if (!selectedId) {
    const done = serverJobs.find((job) => job.state === "done");
    if (done) select(done);
  }
  render();
}

function wakeHeldUploads() {
  const waiters = roomWaiters;
  roomWaiters = [];
  for (const wake of waiters) wake();
}

function setConnected(up) {
  if (connected === up) return;
  connected = up;
  $("connection").hidden = up;
  render();
}

// Jobs this page had that the server no longer knows (it was restarted, or this page was away
// long enough for it to give them up): their cards say so instead of vanishing. (Jobs the page
// removed itself are out of its list before the server hears of it.)
function forgetMissing(jobs) {
  const known = new Set(jobs.map((job) => job.id));
  for (const job of serverJobs) {
    if (known.has(job.id)) continue;
    const lost = { localId: `lost-${job.id}`, name: job.name, label: job.label, state: "failed", error: "" };
    lost.upload_unreadable = job.upload_unreadable; // a file no server reads is not worth sending again
    // The file this page sent goes with the card (the job's id and ref mean nothing to the new server):
    // its "Try again" sends it there. After a reload of the page it has none: the visitor adds it again.
    const file = fileOf(job);
    if (file) sentFiles.set(lost.localId, file);
    sentFiles.delete(job.id);
    sentFiles.delete(job.ref);
    const cause = "the server no longer holds this image (it was restarted, or this page was away too long)";
    // An upload the server could not read lost nothing with it (no server keeps a failed upload), and "add it
    // again" would send a file that fails again: its card keeps what it said, which says to upload another.
    lost.error = job.upload_unreadable
      ? job.error
      : `${cause}; ${canTryAgain(lost) ? "this page still has it: try again" : "add it again"}`;
    localItems.push(lost);
    if (selectedId === job.id) clearViewer();
  }
}

// Closing or reloading the tab: tell the server at once (it would also notice that the page
// stopped asking, 10 s later).
// A page kept in the back-forward cache (persisted) may come back: it keeps its jobs.
// The server gives a page that leaves a few seconds to come back (a reload) before it cancels.
window.addEventListener("pagehide", (event) => {
  if (event.persisted) return;
  try {
    sessionStorage.setItem(SESSION_KEY, session);
    // Uploads not sent yet die with the page: the reloaded page names them, so none goes missing unsaid.
    const unsent = localItems.filter((item) => ["waiting", "uploading", "held"].includes(item.state));
    // With its ref: one whose whole file had reached the server is a job there, and is shown as that job.
    sessionStorage.setItem(UNSENT_KEY, JSON.stringify(unsent.map((item) => ({ name: item.name, ref: item.localId }))));
  } catch (error) {
    // storage turned off: the reloaded page starts a new session
  }
  navigator.sendBeacon(`/api/sessions/${session}/leave?page=${pageId}`);
});

// ---- the comparison viewer -----------------------------------------------------------------

const view = { job: null, width: 0, height: 0, zoom: 1, x: 0, y: 0, split: 0.5 };

function select(job) {
  if (job.state !== "done") return;
  const changed = selectedId !== job.id;
  selectedId = job.id;
  view.job = job;
  view.width = job.result_width;
  view.height = job.result_height;
  for (const img of [$("before"), $("after")]) {
    img.width = view.width;
    img.height = view.height;
  }
  $("after").src = `/api/jobs/${job.id}/result?${q()}`;
  setOriginal();
  $("after-label").textContent = `srfeat ${job.label}`;
  linkDownload($("download"), job);
  $("download").hidden = false;
  $("stage").hidden = $("split").hidden = $("before-label").hidden = $("after-label").hidden = false;
  $("viewer-empty").hidden = true;
  labelViewer(job);
  if (changed) fit();
  render();
}

function setOriginal() {
  if (!view.job) return;
  const resample = document.querySelector('input[name="resample"]:checked').value;
  $("before").src = `/api/jobs/${view.job.id}/${resample === "bicubic" ? "bicubic" : "original"}?${q()}`;
  $("before").dataset.resample = resample;
  $("before-label").textContent = `original, ${resample} \u00d74`;
  draw();
}

function clearViewer() {
  refocusIfViewerEmpties(selectedId);
  clearTimeout(wheelRest); // no zoom left to say
  selectedId = null;
  view.job = null;
  $("stage").hidden = $("split").hidden = $("before-label").hidden = $("after-label").hidden = true;
  $("download").hidden = true;
  $("viewer-empty").hidden = false;
  labelViewer(null);
  $("frame").classList.remove("zoomed-in"); // nothing to pan: a swipe scrolls the page
  $("before").removeAttribute("src");
  $("after").removeAttribute("src");
}

// Keyboard focus in the viewer when it empties (the server restarted and forgot the shown image, or its job was
// removed) fell to the page's body: Tab started again from the top, and a screen reader said nothing. It goes to the
// card that says what became of the image, where there is one, else to "choose files". Checked once this change is
// drawn: a poll's answer that empties the viewer shows the next image done at once, and then the focus stays put.
function refocusIfViewerEmpties(shownId) {
  const active = document.activeElement;
  if (!active) return;
  // The parts an empty viewer hides or disables; the resample choice stays, and keeps the focus.
  const losesFocus = $("frame").contains(active) || active === $("download") || VIEW_CONTROLS.includes(active.id);
  if (!losesFocus) return;
  queueMicrotask(() => {
    if (view.job) return;
    const card = cards.get(`lost-${shownId}`); // `forgetMissing`'s card for it
    if (card) focusCard(card);
    else $("choose-files").focus();
  });
}

// Without an image the viewer's controls do nothing: Fit, 100% and the zoom buttons are disabled, and the frame is no
// tab stop, until one is shown (Tab passed five stops that did nothing). With one, the frame and the toolbar's
// Download name it: beside several cards, a screen reader said only "comparison" and "Download", whichever was shown.
const VIEW_CONTROLS = ["fit", "actual", "zoom-out", "zoom-in"];
const FRAME_KEYS = "arrow keys pan, + and - zoom, 0 fits it in the window";

function labelViewer(job) {
  for (const id of VIEW_CONTROLS) $(id).disabled = !job;
  $("frame").tabIndex = job ? 0 : -1;
  const shown = job ? ` of ${job.name} \u00b7 ${job.label}` : "";
  $("frame").setAttribute("aria-label", `comparison${shown}: ${FRAME_KEYS}`);
  if (job) $("download").setAttribute("aria-label", `Download ${job.result_name}, shown in the viewer`);
}

function frameSize() {
  const rect = $("frame").getBoundingClientRect();
  return { w: rect.width, h: rect.height };
}

function fit() {
  const { w, h } = frameSize();
  view.zoom = fitZoom();
  view.x = (w - view.width * view.zoom) / 2;
  view.y = (h - view.height * view.zoom) / 2;
  draw();
}

// The zoom that shows the whole picture.
function fitZoom() {
  const { w, h } = frameSize();
  return Math.min(w / view.width, h / view.height);
}

// Every way to zoom (wheel, buttons, keys, pinch) stays within these: out as far as 2%, or as the whole picture if
// that is smaller (a very wide result fits below 2%, and zooming out from there jumped in to 2%); in to 3200%.
function allowedZoom(zoom) {
  return Math.min(32, Math.max(Math.min(0.02, fitZoom()), zoom));
}

function zoomAt(zoom, cx, cy) {
  zoom = allowedZoom(zoom);
  view.x = cx - ((cx - view.x) * zoom) / view.zoom;
  view.y = cy - ((cy - view.y) * zoom) / view.zoom;
  view.zoom = zoom;
  draw();
}

// Zoomed in past the whole picture: a finger's drag pans it. Otherwise the drag is the page's, which scrolls on a
// phone (the viewer took every swipe that landed on it, and the page below it was out of reach).
function zoomedIn() {
  return view.zoom > fitZoom() * 1.001;
}

function zoomCentre(zoom) {
  const { w, h } = frameSize();
  zoomAt(zoom, w / 2, h / 2);
}

function draw() {
  if (!view.job) return;
  const { w } = frameSize();
  $("stage").style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
  const splitX = view.split * w;
  const clip = Math.min(view.width, Math.max(0, (splitX - view.x) / view.zoom));
  $("after").style.clipPath = `inset(0 0 0 ${clip}px)`;
  $("split").style.left = `${splitX}px`;
  $("split").setAttribute("aria-valuenow", String(Math.round(view.split * 100)));
  // Past 100% every image pixel is a block: what the pixels are, not a smoothed guess.
  const pixelated = view.zoom * devicePixelRatio >= 1;
  $("after").style.imageRendering = pixelated ? "pixelated" : "auto";
  const nearest = $("before").dataset.resample === "nearest";
  $("before").style.imageRendering = nearest || pixelated ? "pixelated" : "auto";
  $("zoom-level").textContent = zoomPercent();
  $("frame").classList.toggle("zoomed-in", zoomedIn());
}

function zoomPercent() {
  return `${Math.round(view.zoom * devicePixelRatio * 100)}%`;
}

// The zoom as a screen reader hears it: after a button or a key, at once; after the wheel, once it rests (each of its
// steps said would be a stream of numbers). The level shown in the toolbar is no live region, for that reason.
const WHEEL_REST_MS = 500;
let wheelRest = null;

function sayZoom() {
  clearTimeout(wheelRest);
  $("zoom-said").textContent = `zoom ${zoomPercent()}`;
}

function sayZoomOnceWheelRests() {
  clearTimeout(wheelRest);
  wheelRest = setTimeout(sayZoom, WHEEL_REST_MS);
}

function setSplit(clientX) {
  const rect = $("frame").getBoundingClientRect();
  view.split = Math.min(1, Math.max(0, (clientX - rect.left) / rect.width));
  draw();
}

// Two fingers' midpoint (in the frame) and distance apart.
function spread(fingers) {
  const [a, b] = fingers.values();
  const rect = $("frame").getBoundingClientRect();
  return { x: (a.x + b.x) / 2 - rect.left, y: (a.y + b.y) / 2 - rect.top, distance: Math.hypot(a.x - b.x, a.y - b.y) };
}

// A pinch holds the picture's point under the fingers' midpoint as it was when the second finger landed, and the
// zoom then: the zoom follows the fingers' distance apart, and that point follows their midpoint (a pan with two).
function startPinch(fingers) {
  const { x, y, distance } = spread(fingers);
  const imageX = (x - view.x) / view.zoom;
  const imageY = (y - view.y) / view.zoom;
  return { kind: "pinch", zoom: view.zoom, distance: Math.max(1, distance), imageX, imageY };
}

function pinch(start, fingers) {
  const { x, y, distance } = spread(fingers);
  view.zoom = allowedZoom((start.zoom * distance) / start.distance);
  view.x = x - start.imageX * view.zoom;
  view.y = y - start.imageY * view.zoom;
  draw();
}

function setupViewer() {
  const frame = $("frame");
  const split = $("split");
  let drag = null;
  split.addEventListener("pointerdown", (event) => {
    event.stopPropagation();
    split.setPointerCapture(event.pointerId);
    drag = { kind: "split" };
  });
  // The fingers on the picture, by pointer id: one pans (zoomed in), two pinch.
  const fingers = new Map();
  const startPan = (event) => {
    frame.setPointerCapture(event.pointerId);
    frame.classList.add("panning");
    drag = { kind: "pan", x: event.clientX - view.x, y: event.clientY - view.y };
  };
  frame.addEventListener("pointerdown", (event) => {
    if (!view.job || (drag && drag.kind === "split")) return;
    if (event.pointerType !== "touch") {
      if (!drag) startPan(event);
      return;
    }
    fingers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (fingers.size === 2) drag = startPinch(fingers);
    else if (fingers.size === 1 && zoomedIn()) startPan(event);
    // Fitted, one finger is left to the browser (touch-action: pan-y): a vertical swipe scrolls the page.
  });
  const move = (event) => {
    if (fingers.has(event.pointerId)) fingers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (!drag) return;
    if (drag.kind === "split") {
      setSplit(event.clientX);
    } else if (drag.kind === "pinch") {
      pinch(drag, fingers);
    } else {
      view.x = event.clientX - drag.x;
      view.y = event.clientY - drag.y;
      draw();
    }
  };
  const end = (event) => {
    const pinched = drag && drag.kind === "pinch";
    fingers.delete(event.pointerId);
    drag = null;
    frame.classList.remove("panning");
    // The fingers still on the picture go on from where it is: two pinch, one pans (zoomed in).
    if (fingers.size >= 2) drag = startPinch(fingers);
    else if (pinched) sayZoom();
    const [left] = fingers.values();
    if (fingers.size === 1 && zoomedIn()) drag = { kind: "pan", x: left.x - view.x, y: left.y - view.y };
  };
  for (const target of [split, frame]) {
    target.addEventListener("pointermove", move);
    target.addEventListener("pointerup", end);
    target.addEventListener("pointercancel", end);
  }
  // The keys of a slider (WAI-ARIA's pattern, as a screen reader announces it): up and right move it right, Page Up
  // and Page Down by a tenth, Home and End to either edge (only left and right moved it; End, say, did nothing).
  split.addEventListener("keydown", (event) => {
    const step = event.shiftKey ? 0.1 : 0.02;
    const moves = { ArrowLeft: -step, ArrowDown: -step, ArrowRight: step, ArrowUp: step, PageDown: -0.1, PageUp: 0.1 };
    if (event.key in moves) view.split = Math.min(1, Math.max(0, view.split + moves[event.key]));
    else if (event.key === "Home") view.split = 0;
    else if (event.key === "End") view.split = 1;
    else return;
    event.preventDefault();
    draw();
  });
  // Keyboard: what the mouse does by dragging and the wheel (zoomed in, the rest of the picture
  // was out of reach without a mouse). The split's own arrow keys stay its own.
  frame.addEventListener("keydown", (event) => {
    if (!view.job || event.target !== frame) return;
    const { w, h } = frameSize();
    const step = event.shiftKey ? 0.5 : 0.1;
    const moves = { ArrowLeft: [step * w, 0], ArrowRight: [-step * w, 0], ArrowUp: [0, step * h], ArrowDown: [0, -step * h] };
    if (event.key in moves) {
      view.x += moves[event.key][0];
      view.y += moves[event.key][1];
      draw();
    } else if (event.key === "+" || event.key === "=") zoomCentre(view.zoom * 1.5);
    else if (event.key === "-") zoomCentre(view.zoom / 1.5);
    else if (event.key === "0") fit();
    else return;
    if (!(event.key in moves)) sayZoom(); // a pan leaves the zoom as it was
    event.preventDefault();
  });
  frame.addEventListener(
    "wheel",
    (event) => {
      if (!view.job) return;
      event.preventDefault();
      const rect = frame.getBoundingClientRect();
      zoomAt(view.zoom * Math.pow(1.0015, -event.deltaY), event.clientX - rect.left, event.clientY - rect.top);
      sayZoomOnceWheelRests();
    },
    { passive: false },
  );
  const zoomButtons = {
    fit,
    actual: () => zoomCentre(1 / devicePixelRatio),
    "zoom-in": () => zoomCentre(view.zoom * 1.5),
    "zoom-out": () => zoomCentre(view.zoom / 1.5),
  };
  for (const [id, zoom] of Object.entries(zoomButtons)) {
    $(id).addEventListener("click", () => {
      if (!view.job) return;
      zoom();
      sayZoom();
    });
  }
  for (const radio of document.querySelectorAll('input[name="resample"]')) radio.addEventListener("change", setOriginal);
  window.addEventListener("resize", draw);
  // A view the server cannot build (too large for its free memory, a damaged file) says why on its
  // label, instead of a broken-image icon: the server's one-line reason is fetched again to show it.
  // The picture that failed is hidden: the browser drew its alt text, enlarged with the zoom, across the frame.
  for (const side of ["before", "after"]) {
    $(side).addEventListener("error", () => {
      $(side).classList.add("missing");
      explainMissingView(side);
    });
    $(side).addEventListener("load", () => $(side).classList.remove("missing"));
  }
}

async function explainMissingView(side) {
  const source = $(side).getAttribute("src");
  if (!source) return;
  let reason = "it could not be loaded";
  try {
    const answer = await (await fetch(source)).json();
    if (answer.error) reason = answer.error;
  } catch {
    // the server is gone: the banner says so
  }
  if ($(side).getAttribute("src") !== source) return; // another image was chosen meanwhile
  const label = $(`${side}-label`);
  label.textContent = `${label.textContent.split(": not shown")[0]}: not shown: ${reason}`;
  announce(label.textContent);
}

// ---- start ---------------------------------------------------------------------------------

function setupUploads() {
  const drop = $("drop");
  $("files").addEventListener("change", (event) => {
    for (const file of event.target.files) upload(file);
    event.target.value = "";
  });
  $("folder").addEventListener("change", (event) => {
    showNote("");
    chosenFolder(event.target.files);
    event.target.value = "";
  });
  // The inputs are hidden (a file input's own look cannot be styled): each button opens its chooser, by a click,
  // a touch, Enter or Space.
  $("choose-files").addEventListener("click", () => $("files").click());
  $("choose-folder").addEventListener("click", () => $("folder").click());
  // Files dropped anywhere on the page are taken (the viewer is most of it: dropped there, they were
  // ignored without a word), and the browser does not navigate away from the page to show them.
  // (Text dragged within the page itself is no upload gone wrong: it is let be.)
  let dragFromPage = false;
  document.addEventListener("dragstart", () => (dragFromPage = true));
  document.addEventListener("dragend", () => {
    dragFromPage = false;
    showDragOver(false);
  });
  // While files are dragged over the page, the page says that it takes them, wherever the pointer is (only the
  // drop zone lit up, and a drop on the viewer looked as if it would be ignored). Entering a child fires its
  // dragenter before the dragleave of the element left, so the highlight is on while any enter is unmatched:
  // a count, not the last event, which flickered it off over every child.
  let dragDepth = 0;
  document.addEventListener("dragenter", () => {
    if (dragFromPage) return;
    dragDepth += 1;
    showDragOver(true);
  });
  document.addEventListener("dragleave", () => {
    if (dragFromPage) return;
    // Out of the window, or the drag cancelled (Escape): the last enter is matched.
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) showDragOver(false);
  });
  window.addEventListener("dragover", (event) => event.preventDefault());
  const takeDrop = (event) => {
    event.preventDefault();
    event.stopPropagation(); // taken once: on the drop zone, not again by the window's handler
    dragDepth = 0;
    showDragOver(false);
    if (!dragFromPage) dropped(event.dataTransfer);
  };
  drop.addEventListener("drop", takeDrop);
  window.addEventListener("drop", takeDrop);
  document.addEventListener("paste", pasted);
  if (/^(Mac|iP)/.test(navigator.platform)) $("paste-key").textContent = "\u2318V"; // the key a Mac user presses
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && dragDepth > 0) {
      dragDepth = 0;
      showDragOver(false);
    }
  });
  $("download-all").addEventListener("click", () => {
    const link = document.createElement("a");
    link.href = `/api/sessions/${session}/results.zip`;
    link.download = "srfeat_results.zip";
    document.body.append(link);
    link.click();
    link.remove();
  });
  for (const radio of document.querySelectorAll('input[name="model"]')) radio.addEventListener("change", showStrength);
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
  });
}

function showDragOver(over) {
  $("drop").classList.toggle("over", over);
  document.body.classList.toggle("dragging", over);
}

function dropped(transfer) {
  // Taken now, while the drop lasts: its items (and so a folder's entry) cannot be read once this returns.
  const sources = droppedSources(transfer);
  showNote("");
  if (sources.length) {
    if (sources.some((source) => !(source instanceof File))) addFolders(sources);
    else for (const file of sources) upload(file);
    return;
  }
  // An image dragged from a web page (or a link, or text) comes as its address, not as a file: say so,
  // instead of nothing happening.
  const link = transfer.getData("text/uri-list").split(/\r?\n/).find((line) => line && !line.startsWith("#"));
  const text = (link || transfer.getData("text/plain")).trim();
  if (!text) return;
  const name = ((link && link.split(/[?#]/)[0].split("/").pop()) || text).slice(0, 80);
  const error =
    `${name} was not uploaded: what was dropped is ${link ? "a link" : "text"}, not a file (an image dragged ` +
    "from a web page comes as its address); save the image, then drop or choose the saved file";
  localItems.push({ localId: `dropped-${randomId()}`, name, state: "refused", error });
  render();
}

// What was dropped, in order: each a file, or a folder's entry to walk. A folder came as one "file" the browser
// could not read, and its card said so: its images are what its dropper meant.
function droppedSources(transfer) {
  const items = [...(transfer.items || [])].filter((item) => item.kind === "file");
  if (!items.length) return [...transfer.files];
  return items
    .map((item) => {
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      return entry && entry.isDirectory ? entry : item.getAsFile();
    })
    .filter(Boolean);
}

// What srfeat serve reads (UPLOAD_FORMATS in srfeat/web/job.py), by the names such files have: anything else in
// a dropped folder (notes, videos, .DS_Store) is skipped, as its user meant the folder's pictures.
const IMAGE_NAME = /\.(png|jpe?g|jpe|jfif|mpo|webp|tiff?|bmp|dib|gif|avif)$/i;
const HIDDEN_NAME = /^(\..*|thumbs\.db|desktop\.ini)$/i;

// A dropped folder's images, every level down, uploaded in the order the folders list them.
async function addFolders(sources) {
  const found = [];
  for (const source of sources) {
    if (source instanceof File) found.push({ file: source, path: [source.name] });
    else await walkEntry(source, [], found);
  }
  addFound(found);
}

// A folder picked with "choose a folder": the browser hands every file under it, hidden ones too, each with its path.
function chosenFolder(files) {
  const found = [...files].map((file) => ({ file, path: file.webkitRelativePath.split("/") }));
  addFound(found.filter(({ path }) => !path.some((part) => HIDDEN_NAME.test(part))));
}

// The files found in folders (`path` from the folder's name; a file dropped beside them, its name alone): the images
// are uploaded, and what is skipped is said once, in a note, not as a card for each file.
function addFound(found) {
  const images = found.filter(({ file, path }) => path.length === 1 || IMAGE_NAME.test(file.name));
  for (const { file, name } of namedUniquely(images)) upload(name === file.name ? file : renamed(file, name));
  const skipped = found.filter((each) => !images.includes(each)).map(({ file }) => file.name);
  if (!found.length) showNote("The folder holds no files");
  if (skipped.length) {
    const named =
      skipped.length > 3 ? `${skipped.slice(0, 2).join(", ")} and ${skipped.length - 2} more` : skipped.join(", ");
    const many = skipped.length > 1;
    showNote(
      `${skipped.length} file${many ? "s" : ""} in the folder ${many ? "were" : "was"} skipped, as ` +
        `${many ? "their names say they are" : "its name says it is"} no image (${named})`,
    );
  }
}

// The files under a folder's entry, with their paths from the dropped folder (its name first). A directory reader
// hands its entries in batches (100 at a time in Chromium), until an empty one: each is read.
async function walkEntry(entry, parents, found) {
  const path = [...parents, entry.name];
  if (entry.isFile) {
    try {
      found.push({ file: await new Promise((resolve, reject) => entry.file(resolve, reject)), path });
    } catch (error) {
      // gone since it was dropped: an empty file in its stead, whose card says so (the rest still go)
      found.push({ file: new File([], entry.name), path });
    }
    return;
  }
  const reader = entry.createReader();
  const entries = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject)).catch(() => []);
    if (!batch.length) break;
    entries.push(...batch);
  }
  entries.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  // What the file manager does not show (.DS_Store, Thumbs.db, a .git folder) goes without a word.
  for (const child of entries) if (!HIDDEN_NAME.test(child.name)) await walkEntry(child, path, found);
}

// Each image under its own name; those that share one (a/x.jpg and b/x.jpg) under their paths joined with "_"
// (a_x.jpg, b_x.jpg), so that their cards, downloads and the zip's entries say which folder each came from.
function namedUniquely(images) {
  const counts = new Map();
  const key = (file) => file.name.toLowerCase(); // Photo.png and photo.png are one file on Windows and macOS
  for (const { file } of images) counts.set(key(file), (counts.get(key(file)) || 0) + 1);
  return images.map(({ file, path }) => ({ file, name: counts.get(key(file)) > 1 ? path.join("_") : file.name }));
}

function renamed(file, name) {
  return new File([file], name, { type: file.type, lastModified: file.lastModified });
}

// A note under the drop zone (what a paste or a dropped folder left out), until the next one.
function showNote(text) {
  $("note").textContent = text;
  $("note").hidden = !text;
}

// ---- paste ---------------------------------------------------------------------------------

// What a clipboard's image is in, as a name's extension: a screenshot is a PNG.
const PASTED_EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif",
  "image/bmp": "bmp", "image/tiff": "tif", "image/avif": "avif" };
let pastedCount = 0;

// A pasted image (a screenshot, "Copy image" in a browser) comes named "image.png", or nothing: each is named
// pasted-N, counted on from the cards this session shows (a reload keeps them), so that several pastes' results
// do not come as one name.
function pastedName(file) {
  if (file.name && !/^image\.\w+$/i.test(file.name)) return file.name; // a file copied in a file manager
  const shown = [...serverJobs, ...localItems].map((job) => /^pasted-(\d+)\./.exec(job.name)).filter(Boolean);
  pastedCount = Math.max(pastedCount, ...shown.map((match) => Number(match[1]))) + 1;
  return `pasted-${pastedCount}.${PASTED_EXTENSIONS[file.type] || "png"}`;
}

function typingIn(element) {
  if (!element) return false;
  if (element.isContentEditable || element.tagName === "TEXTAREA") return true;
  const notTyped = ["radio", "checkbox", "range", "file", "button", "submit"];
  return element.tagName === "INPUT" && !notTyped.includes(element.type);
}

// Ctrl+V / Cmd+V anywhere on the page uploads the clipboard's images, as a drop would. Text pasted into a text
// field is the field's; text pasted elsewhere is no image, and a short note says what the page takes.
function pasted(event) {
  if (typingIn(event.target) || !event.clipboardData) return;
  const files = [...event.clipboardData.files];
  if (!files.length) {
    if (event.clipboardData.getData("text/plain").trim()) {
      showNote("What was pasted is text, not an image: copy an image or take a screenshot, then paste it here");
    }
    return;
  }
  event.preventDefault();
  showNote("");
  for (const file of files) {
    const name = file.type.startsWith("image/") ? pastedName(file) : file.name;
    upload(name === file.name ? file : renamed(file, name));
  }
}

function showUnsent() {
  let unsent = [];
  try {
    unsent = JSON.parse(sessionStorage.getItem(UNSENT_KEY) || "[]");
    sessionStorage.removeItem(UNSENT_KEY);
  } catch (error) {
    return;
  }
  for (const { name, ref } of Array.isArray(unsent) ? unsent : []) {
    const error = `${name} was not uploaded: the page was reloaded before it was sent; add it again`;
    // Under its upload's ref: if the server made a job of it after all (the reload came as its answer was
    // on its way), the list shows that job instead of this card, which said the opposite.
    const localId = typeof ref === "string" && ref.startsWith("local-") ? ref : `unsent-${randomId()}`;
    localItems.push({ localId, name: String(name), state: "refused", error });
  }
  render();
}

// The megapixels as the server's refusal names them (Python's :g): rounded to one decimal, a limit of
// 0.25 read 0.3 and one of 0.04 read 0.
function limitsText(limits) {
  const megapixels = +(limits.max_pixels / 1e6).toPrecision(6);
  return `up to ${formatBytes(limits.max_upload_bytes)} and ${megapixels} megapixels per image; upscaling on ${limits.device}`;
}

async function start() {
  showUnsent();
  setupUploads();
  setupViewer();
  try {
    config = await (await fetch("/api/config")).json();
  } catch (error) {
    $("limits").textContent = "cannot reach the server: is srfeat serve still running?";
    return;
  }
  $("limits").textContent = limitsText(config);
  poll();
  setInterval(() => serverJobs.some((job) => job.state === "running") && render(), 1000);
  document.body.dataset.ready = "1";
}

start();
