// aicd dashboard: live updates (server-sent events) and actions without a page reload. The pages work
// without this file; it only makes them follow a running delivery and post actions in place.
(function () {
  "use strict";

  function announce(text) {
    var announcer = document.getElementById("announcer");
    if (!announcer || !text) return;
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }

  function swap(regions) {
    Object.keys(regions).forEach(function (id) {
      var element = document.getElementById(id);
      if (!element) return;
      var active = document.activeElement;
      var focusedId = active && element.contains(active) ? active.id : "";
      var openDetails = [];
      element.querySelectorAll("details[open] > summary").forEach(function (summary) {
        openDetails.push(summary.textContent);
      });
      element.innerHTML = regions[id];
      element.querySelectorAll("details > summary").forEach(function (summary) {
        if (openDetails.indexOf(summary.textContent) >= 0) summary.parentElement.open = true;
      });
      if (focusedId) {
        var again = document.getElementById(focusedId);
        if (again) again.focus();
      }
    });
    document.documentElement.setAttribute("data-updated", String(Date.now()));
  }

  function follow() {
    var live = document.querySelector("[data-live-url]");
    if (!live || !window.EventSource) return;
    var source = new EventSource(live.getAttribute("data-live-url"));
    source.addEventListener("open", function () {
      live.setAttribute("data-state", "live");
    });
    source.addEventListener("update", function (event) {
      var data = JSON.parse(event.data);
      swap(data.regions || {});
      announce(data.announce);
    });
    source.addEventListener("end", function () {
      source.close();
      live.setAttribute("data-state", "ended");
      live.textContent = "This delivery has ended.";
    });
    source.addEventListener("error", function () {
      if (live.getAttribute("data-state") !== "ended") live.setAttribute("data-state", "reconnecting");
    });
  }

  function notice(ok, message) {
    var box = document.getElementById("notice");
    if (!box) return;
    box.className = "notice notice-" + (ok ? "ok" : "refused");
    box.setAttribute("role", ok ? "status" : "alert");
    box.textContent = message;
  }

  document.addEventListener("submit", function (event) {
    var form = event.target.closest ? event.target.closest("form[data-action]") : null;
    if (!form || !window.fetch) return;
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    var body = new URLSearchParams(new FormData(form));
    window.fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (response) {
      return response.json().catch(function () {
        return { ok: false, message: "refused (" + response.status + ")" };
      });
    }).then(function (data) {
      notice(data.ok, data.message);
      if (data.ok) form.reset();
    }).catch(function () {
      notice(false, "The dashboard could not be reached; nothing was done.");
    }).finally(function () {
      if (button) button.disabled = false;
    });
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", follow);
  } else {
    follow();
  }
})();
