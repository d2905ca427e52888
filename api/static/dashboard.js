// citybrain command-centre dashboard: plain ES2020, no dependencies.
// Data is only ever placed with textContent, never innerHTML.
"use strict";

const TOKEN_KEY = "citybrain.token";           // sessionStorage only
const OFFICER_KEY = "citybrain.officer";       // who acknowledges and resolves, asked once
const DISTRICTS = ["市南区", "市北区", "李沧区", "崂山区", "城阳区", "黄岛区", "即墨区"];
const LEVEL_NAMES = { district: "区 District", street: "街道 Street", community: "社区 Community", grid_cell: "网格 Grid cell" };
const DOMAIN_NAMES = { gate: "门禁 Gates", traffic: "交通 Traffic", grid: "电网 Grid" };
// Per domain: the figure a device's chart draws, and its decimals (a count has none).
const SPARK_FIGURE = { traffic: ["speed_kmh_mean", 1], grid: ["load_kw_mean", 0], gate: ["passes", 0] };
const SEVERITY_NAMES = { critical: "紧急 Critical", major: "重要 Major", minor: "次要 Minor", warning: "警告 Warning", info: "提示 Info" };
const SEVERITIES = Object.keys(SEVERITY_NAMES);   // most severe first
const STATUS_NAMES = { firing: "告警中 Firing", acknowledged: "已确认 Acknowledged", resolved: "已解除 Resolved" };
const ACTION_NAMES = { fired: "触发 Fired", acknowledged: "确认 Acknowledged", resolved: "解除 Resolved",
  escalated: "升级 Escalated", reopened: "复发 Reopened" };
const ACTS = { ack: "确认 Ack", resolve: "解除 Resolve", accept: "受理 Accept", close: "办结 Close" };
const SHOWN_ALERTS = 200;      // rows a wall screen can usefully show; the rest are counted
const KEEP_RESOLVED = 500;     // resolved alerts remembered, so an older state can't revive one
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
// A rate reads with one decimal while small; from 100 up the decimal is noise on a wall.
const fmtRate = (v) => fmt(v, isNum(v) && Math.abs(v) >= 100 ? 0 : 1);
const clock = (ms) => (isNum(ms) ? new Date(ms).toLocaleTimeString("zh-CN", { hour12: false }) : "—");
const stamp = (iso) => {
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? "—" : new Date(ms).toLocaleString("zh-CN", { hour12: false, month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
};
// A value used in a class name only if it is one the page knows.
const known = (value, names) => (Object.prototype.hasOwnProperty.call(names, value) ? value : "unknown");
const urlPath = (...parts) => parts.map(encodeURIComponent).join("/");
const perMin = (n, minutes) => (isNum(n) && minutes > 0 ? n / minutes : null);

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, body) {   // with a body: POSTed as JSON
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { showLogin(); throw new ApiError(401, "no token"); }
  const headers = { Authorization: `Bearer ${token}` };
  const init = { headers, cache: "no-store" };
  if (body !== undefined) {
    Object.assign(init, { method: "POST", body: JSON.stringify(body) });
    headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
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
      ["通行/分 Passes/min", fmtRate(perMin(f.passes, minutes)), ""],
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

// Each label and value in a div of their own (HTML allows it), so a wall can lay the
// pairs out as cards; elsewhere the div is transparent to the layout.
function renderDl(dl, rows) {
  dl.replaceChildren(...rows.map(([label, value, cls]) => el("div", {},
    el("dt", { text: label, title: label }), el("dd", { text: value, class: cls || "" }))));
  return dl;
}

const windowLength = (w) => (w && isNum(w.start) && isNum(w.end) ? w.end - w.start : null);   // ms
const windowMinutes = (w) => (windowLength(w) ?? 0) / 60000;
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
      ["事件/秒 Events/s", fmtRate(d.events_per_s), ""],
      ["事件总数 Total events", fmt(d.events), ""],
      ["拒收 Rejected", fmt(d.rejected), d.rejected > 0 ? "warn" : ""],
      ["未处理告警 Open alerts", fmt(d.open_alerts ?? 0), d.open_alerts > 0 ? "bad" : ""],
    ];
    renderDl(tile.querySelector("dl"), rows);
    tile.querySelector(".foot").textContent =
      `${windowText(city?.window)} · 最新事件 Latest event ${clock(d.latest_event_ts)} · 分区 Partitions ${fmt(d.partitions)}`;
  }
  renderOpenAlerts(data.open_alerts);
  setStatus(`更新于 Updated ${clock(data.generated_at)} · 设备 Devices ${fmt(data.entities)}`);
}

