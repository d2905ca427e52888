// The wall screen around the map: areas ranked by trouble, the vital signs' trends on the
// tiles, the detail drawer, and the full-screen mode that rotates city → district → alerts.
// Uses dashboard.js's helpers and citymap.js's map; plain ES2020, no dependencies.
"use strict";

const RANK_LEVELS = ["district", "street", "community", "grid_cell"];
const RANK_ROWS = 10;              // what the panel shows without scrolling at 1920×1080
const TREND_HOURS = 6;
const WALL_ROTATE_MS = 20000;      // each view of the rotation stays this long
const WALL_VIEWS = ["city", "district", "alerts"];
const WALL_VIEW_NAMES = { city: "全市 City", district: "重点区 District", alerts: "告警 Alerts" };
// Per vital sign of /api/v1/trends: its label and how many decimals it is read with.
const TREND_NAMES = {
  passes_per_min: ["通行/分 Passes/min", 0], denied: ["拒绝 Denied", 0], max_temperature_c: ["最高体温 Max temp °C", 1],
  speed_kmh_weighted: ["加权车速 Speed km/h", 1], volume_per_min: ["车流量/分 Volume/min", 0],
  occupancy_mean: ["占有率 Occupancy %", 1],
  load_kw_mean: ["平均负荷 Mean load kW", 0], load_kw_max: ["最大负荷 Max load kW", 0], voltage_kv_min: ["最低电压 Min kV", 2],
};
const PERCENT = new Set(["occupancy_mean"]);

const wall = { rankLevel: "street", rankAuto: true, rotation: null, view: "city", districtTurn: 0, trendTimer: null,
  pending: null };

// ---------- ranking ----------
function rankingQuery() {
  const f = cityMap.focus;
  let level = wall.rankLevel, within = f;
  if (wall.rankAuto) {
    level = !f ? "street" : RANK_LEVELS[Math.min(RANK_LEVELS.indexOf(f.level) + 1, RANK_LEVELS.length - 1)];
  }
  if (f && RANK_LEVELS.indexOf(f.level) >= RANK_LEVELS.indexOf(level)) within = null;   // rank beside it, not in it
  return { level, within };
}

async function refreshRanking() {
  const { level, within } = rankingQuery();
  const q = within ? `?within=${encodeURIComponent(`${within.level}:${within.id}`)}` : "";
  const data = await api(`/api/v1/map/areas/${urlPath(level)}${q}`);
  renderRanking(data, within);
  return data;
}

function renderRanking(data, within) {
  document.querySelectorAll("#rank-levels button").forEach((b) =>
    b.classList.toggle("on", b.dataset.level === data.level));
  const troubled = data.areas.filter((a) => a.open_alerts || a.states.silent || a.states.alerting);
  $("rank-note").textContent = `${within ? `${within.id} · ` : ""}${LEVEL_NAMES[data.level]} · ` +
    `有告警 ${fmt(troubled.length)} / ${fmt(data.total)} with trouble`;
  const rows = data.areas.slice(0, RANK_ROWS).map((a, n) => {
    const sev = a.worst ? known(a.worst, SEVERITY_NAMES) : "none";
    const parent = Object.values(a.path).filter((p) => p && p !== "unassigned").slice(-1)[0];
    return el("li", { class: `rank-row sev-${sev}`, "data-area": a.id },
      el("button", { type: "button", onclick: () => setFocus(a.level, a.id) },
        el("span", { class: "rank-n", text: String(n + 1) }),
        el("span", { class: "rank-name" }, el("strong", { text: a.id }),
          el("span", { class: "muted", text: [parent, `设备 Devices ${fmt(a.devices)}`,
            a.states.silent ? `失联 Silent ${fmt(a.states.silent)}` : null].filter(Boolean).join(" · ") })),
        el("span", { class: "rank-alerts", text: `告警 ${fmt(a.open_alerts)}` })));
  });
  $("rank-list").replaceChildren(...rows);
}

function initRanking() {
  $("rank-levels").replaceChildren(...RANK_LEVELS.map((level) => el("button", { type: "button",
    "data-level": level, text: LEVEL_NAMES[level], onclick: () => {
      Object.assign(wall, { rankLevel: level, rankAuto: false });
      refreshRanking().catch(quietly);
    } })));
  cityMap.onFocus = () => { wall.rankAuto = true; refreshRanking().catch(quietly); };
}

