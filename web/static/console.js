// Stint console: counts down the time left of live leases. Loaded as a
// same-origin script (the console's CSP allows no inline code).
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
})();
