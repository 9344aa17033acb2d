// Runs in <head> before the page paints, so a dark theme never flashes light.
(function () {
  var t = "auto";
  try { t = localStorage.getItem("mh-theme") || "auto"; } catch (e) { /* storage off */ }
  document.documentElement.setAttribute("data-theme", t);
})();
