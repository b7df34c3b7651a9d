// The task list's throughput chart (cq.web.dashboard.throughput): tasks finished per minute over the
// last hour, stacked by final status, with a time axis (the browser's local time), a y scale of round
// ticks, and a tooltip per minute. The current minute grows with the page's events (dashboard.js's
// "cq:event"); the hour slides on as the clock turns.
(function () {
  "use strict";
  const svg = document.getElementById("throughput");
  if (!svg) return;
  const statuses = JSON.parse(document.getElementById("cq-statuses").textContent);
  const labels = statuses.labels;
  const data = JSON.parse(document.getElementById("throughput-data").textContent);
  const minutes = data.minutes, counts = data.counts;
  const HEIGHT = 140, LEFT = 36, RIGHT = 8, TOP = 8, BOTTOM = 20;  // px
  const svgNS = "http://www.w3.org/2000/svg";
  let start = Date.parse(data.start);
  let pointed = null;  // the minute under the pointer

  const tip = document.createElement("div");
  tip.className = "tip";
  tip.setAttribute("role", "tooltip");
  tip.hidden = true;
  svg.after(tip);

  function element(name, attributes, text) {
    const node = document.createElementNS(svgNS, name);
    Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const clock = (t) => new Date(t).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", hour12: false});

  // A round step for at most `count` ticks up to `top`: 1, 2 or 5 times a power of ten, never under 1.
  function roundStep(top, count) {
    const rough = Math.max(1, top / count), power = 10 ** Math.floor(Math.log10(rough));
    return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= rough);
  }

  function slide(now) {
    const shift = Math.min(Math.floor((now - start) / 60000) - (minutes - 1), minutes);
    if (shift <= 0) return;
    Object.values(counts).forEach((row) => { row.splice(0, shift); row.push(...new Array(shift).fill(0)); });
    start += shift * 60000;
  }

  // What finished in minute i: "14:32 — 120 Success, 3 Failure".
  function describe(i) {
    const parts = Object.keys(labels).filter((status) => counts[status]?.[i])
      .map((status) => `${counts[status][i]} ${labels[status]}`);
    return `${clock(start + i * 60000)} — ${parts.length ? parts.join(", ") : "none finished"}`;
  }

  function draw() {
    slide(Date.now());
    const width = Math.max(svg.clientWidth, 300);
    svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    const plotWidth = width - LEFT - RIGHT, plotHeight = HEIGHT - TOP - BOTTOM, column = plotWidth / minutes;
    const totals = new Array(minutes).fill(0);
    Object.values(counts).forEach((row) => row.forEach((n, i) => { totals[i] += n; }));
    const step = roundStep(Math.max(...totals), 4);
    const top = Math.max(step, Math.ceil(Math.max(...totals) / step) * step);
    const y = (n) => TOP + plotHeight - (n / top) * plotHeight;
    const drawn = [];
    for (let n = 0; n <= top; n += step) {  // the y scale
      drawn.push(element("line", {class: "grid", x1: LEFT, x2: width - RIGHT, y1: y(n), y2: y(n)}),
                 element("text", {class: "y", x: LEFT - 4, y: y(n) + 4, "text-anchor": "end"}, n));
    }
    for (let i = 0; i < minutes; i++) {  // the time axis: a label every 10 minutes
      if (new Date(start + i * 60000).getMinutes() % 10) continue;
      const x = LEFT + i * column;
      drawn.push(element("line", {class: "tick", x1: x, x2: x, y1: TOP + plotHeight, y2: TOP + plotHeight + 4}),
                 element("text", {class: "x", x, y: HEIGHT - 4, "text-anchor": "middle"}, clock(start + i * 60000)));
    }
    const height = new Array(minutes).fill(0);
    Object.keys(labels).forEach((status) => (counts[status] || []).forEach((n, i) => {
      if (!n) return;
      height[i] += n;
      drawn.push(element("rect", {class: `status-${status}`, x: LEFT + i * column + 0.5, y: y(height[i]),
                                  width: Math.max(1, column - 1), height: (n / top) * plotHeight}));
    }));
    if (pointed !== null) {
      drawn.push(element("rect", {class: "pointed", x: LEFT + pointed * column, y: TOP, width: column, height: plotHeight}));
      tip.textContent = describe(pointed);
    }
    svg.replaceChildren(...drawn);
    svg.dataset.total = totals.reduce((a, b) => a + b, 0);
  }

  svg.addEventListener("mousemove", (move) => {
    const box = svg.getBoundingClientRect();
    const i = Math.floor((move.clientX - box.left - LEFT) / ((box.width - LEFT - RIGHT) / minutes));
    if (i < 0 || i >= minutes) {
      svg.dispatchEvent(new Event("mouseleave"));
      return;
    }
    pointed = i;
    draw();
    tip.hidden = false;
    tip.style.left = `${Math.min(move.clientX - box.left + 12, box.width - tip.offsetWidth)}px`;
    tip.style.top = `${move.clientY - box.top + 12}px`;
  });
  svg.addEventListener("mouseleave", () => {
    pointed = null;
    tip.hidden = true;
    draw();
  });

  document.addEventListener("cq:event", ({detail: {event, live}}) => {
    if (!live || event.event !== "status" || !statuses.final.includes(event.status)) return;
    const at = Date.parse(event.at);
    slide(at);
    const i = Math.floor((at - start) / 60000);
    if (i < 0 || i >= minutes) return;
    (counts[event.status] ||= new Array(minutes).fill(0))[i] += 1;
    draw();
  });
  window.addEventListener("resize", draw);
  draw();
  setInterval(draw, 30000);
})();
