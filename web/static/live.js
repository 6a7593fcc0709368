// Live job page: listen to the job's event stream and swap in the server-
// rendered #live part on every message. All markup comes from the server
// (escaped by html/template); this script never builds HTML from data.
// Without JavaScript the page refreshes itself (meta refresh in noscript).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || live.dataset.active !== "true" || !window.EventSource || !window.fetch) {
    return;
  }
  var id = live.dataset.job;
  var busy = false, again = false, timer = null;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch("/history/" + id + "/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        var t = document.createElement("template");
        t.innerHTML = html.trim();
        var next = t.content.firstElementChild;
        var cur = document.getElementById("live");
        if (next && cur) { cur.replaceWith(next); }
      })
      .catch(function () { /* the next message retries */ })
      .finally(function () {
        busy = false;
        if (again) { again = false; schedule(); }
      });
  }

  // Coalesce bursts (a batch of VM stops is dozens of events) into one fetch.
  function schedule() {
    if (timer) { return; }
    timer = setTimeout(function () { timer = null; refresh(); }, 200);
  }

  var es = new EventSource("/history/" + id + "/events");
  es.onmessage = schedule;
  es.addEventListener("job", schedule);
  es.addEventListener("end", function () {
    es.close();
    if (timer) { clearTimeout(timer); timer = null; }
    refresh();
  });
  document.documentElement.classList.add("live-on");
})();
