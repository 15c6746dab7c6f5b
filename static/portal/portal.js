// Small behaviours shared by every page. No framework: htmx does the swapping.
(function () {
  "use strict";
  // Selects inside <form data-autosubmit> submit the form when changed (the team switcher, role pickers).
  document.addEventListener("change", function (event) {
    var form = event.target.closest("form[data-autosubmit]");
    if (form && event.target.matches("select")) form.requestSubmit ? form.requestSubmit() : form.submit();
  });
  // <form data-confirm="..."> asks before submitting; the text says what will happen.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  }, true);
  // <button class="copy-btn" data-copy="text"> copies to the clipboard.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    navigator.clipboard && navigator.clipboard.writeText(button.dataset.copy).then(function () {
      var icon = button.querySelector("i");
      if (icon) { icon.className = "bi bi-check2"; setTimeout(function () { icon.className = "bi bi-clipboard"; }, 1200); }
    });
  });
})();
