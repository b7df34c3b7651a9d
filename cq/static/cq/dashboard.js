// Keeps a dashboard page current from cq's websocket, and sends its buttons to the JSON API.
(function () {
  "use strict";
  // The statuses' labels, and which are final, as the server's TaskStatus says (never copied here).
  const statuses = JSON.parse(document.getElementById("cq-statuses").textContent);
  const labels = statuses.labels;
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;

  // An event from the socket; or, with live false, a task's state read from the API (not counted in the chart).
  function show(event, live = true) {
    // A page's own script (list.js, chart.js, timeline.js) sees each event first: it may add the
    // row or bar it updates.
    document.dispatchEvent(new CustomEvent("cq:event", {detail: {event, live}}));
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

  // What changed before the socket opened (or while it was closed) came as no event: read it from the API.
  async function catchUp() {
    const url = document.body.dataset.state;
    if (!url) return;
    const answer = await fetch(url + (url.endsWith("/tasks/") ? location.search : ""));
    if (!answer.ok) return;
    const state = await answer.json();
    const tasks = state.tasks ? [...state.tasks].reverse() : [state.task, ...state.tree];
    tasks.forEach((task) => {
      show({event: "status", task: task.id, func_name: task.func_name, status: task.status}, false);
      if (task.progress) show({event: "progress", task: task.id, status: task.status, progress: task.progress}, false);
    });
    const logs = document.getElementById("logs");
    if (logs && state.logs) logs.textContent = state.logs.map((r) => `${r.timestamp} ${r.level} ${r.message}\n`).join("");
  }

  // Workers and queues pages are read again when a task changes status (at most once a second) or
  // a queue's controls change, and every data-refresh seconds for heartbeat ages.
  let reading = null;
  function reread(delay = 1000) {
    if (reading || !document.body.dataset.refresh) return;
    reading = setTimeout(async () => {
      const answer = await fetch(location.href);
      reading = null;
      if (!answer.ok) return;
      const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
      document.querySelector("main").replaceWith(fresh.querySelector("main"));
    }, delay);
  }
  if (document.body.dataset.refresh) setInterval(reread, document.body.dataset.refresh * 1000);

  function listen() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${document.body.dataset.events}`);
    socket.onopen = catchUp;
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.event === "queue") reread(0);  // an operator paused, resumed or capped a queue
      else show(event);
      if (event.event === "status") reread();
    };
    socket.onclose = () => setTimeout(listen, 2000);
  }

  // Buttons act through the JSON API. Listened for on the document: a page read again replaces them.
  document.addEventListener("click", async (click) => {
    const button = click.target.closest(".actions button");
    if (!button) return;
    click.preventDefault();
    const actions = button.closest(".actions");
    const field = button.dataset.input && actions.querySelector(button.dataset.input);
    const body = field ? JSON.stringify({[field.name]: field.value === "" ? null : Number(field.value)})
      : button.dataset.body || "{}";
    const answer = await fetch(actions.dataset.api + (button.dataset.action || ""), {
      method: "POST", headers: {"X-CSRFToken": csrf, "Content-Type": "application/json"}, body,
    });
    const reply = await answer.json();
    if (!answer.ok) alert(reply.error.message);
    else if (reply.queue) reread(0);
    else if (reply.task.id !== actions.dataset.api.split("/").slice(-2)[0]) location.href = `../${reply.task.id}/`;
  });
  listen();
})();
