// The live city map of the wall screen: every registered device where the registry places
// it, coloured by state, areas as hulls of their devices, open alerts marked. Canvas, not
// SVG: 20,000 points redraw in milliseconds where as many DOM nodes would take seconds.
// Uses dashboard.js's helpers (api, el, fmt, feed); plain ES2020, no dependencies.
"use strict";

const MAP_LEVELS = ["district", "street", "community", "grid_cell"];
const STATE_NAMES = { normal: "正常 Normal", alerting: "告警 Alerting", silent: "失联 Silent" };
const STATE_COLOURS = ["#2bb3a0", "#ff8c1a", "#b48cff"];   // in the order of the API's `states`
const MAP_PAD = 36;   // CSS pixels kept clear around the drawn area

const cityMap = {
  version: null,
  paths: [], ids: [], domains: [],       // per device: id, domain
  x: null, y: null, path: null, state: null,   // typed arrays, per device
  index: new Map(),                      // id → device number
  focus: null,                           // {level, id}; null is the whole city
  inFocus: [],                           // device numbers inside the focus
  view: { scale: 1, x0: 0, y0: 0 },      // projected → CSS pixels
  hulls: [],                             // [{level, id, points, faint}] in projected units
  markers: [],                           // [{alert, entity, severity, x, y}] in CSS pixels, as drawn
  drawn: 0,                              // devices drawn last time (on the canvas, in focus or dim)
  onFocus: null,                         // called when the focus changes (the ranking follows it)
};

// Severity colours come from the stylesheet, so the map and the alert list agree.
const sevColour = (() => {
  const cache = {};
  return (sev) => {
    if (!(sev in cache)) {
      const probe = el("span", { class: `sev-${known(sev, SEVERITY_NAMES)}`, hidden: "" });
      document.body.append(probe);
      cache[sev] = getComputedStyle(probe).getPropertyValue("--sev").trim() || "#ffffff";
      probe.remove();
    }
    return cache[sev];
  };
})();

// ---------- data ----------
function setMapData(data) {
  const n = data.devices.length;
  const lat0 = n ? data.devices.reduce((s, d) => s + d[2], 0) / n : 0;
  const k = Math.cos((lat0 * Math.PI) / 180);   // a degree of longitude is shorter than one of latitude
  Object.assign(cityMap, { version: data.version, paths: data.paths, ids: new Array(n), domains: new Array(n),
    x: new Float64Array(n), y: new Float64Array(n), path: new Uint32Array(n), state: new Uint8Array(n),
    index: new Map() });
  data.devices.forEach(([id, domain, lat, lon, path, state], i) => {
    cityMap.ids[i] = id; cityMap.domains[i] = domain;
    cityMap.x[i] = lon * k; cityMap.y[i] = lat;
    cityMap.path[i] = path; cityMap.state[i] = state;
    cityMap.index.set(id, i);
  });
  $("map-count").textContent = `设备 Devices ${fmt(n)}` +
    (data.unplaced ? ` · 无坐标 Without coordinates ${fmt(data.unplaced)}` : "");
  setFocus(cityMap.focus?.level, cityMap.focus?.id, true);
}

async function loadMap() {
  setMapData(await api("/api/v1/map"));
}

// The not-normal devices by state; a registry change reloads the whole map.
async function applyStates(s) {
  if (s.version !== cityMap.version) return loadMap();
  cityMap.state.fill(0);
  for (const id of s.alerting) { const i = cityMap.index.get(id); if (i !== undefined) cityMap.state[i] = 1; }
  for (const id of s.silent) { const i = cityMap.index.get(id); if (i !== undefined) cityMap.state[i] = 2; }
  drawMap();
}

async function refreshStates() {
  if (cityMap.version !== null) await applyStates(await api("/api/v1/map/states"));
}

// ---------- focus and geometry ----------
const levelOf = (level) => MAP_LEVELS.indexOf(level);
const inside = (i, focus) => !focus || cityMap.paths[cityMap.path[i]][levelOf(focus.level)] === focus.id;

function setFocus(level, id, keepQuiet = false) {
  const focus = level && id ? { level, id } : null;
  const inFocus = [];
  for (let i = 0; i < cityMap.ids.length; i++) if (inside(i, focus)) inFocus.push(i);
  if (focus && !inFocus.length) return setFocus(null, null, keepQuiet);   // the area is gone
  Object.assign(cityMap, { focus, inFocus });
  const depth = focus ? levelOf(focus.level) + 1 : 0;
  cityMap.hulls = [...areaHulls(inFocus, depth + 1, true), ...areaHulls(inFocus, depth, false)];
  renderMapCrumbs();
  drawMap();
  if (!keepQuiet && cityMap.onFocus) cityMap.onFocus(focus);
}

