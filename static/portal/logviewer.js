// The live log viewer of a run page. Streams lines over the run's websocket, resumes after a reconnect from the last
// line it has (?after=<seq>), and falls back to polling the log fragment when the websocket cannot connect.
import { AnsiUp } from "/static/vendor/ansi_up/ansi_up.js";

const view = document.getElementById("log");
if (view) {
  const linesBox = document.getElementById("log-lines");
  const follow = document.getElementById("log-follow");
  const count = document.getElementById("log-count");
  const ansi = new AnsiUp();
  ansi.use_classes = false;
  let lastSeq = parseInt(view.dataset.lastSeq || "0", 10);
  let finished = view.dataset.finished === "1";
  let socket = null;
  let failures = 0;
  let polling = null;

  // Colour the lines rendered by the server.
  for (const span of linesBox.querySelectorAll(".lt")) span.innerHTML = ansi.ansi_to_html(span.textContent);

  const scrollToEnd = () => { if (follow.checked) view.scrollTop = view.scrollHeight; };
  view.addEventListener("scroll", () => {
    const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 30;
    if (!atBottom && follow.checked) follow.checked = false; // the user scrolled up: stop following
    else if (atBottom && !follow.checked) follow.checked = true;
  });
  follow.addEventListener("change", scrollToEnd);

  function appendLines(first, lines) {
    const frag = document.createDocumentFragment();
    lines.forEach((text, i) => {
      const seq = first + i;
      if (seq <= lastSeq) return; // already shown
      const row = document.createElement("div");
      row.className = "log-line";
      row.id = "L" + seq;
      row.innerHTML = `<a class="ln" href="#L${seq}">${seq}</a><span class="lt"></span>`;
      row.lastChild.innerHTML = ansi.ansi_to_html(text);
      frag.appendChild(row);
      lastSeq = seq;
    });
    const empty = document.getElementById("log-empty");
    if (empty && frag.childNodes.length) empty.remove();
    linesBox.appendChild(frag);
    count.textContent = `${lastSeq} line${lastSeq === 1 ? "" : "s"}`;
    scrollToEnd();
  }

  function showStatus(msg) {
    const badge = document.querySelector("#run-status .run-status");
    if (badge) {
      badge.className = `badge run-status run-status-${msg.status}`;
      badge.dataset.runStatus = msg.status;
      badge.textContent = msg.label + (msg.phase && msg.status === "running" ? `: ${msg.phase}` : "");
    }
    if (msg.finished && !finished) {
      finished = true;
      // Fetch the result block and the cancel button's absence without reloading the page.
      fetch(window.location.pathname, { headers: { "HX-Request": "false" } })
        .then((r) => r.text())
        .then((html) => {
          const doc = new DOMParser().parseFromString(html, "text/html");
          const result = doc.getElementById("run-result");
          if (result) document.getElementById("run-result").replaceWith(result);
          const cancel = document.getElementById("run-cancel");
          if (cancel) cancel.remove();
        });
    }
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${window.location.host}${view.dataset.wsPath}?after=${lastSeq}`);
    socket.onopen = () => { failures = 0; };
    socket.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.t === "lines") appendLines(msg.first, msg.lines);
      else if (msg.t === "status") showStatus(msg);
    };
    socket.onclose = (event) => {
      if (event.code >= 4400 && event.code < 4500) return; // refused: retrying will not help
      if (finished) return;
      failures += 1;
      if (failures >= 3) startPolling();
      else setTimeout(connect, 500 * failures);
    };
  }

  function startPolling() {
    if (polling) return;
    polling = setInterval(() => {
      fetch(`${view.dataset.pollUrl}?after=${lastSeq}`, { headers: { "HX-Request": "true" } }).then((r) => {
        const done = r.status === 286;
        return r.text().then((html) => {
          const doc = new DOMParser().parseFromString(html, "text/html");
          const rows = [...doc.querySelectorAll(".log-line")];
          if (rows.length) appendLines(parseInt(rows[0].id.slice(1), 10), rows.map((row) => row.querySelector(".lt").textContent));
          if (done) { clearInterval(polling); polling = null; showStatus({ status: "", label: "", finished: true }); window.location.reload(); }
        });
      });
    }, 2000);
  }

  scrollToEnd();
  connect();
}
