// The task list's own script: new rows at the top of the first page as tasks appear, a progress
// bar for a row once its task reports progress, and the selection of rows for a bulk action.
(function () {
  "use strict";
  const table = document.getElementById("tasks");
  if (!table) return;
  const PAGE = 100;
  const ZERO = "00000000-0000-0000-0000-000000000000";

  function rowOf(task) { return table.querySelector(`tr[data-task="${task}"]`); }

  // On the unfiltered first page, a task seen for the first time gets a row at the top (a subtask
  // only when the list shows subtasks too).
  function addRow(event) {
    if (!table.hasAttribute("data-live-rows") || rowOf(event.task)) return;
    if (!table.hasAttribute("data-all") && event.top && event.top !== event.task) return;
    const body = table.tBodies[0];
    body.querySelectorAll("tr.empty").forEach((row) => row.remove());
    const row = body.insertRow(0);
    row.dataset.task = event.task;
    const box = document.createElement("input");
    Object.assign(box, {type: "checkbox", name: "ids", value: event.task});
    box.setAttribute("aria-label", `select ${event.task}`);
    row.insertCell().append(box);
    const link = document.createElement("a");
    link.href = table.dataset.taskUrl.replace(ZERO, event.task);
    link.textContent = event.task;
    row.insertCell().append(link);
    row.insertCell().textContent = event.func_name;
    row.insertCell().className = "status";
    row.insertCell().className = "progress";
    for (const name of ["submitted", "wait", "duration", "finished"]) row.insertCell().className = name;
    while (body.rows.length > PAGE) body.deleteRow(-1);
  }

  // A bar only for tasks that report progress: the first report makes it.
  function addBar(event) {
    const cell = rowOf(event.task)?.querySelector("td.progress");
    if (!cell || cell.querySelector("progress")) return;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    cell.append(bar);
  }

  document.addEventListener("cq:event", (e) => {
    const event = e.detail.event;
    if (event.event === "status") addRow(event);
    if (event.event === "progress") addBar(event);
  });

  // Selection: the buttons act on the checked rows (through the bulk page, which counts them first).
  const form = document.getElementById("selection");
  const all = document.getElementById("select-all");
  function checked() { return table.querySelectorAll("tbody input[name=ids]:checked"); }
  function update() {
    const n = checked().length;
    form.querySelectorAll("button").forEach((button) => { button.disabled = n === 0; });
    form.dataset.selected = n;
  }
  all.addEventListener("change", () => {
    table.querySelectorAll("tbody input[name=ids]").forEach((box) => { box.checked = all.checked; });
    update();
  });
  table.addEventListener("change", (e) => { if (e.target.name === "ids") update(); });
  update();
})();