function areaHulls(devices, depth, faint) {
  if (depth >= MAP_LEVELS.length) return [];
  const groups = new Map();
  for (const i of devices) {
    const name = cityMap.paths[cityMap.path[i]][depth];
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push([cityMap.x[i], cityMap.y[i]]);
  }
  return [...groups].map(([id, pts]) => ({ level: MAP_LEVELS[depth], id, points: convexHull(pts), faint }));
}

// Andrew's monotone chain; fewer than three distinct points stay as they are.
function convexHull(points) {
  const pts = points.slice().sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (pts.length < 3) return pts;
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const half = (list) => {
    const out = [];
    for (const p of list) {
      while (out.length >= 2 && cross(out[out.length - 2], out[out.length - 1], p) <= 0) out.pop();
      out.push(p);
    }
    out.pop();
    return out;
  };
  return [...half(pts), ...half(pts.reverse())];
}

function fitView(width, height) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const i of cityMap.inFocus) {
    x0 = Math.min(x0, cityMap.x[i]); x1 = Math.max(x1, cityMap.x[i]);
    y0 = Math.min(y0, cityMap.y[i]); y1 = Math.max(y1, cityMap.y[i]);
  }
  const w = Math.max(x1 - x0, 1e-4), h = Math.max(y1 - y0, 1e-4);
  const scale = Math.min((width - 2 * MAP_PAD) / w, (height - 2 * MAP_PAD) / h);
  // Centred; north up, so latitude grows upwards.
  cityMap.view = { scale, x0: (x0 + x1) / 2 - width / 2 / scale, y0: (y0 + y1) / 2 + height / 2 / scale };
}

const toScreen = (px, py) => [(px - cityMap.view.x0) * cityMap.view.scale, (cityMap.view.y0 - py) * cityMap.view.scale];

/** Where a device is drawn, in CSS pixels of the canvas; null if it isn't on the map. */
function deviceAt(id) {
  const i = cityMap.index.get(id);
  return i === undefined ? null : toScreen(cityMap.x[i], cityMap.y[i]);
}

// ---------- drawing ----------
function drawMap() {
  const canvas = $("city-map");
  if (!canvas || cityMap.version === null) return;
  const { width, height } = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  fitView(width, height);
  const troubled = troubledAreas();
  for (const hull of cityMap.hulls) drawHull(ctx, hull, troubled);
  drawDevices(ctx, width, height);
  for (const hull of cityMap.hulls) if (!hull.faint) drawLabel(ctx, hull, troubled);
  drawMarkers(ctx);   // last: an alert is never hidden under a name
}

// Many changes in one frame (a burst of alerts, a resize) draw the map once.
let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; drawMap(); });
}

// Area names (any level) holding an open alert → the worst severity there.
function troubledAreas() {
  const worst = new Map();
  for (const a of openAlerts()) {
    for (const level of MAP_LEVELS) {
      const name = a.area?.[level];
      if (name && (!worst.has(name) || rank(a) < rank({ severity: worst.get(name) }))) worst.set(name, a.severity);
    }
  }
  return worst;
}

const openAlerts = () => [...feed.alerts.values()].filter((a) => a.status !== "resolved");

