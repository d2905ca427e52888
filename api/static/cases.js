// The case board (网格化): one column per level, grid cell to district, each with its
// open cases, overdue first; an operator accepts or closes a case from the page.
"use strict";

const CASE_LEVELS = ["grid_cell", "community", "street", "district"];
const CASE_STATUS = { dispatched: "待受理 Dispatched", accepted: "已受理 Accepted", handled: "已处置 Handled",
  verified: "已核查 Verified", returned: "已退回 Returned", closed: "已办结 Closed" };
const CASE_REFRESH_MS = 5000;
let caseTimer = null;

function caseRow(c) {
  const next = ["dispatched", "returned"].includes(c.status) ? "accept"
    : ["accepted", "handled", "verified"].includes(c.status) ? "close" : null;
  return el("li", { class: `case${c.overdue ? " overdue" : ""}`, "data-case": c.id },
    el("span", { class: `chip sev-${known(c.severity, SEVERITY_NAMES)}`, text: SEVERITY_NAMES[c.severity] ?? c.severity }),
    el("strong", { text: c.unit }),
    el("span", { class: "case-status", text: CASE_STATUS[c.status] ?? c.status }),
    c.overdue ? el("span", { class: "overdue-tag", text: "超时 Overdue" }) : null,
    c.escalations ? el("span", { class: "escalated", text: `督办 Escalated ×${c.escalations}` }) : null,
    el("span", { class: "muted", text: `${c.area.community} · ${c.area.grid_cell} · ${stamp(c.opened_at)}` }),
    next ? el("button", { type: "button", class: `case-${next}`, text: ACTS[next], onclick: () => actOnCase(c, next) }) : null);
}

async function refreshCases() {
  const page = await api("/api/v1/cases?status=dispatched,accepted,handled,verified,returned&limit=1000");
  const columns = Object.fromEntries(CASE_LEVELS.map((level) => [level, []]));
  for (const c of page.cases) columns[c.level]?.push(c);
  $("case-board").replaceChildren(...CASE_LEVELS.map((level) => {
    const cases = columns[level].sort((a, b) => (b.overdue - a.overdue) || b.escalations - a.escalations ||
      (a.opened_at < b.opened_at ? -1 : 1));
    const overdue = cases.filter((c) => c.overdue).length;
    return el("div", { class: "case-column", "data-level": level },
      el("h3", { text: `${LEVEL_NAMES[level]} · ${cases.length}${overdue ? ` · 超时 ${overdue}` : ""}` }),
      cases.length ? el("ol", {}, ...cases.map(caseRow)) : el("p", { class: "muted", text: "无案件 No cases" }));
  }));
}

async function actOnCase(c, kind) {
  const body = await askOfficer({ summary: `案件 Case · ${c.unit}`, entity: c.id }, kind);
  if (!body) return;
  try {
    const result = await api(`/api/v1/cases/${urlPath(c.id, kind)}`, body);
    notice(result.detail ? "已受理，稍后生效 · Accepted; it shows once applied" : `${ACTS[kind]} ✓ ${c.unit}`,
      result.detail ? "info" : "ok");
    await refreshCases();
  } catch (err) {
    if (err.status !== 401) notice(errorText(err));
  }
}

function startCases() {
  refreshCases().catch(quietly);
  if (!caseTimer) caseTimer = setInterval(() => refreshCases().catch(quietly), CASE_REFRESH_MS);
}
