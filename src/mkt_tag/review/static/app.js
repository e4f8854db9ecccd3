// mkt-tag review: the grid, the filters and the decisions. Plain JavaScript, no build step.
// Every decision is POSTed at once; the server writes the corrections file before it answers.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const PAGE = 60;
const $ = (id) => document.getElementById(id);
const state = { offset: 0, total: 0, loading: false, labels: [], generation: 0 };

function setStatus(text, error = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Review-Token": TOKEN },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const answer = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function query() {
  const params = new URLSearchParams({
    label: $("filter-label").value.trim(),
    low: $("score-low").value || "0",
    high: $("score-high").value || "1",
    sort: $("sort").value,
    status: $("status-filter").value,
    text: $("text").value.trim(),
  });
  return params;
}

async function reload() {
  state.generation += 1;
  state.offset = 0;
  $("grid").replaceChildren();
  await loadMore();
}

async function loadMore() {
  if (state.loading) return;
  state.loading = true;
  const generation = state.generation;
  const params = query();
  params.set("offset", state.offset);
  params.set("limit", PAGE);
  try {
    const page = await api(`/api/photos?${params}`);
    if (generation !== state.generation) return; // the filters changed meanwhile
    state.total = page.total;
    state.offset += page.photos.length;
    for (const photo of page.photos) $("grid").append(card(photo));
    $("count").textContent = `${page.total.toLocaleString()} photos` +
      (page.total > state.offset ? `, ${state.offset.toLocaleString()} shown` : "");
    $("more").hidden = state.offset >= page.total;
  } catch (error) {
    setStatus(`error: ${error.message}`, true);
  } finally {
    state.loading = false;
  }
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function card(photo) {
  const tags = element("ul", { class: "tags" });
  for (const tag of photo.tags) tags.append(tagRow(photo, tag));
  const input = element("input", {
    class: "add", list: "vocab", placeholder: "+ label", "aria-label": `add a label to ${photo.name}`,
    onkeydown: (event) => {
      if (event.key === "Enter") { event.preventDefault(); addLabel(photo.id, input); }
      if (event.key === "Escape") { input.value = ""; input.closest(".photo").focus(); }
    },
  });
  const done = element("button", {
    type: "button", class: "done", "aria-pressed": String(photo.reviewed),
    title: "Reviewed: the tags not rejected are right, every other label wrong (d)",
    onclick: () => markReviewed(photo.id, !photo.reviewed),
  }, photo.reviewed ? "reviewed" : "mark reviewed");
  const node = element("div", {
    class: `photo${photo.reviewed ? " reviewed" : ""}`, role: "listitem", tabindex: "0",
    "data-id": photo.id, "aria-label": photo.name,
  },
  element("img", { src: `/thumb/${photo.id}`, alt: photo.name, loading: "lazy" }),
  element("div", { class: "name", title: `${photo.folder}/${photo.name}` }, photo.name),
  tags,
  element("div", { class: "actions" }, input,
    element("button", { type: "button", onclick: () => addLabel(photo.id, input) }, "add"), done));
  node.photo = photo;
  return node;
}

function tagRow(photo, tag) {
  const verdict = tag.verdict;
  const score = tag.score === null ? "added" : tag.score.toFixed(2);
  const accept = element("button", {
    type: "button", class: "accept", "aria-pressed": String(verdict === "accepted" || verdict === "added"),
    "aria-label": `accept ${tag.label}`, title: "accept (a)",
    onclick: () => decide(photo.id, tag.label, verdict === "accepted" ? "clear" : "accept"),
  }, "✓");
  const reject = element("button", {
    type: "button", class: "reject", "aria-pressed": String(verdict === "rejected"),
    "aria-label": verdict === "added" ? `remove ${tag.label}` : `reject ${tag.label}`,
    title: verdict === "added" ? "remove (x)" : "reject (x)",
    onclick: () => decide(photo.id, tag.label, verdict === "rejected" || verdict === "added" ? "clear" : "reject"),
  }, "✗");
  return element("li", { class: `tag ${verdict}`, "data-label": tag.label },
    element("span", { class: "label" }, tag.label), element("span", { class: "score" }, score),
    accept, reject);
}

function replaceCard(photo) {
  const old = document.querySelector(`.photo[data-id="${photo.id}"]`);
  if (!old) return;
  const hadFocus = old.contains(document.activeElement);
  const cursor = old.querySelector(".tag.cursor")?.dataset.label;
  const fresh = card(photo);
  old.replaceWith(fresh);
  if (cursor) setCursor(fresh, fresh.querySelector(`.tag[data-label="${CSS.escape(cursor)}"]`));
  if (hadFocus) fresh.focus();
}

async function save(path, body) {
  setStatus("saving…");
  try {
    const photo = await api(path, body);
    replaceCard(photo);
    setStatus("saved");
    refreshLabels();
    return photo;
  } catch (error) {
    setStatus(`not saved: ${error.message}`, true);
    return null;
  }
}

const decide = (id, label, decision) => save("/api/decide", { id, label, decision });
const markReviewed = (id, done) => save("/api/reviewed", { id, done });

async function addLabel(id, input) {
  const label = input.value.trim();
  if (!label) return;
  if (await decide(id, label, "accept")) {
    const fresh = document.querySelector(`.photo[data-id="${id}"] input.add`);
    if (fresh) fresh.focus();
  }
}

// --- labels: the sidebar, the completion list, the summary -------------------------------

async function refreshLabels() {
  try {
    const answer = await api("/api/labels");
    state.labels = answer.labels;
    const s = answer.summary;
    $("summary").textContent = `${s.photos.toLocaleString()} photos, ${s.reviewed.toLocaleString()} ` +
      `reviewed, ${s.decisions.toLocaleString()} decisions`;
    // The names read at a glance; the full paths are in the tooltip.
    $("files").textContent = s.results_name ? `${s.results_name} → ${s.corrections_name}` :
      `decisions → ${s.corrections_name}`;
    $("files").title = (s.results ? `results: ${s.results}\n` : "") + `decisions saved to: ${s.corrections}`;
    showLabels();
  } catch (error) {
    setStatus(`error: ${error.message}`, true);
  }
}

function showLabels() {
  const search = $("label-search").value.trim().toLowerCase();
  const current = $("filter-label").value.trim();
  const shown = state.labels.filter((item) => item.label.toLowerCase().includes(search));
  $("label-list").replaceChildren(...shown.slice(0, 500).map((item) => element("li", {},
    element("button", {
      type: "button", class: item.label === current ? "current" : "",
      onclick: () => labelView(item.label),
    }, element("span", {}, item.label),
    element("span", { class: "muted" }, item.rejected ? `${item.photos} (${item.rejected} ✗)` : `${item.photos}`)))));
  if ($("vocab").childElementCount !== state.labels.length) {
    $("vocab").replaceChildren(...state.labels.map((item) => element("option", { value: item.label })));
  }
}

function labelView(label) {
  // "All photos tagged X, lowest scores first": the fastest way to clean up one label.
  $("filter-label").value = label;
  $("sort").value = "borderline";
  showLabels();
  reload().then(() => document.querySelector(".photo")?.focus());
}

// --- keyboard ----------------------------------------------------------------------------

function cards() { return [...document.querySelectorAll(".photo")]; }
function currentCard() { return document.activeElement?.closest?.(".photo") || null; }

function setCursor(photoCard, row) {
  for (const other of photoCard.querySelectorAll(".tag.cursor")) other.classList.remove("cursor");
  if (row) row.classList.add("cursor");
}

function cursorRow(photoCard) {
  const rows = [...photoCard.querySelectorAll(".tag")];
  const filter = $("filter-label").value.trim();
  return photoCard.querySelector(".tag.cursor") ||
    rows.find((row) => row.dataset.label === filter) || rows[0] || null;
}

function moveCard(step) {
  const all = cards();
  const index = all.indexOf(currentCard());
  const next = all[Math.max(0, Math.min(all.length - 1, index + step))];
  if (next) { next.focus(); next.scrollIntoView({ block: "nearest" }); }
  if (index + step >= all.length - 4 && !$("more").hidden) loadMore();
}

function moveTag(photoCard, step) {
  const rows = [...photoCard.querySelectorAll(".tag")];
  if (!rows.length) return;
  const index = rows.indexOf(cursorRow(photoCard));
  setCursor(photoCard, rows[(index + step + rows.length) % rows.length]);
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target.matches("input, select, textarea");
  if (event.key === "Escape") {
    if (typing) event.target.blur();
    return;
  }
  if (typing) return;
  const photoCard = currentCard();
  const photo = photoCard?.photo;
  const row = photoCard ? cursorRow(photoCard) : null;
  const keys = {
    "?": () => $("help").showModal(),
    "/": () => $("label-search").focus(),
    f: () => $("filter-label").focus(),
    j: () => moveCard(1), ArrowDown: () => moveCard(1), ArrowRight: () => moveCard(1),
    k: () => moveCard(-1), ArrowUp: () => moveCard(-1), ArrowLeft: () => moveCard(-1),
  };
  if (photo) {
    Object.assign(keys, {
      h: () => moveTag(photoCard, -1),
      l: () => moveTag(photoCard, 1),
      n: () => photoCard.querySelector("input.add").focus(),
      "+": () => photoCard.querySelector("input.add").focus(),
      d: () => markReviewed(photo.id, !photo.reviewed),
      o: () => window.open(`/preview/${photo.id}`, "_blank", "noopener"),
    });
    if (row) {
      const label = row.dataset.label;
      const added = row.classList.contains("added");
      Object.assign(keys, {
        a: () => decide(photo.id, label, "accept"),
        x: () => decide(photo.id, label, added ? "clear" : "reject"),
        r: () => decide(photo.id, label, added ? "clear" : "reject"),
        u: () => decide(photo.id, label, "clear"),
      });
    }
  }
  const action = keys[event.key];
  if (action) {
    event.preventDefault();
    if (!photoCard && ["j", "ArrowDown", "ArrowRight"].includes(event.key)) cards()[0]?.focus();
    else action();
  }
});

// --- wiring --------------------------------------------------------------------------------

let typingTimer = 0;
function reloadSoon() {
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => { showLabels(); reload(); }, 250);
}

for (const id of ["filter-label", "score-low", "score-high", "text"]) $(id).addEventListener("input", reloadSoon);
for (const id of ["sort", "status-filter"]) $(id).addEventListener("change", reload);
$("filters").addEventListener("submit", (event) => { event.preventDefault(); reload(); });
$("label-search").addEventListener("input", showLabels);
$("label-search").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    const first = $("label-list").querySelector("button");
    if (first) first.click();
  }
});
$("clear-filters").addEventListener("click", () => {
  $("filters").reset();
  showLabels();
  reload();
});
$("more").addEventListener("click", loadMore);
$("help-button").addEventListener("click", () => $("help").showModal());
new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting)) loadMore();
}).observe($("more"));

// The token has done its work once the cookie is set: keep it out of the history and of
// screenshots (a reload still works: the cookie stays).
if (location.search.includes("token=")) history.replaceState(null, "", "/");
refreshLabels();
reload();
