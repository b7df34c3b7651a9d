// Keeps a dashboard page current from cq's websocket, and sends its buttons to the JSON API.
(function () {
  "use strict";
  const labels = {P: "Pending", Y: "Retry", Q: "Queued", R: "Running", F: "Failure", S: "Success",
                  W: "Waiting", I: "Incomplete", L: "Lost", E: "Revoked"};
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;

  function show(event) {
    document.querySelectorAll(`[data-task="${event.task}"] .status, [data-status="${event.task}"]`)
      .forEach((cell) => {
        cell.textContent = labels[event.status] || event.status;
        cell.className = `status status-${event.status}`;
      });
    if (event.event === "progress") {
      document.querySelectorAll(`progress[data-task="${event.task}"], [data-task="${event.task}"] progress`)
        .forEach((bar) => { bar.value = event.progress.percent || 0; });
      const message = document.getElementById("progress-message");
      if (message && event.progress.message) message.textContent = event.progress.message;
    }
    if (event.event === "log") {
      const logs = document.getElementById("logs");
      if (logs) event.records.forEach((r) => { logs.textContent += `${r.timestamp} ${r.level} ${r.message}\n`; });
    }
  }

  function listen() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${document.body.dataset.events}`);
    socket.onmessage = (message) => show(JSON.parse(message.data));
    socket.onclose = () => setTimeout(listen, 2000);
  }

  document.querySelectorAll(".actions button").forEach((button) => {
    button.addEventListener("click", async () => {
      const api = button.closest(".actions").dataset.api;
      const answer = await fetch(api + button.dataset.action, {
        method: "POST", headers: {"X-CSRFToken": csrf, "Content-Type": "application/json"},
        body: button.dataset.body || "{}",
      });
      const body = await answer.json();
      if (!answer.ok) alert(body.error.message);
      else if (body.task.id !== api.split("/").slice(-2)[0]) location.href = `../${body.task.id}/`;
    });
  });
  listen();
})();