function renderOpenAlerts(open) {
  $("open-alerts").replaceChildren(
    el("span", { class: "label", text: `告警 Alerts ${fmt(open?.total ?? 0)}` }),
    ...SEVERITIES.map((s) => {
      const n = open?.by_severity?.[s] ?? 0;
      return el("span", { class: `chip sev-${s}${n ? "" : " zero"}`, text: `${SEVERITY_NAMES[s]} ${fmt(n)}` });
    }));
}

function setStatus(text, bad = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("bad", bad);
}

// ---------- areas ----------
let currentArea = null;   // {level, id}

// An area's domain: its newest window and last 15 minutes, then the last hour of its
// chart's figure and the forecast (`fc`: the area forecast route's answer, or null). The
// chart draws the closed windows the forecast learnt: an area's total over a window
// still open would read as a drop, and the newest window's figures are written above.
function domainBlock(domain, summary, count, fc) {
  const box = el("div", { class: "tile small" },
    el("h3", {}, DOMAIN_NAMES[domain], el("span", { class: "en", text: ` · 设备 devices ${fmt(count ?? 0)}` })));
  box.append(el("p", { class: "muted", text: "最新窗口 Newest window" }),
    renderDl(el("dl"), figureRows(domain, summary?.figures, windowMinutes(summary?.window))),
    el("p", { class: "muted", text: "近15分钟 Last 15 min" }),
    renderDl(el("dl"), figureRows(domain, summary?.last_15m, 15)),
    el("p", { class: "foot", text: windowText(summary?.window) }),
    el("p", { class: "muted", text: `${SPARK_FIGURE[domain][0]} · 近1小时与预测 Last hour and forecast` }),
    ...forecastChart((fc?.recent ?? []).map((r) => [r.start, r.value]), fc, SPARK_FIGURE[domain][1],
      summary?.window));
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
  const data = await load(view, `/api/v1/areas/${urlPath(level, id)}`, quiet);
  if (data === null) return;
  const domains = ["gate", "traffic", "grid"];
  const forecasts = await Promise.all(domains.map((d) => {
    const w = data.domains?.[d]?.window;
    return w ? fetchForecast(`/api/v1/forecasts/areas/${urlPath(level, id)}`, { domain: d }, d, windowLength(w)) : null;
  }));
  if (currentArea?.level !== level || currentArea?.id !== id) return;   // user moved on
  const crumbs = Object.entries(data.path ?? {}).filter(([, v]) => v).map(([lv, v]) => ({ level: lv, id: v }));
  renderBreadcrumb([...crumbs, { level: data.level, id: data.id }]);
  const cols = el("div", { class: "cols" },
    ...domains.map((d, i) => domainBlock(d, data.domains?.[d], data.entities?.[d], forecasts[i])));
  const parts = [el("h3", { text: `${data.id} · ${LEVEL_NAMES[data.level] ?? data.level}` }), cols];
  if (data.children?.length) {
    const below = LEVEL_NAMES[data.children[0].level] ?? data.children[0].level;
    parts.push(el("h3", { text: `下级 ${below}` }),
      el("ul", { class: "children" }, ...data.children.map((c) => {
        const n = Object.values(c.entities ?? {}).reduce((a, b) => a + b, 0);
        const rate = c.cases?.closure_rate;   // 案件办结率 of the area's cases
        return el("li", {}, el("button", { type: "button", text: `${c.id} (${n})`,
          onclick: () => openArea(c.level, c.id) }),
        c.cases?.opened ? el("span", { class: "muted", text: ` 办结率 Closed ${Math.round(rate * 100)}% of ${c.cases.opened}` +
          (c.cases.overdue ? ` · 超时 ${c.cases.overdue}` : "") }) : null);
      })));
  }
  view.replaceChildren(...parts);
}