// ---------- trends ----------
// The charts start at the first window any domain has, so a city started minutes ago
// shows its minutes, not six hours of nothing; the span is written under the tiles.
async function refreshTrends() {
  const data = await api(`/api/v1/trends?hours=${TREND_HOURS}`);
  const domains = Object.values(data.domains);
  const first = data.starts.findIndex((_, i) => domains.some((d) => Object.values(d.series).some((v) => isNum(v[i]))));
  for (const [domain, d] of Object.entries(data.domains)) {
    const box = document.querySelector(`#tile-${domain} .trends`);
    if (!box) continue;
    box.replaceChildren(...Object.entries(d.series).map(([name, values]) =>
      trendRow(name, values.slice(Math.max(first, 0)), d.day_before[name].slice(Math.max(first, 0)))));
  }
  const starts = data.starts;
  $("trend-span").textContent = first >= 0
    ? `趋势 Trends ${clock(starts[first])}–${clock(starts[starts.length - 1] + data.window_ms)} · 虚线 dashed: 前一天 day before`
    : "趋势 Trends: 暂无已关闭窗口 no closed windows yet";
}

function trendRow(name, values, before) {
  const [label, digits] = TREND_NAMES[name] ?? [name, 1];
  const scale = PERCENT.has(name) ? 100 : 1;
  const shown = (v) => (isNum(v) ? v * scale : null);
  const latest = [...values].reverse().find(isNum);
  return el("div", { class: "trend", "data-vital": name },
    el("span", { class: "trend-label", text: label }),
    el("span", { class: "trend-value", text: fmt(shown(latest), digits) }),
    sparkline(values.map(shown), before.map(shown)));
}

// ---------- drawer ----------
function openDrawer(which) {
  const drawer = $("drawer");
  drawer.hidden = false;
  const target = { alert: "alert-detail", areas: "areas", entity: "entity" }[which];
  if (target) $(target).scrollIntoView({ block: "start" });
}

function closeDrawer() {
  $("drawer").hidden = true;
}

// ---------- wall mode ----------
function setWallView(view) {
  wall.view = view;
  document.body.dataset.view = view;
  $("wall-view").textContent = document.body.classList.contains("wall-mode") ? WALL_VIEW_NAMES[view] : "";
  if (view === "city") setFocus(null, null);
  else if (view === "district") showTroubledDistrict().catch(quietly);
  scheduleDraw();
}

// The district with the most trouble; with none in trouble, each district in turn.
async function showTroubledDistrict() {
  const data = await api("/api/v1/map/areas/district");
  if (!data.areas.length) return;
  const first = data.areas[0];
  const pick = first.open_alerts || first.states.silent ? first : data.areas[wall.districtTurn++ % data.areas.length];
  setFocus("district", pick.id);
}

function wallStep() {
  setWallView(WALL_VIEWS[(WALL_VIEWS.indexOf(wall.view) + 1) % WALL_VIEWS.length]);
}

function setWallMode(on) {
  document.body.classList.toggle("wall-mode", on);
  clearInterval(wall.rotation);
  wall.rotation = on ? setInterval(wallStep, WALL_ROTATE_MS) : null;
  $("wall-toggle").textContent = on ? "退出轮播 Exit wall mode" : "大屏轮播 Wall mode";
  if (on) {
    closeDrawer();
    document.documentElement.requestFullscreen?.().catch(() => { /* refused: rotate in the window */ });
  } else if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  setWallView("city");
}

// ---------- lifecycle ----------
const quietly = (err) => { if (err.status !== 401) setStatus(`连接异常 ${err.message}`, true); };

// Alert changes come in bursts; the map's states and the ranking follow once per burst.
function wallAlertsChanged() {
  scheduleDraw();
  if (wall.pending) return;
  wall.pending = setTimeout(() => {
    wall.pending = null;
    Promise.all([refreshStates(), refreshRanking()]).catch(quietly);
  }, 300);
}

async function refreshWall() {
  await Promise.all([refreshStates(), refreshRanking()]);
}

async function startWall() {
  const started = performance.now();
  await loadMap();
  await Promise.all([refreshRanking(), refreshTrends()]);
  wall.loadMs = performance.now() - started;
  clearInterval(wall.trendTimer);
  wall.trendTimer = setInterval(() => refreshTrends().catch(quietly), 30000);
}

// On sign-out: no call of the API from here, the token is gone.
function stopWall() {
  document.body.classList.remove("wall-mode");
  clearInterval(wall.rotation);
  clearInterval(wall.trendTimer);
  closeDrawer();
}

function initWall() {
  initMap();
  initRanking();
  $("wall-toggle").addEventListener("click", () => setWallMode(!document.body.classList.contains("wall-mode")));
  $("drawer-close").addEventListener("click", closeDrawer);
  $("drawer-open").addEventListener("click", () => openDrawer("areas"));
  document.addEventListener("fullscreenchange", () => {
    if (!document.fullscreenElement && document.body.classList.contains("wall-mode")) setWallMode(false);
  });
}
