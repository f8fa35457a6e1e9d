// jobrunner dashboard: plain JavaScript, no build step, nothing loaded from elsewhere.
// Data: the daemon's JSON API plus one server-sent stream (/dashboard/api/stream) that
// sends a snapshot, then one delta a second made on the server. The API token, when the
// daemon wants one, is kept in sessionStorage (this tab only) and sent as a header,
// never in a URL.
"use strict";

const STATES = ["scheduled", "blocked", "available", "executing", "retryable", "completed", "discarded", "cancelled"];
const FINAL = new Set(["completed", "discarded", "cancelled"]);
const TOKEN_KEY = "jobrunner.token";
const PAGE = 50;

const state = {
  board: null,          // the last snapshot, deltas applied
  rows: [],             // the jobs table's current page
  cursors: [null],      // "after" cursor of each page visited
  next: null,
  job: null,            // the job page's job
  connected: false,
};

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value);  // CSSOM: allowed by the page's CSP
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function fmtTime(epoch) {
  if (epoch === null || epoch === undefined) return "—";
  const date = new Date(typeof epoch === "number" ? epoch * 1000 : epoch);
  if (isNaN(date)) return String(epoch);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function seconds(epochOrIso) {
  if (epochOrIso === null || epochOrIso === undefined) return null;
  return typeof epochOrIso === "number" ? epochOrIso : Date.parse(epochOrIso) / 1000;
}

function fmtSpan(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function finishedAt(job) {
  return job.completed_at ?? job.discarded_at ?? job.cancelled_at ?? null;
}

function badge(jobState) {
  return h("span", { class: `badge s-${jobState}`, "data-state": jobState }, jobState);
}

function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

// ------------------------------------------------------------------ API and token

function token() { return sessionStorage.getItem(TOKEN_KEY); }

let loginWaiters = [];
function askToken(message) {
  const dialog = document.getElementById("login");
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  if (!dialog.open) dialog.showModal();
  document.getElementById("login-token").focus();
  return new Promise((resolve) => loginWaiters.push(resolve));
}

async function api(path, options = {}) {
  for (;;) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    const saved = token();
    if (saved) headers.Authorization = `Bearer ${saved}`;
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method: options.method || "GET", headers, cache: "no-store", signal: options.signal,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    if (response.status === 401) {
      await askToken(saved ? "That token was refused." : "");
      continue;
    }
    if (options.stream) {
      if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
      return response;
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
    if (!response.ok) {
      const error = new Error((data && data.error) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }
}

async function act(label, path, body) {
  try {
    await api(path, { method: "POST", body });
    toast(`${label}: done`);
    return true;
  } catch (error) {
    toast(`${label}: ${error.message}`);
    return false;
  }
}

// ------------------------------------------------------------------ the live stream

async function follow() {
  let delay = 1000;
  for (;;) {
    try {
      const response = await api("/dashboard/api/stream", { stream: true });
      setLive(true);
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
          }
          if (data.length) onMessage(name, JSON.parse(data.join("\n")));
        }
      }
    } catch (error) {
      console.warn("stream:", error);
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function setLive(on) {
  state.connected = on;
  const el = document.getElementById("live");
  el.className = `live ${on ? "on" : "off"}`;
  el.textContent = on ? "live" : "reconnecting…";
}

function onMessage(name, message) {
  if (name === "snapshot") {
    state.board = message;
    render();
    return;
  }
  if (name !== "delta" || !state.board) return;
  const board = state.board;
  board.now = message.now;
  if (message.topics) board.topics = message.topics;
  if (message.nodes) board.nodes = message.nodes;
  for (const [topic, buckets] of Object.entries(message.rates || {})) {
    const kept = new Map((board.rates[topic] || []).map((b) => [b[0], b]));
    for (const bucket of buckets) kept.set(bucket[0], bucket);
    const oldest = message.now - board.bucket * board.history;
    board.rates[topic] = [...kept.values()].filter((b) => b[0] > oldest).sort((a, b) => a[0] - b[0]);
  }
  if (message.topics || message.rates) refreshOverview();
  if (message.jobs || message.overflow) onJobs(message.jobs || [], Boolean(message.overflow));
}

// ------------------------------------------------------------------ routing

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  return { path, params: new URLSearchParams(query || "") };
}

function render() {
  const { path, params } = route();
  for (const link of document.querySelectorAll("[data-nav]")) {
    const name = link.dataset.nav;
    link.classList.toggle("on", name === "jobs" ? path.startsWith("/jobs") : path === "/");
  }
  const view = document.getElementById("view");
  const match = path.match(/^\/jobs\/(\d+)$/);
  if (match) return renderJob(view, Number(match[1]));
  if (path === "/jobs") return renderJobs(view, params);
  return renderOverview(view);
}

// ------------------------------------------------------------------ overview

function recent(topic, span) {
  const board = state.board;
  let completed = 0, failed = 0;
  for (const [start, c, f] of board.rates[topic] || []) {
    if (start + board.bucket > board.now - span) { completed += c; failed += f; }
  }
  return { completed, failed };
}

function chart(topic) {
  const board = state.board;
  const width = 300, height = 56, n = board.history;
  const end = Math.floor(board.now / board.bucket) * board.bucket;
  const buckets = new Map((board.rates[topic] || []).map((b) => [b[0], b]));
  let peak = 1;
  for (const [, c, f] of buckets.values()) peak = Math.max(peak, c + f);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${topic}: outcomes per ${board.bucket} s over the last ${n * board.bucket / 60} min`);
  const bar = width / n;
  for (let i = 0; i < n; i++) {
    const b = buckets.get(end - (n - 1 - i) * board.bucket);
    if (!b) continue;
    const [, c, f] = b;
    const hc = (c / peak) * height, hf = (f / peak) * height;
    for (const [cls, y, hgt] of [["c", height - hc, hc], ["f", height - hc - hf, hf]]) {
      if (hgt <= 0) continue;
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      rect.setAttribute("class", cls);
      rect.setAttribute("x", (i * bar).toFixed(2));
      rect.setAttribute("width", Math.max(bar - 0.6, 0.6).toFixed(2));
      rect.setAttribute("y", y.toFixed(2));
      rect.setAttribute("height", Math.max(hgt, 0.8).toFixed(2));
      svg.append(rect);
    }
  }
  return svg;
}

function topicCard(name, topic) {
  const counts = topic.counts || {};
  const minute = recent(name, 60);
  const outcomes = minute.completed + minute.failed;
  const limit = topic.parallelism;
  const here = topic.running_here;
  const card = h("section", { class: "card", "data-topic": name },
    h("div", { class: "head" },
      h("h3", {}, h("a", { href: `#/jobs?topic=${encodeURIComponent(name)}` }, name),
        topic.external ? h("span", { class: "chip" }, "external") : null),
      h("span", { class: `badge ${topic.paused ? "paused" : "running"}`, "data-role": "status" },
        topic.paused ? "paused" : "running")),
    h("div", { class: "counts" }, STATES.map((s) =>
      h("a", { class: `chip${counts[s] ? "" : " zero"}`, href: `#/jobs?topic=${encodeURIComponent(name)}&state=${s}`,
        "data-count": s }, `${s} `, h("b", {}, (counts[s] || 0).toLocaleString())))),
    h("dl", { class: "facts" },
      h("dt", {}, "throughput"), h("dd", {}, `${(minute.completed / 60).toFixed(2)}/s (last minute)`),
      h("dt", {}, "failure rate"), h("dd", {}, outcomes ? `${(100 * minute.failed / outcomes).toFixed(1)} %` : "—"),
      h("dt", {}, "running"), h("dd", {},
        here === null ? `${counts.executing || 0} leased / ${limit}` : `${here} / ${limit} here`,
        ` · ${counts.executing || 0} executing in all`),
      h("dt", {}, "nodes"), h("dd", {}, `${(state.board.nodes || []).filter((n) => n.alive).length} alive`)),
    here === null ? null : h("div", { class: "meter", title: `${here} of ${limit} slots in use` },
      h("span", { style: { width: `${Math.min(100, (100 * here) / Math.max(limit, 1))}%` } })),
    chart(name),
    h("div", { class: "legend" }, h("span", {}, h("i", { class: "c" }), "completed"),
      h("span", {}, h("i", { class: "f" }), "failed"),
      h("span", {}, `per ${state.board.bucket} s, last ${state.board.history * state.board.bucket / 60} min`)),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "ghost", "data-action": topic.paused ? "resume" : "pause",
        onclick: async (e) => {
          e.target.disabled = true;
          await act(`${topic.paused ? "resume" : "pause"} ${name}`,
            `/topics/${encodeURIComponent(name)}/${topic.paused ? "resume" : "pause"}`);
          e.target.disabled = false;
        } }, topic.paused ? "Resume" : "Pause"),
      h("label", { class: "muted" }, "parallelism ",
        h("input", { type: "number", min: 1, max: 10000, value: limit, "data-role": "scale-to",
          "aria-label": `parallelism of ${name}` })),
      h("button", { type: "button", class: "ghost", "data-action": "scale", onclick: async (e) => {
        const input = e.target.parentElement.querySelector("[data-role=scale-to]");
        await act(`scale ${name} to ${input.value}`, `/topics/${encodeURIComponent(name)}/scale`,
          { parallelism: Number(input.value) });
      } }, "Scale")));
  return card;
}