// ---------- charts ----------
const SVG_NS = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

// Polylines through [x, y] points into `svg`; a null point (a window without the figure)
// breaks the line, and a point alone is drawn as a dot.
function polylines(svg, points, cls) {
  let run = [];
  const flush = () => {
    if (run.length === 1) run.push(run[0]);
    if (run.length) svg.append(svgEl("polyline", { points: run.join(" "), ...(cls ? { class: cls } : {}) }));
    run = [];
  };
  for (const p of points) {
    if (p) run.push(`${p[0].toFixed(1)},${p[1].toFixed(1)}`); else flush();
  }
  flush();
}

// A small line chart; `before` (optional) is drawn dashed on the same scale, for comparison.
function sparkline(values, before = []) {
  const W = 400, H = 80, P = 4;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "spark" });
  const nums = [...values, ...before].filter(isNum);
  if (!nums.length) return svg;
  const lo = Math.min(...nums), hi = Math.max(...nums), span = hi - lo || 1;
  const step = values.length > 1 ? (W - 2 * P) / (values.length - 1) : 0;
  const at = (v, i) => (isNum(v) ? [P + i * step, H - P - ((v - lo) / span) * (H - 2 * P)] : null);
  polylines(svg, before.map(at), "before");
  polylines(svg, values.map(at), "");
  return svg;
}

// ---------- forecasts ----------
const HOUR_MS = 3600000;
const DEFAULT_WINDOW_MS = 60000;     // the service's default window, while a chart has none to go by
const HORIZONS_MIN = [15, 30, 60];   // the forecast's figures written under its chart

// The forecast of the figure a chart draws; {error} when the route can't give one (the
// chart then says so instead of drawing a band). It starts after the newest *closed*
// window, so two hours are asked for: the hour after now is covered while the newest
// windows are still open (up to an hour of lateness).
async function fetchForecast(path, params, domain, windowMs) {
  const steps = Math.min(240, Math.ceil((2 * HOUR_MS) / (windowMs ?? DEFAULT_WINDOW_MS)));
  const query = new URLSearchParams({ ...params, figure: SPARK_FIGURE[domain][0], steps: String(steps) });
  try {
    return await api(`${path}?${query}`);
  } catch (err) {
    if (err.status === 401) throw err;
    return { error: err };
  }
}

// Why a chart has no band, or null when it has one.
function forecastGap(fc, ahead) {
  if (!fc) return "暂无预测 No forecast yet";
  if (fc.error) return `暂无预测 No forecast: ${errorText(fc.error)}`;
  if (!ahead.some((p) => isNum(p.mean))) return "暂无预测：尚无已关闭的窗口 · No forecast yet: no closed window to learn from";
  if (!ahead.some((p) => isNum(p.low) && isNum(p.high))) {
    return `暂无预测区间：已学习 ${fmt(fc.learnt)} 个窗口 · No forecast band yet: ${fmt(fc.learnt)} windows learnt`;
  }
  return null;
}

