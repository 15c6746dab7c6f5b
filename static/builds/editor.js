// The Containerfile editor: CodeMirror 6 (static/vendor/codemirror, window.PortalCodeMirror) over the form's textarea,
// with line numbers, highlighting, and the validator's errors and warnings marked at their lines as you type.
//
// The textarea stays the form field: the editor writes every change back to it, so saving posts what the editor shows,
// and without JavaScript (or if CodeMirror fails to load) the plain textarea still works. The checks come from
// `revision_check` (the same validation a save runs), at most one request at a time, 400 ms after the last keystroke.
// Keyboard: Tab is left to move focus out of the editor (no focus trap); Ctrl-F searches; Ctrl-Z/Ctrl-Shift-Z undo/redo.
(function () {
  "use strict";
  const CM = window.PortalCodeMirror;
  const mount = document.querySelector("[data-containerfile-editor]");
  if (!CM || !mount) return;
  const textarea = mount.querySelector("textarea");
  if (!textarea) return;
  const checkUrl = mount.dataset.checkUrl;
  const csrf = (mount.closest("form").querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";
  const status = document.getElementById("editor-status");

  let timer = null;
  let inFlight = false;
  let again = false;

  function diagnostics(doc, issues) {
    return issues.map((issue) => {
      const line = doc.line(Math.min(Math.max(issue.line || 1, 1), doc.lines));
      return {from: line.from, to: Math.max(line.to, line.from), severity: issue.level === "error" ? "error" : "warning",
              message: issue.message, source: issue.code};
    });
  }

  function say(issues) {
    if (!status) return;
    const errors = issues.filter((i) => i.level === "error").length;
    const warnings = issues.length - errors;
    status.className = "small " + (errors ? "text-danger" : warnings ? "text-warning-emphasis" : "text-success");
    status.textContent = !issues.length ? "No errors and no warnings." :
      `${errors} error${errors === 1 ? "" : "s"}, ${warnings} warning${warnings === 1 ? "" : "s"}: marked at their lines.`;
  }

  async function check(view) {
    if (inFlight) { again = true; return; }
    inFlight = true;
    const text = view.state.doc.toString();
    try {
      const body = new URLSearchParams({containerfile: text});
      const response = await fetch(checkUrl, {method: "POST", body, credentials: "same-origin",
                                              headers: {"X-CSRFToken": csrf, "Accept": "application/json"}});
      if (response.ok && view.state.doc.toString() === text) {
        const issues = (await response.json()).issues || [];
        view.dispatch(CM.setDiagnostics(view.state, diagnostics(view.state.doc, issues)));
        say(issues);
      }
    } catch (error) {
      if (status) { status.className = "small text-body-secondary"; status.textContent = "Checks paused: the portal did not answer."; }
    } finally {
      inFlight = false;
      if (again) { again = false; check(view); }
    }
  }

  const host = document.createElement("div");
  host.className = "editor-host";
  textarea.after(host);
  const view = new CM.EditorView({
    parent: host,
    state: CM.EditorState.create({
      doc: textarea.value,
      extensions: [
        CM.EditorView.cspNonce.of(mount.dataset.cspNonce || ""),
        CM.lineNumbers(), CM.highlightActiveLineGutter(), CM.highlightActiveLine(), CM.drawSelection(),
        CM.history(), CM.bracketMatching(), CM.search({top: true}),
        CM.StreamLanguage.define(CM.dockerFile), CM.syntaxHighlighting(CM.classHighlighter),
        CM.lintGutter(),
        CM.keymap.of([...CM.defaultKeymap, ...CM.historyKeymap, ...CM.searchKeymap]),
        CM.EditorView.contentAttributes.of({"aria-label": "Containerfile", "spellcheck": "false"}),
        CM.EditorView.updateListener.of((update) => {
          if (!update.docChanged) return;
          textarea.value = update.state.doc.toString();
          clearTimeout(timer);
          timer = setTimeout(() => check(update.view), 400);
        }),
      ],
    }),
  });
  textarea.hidden = true;
  mount.classList.add("editor-ready");
  textarea.form.addEventListener("submit", () => { textarea.value = view.state.doc.toString(); });
  check(view);
})();
