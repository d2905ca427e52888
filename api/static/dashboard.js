// citybrain command-centre dashboard: plain ES2020, no dependencies.
// Data is only ever placed with textContent, never innerHTML.
"use strict";

const TOKEN_KEY = "citybrain.token";           // sessionStorage only
const DISTRICTS = ["市南区", "市北区", "李沧区", "崂山区", "城阳区", "黄岛区", "即墨区"];
const LEVEL_NAMES = { district: "区 District", street: "街道 Street", community: "社区 Community", grid_cell: "网格 Grid cell" };
const DOMAIN_NAMES = { gate: "门禁 Gates", traffic: "交通 Traffic", grid: "电网 Grid" };
const SPARK_FIGURE = { traffic: "speed_kmh_mean", grid: "load_kw_mean", gate: "passes" };
const $ = (id) => document.getElementById(id);

// ---------- helpers ----------
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);   // strings become text nodes
  return node;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
function fmt(v, digits = 0, unit = "") {
  if (!isNum(v)) return v == null || v === "" ? "—" : String(v);
  return v.toLocaleString("zh-CN", { maximumFractionDigits: digits, minimumFractionDigits: digits }) + unit;
}
const clock = (ms) => (isNum(ms) ? new Date(ms).toLocaleTimeString("zh-CN", { hour12: false }) : "—");
const perMin = (n, minutes) => (isNum(n) && minutes > 0 ? n / minutes : null);

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { showLogin(); throw new ApiError(401, "no token"); }
  const res = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  if (res.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("令牌无效或已过期 Token rejected — please enter it again");
    throw new ApiError(401, "unauthorized");
  }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail ?? detail; } catch { /* not JSON */ }
    throw new ApiError(res.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return res.json();
}

function errorText(err) {
  if (err.status === 404) return "无数据 No data";
  return `错误 Error: ${err.message}`;
}

// ---------- figures → rows ----------
// Rows are [label, value text, css class]. `minutes` is the span the counts cover.
function figureRows(domain, f, minutes) {
  if (!f) return [["无数据 No data", "—", ""]];
  if (domain === "gate") {
    return [
      ["通行/分 Passes/min", fmt(perMin(f.passes, minutes), 1), ""],
      ["进 In", fmt(f.in), ""],
      ["出 Out", fmt(f.out), ""],
      ["拒绝 Denied", fmt(f.denied), f.denied > 0 ? "warn" : ""],
      ["尾随 Tailgates", fmt(f.tailgates), f.tailgates > 0 ? "bad" : ""],
      ["最高体温 Max temp", fmt(f.max_temperature_c, 1, " °C"), f.max_temperature_c >= 37.3 ? "bad" : ""],
    ];
  }
  if (domain === "traffic") {
    const w = f.speed_kmh_weighted;
    const congestion = isNum(w) ? Math.min(1, Math.max(0, 1 - w / 60)) : null;
    return [
      ["平均车速 Mean speed", fmt(f.speed_kmh_mean, 1, " km/h"), ""],
      ["加权车速 Weighted speed", fmt(w, 1, " km/h"), ""],
      ["车流量 Volume", fmt(f.volume), ""],
      ["占有率 Occupancy", isNum(f.occupancy_mean) ? fmt(f.occupancy_mean * 100, 1, " %") : "—", ""],
      ["拥堵指数 Congestion index (1 − 加权车速/60)", fmt(congestion, 2),
        congestion == null ? "" : congestion >= 0.6 ? "bad" : congestion >= 0.3 ? "warn" : "ok"],
    ];
  }
  return [
    ["平均负荷 Mean load", fmt(f.load_kw_mean, 0, " kW"), ""],
    ["最大负荷 Max load", fmt(f.load_kw_max, 0, " kW"), ""],
    ["电压 Voltage min/max", `${fmt(f.voltage_kv_min, 2)} / ${fmt(f.voltage_kv_max, 2)} kV`, ""],
    ["频率 Frequency min/max", `${fmt(f.frequency_hz_min, 2)} / ${fmt(f.frequency_hz_max, 2)} Hz`, ""],
    ["断路器 Breaker", `${fmt(f.breaker)} (断开 open ×${fmt(f.breaker_open)})`,
      f.breaker === "open" || f.breaker_open > 0 ? "bad" : ""],
  ];
}

function renderDl(dl, rows) {
  dl.replaceChildren(...rows.flatMap(([label, value, cls]) =>
    [el("dt", { text: label }), el("dd", { text: value, class: cls || "" })]));
  return dl;
}