// A figure's last hour and, right of a "now" line, its forecast for the next hour: the
// expected value dashed over the shaded 80 % interval, on a tinted background and
// labelled 预测 Forecast, so nobody reads it as measured data. `past` is [[window start,
// value]], oldest first, each drawn at its window's end; "now" is the end of `newest`,
// the newest window (open or closed, drawn or not). `fc` is the forecast route's answer
// (or null, or {error}).
function forecastChart(past, fc, digits, newest) {
  const W = 600, H = 180, L = 6, R = 6, T = 22, B = 20;
  const step = windowLength(newest) ?? fc?.step_ms ?? DEFAULT_WINDOW_MS;
  const now = newest?.end ?? null;
  const ahead = now === null ? [] : (fc?.points ?? []).filter((p) => p.start >= now && p.start + step <= now + HOUR_MS);
  const gap = forecastGap(fc, ahead);
  const note = gap ? el("p", { class: "forecast-note", text: gap }) : forecastFigures(ahead, now, step, digits);
  if (now === null) return [note];

  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark chart", role: "img",
    "aria-label": "近1小时与未来1小时预测 Last hour and forecast for the next hour" });
  const shown = past.map(([t, v]) => [t + step, v]).filter(([t]) => t > now - HOUR_MS);
  const points = ahead.map((p) => ({ ...p, end: p.start + step })).filter((p) => isNum(p.mean));
  const nums = [...shown.map(([, v]) => v), ...points.flatMap((p) => [p.mean, p.low, p.high])].filter(isNum);
  const lo = nums.length ? Math.min(...nums) : 0, hi = nums.length ? Math.max(...nums) : 1;
  const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1;
  const x = (t) => L + ((t - (now - HOUR_MS)) / (2 * HOUR_MS)) * (W - L - R);
  const y = (v) => T + (1 - (v - (lo - pad)) / (hi - lo + 2 * pad)) * (H - T - B);
  const xy = (pairs) => pairs.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ");
  const xNow = x(now);
  svg.append(svgEl("rect", { class: "future", x: xNow, y: T, width: W - R - xNow, height: H - T - B }));
  // The band in runs of windows that have an interval: a horizon not measured yet has none.
  let run = [];
  const band = () => {
    if (run.length) {
      const edge = [...run.map((p) => [x(p.end), y(p.high)]), ...run.reverse().map((p) => [x(p.end), y(p.low)])];
      svg.append(svgEl("polygon", { class: "band", points: xy(edge) }));
    }
    run = [];
  };
  for (const p of points) if (isNum(p.low) && isNum(p.high)) run.push(p); else band();
  band();
  polylines(svg, shown.map(([t, v]) => (isNum(v) ? [x(t), y(v)] : null)), "");
  polylines(svg, points.map((p) => [x(p.end), y(p.mean)]), "forecast");
  svg.append(svgEl("line", { class: "now", x1: xNow, x2: xNow, y1: T - 4, y2: H - B }),
    svgEl("text", { class: "now-label", x: xNow, y: T - 8, "text-anchor": "middle" }, `现在 now ${clock(now)}`),
    svgEl("text", { x: L + 2, y: T - 8 }, "实测 Measured"),
    svgEl("text", { class: "forecast-label", x: W - R - 2, y: T - 8, "text-anchor": "end" },
      gap ? "无预测 No forecast" : `预测 Forecast · ${Math.round(fc.coverage * 100)} % 区间 band`),
    svgEl("text", { class: "axis", x: L + 2, y: T + 12 }, fmt(hi, digits)),
    svgEl("text", { class: "axis", x: L + 2, y: H - B - 4 }, fmt(lo, digits)),
    svgEl("text", { class: "axis", x: L, y: H - 5 }, "−60 min"));
  for (const m of HORIZONS_MIN) {
    const xm = x(now + m * 60000);
    svg.append(svgEl("line", { class: "tick", x1: xm, x2: xm, y1: H - B, y2: H - B + 4 }),
      svgEl("text", { class: "axis", x: xm, y: H - 5, "text-anchor": m === 60 ? "end" : "middle" }, `+${m} min`));
  }
  return [svg, note];
}

// The forecast 15, 30 and 60 minutes ahead: of the window that ends then.
function forecastFigures(ahead, now, step, digits) {
  const p = el("p", { class: "forecast-figures" }, el("strong", { text: "预测 Forecast" }));
  for (const m of HORIZONS_MIN) {
    const point = ahead.find((q) => q.start + step === now + m * 60000);
    if (!point || !isNum(point.mean)) continue;
    const band = isNum(point.low) && isNum(point.high)
      ? ` (${fmt(point.low, digits)}–${fmt(point.high, digits)})` : " (区间未定 no band yet)";
    p.append(el("span", { text: `+${m} min ${fmt(point.mean, digits)}${band}` }));
  }
  return p;
}