function renderOverview(view) {
  if (!state.board) {
    view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    return;
  }
  const topics = Object.entries(state.board.topics);
  view.replaceChildren(
    h("h1", {}, "Topics"),
    topics.length ? h("div", { class: "grid", id: "topics" }, topics.map(([n, t]) => topicCard(n, t)))
      : h("p", { class: "muted" }, "No topic is configured."),
    h("h2", {}, "Nodes"),
    h("div", { class: "table-wrap" }, h("table", { id: "nodes" },
      h("thead", {}, h("tr", {}, h("th", {}, "node"), h("th", {}, "status"), h("th", { class: "opt" }, "started"),
        h("th", {}, "last heartbeat"))),
      h("tbody", {}, (state.board.nodes || []).map((n) => h("tr", {},
        h("td", { class: "mono" }, n.node, n.this ? h("span", { class: "muted" }, " (serving this page)") : null),
        h("td", {}, h("span", { class: `badge ${n.alive ? "running" : "paused"}` }, n.alive ? "alive" : "silent")),
        h("td", { class: "opt" }, fmtTime(n.started_at)),
        h("td", {}, `${fmtSpan(state.board.now - n.heartbeat_at)} ago`)))))));
}

function refreshOverview() {
  if (route().path === "/") {
    // Keep a parallelism being typed: redraw only the cards whose input is not focused.
    const focused = document.activeElement;
    if (focused && focused.dataset && focused.dataset.role === "scale-to") {
      for (const [name, topic] of Object.entries(state.board.topics)) {
        const old = document.querySelector(`[data-topic="${CSS.escape(name)}"]`);
        if (old && !old.contains(focused)) old.replaceWith(topicCard(name, topic));
      }
      return;
    }
    renderOverview(document.getElementById("view"));
  }
}

