// The operator's console: renders the charger's server-sent events (GET /api/events) and
// drives the simulator through the local API. Plain JavaScript, no build step; the plots are
// uPlot (vendored under /static/vendor/uplot). Text from the charger is only ever set as
// textContent, never as HTML.
"use strict";
(() => {
  const HOUR_S = 3600;
  const MAX_LOG_ROWS = 1000;
  const FAULT_KINDS = ["estop", "earth", "comm", "meter", "lock"];
  const HEADERS = { "Content-Type": "application/json", "X-Dcocpp-Console": "1" };
  const guns = new Map(); // connector id -> {card, plot, points, ...}
  const calls = new Map(); // unique id -> {action, at, connector, row}
  const actions = new Set();
  const connectorsSeen = new Set();
  let snapshot = null;
  let sessionIds = "";

  const $ = (selector, root = document) => root.querySelector(selector);
  const el = (tag, text, className) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  };
  const fixed = (n, digits = 1) => (n === null || n === undefined ? "–" : Number(n).toFixed(digits));
  const time = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
  const span = (seconds) => {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? `${h} h ` : "") + (h || m ? `${m} min ` : "") + `${s % 60} s`;
  };
  // [term, value] or [term, value, class of the value: "warn" or "bad"]
  const facts = (dl, pairs) =>
    dl.replaceChildren(...pairs.flatMap(([term, value, tone]) => [el("dt", term), el("dd", value, tone)]));
  const bytes = (n) => {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${fixed(n / 1024)} KiB`;
    return `${fixed(n / (1024 * 1024))} MiB`;
  };
  const DAY_MS = 24 * 3600 * 1000;
  // A certificate's notAfter: when, how far off, and a warning tone within a month.
  const expiry = (iso) => {
    const days = Math.floor((Date.parse(iso) - Date.now()) / DAY_MS);
    if (days < 0) return [`expired ${time(iso)}`, "bad"];
    return [`expires ${time(iso)} (in ${days} day${days === 1 ? "" : "s"})`, days < 30 ? "warn" : undefined];
  };

  // --- the guns ---------------------------------------------------------------------------

  function plotOptions(width) {
    return {
      width, height: 220, legend: { live: false }, cursor: { show: false },
      scales: { x: { time: true }, kW: { auto: true }, A: { auto: true }, pct: { range: [0, 100] } },
      series: [
        {},
        { label: "power kW", scale: "kW", stroke: "#0b63c5", width: 2, points: { show: false } },
        { label: "current A", scale: "A", stroke: "#1a7f37", width: 1.5, points: { show: false } },
        { label: "limit A", scale: "A", stroke: "#c62828", dash: [6, 4], width: 1.5, points: { show: false } },
        { label: "SoC %", scale: "pct", stroke: "#b7791f", width: 1.5, points: { show: false } },
      ],
      axes: [
        {},
        { scale: "kW", label: "kW" },
        { scale: "A", label: "A", side: 1, grid: { show: false } },
        { scale: "pct", label: "%", side: 1, grid: { show: false } },
      ],
    };
  }

  function gunCard(cid) {
    const card = $("#gun-template").content.firstElementChild.cloneNode(true);
    card.id = `gun-${cid}`;
    card.dataset.connector = cid;
    $(".cid", card).textContent = cid;
    const faults = $(".fault-controls", card);
    for (const kind of FAULT_KINDS) {
      const box = el("input");
      box.type = "checkbox";
      box.dataset.fault = kind;
      box.addEventListener("change", () =>
        act(cid, `faults/${kind}`, { active: box.checked }, `${kind} ${box.checked ? "on" : "off"}`));
      const label = el("label");
      label.append(box, ` ${kind}`);
      faults.append(label);
    }
    for (const button of card.querySelectorAll("button[data-action]")) {
      button.dataset.connector = cid;
      button.addEventListener("click", () => control(cid, button.dataset.action, card));
    }
    $("#guns").append(card);
    const plotEl = $(".plot", card);
    plotEl.id = `plot-${cid}`;
    const gun = {
      card, plotEl, points: [], span: "hour", drawn: 0,
      plot: new uPlot(plotOptions(300), [[], [], [], [], []], plotEl),
    };
    $(".span", card).addEventListener("change", (event) => { gun.span = event.target.value; draw(cid); });
    guns.set(cid, gun);
    const option = el("option", cid);
    option.value = cid;
    $("#filter-connector").append(option);
    return gun;
  }

  function control(cid, action, card) {
    if (action === "plug" || action === "unplug") return act(cid, action, {}, action);
    if (action === "suspend" || action === "resume")
      return act(cid, "ev", { suspended: action === "suspend" }, `EV ${action}`);
    if (action === "authorize") {
      const idTag = $(".tag-input", card).value.trim();
      return act(cid, "authorize", { idTag }, `tag ${idTag}`);
    }
  }

  async function act(cid, path, body, what) {
    const outcome = $(`#gun-${cid} .outcome`);
    outcome.className = "outcome";
    outcome.textContent = `${what}…`;
    try {
      const answer = await fetch(`/api/connectors/${cid}/${path}`, {
        method: "POST", headers: HEADERS, body: JSON.stringify(body), credentials: "same-origin",
      });
      const data = await answer.json();
      if (!answer.ok) throw new Error(data.error || `HTTP ${answer.status}`);
      let text = `${what}: done`;
      const decided = data.authorization;
      if (decided) {
        text = `${decided.idTag}: ${decided.status || "no decision yet"}`;
        if (decided.source) text += ` (${decided.source})`;
        if (decided.detail) text += `; ${decided.detail}`;
      }
      outcome.textContent = text;
    } catch (error) {
      outcome.className = "outcome bad";
      outcome.textContent = `${what}: ${error.message}`;
    }
  }

  function limitText(entry) {
    if (entry.currentLimitA === null || entry.currentLimitA === undefined) return "–";
    const limit = entry.currentLimit;
    let text = `${fixed(entry.currentLimitA)} A`;
    if (limit) {
      const profiles = limit.profiles.map((p) => `#${p.id} ${p.purpose} level ${p.stackLevel}`);
      text += limit.source === "rating" ? " (the gun's rating)" : ` (${limit.source}; rating ${fixed(limit.ratingA)} A)`;
      if (profiles.length) text += `; profiles ${profiles.join(", ")}`;
      if (limit.error) text += `; ${limit.error}`;
    }
    return text;
  }

  function renderGun(entry, cp) {
    const cid = entry.id;
    const gun = guns.get(cid) || gunCard(cid);
    const card = gun.card;
    card.dataset.status = entry.status;
    const status = $(".status", card);
    status.textContent = entry.status;
    status.dataset.status = entry.status;
    $(".error-code", card).textContent = entry.errorCode === "NoError" ? "" : entry.errorCode;
    $(".power", card).textContent = fixed(entry.powerW / 1000, 1);
    $(".current", card).textContent = fixed(entry.currentA, 1);
    $(".voltage", card).textContent = fixed(entry.voltageV, 0);
    $(".soc", card).textContent = fixed(entry.soc, 0);
    const tx = entry.transaction;
    const reservations = (cp.reservations || [])
      .filter((r) => r.connectorId === cid || r.connectorId === 0)
      .map((r) => `#${r.reservationId} for ${r.idTag} until ${time(r.expiryDate)}${r.connectorId ? "" : " (any gun)"}`);
    facts($(".facts", card), [
      ["plugged", entry.plugged ? "yes" : "no"],
      ["relay", entry.relayClosed ? "closed" : "open"],
      ["transaction", tx ? `${tx.transactionId ?? "(not confirmed yet)"} for ${tx.idTag}` : "none"],
      ...(tx ? [["started", time(tx.startedAt)], ["energy", `${fixed(tx.energyWh / 1000, 2)} kWh`],
        ["duration", span(tx.durationS)]] : []),
      ["meter", `${fixed(entry.energyWh / 1000, 2)} kWh`],
      ["current limit", limitText(entry)],
      ["reservations", reservations.length ? reservations.join("; ") : "none"],
    ]);
    $(".faults", card).replaceChildren(...entry.faults.map((f) =>
      el("li", `${f.kind}: ${f.errorCode}${f.vendorErrorCode ? ` (${f.vendorErrorCode})` : ""}${f.detail ? `: ${f.detail}` : ""}`)));
    const controls = $(".controls", card);
    controls.hidden = !cp.simulation;
    const active = new Set(entry.faults.map((f) => f.kind));
    for (const box of card.querySelectorAll("input[data-fault]")) box.checked = active.has(box.dataset.fault);
    gun.startedAt = tx ? Date.parse(tx.startedAt) / 1000 : null;
    addPoint(cid, [Date.now() / 1000, entry.powerW / 1000, entry.currentA, entry.currentLimitA, entry.soc]);
  }

  function addPoint(cid, point) {
    const gun = guns.get(cid);
    if (!gun) return;
    gun.points.push(point);
    const since = Date.now() / 1000 - HOUR_S;
    while (gun.points.length && gun.points[0][0] < since) gun.points.shift();
    draw(cid);
  }

  function draw(cid) {
    const gun = guns.get(cid);
    const width = Math.max(300, gun.plotEl.clientWidth);
    if (Math.abs(width - gun.plot.width) > 4) gun.plot.setSize({ width, height: 220 });
    let points = gun.points;
    if (gun.span === "session") points = gun.startedAt ? points.filter((p) => p[0] >= gun.startedAt) : [];
    const columns = [0, 1, 2, 3, 4].map((i) => points.map((p) => p[i]));
    gun.plot.setData(columns);
    gun.plotEl.dataset.points = String(points.length);
  }

  // --- the charge point -------------------------------------------------------------------

  function renderChargePoint(cp) {
    $("#cp-id").textContent = cp.id;
    const live = $("#hardware");
    live.textContent = cp.simulation ? `${cp.simulation} hardware` : "real hardware";
    const link = cp.link || {};
    const failure = cp.lastConnectionFailure;
    facts($("#link-facts"), [
      ["URL", cp.url ?? "–"],
      ["registration", cp.registration],
      ["connected", cp.connected ? `yes, since ${time(link.connectedSince)}` : "no"],
      ["last failure", failure ? `${failure.reason} (${time(failure.at)})` : "none"],
      ...(failure ? [["failing since", `${time(failure.since)}, ${failure.attempts} attempt(s)`]] : []),
      ["next attempt", link.nextAttemptAt ? time(link.nextAttemptAt) : "–"],
      ["connections", link.connections ?? 0],
      ["heartbeat", link.heartbeatAt ? `${time(link.heartbeatAt)}, ${fixed(link.heartbeatRoundTripS * 1000, 0)} ms` : "–"],
      ["ping round trip", link.pingRoundTripS === null || link.pingRoundTripS === undefined ? "–" : `${fixed(link.pingRoundTripS * 1000, 0)} ms`],
      ...securityFacts(cp.security),
    ]);
    facts($("#outbox-facts"), [
      ["queued", cp.outbox.queued],
      ["parked", cp.outbox.parked, cp.outbox.parked ? "warn" : undefined],
      ["oldest waiting", cp.outbox.oldestAgeS === null || cp.outbox.oldestAgeS === undefined ? "–" : span(cp.outbox.oldestAgeS)],
    ]);
    renderFirmware(cp.firmware);
    renderUpload("diagnostics", cp.diagnostics);
    renderUpload("logs", cp.logs);
    const counters = Object.entries(cp.hardware || {});
    facts($("#hardware-facts"), [
      ["kind", cp.simulation ? `${cp.simulation} (the controls are on)` : "real"],
      ...(counters.length ? counters.map(([name, value]) => [name, value]) : [["counters", "none kept"]]),
    ]);
  }

  const PROFILES = {
    0: "no authentication, no TLS",
    1: "Basic auth, no TLS",
    2: "TLS and Basic auth",
    3: "TLS with the charge point certificate",
  };

  function securityFacts(security) {
    if (!security) return [["security profile", "–"]];
    const inUse = security.securityProfile;
    const configured = security.configuredProfile;
    const fallback = security.lastFallback;
    const pairs = [
      ["security profile", `${inUse} (${PROFILES[inUse] || "unknown"})`],
      ["configured profile", configured === null ? "none set by the central system"
        : `${configured}${security.onTrial ? " (on trial: not connected with it yet)" : ""}`,
        security.onTrial ? "warn" : undefined],
      ["last fallback", fallback ? `${fallback.failed} → ${fallback.restored} at ${time(fallback.at)}: ${fallback.reason}` : "none",
        fallback ? "warn" : undefined],
    ];
    const own = security.chargePointCertificateValidTo;
    pairs.push(["charge point certificate", ...(own ? expiry(own) : ["none"])]);
    const roots = security.centralSystemRoots || 0;
    if (roots) {
      const [text, tone] = expiry(security.centralSystemRootsValidTo);
      pairs.push(["CSMS root certificates", `${roots} installed; the first ${text}`, tone]);
    } else {
      pairs.push(["CSMS root certificates", "none installed"]);
    }
    return pairs;
  }

  // One transfer's box: its status, its facts and a progress bar (bytes of the total; without
  // a known total the bar is indeterminate).
  function renderTransfer(id, status, done, total, percent, pairs) {
    const box = $(`#transfer-${id}`);
    box.dataset.status = status;
    $(".transfer-status", box).textContent = status;
    facts($("dl", box), pairs);
    const line = $(".progress-line", box);
    line.hidden = done === null;
    if (done === null) return;
    const bar = $("progress", box);
    if (total) {
      bar.max = total;
      bar.value = Math.min(done, total);
    } else {
      bar.removeAttribute("value");
    }
    box.dataset.bytesDone = String(done);
    box.dataset.bytesTotal = total ? String(total) : "";
    $(".progress-text", box).textContent = total
      ? `${fixed(percent ?? (100 * done) / total)} % (${bytes(done)} of ${bytes(total)})`
      : `${bytes(done)} of an unknown size`;
  }

  function attemptFacts(attempt, attempts, nextAt, error) {
    return [
      ["attempt", attempt ? `${attempt} of ${attempts}` : `none yet (of ${attempts})`],
      ...(nextAt ? [["next try", time(nextAt)]] : []),
      ["last error", error || "none", error ? "bad" : undefined],
    ];
  }

  function renderFirmware(firmware) {
    if (!firmware) return renderTransfer("firmware", "–", null, null, null, []);
    const update = firmware.update;
    const pairs = [["running", firmware.version]];
    if (update) {
      pairs.push(["update", `${update.fileName} from ${update.location}`], ["phase", update.phase],
        ...attemptFacts(update.attempt, update.attempts, update.nextAttemptAt, update.error));
    } else {
      pairs.push(["update", "none"]);
    }
    const begun = update && update.phase !== "scheduled";
    renderTransfer("firmware", firmware.status, begun ? update.bytesDone : null,
      update ? update.bytesTotal : null, update ? update.percent : null, pairs);
    $("#transfer-firmware").dataset.phase = update ? update.phase : "";
  }

  function renderUpload(id, state) {
    if (!state) return renderTransfer(id, "–", null, null, null, []);
    const upload = state.upload;
    const pairs = [];
    if (upload) {
      pairs.push(["file", `${upload.file_name} to ${upload.location}`],
        ...(upload.request_id === null || upload.request_id === undefined ? [] : [["request", upload.request_id]]),
        ...attemptFacts(upload.attempt, upload.attempts, upload.next_attempt_at, upload.error),
        ...(upload.refusal ? [["refused as", upload.refusal, "bad"]] : []));
    } else {
      pairs.push(["file", "none"]);
    }
    renderTransfer(id, state.status, upload ? upload.bytes_done : null, upload ? upload.bytes_total : null, null, pairs);
  }

  function render(next) {
    const previous = snapshot;
    snapshot = next;
    renderChargePoint(next.chargePoint);
    for (const entry of next.connectors) renderGun(entry, next.chargePoint);
    const ids = next.connectors.map((c) => `${c.id}:${c.transactionId}`).join(",");
    if (!previous || ids !== sessionIds) {
      sessionIds = ids;
      loadHistory();
    }
  }

  // --- the message log --------------------------------------------------------------------

  const TYPES = { 2: "CALL", 3: "CALLRESULT", 4: "CALLERROR" };

  function addFrame(entry) {
    const at = Date.parse(entry.at);
    const row = el("tr");
    row.dataset.direction = entry.direction;
    let type = "", action = "", payload = entry.text, connector = "", roundTrip = "";
    if (entry.direction === "--") {
      row.className = "note";
    } else {
      try {
        const frame = JSON.parse(entry.text);
        type = TYPES[frame[0]] || "?";
        if (type === "CALL") {
          action = frame[2];
          connector = frame[3] && frame[3].connectorId !== undefined ? String(frame[3].connectorId) : "";
          calls.set(frame[1], { action, at, connector, row });
          payload = JSON.stringify(frame[3]);
        } else {
          const call = calls.get(frame[1]);
          if (call) {
            action = call.action;
            connector = call.connector;
            roundTrip = `${at - call.at} ms`;
            $(".rtt", call.row).textContent = roundTrip;
            calls.delete(frame[1]);
          }
          payload = type === "CALLERROR" ? `${frame[2]}: ${frame[3]}` : JSON.stringify(frame[2]);
        }
      } catch (error) {
        type = "unreadable";
      }
      row.className = type;
    }
    row.dataset.action = action;
    row.dataset.connector = connector;
    row.dataset.type = type;
    const arrow = { ">>": "→", "<<": "←", "--": "·" }[entry.direction] || entry.direction;
    row.append(el("td", new Date(at).toLocaleTimeString()), el("td", arrow), el("td", type),
      el("td", action), el("td", roundTrip, "rtt"), el("td", payload));
    if (action && !actions.has(action)) {
      actions.add(action);
      const option = el("option", action);
      option.value = action;
      $("#filter-action").append(option);
    }
    if (connector) connectorsSeen.add(connector);
    filterRow(row);
    const body = $("#log tbody");
    body.append(row);
    while (body.rows.length > MAX_LOG_ROWS) body.deleteRow(0);
  }

  function filterRow(row) {
    const action = $("#filter-action").value;
    const direction = $("#filter-direction").value;
    const connector = $("#filter-connector").value;
    row.hidden = (action && row.dataset.action !== action) ||
      (direction && row.dataset.direction !== direction) ||
      (connector && row.dataset.connector !== connector);
  }

  function refilter() {
    for (const row of $("#log tbody").rows) filterRow(row);
  }

  function onFrames(data) {
    for (const entry of data.frames) addFrame(entry);
    if (data.dropped) $("#log-dropped").textContent = `(${data.dropped} message(s) not shown: the page fell behind)`;
    if ($("#follow").checked) {
      const wrap = $(".log-wrap");
      wrap.scrollTop = wrap.scrollHeight;
    }
  }

  // --- configuration and history ----------------------------------------------------------

  function renderKeys(list) {
    $("#keys tbody").replaceChildren(...list.map((k) => {
      const row = el("tr");
      row.append(el("td", k.key), el("td", k.value), el("td", k.readonly ? "read-only" : ""));
      return row;
    }));
  }

  async function loadHistory() {
    try {
      const answer = await fetch("/api/transactions?limit=20", { credentials: "same-origin" });
      if (!answer.ok) return;
      const sessions = await answer.json();
      $("#sessions tbody").replaceChildren(...sessions.map((s) => {
        const row = el("tr");
        row.dataset.session = s.id;
        row.append(el("td", s.id), el("td", s.transactionId ?? "–"), el("td", s.connectorId),
          el("td", s.idTag), el("td", time(s.startedAt)), el("td", s.stoppedAt ? time(s.stoppedAt) : "running"),
          el("td", s.reason ?? "–"), el("td", s.energyWh === null ? "–" : `${fixed(s.energyWh / 1000, 2)} kWh`, "num"),
          el("td", span(s.durationS), "num"), el("td", s.peakKw === null ? "–" : `${fixed(s.peakKw)} kW`, "num"),
          el("td", s.averageKw === null ? "–" : `${fixed(s.averageKw)} kW`, "num"));
        row.addEventListener("click", () => showSession(s.id, row));
        return row;
      }));
    } catch (error) {
      console.warn("history not loaded", error);
    }
  }

  let sessionPlot = null;
  async function showSession(id, row) {
    for (const other of $("#sessions tbody").rows) other.classList.toggle("chosen", other === row);
    const answer = await fetch(`/api/transactions/${id}/meter-values`, { credentials: "same-origin" });
    if (!answer.ok) return;
    const session = await answer.json();
    const points = session.points;
    const target = $("#session-plot");
    target.hidden = false;
    if (sessionPlot) sessionPlot.destroy();
    const columns = [
      points.map((p) => Date.parse(p.at) / 1000),
      points.map((p) => (p.powerW === undefined ? null : p.powerW / 1000)),
      points.map((p) => (p.energyWh === undefined ? null : p.energyWh / 1000)),
      points.map((p) => (p.soc === undefined ? null : p.soc)),
    ];
    sessionPlot = new uPlot({
      title: `session ${id} (transaction ${session.transactionId ?? "–"}, gun ${session.connectorId})`,
      width: Math.max(300, target.clientWidth), height: 240,
      scales: { x: { time: true }, kW: { auto: true }, kWh: { auto: true }, pct: { range: [0, 100] } },
      series: [{}, { label: "power kW", scale: "kW", stroke: "#0b63c5", spanGaps: true },
        { label: "meter kWh", scale: "kWh", stroke: "#1a7f37", spanGaps: true },
        { label: "SoC %", scale: "pct", stroke: "#b7791f", spanGaps: true }],
      axes: [{}, { scale: "kW", label: "kW" }, { scale: "kWh", label: "kWh", side: 1, grid: { show: false } },
        { scale: "pct", side: 1, grid: { show: false } }],
    }, columns, target);
    target.dataset.points = String(points.length);
  }

  // --- the event stream -------------------------------------------------------------------

  function connect() {
    const events = new EventSource("/api/events");
    const live = $("#live");
    events.onopen = () => { live.textContent = "live"; live.className = "pill on"; };
    events.onerror = () => { live.textContent = "reconnecting"; live.className = "pill off"; };
    events.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
    events.addEventListener("frames", (e) => onFrames(JSON.parse(e.data)));
    events.addEventListener("configuration", (e) => renderKeys(JSON.parse(e.data)));
    events.addEventListener("trend", (e) => {
      for (const [cid, points] of Object.entries(JSON.parse(e.data))) {
        const gun = guns.get(Number(cid));
        if (!gun) continue;
        gun.points = points.concat(gun.points).sort((a, b) => a[0] - b[0]);
        draw(Number(cid));
      }
    });
  }

  for (const id of ["#filter-action", "#filter-direction", "#filter-connector"])
    $(id).addEventListener("change", refilter);
  window.addEventListener("resize", () => {
    for (const gun of guns.values()) gun.plot.setSize({ width: Math.max(300, gun.plotEl.clientWidth), height: 220 });
  });
  connect();
  setInterval(loadHistory, 15000);
})();