// ---------- entity ----------
let currentEntity = null;   // {domain, id, figure}

// An entity's trend: the line of figures, then its last hour and forecast. Every window
// the entity route gives is drawn, the open ones too, so a sudden change shows at once.
function entityChart(domain, data, fc) {
  const [figure, digits] = SPARK_FIGURE[domain];
  const windows = data.windows ?? [];
  const values = windows.map((w) => w.figures?.[figure] ?? null);
  const latest = [...values].reverse().find(isNum);
  const nums = values.filter(isNum);
  return [
    el("p", { class: "muted",
      text: `${figure} · ${values.length} 个窗口 windows ${clock(data.from)}–${clock(data.to)} · ` +
        `最新 latest ${fmt(latest, digits)} · 最小 min ${fmt(nums.length ? Math.min(...nums) : null, digits)} · ` +
        `最大 max ${fmt(nums.length ? Math.max(...nums) : null, digits)}` }),
    ...forecastChart(windows.map((w, i) => [w.start, values[i]]), fc, digits, windows[windows.length - 1]),
  ];
}

// The forecast of a device's chart figure (`data`: its entity route answer).
async function deviceForecast(domain, id, data) {
  return fetchForecast(`/api/v1/forecasts/${urlPath(domain, id)}`, {}, domain, windowLength(data.windows?.[0]));
}

async function openEntity(domain, id, quiet = false) {
  currentEntity = { domain, id };
  const view = $("entity-view");
  const data = await load(view, `/api/v1/entities/${urlPath(domain, id)}`, quiet);
  if (data === null) return;
  const fc = await deviceForecast(domain, id, data);
  if (currentEntity?.domain !== domain || currentEntity?.id !== id) return;
  const area = el("p", {}, "区域 Area: ");
  Object.entries(data.area ?? {}).forEach(([level, name], i) => {
    if (i) area.append(" › ");
    if (name && name !== "unassigned") {
      area.append(el("button", { type: "button", text: name, title: LEVEL_NAMES[level] ?? level,
        onclick: () => { openArea(level, name); openDrawer("areas"); } }));
    } else area.append(el("span", { class: "muted", text: "未分配 unassigned" }));
  });
  view.replaceChildren(
    el("h3", { text: `${data.entity} · ${DOMAIN_NAMES[data.domain] ?? data.domain}` }),
    area,
    ...entityChart(domain, data, fc),
    el("div", { class: "cols" },
      el("div", { class: "tile small" }, el("h3", { text: "近5分钟 Last 5 min" }),
        renderDl(el("dl"), figureRows(domain, data.sliding?.last_5m, 5))),
      el("div", { class: "tile small" }, el("h3", { text: "近15分钟 Last 15 min" }),
        renderDl(el("dl"), figureRows(domain, data.sliding?.last_15m, 15)))));
}

// ---------- alerts ----------
// Every alert state seen, open or resolved, is kept by id and replaced only by a newer one
// (higher seq), so the initial list and the live feed may arrive in either order.
const feed = {
  alerts: new Map(),   // id → alert; insertion order is recency
  position: null,      // the feed position last received: a reconnect resumes from there
  loaded: false,       // the open alerts were listed since sign-in
  socket: null, retries: 0, timer: null, watchdog: null,
  selected: null,      // the alert whose detail is shown
};
const FEED_SILENCE_MS = 60000;   // the server pings every 25 s; silence this long is a dead link
const DETAIL_HINT = "点击告警查看设备曲线与处理记录 · Click an alert for its device trend and history";
const ACT_ERRORS = {
  403: "无权操作：此令牌只能查看，确认和解除告警需要值班员（operator）令牌 · " +
    "Not allowed: this token is view-only; acknowledging and resolving need an operator token",
  404: "告警不存在 No such alert",
  409: "告警已解除 This alert is already resolved",
};

