// The live log tail and status of an open job or endpoint page: polls the console's JSON route while
// what the page shows has not ended, and reloads the page when its status (or a tuning job's trial
// counts) changes, so charts and tables follow without a manual refresh.
"use strict";
(function () {
  const source = document.getElementById("log") || document.getElementById("poller");
  if (!source || source.dataset.final === "true") return;
  const log = document.getElementById("log");
  const state = document.getElementById("tail-state");
  const badge = document.getElementById("status");
  const keep = 500;
  let after = Number(source.dataset.after || 0);
  let delay = 2000;

  function append(events) {
    if (!log || events.length === 0) return;
    const empty = document.getElementById("log-empty");
    if (empty) empty.hidden = true;
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent += events.map((e) => e.message + "\n").join("");
    const lines = log.textContent.split("\n");
    if (lines.length > keep + 1) log.textContent = lines.slice(lines.length - keep - 1).join("\n");
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  async function poll() {
    let answer;
    try {
      answer = await fetch(source.dataset.tail + "?after=" + after, {credentials: "same-origin"});
    } catch (e) {
      if (state) state.textContent = "The server did not answer; trying again.";
      delay = Math.min(delay * 2, 30000);
      return setTimeout(poll, delay);
    }
    if (answer.status === 401) {
      window.location.assign(source.dataset.tail.split("/api/")[0] + "/login?next=" +
                             encodeURIComponent(window.location.pathname));
      return;
    }
    const body = await answer.json();
    if (!answer.ok) {
      if (state) state.textContent = body.error || ("The server answered " + answer.status);
      return;
    }
    delay = 2000;
    append(body.events);
    after = body.after;
    if (badge) {
      badge.textContent = body.status;
      badge.className = "status " + body.status_class;
    }
    if (body.refresh !== source.dataset.refresh) {
      window.location.reload();
      return;
    }
    if (body.final) {
      if (state) state.textContent = "It is " + body.status + ": reload the page for anything newer.";
      return;
    }
    setTimeout(poll, delay);
  }

  setTimeout(poll, delay);
})();
