// The workers page: each running task's elapsed time ticks every second.
//
// The server writes the seconds a task had run when it drew the page (data-elapsed), so the
// browser's clock never matters. The page is read again every few seconds (dashboard.js), which
// brings new cells for the same runs: a run keeps the earliest origin seen (data-key is the task
// and its start), so its time never steps back by a fetch's delay.
(function () {
  "use strict";
  const origins = new Map();  // data-key -> performance.now() at which the run had run 0 s

  function format(seconds) {
    const whole = Math.floor(seconds);
    const two = (n) => String(n).padStart(2, "0");
    if (whole < 60) return `${whole} s`;
    if (whole < 3600) return `${Math.floor(whole / 60)} min ${two(whole % 60)} s`;
    return `${Math.floor(whole / 3600)} h ${two(Math.floor((whole % 3600) / 60))} min`;
  }

  function tick() {
    const now = performance.now();
    const shown = new Set();
    document.querySelectorAll("[data-elapsed]").forEach((cell) => {
      const key = cell.dataset.key || cell.dataset.elapsed;
      const origin = Math.min(origins.get(key) ?? Infinity, now - Number(cell.dataset.elapsed) * 1000);
      origins.set(key, origin);
      shown.add(key);
      const text = format((now - origin) / 1000);
      if (cell.textContent !== text) cell.textContent = text;
    });
    origins.forEach((_, key) => { if (!shown.has(key)) origins.delete(key); });
  }

  tick();
  setInterval(tick, 250);
})();