function remember(alert) {
  const held = feed.alerts.get(alert.id);
  if (held && (held.seq ?? 0) >= (alert.seq ?? 0)) return false;
  feed.alerts.delete(alert.id);
  feed.alerts.set(alert.id, alert);
  if (alert.status === "resolved") {
    const resolved = [...feed.alerts.values()].filter((a) => a.status === "resolved");
    for (const a of resolved.slice(0, -KEEP_RESOLVED)) feed.alerts.delete(a.id);
  }
  return true;
}

const rank = (a) => (SEVERITIES.includes(a.severity) ? SEVERITIES.indexOf(a.severity) : SEVERITIES.length);
const byUrgency = (a, b) => rank(a) - rank(b) ||
  (Date.parse(b.started_at) || 0) - (Date.parse(a.started_at) || 0) || a.id.localeCompare(b.id);
const areaText = (area) => Object.keys(LEVEL_NAMES).map((level) => area?.[level])
  .filter((name) => name && name !== "unassigned").join(" › ") || "未分配 unassigned";

function badge(alert) {
  const sev = known(alert.severity, SEVERITY_NAMES);
  return el("span", { class: `badge sev-${sev}`, text: SEVERITY_NAMES[sev] ?? alert.severity });
}

function statusLabel(alert) {
  const status = known(alert.status, STATUS_NAMES);
  return el("span", { class: `status st-${status}`, text: STATUS_NAMES[status] ?? alert.status });
}

function alertRow(a) {
  const actions = el("div", { class: "actions" });
  for (const kind of a.status === "firing" ? ["ack", "resolve"] : ["resolve"]) {
    actions.append(el("button", { type: "button", class: `act act-${kind}`, text: ACTS[kind],
      onclick: () => act(a, kind) }));
  }
  const cls = `alert sev-${known(a.severity, SEVERITY_NAMES)} st-${known(a.status, STATUS_NAMES)}`;
  return el("li", { class: a.id === feed.selected ? `${cls} selected` : cls, "data-id": a.id },
    badge(a),
    el("button", { type: "button", class: "alert-open", onclick: () => showAlert(a.id) },
      el("strong", { text: a.summary || a.rule }),
      el("span", { class: "muted", text: `${a.rule} · ${a.entity} · ${areaText(a.area)}` })),
    el("div", { class: "when" },
      statusLabel(a),
      el("span", { class: "muted", text: `${stamp(a.started_at)} · ×${fmt(a.count)}` }),
      a.acked_by ? el("span", { class: "muted", text: `确认人 By ${a.acked_by}` }) : null),
    actions);
}

function renderAlerts() {
  const open = [...feed.alerts.values()].filter((a) => a.status !== "resolved").sort(byUrgency);
  const list = $("alert-list");
  list.replaceChildren(...open.slice(0, SHOWN_ALERTS).map(alertRow));
  if (!open.length) {
    list.append(el("li", { class: "muted",
      text: feed.loaded ? "暂无未处理告警 No open alerts" : "加载中 Loading…" }));
  }
  const more = open.length - SHOWN_ALERTS;
  $("alert-more").textContent = more > 0 ? `另有 ${more} 条较轻或较早的告警 · ${more} more, less severe or older` : "";
  wallAlertsChanged();
}

