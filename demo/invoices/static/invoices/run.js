// The run page: cq's websocket says when anything in the run's task tree changes (a status, progress,
// a log line); the page then reads the run's state again, one small JSON request at most every 200 ms.
(function () {
  "use strict";
  const script = document.currentScript;
  let timer = null;

  const esc = (text) => String(text).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

  function show(state) {
    document.getElementById("status").textContent = state.status;
    document.getElementById("progress").value = state.percent;
    document.getElementById("percent").textContent = `${state.percent}%`;
    const rows = state.invoices.map((i) =>
      `<tr class="${i.status}"><td>${esc(i.number)}</td><td>${esc(i.customer)}</td><td class="num">${i.total}</td>` +
      `<td>${i.status}${i.error ? ": " + esc(i.error) : ""}</td></tr>`);
    document.querySelector("#invoices tbody").innerHTML = rows.join("");
    document.getElementById("failed").textContent = state.failed.length ? `Not invoiced: ${state.failed.join(", ")}` : "";
    if (state.archive_url && !document.getElementById("download")) {
      document.getElementById("archive").innerHTML = `<a id="download" href="${state.archive_url}">Download the archive</a>`;
    }
    document.getElementById("retry-failed").hidden = !state.retry_url;
    retryUrl = state.retry_url;
    const logs = document.getElementById("logs");
    logs.textContent = state.logs.join("\n");
    logs.scrollTop = logs.scrollHeight;
    reminder(state);
  }

  let countdown = null;
  function reminder(state) {
    const line = document.getElementById("reminder");
    clearInterval(countdown);
    if (!state.reminder_at) return;
    const tick = () => {
      const left = Math.max(0, Math.round((Date.parse(state.reminder_at) - Date.now()) / 1000));
      line.textContent = state.reminder_status === "Queued" && left > 0
        ? `Payment reminders go out in ${left} s (a delayed task).`
        : `Payment reminders: ${state.reminder_status}.`;
    };
    tick();
    countdown = setInterval(tick, 1000);
  }

  function refresh() {
    if (timer) return;
    timer = setTimeout(async () => {
      timer = null;
      const answer = await fetch(script.dataset.state);
      if (answer.ok) show(await answer.json());
    }, 200);
  }

  function listen() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${script.dataset.events}`);
    socket.onopen = refresh; // whatever happened before the socket opened
    socket.onmessage = refresh;
    socket.onclose = () => setTimeout(listen, 2000);
  }

  // Retry failed: cq's JSON API runs again only what failed in the run's task tree.
  let retryUrl = null;
  document.getElementById("retry").addEventListener("click", async () => {
    const token = document.querySelector("[name=csrfmiddlewaretoken]").value;
    const answer = await fetch(retryUrl, {method: "POST", headers: {"X-CSRFToken": token}, body: "{}"});
    if (!answer.ok) alert((await answer.json()).error.message);
    refresh();
  });

  show(JSON.parse(document.getElementById("state").textContent));
  listen();
})();