// ------------------------------------------------------------------ jobs table

function filtersOf(params) {
  return { topic: params.get("topic") || "", state: params.get("state") || "", worker: params.get("worker") || "",
    order: params.get("order") === "oldest" ? "oldest" : "newest" };
}

function matches(job, filters) {
  return (!filters.topic || job.topic === filters.topic) && (!filters.state || job.state === filters.state) &&
    (!filters.worker || job.worker === filters.worker);
}

function setFilters(filters) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) {
    if (value && !(key === "order" && value === "newest")) params.set(key, value);
  }
  const query = params.toString();
  location.hash = `#/jobs${query ? "?" + query : ""}`;
}

async function loadJobs(filters, after) {
  const params = new URLSearchParams({ limit: PAGE, order: filters.order });
  for (const key of ["topic", "state", "worker"]) if (filters[key]) params.set(key, filters[key]);
  if (after) params.set("after", after);
  const page = await api(`/dashboard/api/jobs?${params}`);
  state.rows = page.jobs;
  state.next = page.next;
  drawRows();
}

function jobRow(job) {
  return h("tr", { "data-job-id": job.id },
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, `#${job.id}`)),
    h("td", {}, job.topic),
    h("td", { class: "worker mono", title: job.worker }, job.worker),
    h("td", {}, badge(job.state)),
    h("td", { class: "opt" }, `${job.attempt}/${job.max_attempts}`),
    h("td", { class: "opt" }, fmtTime(job.inserted_at)),
    h("td", {}, fmtTime(finishedAt(job) ?? job.attempted_at)));
}