async function showAlert(id, quiet = false) {
  feed.selected = id;
  if (!quiet) { renderAlerts(); openDrawer("alert"); }
  const view = $("alert-detail");
  const alert = await load(view, `/api/v1/alerts/${urlPath(id)}`, quiet);
  if (alert === null || feed.selected !== id) return;
  let trend;
  try {
    const data = await api(`/api/v1/entities/${urlPath(alert.domain, alert.entity)}`);
    trend = entityChart(alert.domain, data, await deviceForecast(alert.domain, alert.entity, data));
  } catch (err) {
    trend = [el("p", { class: "muted", text: `设备曲线 Device trend: ${errorText(err)}` })];
  }
  if (feed.selected !== id) return;
  view.replaceChildren(
    el("h3", {}, badge(alert), " ", alert.summary || alert.rule),
    renderDl(el("dl", { class: "facts" }), [
      ["状态 Status", STATUS_NAMES[alert.status] ?? alert.status, `st-${known(alert.status, STATUS_NAMES)}`],
      ["规则 Rule", alert.rule],
      ["设备 Device", `${alert.entity} · ${DOMAIN_NAMES[alert.domain] ?? alert.domain}`],
      ["区域 Area", areaText(alert.area)],
      ["数值 / 阈值 Value / threshold", `${fmt(alert.value, 2)} / ${fmt(alert.threshold, 2)}`],
      ["开始 Started", stamp(alert.started_at)],
      ["更新 Updated", stamp(alert.updated_at)],
      ["次数 Count", fmt(alert.count)],
    ]),
    ...trend,
    el("button", { type: "button", text: "设备详情 Device details", onclick: () => {
      openEntity(alert.domain, alert.entity);
      openDrawer("entity");
    } }),
    el("h4", { text: "处理记录 History" }),
    el("ol", { class: "history" }, ...(alert.history ?? []).map((h) => el("li", {},
      el("span", { class: "muted", text: stamp(h.at) }), " ",
      el("strong", { text: ACTION_NAMES[h.action] ?? h.action }),
      ` · ${h.by ?? "—"}${h.note ? ` — ${h.note}` : ""}`))));
}

let noticeTimer = null;
function notice(text, kind = "bad") {
  const p = $("alert-notice");
  clearTimeout(noticeTimer);
  p.textContent = text;
  p.className = `notice ${kind}`;
  p.hidden = !text;
  if (kind === "ok") noticeTimer = setTimeout(() => { p.hidden = true; }, 8000);
}

// The officer's name is asked once per browser session, then offered again; the note is per action.
function askOfficer(alert, kind) {
  const dialog = $("act-dialog");
  const officer = sessionStorage.getItem(OFFICER_KEY) ?? "";
  $("act-title").textContent = `${ACTS[kind]} · ${alert.summary || alert.rule} · ${alert.entity}`;
  $("act-by").value = officer;
  $("act-note").value = "";
  dialog.returnValue = "";
  dialog.showModal();
  (officer ? $("act-note") : $("act-by")).focus();
  return new Promise((resolve) => dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "ok") return resolve(null);
    const by = $("act-by").value.trim();
    sessionStorage.setItem(OFFICER_KEY, by);
    return resolve({ by, note: $("act-note").value.trim() || null });
  }, { once: true }));
}

async function act(alert, kind) {
  const body = await askOfficer(alert, kind);
  if (!body) return;
  notice("");
  try {
    const result = await api(`/api/v1/alerts/${urlPath(alert.id, kind)}`, body);
    // 202: accepted but not applied yet; it carries the alert as it was, and the feed brings the change.
    if (remember(result.alert ?? result)) renderAlerts();
    if (feed.selected === alert.id) showAlert(alert.id, true);
    notice(result.detail ? "已受理，稍后生效 · Accepted; it shows once applied"
      : `${ACTS[kind]} ✓ ${alert.summary || alert.rule} · ${alert.entity}`, result.detail ? "info" : "ok");
  } catch (err) {
    if (err.status !== 401) notice(ACT_ERRORS[err.status] ?? errorText(err));
  }
}

async function loadOpenAlerts() {
  try {
    let cursor = null;
    do {
      const page = await api("/api/v1/alerts?status=firing,acknowledged&limit=1000" +
        (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""));
      for (const a of page.alerts) remember(a);
      cursor = page.next_cursor;
    } while (cursor);
    feed.loaded = true;
  } catch (err) {
    if (err.status !== 401) notice(`告警列表 Alert list: ${errorText(err)}`);
  }
  renderAlerts();
}

