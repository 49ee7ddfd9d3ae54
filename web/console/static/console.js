// Stint console: counts down the time left of live leases and copies
// whole ids and hashes. Loaded as a same-origin script (the console's CSP
// allows no inline code).
(function () {
  "use strict";
  function fmt(s) {
    if (s <= 0) return "due";
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), x = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + x + "s";
    return x + "s";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-expires"));
      if (!isNaN(t)) el.textContent = fmt(Math.round((t - now) / 1000));
    });
  }
  setInterval(tick, 1000);

  // Copy buttons (data-copy) put a whole id, hash or user name on the
  // clipboard; the page shows only its start. Delegated, so that rows
  // htmx swaps in work too.
  function copied(btn, ok) {
    var was = btn.textContent;
    btn.textContent = ok ? "copied" : "select and copy";
    setTimeout(function () { btn.textContent = was; }, 1500);
  }
  function fallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "absolute";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }
  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest ? ev.target.closest("button[data-copy]") : null;
    if (!btn) return;
    ev.preventDefault();
    var text = btn.getAttribute("data-copy");
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(btn, true); }, function () { copied(btn, fallback(text)); });
    } else {
      copied(btn, fallback(text));
    }
  });
})();
