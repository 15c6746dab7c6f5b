// Disk image pages: show the source fields that match the chosen source; add rows to the preset form's formsets.
(function () {
  "use strict";
  function syncSource(form) {
    var checked = form.querySelector('input[name="source"]:checked');
    if (!checked) return;
    form.querySelectorAll("[data-source-panel]").forEach(function (panel) {
      panel.hidden = panel.dataset.sourcePanel !== checked.value;
    });
  }
  document.querySelectorAll("form").forEach(function (form) {
    if (!form.querySelector('input[name="source"][type="radio"]')) return;
    syncSource(form);
    form.addEventListener("change", function (event) {
      if (event.target.name === "source") syncSource(form);
    });
  });
  // <button data-formset-add="users"> appends the <template data-formset-template="users"> row, renumbered.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-formset-add]");
    if (!button) return;
    var prefix = button.dataset.formsetAdd;
    var template = document.querySelector('template[data-formset-template="' + prefix + '"]');
    var list = document.querySelector('[data-formset="' + prefix + '"]');
    var total = document.querySelector('input[name="' + prefix + '-TOTAL_FORMS"]');
    if (!template || !list || !total) return;
    var index = parseInt(total.value, 10);
    var html = template.innerHTML.replace(/__prefix__/g, String(index));
    list.insertAdjacentHTML("beforeend", html);
    total.value = String(index + 1);
    var first = list.lastElementChild && list.lastElementChild.querySelector("input, textarea");
    if (first) first.focus();
  });
})();
