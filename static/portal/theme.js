// The colour theme follows the system setting (prefers-color-scheme), before the page is drawn and as it changes.
// Loaded in <head> without defer, so there is no flash of the other theme; without JavaScript the page stays light.
(function () {
  var dark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  function apply() {
    document.documentElement.setAttribute("data-bs-theme", dark && dark.matches ? "dark" : "light");
  }
  apply();
  if (dark && dark.addEventListener) dark.addEventListener("change", apply);
})();
