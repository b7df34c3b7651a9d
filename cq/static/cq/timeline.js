// The timeline of a task's tree (cq.web.timeline): one bar per task, pale while it waited in its
// queue, solid while it ran; indented by parent, coloured by status, the critical path outlined, a
// click opens the task. It follows the page's events (dashboard.js's "cq:event") and reads the
// tree again (the task page with ?timeline) when a task appears or finishes, at most every 2 s.
// Only the rows in view are drawn, so a tree of thousands stays quick.
(function () {
  "use strict";
  const figure = document.getElementById("timeline");
  if (!figure) return;
  const axis = figure.querySelector("svg.axis");
  const bars = figure.querySelector("svg.bars");
  const scroller = figure.querySelector(".rows");
  const statuses = JSON.parse(document.getElementById("cq-statuses").textContent);
  const final = new Set(statuses.final), labels = statuses.labels;
  // In px; PAD leaves room for the last time label, MARGIN is how many rows are drawn beyond the view.
  const ROW = 18, LABEL = 280, INDENT = 12, PAD = 28, MARGIN = 10;
  const svgNS = "http://www.w3.org/2000/svg";
  let rows = [], byId = new Map(), critical = new Set(), offset = 0, total = 0;
  let unstarted = new Set();  // statuses not running yet: queued, retrying, or pending a submit

  const time = (iso) => (iso ? Date.parse(iso) : null);
  const now = () => Date.now() + offset;  // the server's clock, as near as the page can tell

  function load(data) {
    rows = data.rows.map((row) => ({...row, queued: time(row.queued), started: time(row.started),
                                    finished: time(row.finished)}));
    byId = new Map(rows.map((row) => [row.id, row]));
    critical = new Set(data.critical);
    unstarted = new Set(data.unstarted);
    offset = Date.parse(data.now) - Date.now();
    total = data.total;
    figure.querySelector(".note").textContent = total > rows.length
      ? `Drawn: the first ${rows.length.toLocaleString()} of ${total.toLocaleString()} tasks (the table lists them all).` : "";
    figure.dataset.rows = rows.length;
    figure.dataset.critical = data.critical.join(" ");
    draw();
  }

  function span() {
    let start = Infinity, end = -Infinity;
    const clock = now();
    rows.forEach((row) => {
      start = Math.min(start, row.queued ?? row.started ?? clock);
      end = Math.max(end, row.finished ?? (final.has(row.status) ? row.started ?? row.queued ?? clock : clock));
    });
    if (!isFinite(start)) start = end = clock;
    return [start, Math.max(end, start + 1000)];
  }

  function element(name, attributes, text) {
    const node = document.createElementNS(svgNS, name);
    Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function seconds(ms) {
    const s = ms / 1000;
    return s < 60 ? `${s.toFixed(s < 10 ? 1 : 0)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }

  // A round step of the clock for about `count` ticks over `range` seconds: tenths under a second,
  // then the steps a clock's face has (5 s, 15 s, 1 min, 5 min, 1 h...).
  const CLOCK = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  function roundStep(range, count) {
    const rough = range / count;
    if (rough < 1) return [0.1, 0.2, 0.5, 1].find((step) => step >= rough);
    return CLOCK.find((step) => step >= rough) ?? Math.ceil(rough / 86400) * 86400;
  }

  function offsetLabel(ms) {
    const s = Math.round(ms / 100) / 10, m = Math.floor(s / 60), h = Math.floor(m / 60);
    if (s < 60) return `+${s} s`;
    if (s < 3600) return s % 60 ? `+${m} min ${Math.round(s % 60)} s` : `+${m} min`;
    return m % 60 ? `+${h} h ${m % 60} min` : `+${h} h`;
  }

  function draw() {
    const width = Math.max(scroller.clientWidth, LABEL + 200);
    const [start, end] = span();
    const x = (t) => LABEL + ((t - start) / (end - start)) * (width - LABEL - PAD);
    const clock = now();
    // The axis: seconds since the first task was queued, at round steps.
    axis.setAttribute("width", width);
    axis.replaceChildren();
    const step = roundStep((end - start) / 1000, 6) * 1000;
    for (let t = 0; start + t <= end; t += step) {
      axis.append(element("line", {x1: x(start + t), x2: x(start + t), y1: 16, y2: 22}),
                  element("text", {x: x(start + t), y: 12, "text-anchor": "middle"}, offsetLabel(t)));
    }
    // The rows in view, and a few beyond it.
    bars.setAttribute("width", width);
    bars.setAttribute("height", rows.length * ROW);
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW) - MARGIN);
    const last = Math.min(rows.length, Math.ceil((scroller.scrollTop + scroller.clientHeight) / ROW) + MARGIN);
    const url = figure.dataset.taskUrl;
    const drawn = [];
    for (let i = first; i < last; i++) {
      const row = rows[i], y = i * ROW;
      const link = element("a", {href: url.replace("00000000-0000-0000-0000-000000000000", row.id),
                                 class: `bar status-${row.status}${critical.has(row.id) ? " critical" : ""}`,
                                 "data-id": row.id});
      const name = row.func_name.split(".").slice(-2).join(".");
      link.append(element("text", {x: 4 + row.depth * INDENT, y: y + ROW - 5}, name));
      const stop = row.finished ?? (final.has(row.status) ? row.started ?? row.queued : clock);
      const began = unstarted.has(row.status) ? null : row.started;
      const waitEnd = began ?? stop;
      if (row.queued !== null && waitEnd !== null) {
        link.append(element("rect", {class: "wait", x: x(row.queued), y: y + 4, height: ROW - 8,
                                     width: Math.max(1, x(waitEnd) - x(row.queued))}));
      }
      if (began !== null) {
        link.append(element("rect", {class: "run", x: x(began), y: y + 3, height: ROW - 6,
                                     width: Math.max(2, x(stop) - x(began))}));
      }
      const waited = row.queued !== null && waitEnd !== null ? `waited ${seconds(waitEnd - row.queued)}` : "";
      const ran = began !== null ? `, ran ${seconds(stop - began)}` : "";
      link.append(element("title", {}, `${row.func_name} (${row.id.slice(0, 8)}): ${labels[row.status] || row.status}; ` +
                                       `${waited}${ran}${critical.has(row.id) ? "; on the critical path" : ""}`));
      drawn.push(link);
    }
    bars.replaceChildren(...drawn);
  }

  // A status event moves a bar at once; the tree is read again for new tasks and the critical path.
  let reading = null, lastRead = 0;
  function readAgain() {
    if (reading) return;
    reading = setTimeout(async () => {
      reading = null;
      lastRead = Date.now();
      const answer = await fetch(`${location.pathname}?timeline`, {headers: {Accept: "application/json"}});
      if (answer.ok) load(await answer.json());
    }, Math.max(0, lastRead + 2000 - Date.now()));
  }

  document.addEventListener("cq:event", ({detail: {event, live}}) => {
    if (event.event !== "status") return;
    const row = byId.get(event.task);
    if (!row || !live) {
      if (!row || row.status !== event.status) readAgain();  // new, or changed while the socket was closed
      return;
    }
    const at = Date.parse(event.at);
    if (unstarted.has(event.status)) {
      if (row.status !== event.status) [row.queued, row.started, row.finished] = [at, null, null];  // (re)queued
    } else if (!final.has(event.status)) {
      if (unstarted.has(row.status) || row.started === null) [row.started, row.finished] = [at, null];
    } else {
      row.finished = at;
      readAgain();
    }
    row.status = event.status;
    draw();
  });

  let frame = null;
  const redraw = () => { frame ??= requestAnimationFrame(() => { frame = null; draw(); }); };
  scroller.addEventListener("scroll", redraw);
  window.addEventListener("resize", redraw);
  // Bars of unfinished tasks grow with the clock.
  setInterval(() => { if (rows.some((row) => !final.has(row.status))) draw(); }, 500);
  load(JSON.parse(document.getElementById("timeline-data").textContent));
})();