const windowMinutes = (w) => (w && isNum(w.start) && isNum(w.end) ? (w.end - w.start) / 60000 : 0);
const windowText = (w) => (w ? `窗口 Window ${clock(w.start)}–${clock(w.end)} ${w.closed ? "已关闭 closed" : "进行中 open"}` : "无窗口 No window");

// ---------- vital signs ----------
async function refreshVitals() {
  const data = await api("/api/v1/overview");
  for (const domain of ["gate", "traffic", "grid"]) {
    const tile = $(`tile-${domain}`);
    const d = data.domains?.[domain] ?? {};
    const city = d.city;
    const rows = [
      ...figureRows(domain, city?.figures, windowMinutes(city?.window)),
      ["事件/秒 Events/s", fmt(d.events_per_s, 1), ""],
      ["事件总数 Total events", fmt(d.events), ""],
      ["拒收 Rejected", fmt(d.rejected), d.rejected > 0 ? "warn" : ""],
    ];
    renderDl(tile.querySelector("dl"), rows);
    tile.querySelector(".foot").textContent =
      `${windowText(city?.window)} · 最新事件 Latest event ${clock(d.latest_event_ts)} · 分区 Partitions ${fmt(d.partitions)}`;
  }
  setStatus(`更新于 Updated ${clock(data.generated_at)} · 设备 Devices ${fmt(data.entities)}`);
}

function setStatus(text, bad = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("bad", bad);
}

// ---------- areas ----------
let currentArea = null;   // {level, id}

function domainBlock(domain, summary, count) {
  const box = el("div", { class: "tile small" },
    el("h3", {}, DOMAIN_NAMES[domain], el("span", { class: "en", text: ` · 设备 devices ${fmt(count ?? 0)}` })));
  box.append(el("p", { class: "muted", text: "最新窗口 Newest window" }),
    renderDl(el("dl"), figureRows(domain, summary?.figures, windowMinutes(summary?.window))),
    el("p", { class: "muted", text: "近15分钟 Last 15 min" }),
    renderDl(el("dl"), figureRows(domain, summary?.last_15m, 15)),
    el("p", { class: "foot", text: windowText(summary?.window) }));
  return box;
}

function renderBreadcrumb(items) {
  const nav = $("breadcrumb");
  nav.replaceChildren();
  items.forEach(({ level, id }, i) => {
    if (i) nav.append(el("span", { class: "sep", text: "›" }));
    nav.append(el("button", { type: "button", text: `${id} (${LEVEL_NAMES[level] ?? level})`,
      onclick: () => openArea(level, id) }));
  });
}

// Fetch a view's data, showing "loading" and any error in the view unless it is a quiet
// background refresh; null when there is nothing to show.
async function load(view, path, quiet) {
  if (!quiet) view.replaceChildren(el("p", { class: "muted", text: "加载中 Loading…" }));
  try {
    return await api(path);
  } catch (err) {
    if (!quiet) view.replaceChildren(el("p", { class: "error", text: errorText(err) }));
    return null;
  }
}

async function openArea(level, id, quiet = false) {
  currentArea = { level, id };
  const view = $("area-view");
  if (!quiet) renderBreadcrumb([{ level, id }]);
  const data = await load(view, `/api/v1/areas/${encodeURIComponent(level)}/${encodeURIComponent(id)}`, quiet);
  if (data === null) return;
  if (currentArea?.level !== level || currentArea?.id !== id) return;   // user moved on
  const crumbs = Object.entries(data.path ?? {}).filter(([, v]) => v).map(([lv, v]) => ({ level: lv, id: v }));
  renderBreadcrumb([...crumbs, { level: data.level, id: data.id }]);
  const cols = el("div", { class: "cols" },
    ...["gate", "traffic", "grid"].map((d) => domainBlock(d, data.domains?.[d], data.entities?.[d])));
  const parts = [el("h3", { text: `${data.id} · ${LEVEL_NAMES[data.level] ?? data.level}` }), cols];
  if (data.children?.length) {
    const below = LEVEL_NAMES[data.children[0].level] ?? data.children[0].level;
    parts.push(el("h3", { text: `下级 ${below}` }),
      el("ul", { class: "children" }, ...data.children.map((c) => {
        const n = Object.values(c.entities ?? {}).reduce((a, b) => a + b, 0);
        return el("li", {}, el("button", { type: "button", text: `${c.id} (${n})`,
          onclick: () => openArea(c.level, c.id) }));
      })));
  }
  view.replaceChildren(...parts);
}

// ---------- entity ----------
let currentEntity = null;   // {domain, id, figure}