function drawRows() {
  const body = document.getElementById("rows");
  if (!body) return;
  body.replaceChildren(...(state.rows.length ? state.rows.map(jobRow)
    : [h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No job matches."))]));
  const pager = document.getElementById("pager");
  const page = state.cursors.length;
  pager.replaceChildren(
    h("span", { class: "muted" }, `page ${page}`),
    h("button", { type: "button", class: "ghost", disabled: page === 1, onclick: () => {
      state.cursors.pop();
      loadJobs(filtersOf(route().params), state.cursors[state.cursors.length - 1]);
    } }, "← Previous"),
    h("button", { type: "button", class: "ghost", disabled: !state.next, "data-action": "next-page", onclick: () => {
      state.cursors.push(state.next);
      loadJobs(filtersOf(route().params), state.next);
    } }, "Next →"));
}

function renderJobs(view, params) {
  const filters = filtersOf(params);
  const topics = state.board ? Object.keys(state.board.topics) : [];
  const change = (key) => (e) => setFilters({ ...filters, [key]: e.target.value });
  view.replaceChildren(
    h("h1", {}, "Jobs"),
    h("div", { class: "filters" },
      h("select", { "aria-label": "topic", "data-filter": "topic", onchange: change("topic") },
        h("option", { value: "" }, "every topic"),
        topics.map((t) => h("option", { value: t, selected: t === filters.topic }, t))),
      h("select", { "aria-label": "state", "data-filter": "state", onchange: change("state") },
        h("option", { value: "" }, "every state"),
        STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s))),
      h("input", { "aria-label": "worker", "data-filter": "worker", placeholder: "worker (import path)",
        value: filters.worker, onchange: change("worker"), size: 28 }),
      filters.topic || filters.state || filters.worker
        ? h("button", { type: "button", class: "ghost", onclick: () => setFilters({ order: filters.order }) }, "Clear")
        : null),
    h("div", { class: "table-wrap" }, h("table", { id: "jobs" },
      h("thead", {}, h("tr", {},
        h("th", {}, h("button", { type: "button", class: "sort", "data-action": "sort",
          title: "sort by insertion time",
          onclick: () => setFilters({ ...filters, order: filters.order === "newest" ? "oldest" : "newest" }) },
          `id ${filters.order === "newest" ? "↓" : "↑"}`)),
        h("th", {}, "topic"), h("th", {}, "worker"), h("th", {}, "state"), h("th", { class: "opt" }, "attempt"),
        h("th", { class: "opt" }, "inserted"), h("th", {}, "last run / finished"))),
      h("tbody", { id: "rows" }))),
    h("div", { class: "pager", id: "pager" }));
  state.cursors = [null];
  loadJobs(filters, null).catch((error) => toast(`jobs: ${error.message}`));
}

let reloadTimer = null;
function onJobs(changed, overflow) {
  const { path, params } = route();
  const match = path.match(/^\/jobs\/(\d+)$/);
  if (match) {
    if (changed.some((j) => j.id === Number(match[1])) || overflow) refreshJob(Number(match[1]));
    return;
  }
  if (path !== "/jobs") return;
  const filters = filtersOf(params);
  const firstPage = state.cursors.length === 1;
  if (overflow) {
    // More changed than a delta carries: reload the page, at most every 5 s.
    if (!reloadTimer) reloadTimer = setTimeout(() => {
      reloadTimer = null;
      loadJobs(filters, state.cursors[state.cursors.length - 1]).catch(() => {});
    }, 5000);
    return;
  }
  const byId = new Map(state.rows.map((j) => [j.id, j]));
  let rows = state.rows.map((j) => j);
  const fresh = [];
  for (const job of changed) {
    if (byId.has(job.id)) {
      rows = rows.map((r) => (r.id === job.id ? job : r));
    } else if (firstPage && filters.order === "newest" && matches(job, filters) &&
               (!rows.length || job.id > rows[0].id)) {
      fresh.push(job);
    }
  }
  if (fresh.length) {
    fresh.sort((a, b) => b.id - a.id);
    rows = [...fresh, ...rows];
    if (rows.length > PAGE) { state.next = rows[PAGE - 1].id; rows = rows.slice(0, PAGE); }
  }
  state.rows = rows;
  drawRows();
}

// ------------------------------------------------------------------ job page

function json(value) {
  return h("pre", {}, value === null || value === undefined ? "null" : JSON.stringify(value, null, 2));
}

function jobActions(job) {
  const buttons = [];
  if (job.state === "discarded" || job.state === "cancelled") {
    buttons.push(h("button", { type: "button", "data-action": "retry", onclick: async () => {
      if (await act(`retry #${job.id}`, `/jobs/${job.id}/retry`)) refreshJob(job.id);
    } }, "Retry"));
  }
  if (!FINAL.has(job.state)) {
    buttons.push(h("button", { type: "button", class: "danger", "data-action": "cancel", onclick: async () => {
      if (await act(`cancel #${job.id}`, `/jobs/${job.id}/cancel`)) refreshJob(job.id);
    } }, "Cancel"));
  }
  return h("div", { class: "actions" }, buttons);
}

function drawJob(view, job) {
  const inserted = seconds(job.inserted_at), scheduled = seconds(job.scheduled_at);
  const attempted = seconds(job.attempted_at), finished = seconds(finishedAt(job));
  const errors = job.errors || [];
  view.replaceChildren(
    h("p", {}, h("a", { href: `#/jobs?topic=${encodeURIComponent(job.topic)}` }, `← ${job.topic} jobs`)),
    h("h1", { "data-job-id": job.id }, `Job #${job.id} `, badge(job.state)),
    jobActions(job),
    h("div", { class: "cols" },
      h("section", { class: "card" }, h("h2", {}, "Job"), h("dl", { class: "facts" },
        h("dt", {}, "topic"), h("dd", {}, job.topic),
        h("dt", {}, "worker"), h("dd", { class: "mono" }, job.worker),
        h("dt", {}, "priority"), h("dd", {}, job.priority),
        h("dt", {}, "attempt"), h("dd", { "data-role": "attempt" }, `${job.attempt} of ${job.max_attempts}`),
        h("dt", {}, "node"), h("dd", { class: "mono" }, job.attempted_by || "—"),
        job.depends_on ? [h("dt", {}, "depends on"), h("dd", {},
          job.depends_on.map((id) => h("a", { href: `#/jobs/${id}` }, `#${id} `)))] : null)),
      h("section", { class: "card" }, h("h2", {}, "Timings"), h("dl", { class: "facts" },
        h("dt", {}, "inserted"), h("dd", {}, fmtTime(inserted)),
        h("dt", {}, "scheduled"), h("dd", {}, fmtTime(scheduled)),
        h("dt", {}, "last started"), h("dd", {}, fmtTime(attempted)),
        h("dt", {}, "finished"), h("dd", {}, fmtTime(finished)),
        h("dt", {}, "waited"), h("dd", {}, attempted ? fmtSpan(attempted - scheduled) : "—"),
        h("dt", {}, "last run"), h("dd", {}, attempted && finished ? fmtSpan(finished - attempted) : "—")))),
    h("h2", {}, "Arguments"), json(job.args),
    h("h2", {}, "Result"), json(job.result),
    h("h2", {}, `Errors (${errors.length})`),
    errors.length ? h("div", { id: "errors" }, errors.map((e, i) => h("div", { class: "attempt", "data-attempt": e.attempt },
      h("div", { class: "when" }, `attempt ${e.attempt ?? "?"} · ${fmtTime(e.at)}`),
      h("div", { class: "error mono" }, e.error),
      e.note ? h("div", { class: "muted" }, e.note) : null,
      e.traceback ? h("details", { open: i === errors.length - 1 }, h("summary", {}, "traceback"),
        h("pre", { "data-role": "traceback" }, e.traceback)) : null)))
      : h("p", { class: "muted" }, "No error so far."));
}

let jobLoading = null;
async function refreshJob(id) {
  if (jobLoading === id) return;
  jobLoading = id;
  try {
    const job = await api(`/jobs/${id}`);
    const match = route().path.match(/^\/jobs\/(\d+)$/);
    if (match && Number(match[1]) === id) drawJob(document.getElementById("view"), job);
  } catch (error) {
    document.getElementById("view").replaceChildren(h("p", { class: "error" }, `Job #${id}: ${error.message}`));
  } finally {
    jobLoading = null;
  }
}

function renderJob(view, id) {
  view.replaceChildren(h("p", { class: "muted" }, `Loading job #${id}…`));
  refreshJob(id);
}

// ------------------------------------------------------------------ start

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

function start() {
  applyTheme(localStorage.getItem("jobrunner.theme"));
  document.getElementById("theme").addEventListener("click", () => {
    const dark = getComputedStyle(document.documentElement).colorScheme === "dark";
    const theme = dark ? "light" : "dark";
    localStorage.setItem("jobrunner.theme", theme);
    applyTheme(theme);
  });
  const logout = document.getElementById("logout");
  logout.hidden = !token();
  logout.addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });
  document.getElementById("login-form").addEventListener("submit", () => {
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("login-token").value.trim());
    document.getElementById("login-token").value = "";
    logout.hidden = false;
    const waiters = loginWaiters;
    loginWaiters = [];
    for (const resolve of waiters) resolve();
  });
  // The dialog cannot be dismissed without a token: requests wait for one.
  document.getElementById("login").addEventListener("cancel", (e) => e.preventDefault());
  window.addEventListener("hashchange", render);
  render();
  follow();
}

start();
