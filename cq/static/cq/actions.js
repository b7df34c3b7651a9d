// The task page's buttons are those whose action can run now, as the server decides
// (cq.engine.actions). When the task's status changes on the page (dashboard.js shows it live),
// the buttons are read again from the server: a task retried shows Revoke, one finished does not.
(function () {
  "use strict";
  const actions = document.querySelector(".actions[data-task]");
  const status = actions && document.querySelector(`[data-status="${actions.dataset.task}"]`);
  if (!status) return;
  let timer = null;
  new MutationObserver(() => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const answer = await fetch(location.href);
      if (!answer.ok) return;
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.querySelector(".actions[data-task]");
      if (fresh) document.querySelector(".actions[data-task]").replaceWith(fresh);
    }, 300);
  }).observe(status, {childList: true, characterData: true, subtree: true});
})();