function setFeedState(text, cls) {
  const s = $("feed-state");
  s.textContent = text;
  s.className = `feed-state ${cls}`;
}

function connectFeed() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return;
  const resuming = feed.position !== null;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/v1/alerts/live`);
  feed.socket = socket;
  setFeedState("连接中 Connecting…", "warn");
  // Browsers can't set headers on a WebSocket, and a token in the URL would end up in logs.
  socket.onopen = () => socket.send(JSON.stringify(resuming ? { token, position: feed.position } : { token }));
  socket.onmessage = (e) => { if (socket === feed.socket) onFeedMessage(JSON.parse(e.data), resuming); };
  socket.onclose = (e) => { if (socket === feed.socket) onFeedClosed(e.code); };
  armWatchdog();
}

function onFeedMessage(msg, resuming) {
  armWatchdog();
  if (msg.type === "hello") {
    feed.retries = 0;
    // A resume's replay follows hello; its position is the one caught_up brings.
    if (!resuming) feed.position = msg.position;
    setFeedState("● 实时 Live", "ok");
    if (!feed.loaded) loadOpenAlerts();
  } else if (msg.type === "alert") {
    if (msg.position) feed.position = msg.position;
    if (remember(msg.alert)) {
      renderAlerts();
      if (msg.alert.id === feed.selected) showAlert(feed.selected, true);
    }
  } else if (msg.type === "caught_up") {
    feed.position = msg.position;
  }
}

function onFeedClosed(code) {
  feed.socket = null;
  clearTimeout(feed.watchdog);
  if (code === 4401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("令牌无效或已过期 Token rejected — please enter it again");
    return;
  }
  if (code === 4403) {
    setFeedState("此令牌无权查看告警 This token may not view alerts", "bad");
    return;
  }
  if (code === 4422) {              // the position was refused: start afresh
    Object.assign(feed, { position: null, loaded: false });
    feed.alerts.clear();
  }
  const delay = Math.min(30000, 1000 * 2 ** feed.retries) * (0.5 + Math.random() / 2);
  feed.retries += 1;
  const seconds = Math.ceil(delay / 1000);
  setFeedState(`已断开，${seconds} 秒后重连 · Reconnecting in ${seconds} s`, "bad");
  feed.timer = setTimeout(connectFeed, delay);
}

function dropSocket() {
  const socket = feed.socket;
  feed.socket = null;               // its late events are ignored
  socket?.close();
}

// A link that died without a close (a sleeping laptop, a dropped NAT entry) is noticed here.
function armWatchdog() {
  clearTimeout(feed.watchdog);
  feed.watchdog = setTimeout(() => { dropSocket(); onFeedClosed(1006); }, FEED_SILENCE_MS);
}

function startFeed() {
  $("alert-detail").replaceChildren(el("p", { class: "muted", text: DETAIL_HINT }));
  renderAlerts();
  connectFeed();
}

function stopFeed() {
  dropSocket();
  clearTimeout(feed.timer);
  clearTimeout(feed.watchdog);
  Object.assign(feed, { position: null, loaded: false, retries: 0, selected: null });
  feed.alerts.clear();
  notice("");
}

// ---------- login / polling ----------
let timer = null, tick = 0, busy = false;

function showLogin(message = "") {
  clearInterval(timer); timer = null;
  stopFeed();
  stopWall();
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
      await refreshWall();
      if (currentArea) await openArea(currentArea.level, currentArea.id, true);
      if (currentEntity) await openEntity(currentEntity.domain, currentEntity.id, true);
      if (feed.selected) await showAlert(feed.selected, true);
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
  startFeed();
  startWall().catch(quietly);
  startCases();
}

function init() {
  initWall();
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
    sessionStorage.removeItem(OFFICER_KEY);
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
  $("act-cancel").addEventListener("click", () => $("act-dialog").close());
  if (sessionStorage.getItem(TOKEN_KEY)) start(); else showLogin();
}

document.addEventListener("DOMContentLoaded", init);