function tracePath(ctx, points) {
  ctx.beginPath();
  points.forEach(([px, py], j) => {
    const [x, y] = toScreen(px, py);
    if (j) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.closePath();
}

function drawHull(ctx, hull, troubled) {
  if (hull.points.length < 3) return;
  tracePath(ctx, hull.points);
  const sev = troubled.get(hull.id);
  if (hull.faint) {
    ctx.strokeStyle = "rgba(159, 176, 200, 0.25)"; ctx.lineWidth = 1;
    ctx.stroke();
    return;
  }
  ctx.fillStyle = sev ? `${sevColour(sev)}22` : "rgba(79, 209, 255, 0.06)";
  ctx.fill();
  ctx.strokeStyle = sev ? sevColour(sev) : "rgba(79, 209, 255, 0.7)";
  ctx.lineWidth = sev ? 3 : 2;
  ctx.stroke();
}

function drawLabel(ctx, hull, troubled) {
  let sx = 0, sy = 0;
  for (const [px, py] of hull.points) { sx += px; sy += py; }
  const [x, y] = toScreen(sx / hull.points.length, sy / hull.points.length);
  ctx.font = `700 ${hull.level === "grid_cell" ? 16 : 22}px "Noto Sans CJK SC", "Microsoft YaHei", sans-serif`;
  ctx.textAlign = "center"; ctx.textBaseline = "middle";
  ctx.lineWidth = 4; ctx.strokeStyle = "rgba(5, 8, 15, 0.85)";
  ctx.strokeText(hull.id, x, y);
  ctx.fillStyle = troubled.has(hull.id) ? sevColour(troubled.get(hull.id)) : "#f2f6ff";
  ctx.fillText(hull.id, x, y);
}

function drawDevices(ctx, width, height) {
  // One path per state, normal first, so alerting and silent devices lie on top; devices
  // outside the focus are drawn dim, for context.
  const size = cityMap.inFocus.length > 5000 ? 2.5 : cityMap.inFocus.length > 500 ? 4 : 7;
  const { focus } = cityMap;
  let drawn = 0;
  for (let s = 0; s < STATE_COLOURS.length; s++) {
    const d = s ? size * 1.8 : size;
    for (const dim of focus ? [true, false] : [false]) {
      ctx.fillStyle = STATE_COLOURS[s];
      ctx.globalAlpha = dim ? 0.15 : 1;
      ctx.beginPath();
      for (let i = 0; i < cityMap.ids.length; i++) {
        if (cityMap.state[i] !== s || (focus && inside(i, focus) === dim)) continue;
        const [x, y] = toScreen(cityMap.x[i], cityMap.y[i]);
        if (x < -d || y < -d || x > width + d || y > height + d) continue;
        ctx.rect(x - d / 2, y - d / 2, d, d);
        drawn += 1;
      }
      ctx.fill();
    }
  }
  ctx.globalAlpha = 1;
  cityMap.drawn = drawn;
}

function drawMarkers(ctx) {
  cityMap.markers = [];
  const alerts = openAlerts().sort((a, b) => rank(b) - rank(a));   // the worst drawn last, on top
  for (const a of alerts) {
    const at = deviceAt(a.entity);
    if (!at) continue;
    const [x, y] = at;
    const r = 16 - 2 * Math.min(rank(a), 4);
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.lineWidth = 3; ctx.strokeStyle = sevColour(a.severity); ctx.stroke();
    ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI);
    ctx.fillStyle = sevColour(a.severity); ctx.fill();
    cityMap.markers.push({ alert: a.id, entity: a.entity, severity: a.severity, x, y });
  }
}

// ---------- interaction ----------
function renderMapCrumbs() {
  const nav = $("map-crumbs");
  const crumbs = [el("button", { type: "button", text: "全市 City", onclick: () => setFocus(null, null) })];
  const f = cityMap.focus;
  if (f) {
    const i = cityMap.inFocus[0];
    const path = cityMap.paths[cityMap.path[i]];
    for (let d = 0; d <= levelOf(f.level); d++) {
      crumbs.push(el("span", { class: "sep", text: "›" }),
        el("button", { type: "button", text: path[d], title: LEVEL_NAMES[MAP_LEVELS[d]],
          onclick: () => setFocus(MAP_LEVELS[d], path[d]) }));
    }
    crumbs.push(el("button", { type: "button", class: "details", text: "详情 Details",
      onclick: () => { openArea(f.level, f.id); openDrawer("areas"); } }));
  }
  nav.replaceChildren(...crumbs);
}

// A click means the devices under it: one within a few pixels opens its chart (among
// thousands, only a device in trouble is worth aiming at); otherwise the area one level
// down that holds the nearest device is drilled into. Areas' hulls may overlap where their
// devices mix; the nearest device settles which one was meant.
function onMapClick(event) {
  const box = event.currentTarget.getBoundingClientRect();
  const cx = event.clientX - box.left, cy = event.clientY - box.top;
  let best = -1, bestD = Infinity;
  for (const i of cityMap.inFocus) {
    const [x, y] = toScreen(cityMap.x[i], cityMap.y[i]);
    const d = (x - cx) ** 2 + (y - cy) ** 2;
    if (d < bestD) { best = i; bestD = d; }
  }
  if (best < 0 || bestD > 40 ** 2) return;
  const depth = cityMap.focus ? levelOf(cityMap.focus.level) + 1 : 0;
  const aimed = bestD <= 10 ** 2 && (cityMap.inFocus.length <= 500 || cityMap.state[best] !== 0);
  if (aimed || depth >= MAP_LEVELS.length) {
    openEntity(cityMap.domains[best], cityMap.ids[best]);
    openDrawer("entity");
  } else {
    setFocus(MAP_LEVELS[depth], cityMap.paths[cityMap.path[best]][depth]);
  }
}

function initMap() {
  const canvas = $("city-map");
  canvas.addEventListener("click", onMapClick);
  new ResizeObserver(scheduleDraw).observe(canvas);
  $("map-legend").replaceChildren(...Object.values(STATE_NAMES).map((name, s) =>
    el("span", { class: "legend-item" }, el("i", { style: `background:${STATE_COLOURS[s]}` }), name)),
    el("span", { class: "legend-item" }, el("i", { class: "ring" }), "未处理告警 Open alert"));
}