function sparkline(values) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 400, H = 80, P = 4;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark");
  const nums = values.filter(isNum);
  if (!nums.length) return svg;
  const lo = Math.min(...nums), hi = Math.max(...nums), span = hi - lo || 1;
  const step = values.length > 1 ? (W - 2 * P) / (values.length - 1) : 0;
  let points = [];
  const flush = () => {                 // a null window breaks the line
    if (points.length === 1) points.push(points[0]);
    if (points.length) {
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", points.join(" "));
      svg.append(line);
    }
    points = [];
  };
  values.forEach((v, i) => {
    if (!isNum(v)) return flush();
    points.push(`${(P + i * step).toFixed(1)},${(H - P - ((v - lo) / span) * (H - 2 * P)).toFixed(1)}`);
  });
  flush();
  return svg;
}

async function openEntity(domain, id, quiet = false) {
  currentEntity = { domain, id };
  const view = $("entity-view");
  const data = await load(view, `/api/v1/entities/${encodeURIComponent(domain)}/${encodeURIComponent(id)}`, quiet);
  if (data === null) return;
  if (currentEntity?.domain !== domain || currentEntity?.id !== id) return;
  const figure = SPARK_FIGURE[domain];
  const values = (data.windows ?? []).map((w) => w.figures?.[figure] ?? null);
  const latest = [...values].reverse().find(isNum);
  const nums = values.filter(isNum);
  const area = el("p", {}, "区域 Area: ");
  Object.entries(data.area ?? {}).forEach(([level, name], i) => {
    if (i) area.append(" › ");
    if (name && name !== "unassigned") {
      area.append(el("button", { type: "button", text: name, title: LEVEL_NAMES[level] ?? level,
        onclick: () => { openArea(level, name); $("areas").scrollIntoView({ behavior: "smooth" }); } }));
    } else area.append(el("span", { class: "muted", text: "未分配 unassigned" }));
  });
  view.replaceChildren(
    el("h3", { text: `${data.entity} · ${DOMAIN_NAMES[data.domain] ?? data.domain}` }),
    area,
    el("p", { class: "muted",
      text: `${figure} · ${values.length} 个窗口 windows ${clock(data.from)}–${clock(data.to)} · ` +
        `最新 latest ${fmt(latest, 1)} · 最小 min ${fmt(nums.length ? Math.min(...nums) : null, 1)} · ` +
        `最大 max ${fmt(nums.length ? Math.max(...nums) : null, 1)}` }),
    sparkline(values),
    el("div", { class: "cols" },
      el("div", { class: "tile small" }, el("h3", { text: "近5分钟 Last 5 min" }),
        renderDl(el("dl"), figureRows(domain, data.sliding?.last_5m, 5))),
      el("div", { class: "tile small" }, el("h3", { text: "近15分钟 Last 15 min" }),
        renderDl(el("dl"), figureRows(domain, data.sliding?.last_15m, 15)))));
}

// ---------- login / polling ----------
let timer = null, tick = 0, busy = false;

function showLogin(message = "") {
  clearInterval(timer); timer = null;
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("token-form").hidden = false;
  $("token-error").textContent = message;
  $("token-input").focus();
}

async function poll() {
  if (busy) return;
  busy = true;
  try {
    await refreshVitals();
    if (++tick % 5 === 0) {            // area and device views every 10 s
      if (currentArea) await openArea(currentArea.level, currentArea.id, true);
      if (currentEntity) await openEntity(currentEntity.domain, currentEntity.id, true);
    }
  } catch (err) {
    if (err.status !== 401) setStatus(`连接异常 ${err.message}`, true);
  } finally { busy = false; }
}

function start() {
  $("token-form").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  poll();
  if (!timer) timer = setInterval(poll, 2000);
}

function init() {
  $("district-buttons").replaceChildren(...DISTRICTS.map((d) =>
    el("button", { type: "button", text: d, onclick: () => openArea("district", d) })));
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    start();
  });
  $("sign-out").addEventListener("click", (e) => {
    e.preventDefault();
    sessionStorage.removeItem(TOKEN_KEY);
    currentArea = currentEntity = null;
    setStatus("—");
    showLogin();
  });
  $("area-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("area-id").value.trim();
    if (id) openArea($("area-level").value, id);
  });
  $("entity-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("entity-id").value.trim();
    if (id) openEntity($("entity-domain").value, id);
  });
  if (sessionStorage.getItem(TOKEN_KEY)) start(); else showLogin();
}

document.addEventListener("DOMContentLoaded", init);
