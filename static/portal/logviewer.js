// The live log viewer (templates/portal/_log_viewer.html). Plain JavaScript, no framework; protocol in docs/logs.md.
//
// The page arrives with the log's tail. New lines stream over the run's websocket (resuming after a reconnect from the
// last line shown, ?after=<seq>); if the websocket cannot connect, htmx polls the log fragment with ?after=<seq> until
// the server answers 286. Earlier lines load as "gaps" scroll into view, so a million-line log opens as fast as a short
// one. Lines are coloured with ansi_up; sections (Containerfile steps, bootc-image-builder stages) fold and show their
// durations; Python tracebacks and Go goroutine dumps fold into their first line with a one-line summary (the
// exception), as on the explain page; search runs on the server over the whole log.
import { AnsiUp } from "../vendor/ansi_up/ansi_up.js";

// Black or white text, whichever contrasts more with the background "r,g,b" (WCAG relative luminance).
function readableOn(rgb) {
  const [r, g, b] = rgb.split(",").map((c) => {
    const v = Number(c) / 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.179 ? "#111" : "#fff";
}

// ansi_up writes bold, faint, italic, underline and 24-bit colours as style attributes, which the portal's
// Content-Security-Policy refuses (no 'unsafe-inline' for styles). Here they become classes, and a 24-bit colour a
// data attribute that setText() applies through the CSSOM (element.style), which the policy allows.
class ClassAnsiUp extends AnsiUp {
  transform_to_html(fragment) {
    if (fragment.text.length === 0) return "";
    const text = this.escape_txt_for_html(fragment.text);
    const classes = [];
    let data = "";
    if (fragment.bold) classes.push("ansi-bold");
    if (fragment.faint) classes.push("ansi-faint");
    if (fragment.italic) classes.push("ansi-italic");
    if (fragment.underline) classes.push("ansi-underline");
    for (const [colour, side] of [[fragment.fg, "fg"], [fragment.bg, "bg"]]) {
      if (!colour) continue;
      if (colour.class_name === "truecolor") data += ` data-${side}="${colour.rgb.join(",")}"`;
      else classes.push(`${colour.class_name}-${side}`);
    }
    if (!classes.length && !data) return text;
    return `<span${classes.length ? ` class="${classes.join(" ")}"` : ""}${data}>${text}</span>`;
  }
}

const LEVELS = { group: 1, end: 1, step: 2, bib: 2, pipeline: 3, stage: 4 };
const PAGE = 1000; // lines per page loaded into a gap
const WINDOW_BEFORE = 200; // lines loaded above a line jumped to
const MAX_ROWS = 30000; // rows kept while following; older ones become a gap again
const MIN_VIEW_PX = 320; // the log's least height when the window is short
const STALE_SOCKET_MS = 50000; // the server pings every 20 s: a socket silent this long is dead
const MAX_RETRY_WS_MS = 8000; // the longest wait between two attempts to (re)open the websocket
const TOO_MANY_RETRY_MS = 60000; // after a 4429 (too many live logs open), polling until the websocket is tried again
// Tracebacks, read the way portal/failures.py reads them: a Python traceback is its header, the indented frames (and
// blank lines) under it and the exception line that closes it; a Go dump is "goroutine N [...]" and its frames.
const TB_PY_START = /(?:^|: )Traceback \(most recent call last\):\s*$/;
const TB_PY_FRAME = /^\s+\S|^\s*$/;
const TB_PY_EXCEPTION = /^[\w.]+(?:Error|Exception|Exit|Interrupt)\b/;
const TB_GO_START = /^goroutine \d+ \[/;
const TB_GO_FRAME = /^(?:\s+\/|\S+\(.*\)$|\S+\.\S+\(|created by |\s*$)/;
const TB_SUMMARY_CHARS = 160;

export function formatDuration(ms) {
  if (ms < 1000) return `${Math.max(Math.round(ms), 0)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

function pad(n, width = 2) { return String(n).padStart(width, "0"); }
function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
function escapeRegExp(text) { return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

class LogViewer {
  constructor(view) {
    this.view = view; // the scrolling box
    this.box = document.getElementById("log-lines");
    this.runId = view.dataset.run;
    this.lastSeq = parseInt(view.dataset.lastSeq || "0", 10);
    this.finished = view.dataset.finished === "1";
    this.linesUrl = view.dataset.linesUrl;
    this.pollMs = parseInt(view.dataset.pollMs || "2000", 10); // RUN_LOG_POLL_SECONDS
    this.lineUrl = (seq) => view.dataset.lineUrl.replace(/0\/$/, `${seq}/`);
    this.ansi = new ClassAnsiUp();
    this.ansi.use_classes = true;
    this.follow = document.getElementById("log-follow");
    this.showTs = document.getElementById("log-ts");
    this.wrap = document.getElementById("log-wrap");
    this.count = document.getElementById("log-count");
    this.jump = document.getElementById("log-jump");
    this.conn = document.getElementById("log-conn");
    this.sections = []; // [{seq, kind, title, t, level}], sorted by seq
    this.sectionBySeq = new Map();
    this.collapsed = new Set(); // seqs of folded sections
    this.tracebacks = new Map(); // seq of a traceback's first line -> {head, kind, rows (the lines under it), closed}
    this.tracebacksOpen = new Set(); // seqs of tracebacks the reader unfolded (every other one is folded)
    this.newLines = 0;
    this.rowCount = 0;
    this.maxRows = MAX_ROWS;
    this.socket = null;
    this.failures = 0;
    this.poller = null;
    this.refused = false; // the server said this user may not (or no longer) read the log: stop asking
    this.loading = new WeakSet();
    this.matches = null; // search state
    this.status = null;
    // What the page was rendered with: a status message that differs from it fires "run:changed" (pages that show
    // more about the run refresh their own parts on it, e.g. the build page's header and failure summary).
    this.seenState = { status: view.dataset.status || "", phase: view.dataset.phase || "" };
    this.runStartedAt = null;
    this.runFinishedAt = null;
  }

  start() {
    const outline = JSON.parse(document.getElementById("log-outline-data").textContent || "[]");
    outline.forEach((entry) => this.addSection(entry, false));
    for (const row of this.box.querySelectorAll(".log-line")) this.enhanceRow(row, row.querySelector(".lt").textContent);
    this.rowCount = this.box.querySelectorAll(".log-line").length;
    this.foldTracebacks(this.box.querySelector(".log-line"), this.box.lastElementChild);
    this.box.querySelectorAll(".log-gap").forEach((gap) => this.labelGap(gap));
    this.readDuration();
    this.renderOutline();
    this.bindControls();
    this.fitToWindow();
    window.addEventListener("resize", () => this.fitToWindow());
    if (!this.jumpToHash()) this.scrollToEnd(true);
    this.checkGaps();
    if (!this.finished) this.connect();
    setInterval(() => this.tick(), 1000);
    this.view.dataset.ready = "1";
    performance.mark("log:ready"); // bench/logs measures the first screen with it
    document.dispatchEvent(new CustomEvent("log:ready", { detail: { run: this.runId } }));
  }

  // --- rows -----------------------------------------------------------------------------------------------------------

  setText(span, text) {
    if (text.indexOf("\x1b") < 0) { span.textContent = text; return; }
    const a = this.ansi; // each line on its own: a colour never leaks into the next line
    a.bold = a.faint = a.italic = a.underline = false; a.fg = a.bg = null; a._buffer = "";
    span.innerHTML = a.ansi_to_html(text);
    for (const el of span.querySelectorAll("[data-fg], [data-bg]")) {
      if (el.dataset.fg) el.style.color = `rgb(${el.dataset.fg})`;
      if (el.dataset.bg) {
        el.style.backgroundColor = `rgb(${el.dataset.bg})`;
        // A background with no colour of its own for the text: black or white, whichever reads on it.
        if (!el.dataset.fg) el.style.color = readableOn(el.dataset.bg);
      }
    }
  }

  makeRow(seq, text, t, cutLength) {
    const row = document.createElement("div");
    row.className = "log-line";
    row.id = `L${seq}`;
    row.dataset.t = t;
    const ln = document.createElement("a");
    ln.className = "ln";
    ln.href = `#L${seq}`;
    ln.textContent = seq;
    const lt = document.createElement("span");
    lt.className = "lt";
    row.append(ln, lt);
    if (cutLength) row.dataset.cut = cutLength;
    this.enhanceRow(row, text);
    return row;
  }

  // Colours, timestamp, section header, fold state, cut marker and search marks of one row.
  enhanceRow(row, text) {
    const seq = parseInt(row.id.slice(1), 10);
    const lt = row.querySelector(".lt");
    this.setText(lt, text);
    if (this.showTs.checked) row.dataset.ts = clock(parseInt(row.dataset.t, 10));
    if (row.dataset.sk && !this.sectionBySeq.has(seq)) {
      this.addSection([seq, row.dataset.sk, row.dataset.st || "", parseInt(row.dataset.t, 10)], true);
    }
    const section = this.sectionBySeq.get(seq);
    if (section) this.decorateHeader(row, section);
    const folds = this.foldsAt(seq);
    if (folds) row.dataset.fold = folds;
    if (row.dataset.cut && !row.querySelector(".log-expand")) {
      const more = document.createElement("button");
      more.type = "button";
      more.className = "log-expand";
      const total = parseInt(row.dataset.cut, 10);
      more.textContent = `… expand (${total.toLocaleString()} characters)`;
      lt.after(more);
    }
    if (this.matches && this.matches.set.has(seq)) this.markMatches(row);
  }

  rowsFromMessage(msg) {
    (msg.sections || []).forEach((entry) => this.addSection(entry, true));
    const cut = new Map(msg.cut || []);
    return msg.lines.map((text, i) => this.makeRow(msg.first + i, text, msg.times[i], cut.get(msg.first + i)));
  }

  // Lines at the live end of the log (websocket, polling). Already shown lines are dropped.
  append(msg) {
    const last = msg.first + msg.lines.length - 1;
    if (last <= this.lastSeq) return;
    if (msg.first > this.lastSeq + 1) this.appendGap(this.lastSeq, msg.first);
    const skip = Math.max(this.lastSeq + 1 - msg.first, 0);
    if (skip) msg = { ...msg, first: msg.first + skip, lines: msg.lines.slice(skip), times: msg.times.slice(skip) };
    const rows = this.rowsFromMessage(msg);
    const frag = document.createDocumentFragment();
    rows.forEach((row) => frag.appendChild(row));
    this.box.appendChild(frag);
    this.foldTracebacks(rows[0], rows[rows.length - 1]);
    this.rowCount += rows.length;
    this.lastSeq = last;
    document.getElementById("log-empty").hidden = true;
    this.count.textContent = `${last.toLocaleString()} line${last === 1 ? "" : "s"}`;
    if (msg.sections) { this.refreshHeaders(); this.renderOutline(); }
    if (this.follow.checked) {
      this.trim();
      this.scrollToEnd();
    } else {
      this.newLines += rows.length;
      this.showJump();
    }
  }

  appendGap(after, before) {
    const gap = document.createElement("div");
    gap.className = "log-gap";
    gap.dataset.after = after;
    gap.dataset.before = before;
    this.labelGap(gap);
    this.box.appendChild(gap);
  }

  labelGap(gap) {
    const from = parseInt(gap.dataset.after, 10) + 1;
    const to = parseInt(gap.dataset.before, 10) - 1;
    const n = to - from + 1;
    gap.innerHTML = "";
    const label = document.createElement("button");
    label.type = "button";
    label.className = "log-gap-label";
    label.textContent = `${n.toLocaleString()} line${n === 1 ? "" : "s"} (${from.toLocaleString()}–${to.toLocaleString()}) not loaded yet: scroll or click to load`;
    gap.appendChild(label);
  }

  // Keep the page light while following a huge live log: the oldest rows become a gap again.
  trim() {
    if (this.rowCount <= this.maxRows) return;
    let remove = this.rowCount - Math.floor(this.maxRows * 0.8);
    let first = this.box.firstElementChild;
    let gapAfter = 0;
    if (first && first.classList.contains("log-gap")) { gapAfter = parseInt(first.dataset.after, 10); first.remove(); }
    let row = this.box.firstElementChild;
    while (row && remove > 0) {
      const next = row.nextElementSibling;
      if (row.classList.contains("log-line")) { remove -= 1; this.rowCount -= 1; } // a gap on the way merges too
      row.remove();
      row = next;
    }
    // Lines of a traceback whose first line was removed show again: nothing is left to unfold them from.
    for (let r = row; r && r.dataset.tb && !document.getElementById(`L${r.dataset.tb}`); r = r.nextElementSibling) {
      this.tracebacks.delete(parseInt(r.dataset.tb, 10));
      r.classList.remove("tb-row", "tb-hidden");
      delete r.dataset.tb;
    }
    if (row && row.classList.contains("log-gap")) {
      row.dataset.after = gapAfter; // what was removed joins the gap that now comes first
      this.labelGap(row);
    } else if (row) {
      const gap = document.createElement("div");
      gap.className = "log-gap";
      gap.dataset.after = gapAfter;
      gap.dataset.before = row.id.slice(1);
      this.labelGap(gap);
      this.box.insertBefore(gap, row);
    }
  }

  // --- gaps: loading lines that are not on the page -------------------------------------------------------------------

  async fetchLines(params) {
    const url = new URL(this.linesUrl, window.location.href);
    Object.entries(params).forEach(([k, v]) => url.searchParams.set(k, v));
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.json();
  }

  // Fill part of a gap: from its top (fromEnd=false) or its bottom (fromEnd=true), or a window starting after `after`.
  async loadIntoGap(gap, { fromEnd, after } = {}) {
    if (this.loading.has(gap)) return;
    this.loading.add(gap);
    gap.classList.add("loading");
    const gapAfter = parseInt(gap.dataset.after, 10);
    const gapBefore = parseInt(gap.dataset.before, 10);
    const start = after !== undefined ? Math.max(after, gapAfter) : gapAfter;
    try {
      const msg = await this.fetchLines({ after: start, before: gapBefore, limit: PAGE, end: fromEnd ? "1" : "0" });
      if (!gap.isConnected) return;
      if (!msg.lines.length) { gap.remove(); return; } // nothing stored there (cannot happen: lines are never deleted)
      const rows = this.rowsFromMessage(msg);
      const firstLoaded = msg.first;
      const lastLoaded = msg.first + msg.lines.length - 1;
      const frag = document.createDocumentFragment();
      rows.forEach((row) => frag.appendChild(row));
      // Split the gap around what arrived: [gapAfter, firstLoaded) rows [lastLoaded, gapBefore)
      const anchorTop = this.view.scrollHeight - this.view.scrollTop;
      const above = gap.getBoundingClientRect().top < this.view.getBoundingClientRect().top;
      if (lastLoaded + 1 < gapBefore) {
        const below = document.createElement("div");
        below.className = "log-gap";
        below.dataset.after = lastLoaded;
        below.dataset.before = gapBefore;
        this.labelGap(below);
        frag.appendChild(below);
      }
      gap.after(frag);
      this.foldTracebacks(rows[0], rows[rows.length - 1]);
      this.rowCount += rows.length;
      if (firstLoaded - 1 > gapAfter) {
        gap.dataset.before = firstLoaded;
        this.labelGap(gap);
      } else {
        gap.remove();
      }
      if (above || fromEnd) this.view.scrollTop = this.view.scrollHeight - anchorTop; // keep what the reader sees still
      this.refreshHeaders();
      this.renderOutline();
    } catch (error) {
      gap.querySelector(".log-gap-label").textContent = `Could not load these lines (${error.message}): click to try again`;
    } finally {
      this.loading.delete(gap);
      gap.classList.remove("loading");
    }
    requestAnimationFrame(() => this.checkGaps());
  }

  // Load the gaps in view: a gap above the middle of the view grows upwards, one below grows downwards.
  checkGaps() {
    const box = this.view.getBoundingClientRect();
    for (const gap of this.box.querySelectorAll(".log-gap")) {
      const r = gap.getBoundingClientRect();
      if (r.bottom < box.top - 200 || r.top > box.bottom + 200 || this.loading.has(gap)) continue;
      this.loadIntoGap(gap, { fromEnd: r.top < box.top + box.height / 2 });
    }
  }

  gapFor(seq) {
    for (const gap of this.box.querySelectorAll(".log-gap")) {
      if (seq > parseInt(gap.dataset.after, 10) && seq < parseInt(gap.dataset.before, 10)) return gap;
    }
    return null;
  }

  // Show line `seq` (loading it if needed) and highlight it (or the range to `toSeq`).
  async goTo(seq, { toSeq = seq, highlight = true } = {}) {
    if (seq < 1 || seq > this.lastSeq) return false;
    let row = document.getElementById(`L${seq}`);
    if (!row) {
      const gap = this.gapFor(seq);
      if (!gap) return false;
      await this.loadIntoGap(gap, { after: Math.max(seq - WINDOW_BEFORE - 1, 0) });
      row = document.getElementById(`L${seq}`);
      if (!row) return false;
    }
    this.unfold(seq);
    if (row.classList.contains("tb-hidden")) this.toggleTraceback(parseInt(row.dataset.tb, 10), true);
    this.setFollow(false);
    if (highlight) {
      this.box.querySelectorAll(".log-line.hl").forEach((r) => r.classList.remove("hl"));
      for (let s = seq; s <= toSeq; s += 1) document.getElementById(`L${s}`)?.classList.add("hl");
    }
    row.scrollIntoView({ block: "center" });
    return true;
  }

  jumpToHash() {
    const match = /^#L(\d+)(?:-L(\d+))?$/.exec(window.location.hash);
    if (!match) return false;
    const from = parseInt(match[1], 10);
    const to = match[2] ? Math.max(parseInt(match[2], 10), from) : from;
    this.goTo(from, { toSeq: Math.min(to, from + 5000) });
    return true;
  }

  // --- sections -------------------------------------------------------------------------------------------------------

  addSection(entry, live) {
    const [seq, kind, title, t] = entry;
    if (this.sectionBySeq.has(seq)) return;
    const section = { seq, kind, title, t, level: LEVELS[kind] || 1 };
    this.sectionBySeq.set(seq, section);
    this.depthCache = null;
    if (!this.sections.length || this.sections[this.sections.length - 1].seq < seq) this.sections.push(section);
    else { this.sections.push(section); this.sections.sort((a, b) => a.seq - b.seq); }
    if (live) {
      // A new section ends the open ones it closes: their headers get their final duration.
      const row = document.getElementById(`L${seq}`);
      if (row) this.decorateHeader(row, section);
    }
    document.getElementById("log-outline-menu").classList.remove("d-none");
  }

  // The section entry that ends `section` (the next one of the same or a lower level), or null while it is open.
  endOf(section) {
    const i = this.sections.indexOf(section);
    for (let j = i + 1; j < this.sections.length; j += 1) if (this.sections[j].level <= section.level) return this.sections[j];
    return null;
  }

  durationOf(section) {
    const end = this.endOf(section);
    if (end) return { ms: end.t - section.t, open: false };
    if (this.runFinishedAt) return { ms: this.runFinishedAt - section.t, open: false };
    if (this.finished) return { ms: null, open: false };
    return { ms: Date.now() - section.t, open: true };
  }

  depthOf(section) {
    if (!this.depthCache) this.depthCache = this.depths();
    return Math.min(this.depthCache.get(section.seq) || 0, 3);
  }

  decorateHeader(row, section) {
    if (section.kind === "end") { row.classList.add("log-sec-end"); return; }
    row.classList.add("log-sec", `log-sec-${section.kind}`, `log-lvl-${section.level}`, `log-depth-${this.depthOf(section)}`);
    if (!row.querySelector(".sec-toggle")) {
      const toggle = document.createElement("button");
      toggle.type = "button";
      toggle.className = "sec-toggle";
      toggle.setAttribute("aria-label", "Fold or unfold this section");
      toggle.innerHTML = '<i class="bi bi-chevron-down"></i>';
      row.querySelector(".ln").after(toggle);
      const dur = document.createElement("span");
      dur.className = "sec-dur";
      row.appendChild(dur);
      if (section.kind === "group") row.querySelector(".lt").textContent = section.title;
    }
    row.classList.toggle("folded", this.collapsed.has(section.seq));
    this.updateDuration(row, section);
  }

  // Every section header's duration (a new section ends the open ones before it).
  refreshHeaders() {
    for (const section of this.sections) {
      const row = document.getElementById(`L${section.seq}`);
      if (row) this.updateDuration(row, section);
    }
  }

  updateDuration(row, section) {
    const dur = row.querySelector(".sec-dur");
    if (!dur) return;
    const { ms, open } = this.durationOf(section);
    dur.textContent = ms === null ? "" : formatDuration(ms);
    dur.classList.toggle("open", open);
    dur.title = open ? "Running" : "Duration of this section";
  }

  foldsAt(seq) {
    let n = 0;
    for (const s of this.collapsed) {
      if (seq <= s) continue;
      const section = this.sectionBySeq.get(s);
      const end = this.endOf(section);
      if (!end || seq < end.seq) n += 1;
    }
    return n;
  }

  // Fold or unfold a section: the rows it holds (on the page) are hidden, nested folds are counted.
  toggleSection(seq, fold = !this.collapsed.has(seq)) {
    const section = this.sectionBySeq.get(seq);
    if (!section || section.kind === "end" || fold === this.collapsed.has(seq)) return;
    if (fold) this.collapsed.add(seq); else this.collapsed.delete(seq);
    const end = this.endOf(section);
    const header = document.getElementById(`L${seq}`);
    if (header) header.classList.toggle("folded", fold);
    let row = header ? header.nextElementSibling : null;
    while (row) {
      if (row.classList.contains("log-line")) {
        if (end && parseInt(row.id.slice(1), 10) >= end.seq) break;
        const n = (parseInt(row.dataset.fold || "0", 10) + (fold ? 1 : -1));
        if (n > 0) row.dataset.fold = n; else delete row.dataset.fold;
      } else if (row.classList.contains("log-gap")) {
        if (end && parseInt(row.dataset.after, 10) + 1 >= end.seq) break;
        const n = (parseInt(row.dataset.fold || "0", 10) + (fold ? 1 : -1));
        if (n > 0) row.dataset.fold = n; else delete row.dataset.fold;
      }
      row = row.nextElementSibling;
    }
    this.renderOutline();
  }

  unfold(seq) {
    for (const s of [...this.collapsed]) {
      const end = this.endOf(this.sectionBySeq.get(s));
      if (seq > s && (!end || seq < end.seq)) this.toggleSection(s, false);
    }
  }

  // How deeply each section is nested (levels are absolute: a podman step outside any group is at the top).
  depths() {
    const depth = new Map();
    const open = [];
    for (const section of this.sections) {
      while (open.length && open[open.length - 1].level >= section.level) open.pop();
      depth.set(section.seq, open.length);
      if (section.kind !== "end") open.push(section);
    }
    return depth;
  }

  renderOutline() {
    const menu = document.getElementById("log-outline");
    const shown = this.sections.filter((s) => s.kind !== "end");
    const depth = this.depths();
    document.getElementById("log-outline-count").textContent = shown.length;
    document.getElementById("log-collapse-all").hidden = !shown.length;
    document.getElementById("log-expand-all").hidden = !shown.length;
    const frag = document.createDocumentFragment();
    for (const section of shown) {
      const item = document.createElement("a");
      item.className = `dropdown-item log-outline-item log-depth-${Math.min(depth.get(section.seq), 3)}`;
      item.href = `#L${section.seq}`;
      item.dataset.seq = section.seq;
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = section.title;
      const dur = document.createElement("span");
      dur.className = "dur";
      const { ms, open } = this.durationOf(section);
      dur.textContent = ms === null ? "" : formatDuration(ms);
      if (open) dur.classList.add("open");
      item.append(title, dur);
      frag.appendChild(item);
    }
    menu.replaceChildren(frag);
  }

  // --- tracebacks ------------------------------------------------------------------------------------------------------

  // Mark the tracebacks among rows just put on the page (firstNew..lastNew), folded unless the reader unfolded them.
  // Rows arrive in pieces (live batches, gaps loaded above or below), so the walk starts at the first line of a
  // traceback the new rows may continue, and goes past them while a traceback is still running on.
  foldTracebacks(firstNew, lastNew) {
    if (!firstNew) return;
    let row = firstNew;
    const before = row.previousElementSibling;
    if (before && before.dataset.tb) row = document.getElementById(`L${before.dataset.tb}`) || row;
    else if (before && this.tracebacks.has(parseInt(before.id?.slice(1), 10))) row = before;
    let block = null;
    let passed = false;
    for (; row; row = row.nextElementSibling) {
      if (!row.classList.contains("log-line")) { // a gap ends what can be seen of a traceback
        if (block) this.closeTraceback(block);
        block = null;
        if (passed) break;
        continue;
      }
      const text = row.querySelector(".lt").textContent;
      if (block) {
        const frame = block.kind === "py" ? TB_PY_FRAME : TB_GO_FRAME;
        if (frame.test(text)) {
          this.joinTraceback(block, row);
        } else if (block.kind === "py" && TB_PY_EXCEPTION.test(text)) {
          this.joinTraceback(block, row); // the exception closes it
          this.closeTraceback(block);
          block = null;
          if (row === lastNew) passed = true;
          if (passed) break;
          continue;
        } else {
          this.closeTraceback(block);
          block = null;
        }
      }
      if (!block) {
        if (row.dataset.tb) this.leaveTraceback(row); // read again with more context: it starts or ends here
        if (TB_PY_START.test(text)) block = this.openTraceback(row, "py");
        else if (TB_GO_START.test(text)) block = this.openTraceback(row, "go");
      }
      if (row === lastNew) passed = true;
      if (passed && !block) break;
    }
    if (block) this.renderTraceback(block); // still running on: the summary so far
  }

  openTraceback(head, kind) {
    const seq = parseInt(head.id.slice(1), 10);
    const block = { head, seq, kind, rows: [], closed: false };
    this.tracebacks.set(seq, block);
    head.classList.add("tb-head");
    return block;
  }

  joinTraceback(block, row) {
    block.rows.push(row);
    row.dataset.tb = block.seq;
    row.classList.add("tb-row");
    row.classList.toggle("tb-hidden", !this.tracebacksOpen.has(block.seq));
  }

  leaveTraceback(row) {
    delete row.dataset.tb;
    row.classList.remove("tb-row", "tb-hidden");
  }

  closeTraceback(block) {
    block.closed = true;
    this.renderTraceback(block);
  }

  // The first line's fold button: "▸ 14 more lines: subprocess.CalledProcessError: ..." while folded.
  renderTraceback(block) {
    if (!block.rows.length) {
      block.head.querySelector(".tb-fold")?.remove();
      return;
    }
    let button = block.head.querySelector(".tb-fold");
    if (!button) {
      button = document.createElement("button");
      button.type = "button";
      button.className = "tb-fold";
      block.head.querySelector(".lt").after(button);
    }
    const open = this.tracebacksOpen.has(block.seq);
    const last = [...block.rows].reverse().find((r) => r.querySelector(".lt").textContent.trim());
    let summary = last ? last.querySelector(".lt").textContent.trim() : "";
    if (summary.length > TB_SUMMARY_CHARS) summary = `${summary.slice(0, TB_SUMMARY_CHARS - 1)}…`;
    const n = block.rows.length;
    button.textContent = open ? `▾ fold the traceback (${n} line${n === 1 ? "" : "s"})`
      : `▸ ${n} more line${n === 1 ? "" : "s"}${summary ? `: ${summary}` : ""}`;
    button.title = open ? "Fold this traceback" : "Show the whole traceback";
    button.setAttribute("aria-expanded", open ? "true" : "false");
    block.head.classList.toggle("tb-folded", !open);
  }

  toggleTraceback(seq, open = !this.tracebacksOpen.has(seq)) {
    const block = this.tracebacks.get(seq);
    if (!block) return;
    if (open) this.tracebacksOpen.add(seq); else this.tracebacksOpen.delete(seq);
    block.rows.forEach((row) => row.classList.toggle("tb-hidden", !open));
    this.renderTraceback(block);
  }

  // --- following, timestamps, wrapping --------------------------------------------------------------------------------

  // The log fills the rest of the window (at least MIN_VIEW_PX), so its newest line shows without scrolling the page.
  fitToWindow() {
    const top = this.view.getBoundingClientRect().top + window.scrollY;
    const room = window.innerHeight - top - 24;
    this.view.style.maxHeight = `${Math.max(room, MIN_VIEW_PX)}px`;
    if (this.follow.checked || this.atBottom()) this.scrollToEnd(true);
  }

  atBottom() { return this.view.scrollHeight - this.view.scrollTop - this.view.clientHeight < 40; }

  scrollToEnd(force = false) {
    if (!force && !this.follow.checked) return;
    this.view.scrollTop = this.view.scrollHeight;
    this.newLines = 0;
    this.jump.hidden = true;
  }

  setFollow(on) {
    this.follow.checked = on;
    if (on) this.scrollToEnd(true); else this.showJump();
  }

  showJump() {
    if (this.follow.checked || (this.atBottom() && !this.box.lastElementChild?.classList.contains("log-gap"))) {
      this.jump.hidden = true;
      return;
    }
    this.jump.hidden = false;
    this.jump.querySelector("span").textContent = this.newLines
      ? `${this.newLines.toLocaleString()} new line${this.newLines === 1 ? "" : "s"}: follow`
      : (this.finished ? "Go to the end" : "Follow the end");
  }

  bindControls() {
    let ticking = false;
    this.view.addEventListener("scroll", () => {
      if (ticking) return;
      ticking = true;
      requestAnimationFrame(() => {
        ticking = false;
        const bottom = this.atBottom() && !this.box.lastElementChild?.classList.contains("log-gap");
        if (bottom && !this.finished && !this.follow.checked) this.setFollow(true);
        else if (!bottom && this.follow.checked) this.follow.checked = false;
        this.showJump();
        this.checkGaps();
      });
    }, { passive: true });
    this.follow.addEventListener("change", () => this.setFollow(this.follow.checked));
    this.jump.addEventListener("click", () => { if (this.finished) this.scrollToEnd(true); else this.setFollow(true); });
    this.showTs.addEventListener("change", () => {
      this.view.classList.toggle("show-ts", this.showTs.checked);
      if (this.showTs.checked) {
        for (const row of this.box.querySelectorAll(".log-line:not([data-ts])")) row.dataset.ts = clock(parseInt(row.dataset.t, 10));
      }
    });
    this.wrap.addEventListener("change", () => this.view.classList.toggle("wrap", this.wrap.checked));
    document.getElementById("log-collapse-all").addEventListener("click", () => {
      const top = Math.min(...this.sections.filter((s) => s.kind !== "end").map((s) => s.level));
      this.sections.filter((s) => s.level === top && s.kind !== "end").forEach((s) => this.toggleSection(s.seq, true));
      this.setFollow(false);
    });
    document.getElementById("log-expand-all").addEventListener("click", () => {
      [...this.collapsed].forEach((seq) => this.toggleSection(seq, false));
    });
    this.box.addEventListener("click", (event) => this.onClick(event));
    window.addEventListener("hashchange", () => this.jumpToHash());
    document.getElementById("log-outline").addEventListener("click", (event) => {
      const item = event.target.closest(".log-outline-item");
      if (!item) return;
      event.preventDefault();
      history.replaceState(null, "", `#L${item.dataset.seq}`);
      this.goTo(parseInt(item.dataset.seq, 10), { highlight: true });
    });
    this.bindSearch();
    this.bindPolling();
  }

  onClick(event) {
    const tbToggle = event.target.closest(".tb-fold");
    if (tbToggle) { this.toggleTraceback(parseInt(tbToggle.closest(".log-line").id.slice(1), 10)); return; }
    const toggle = event.target.closest(".sec-toggle");
    if (toggle) { this.toggleSection(parseInt(toggle.closest(".log-line").id.slice(1), 10)); return; }
    const gapLabel = event.target.closest(".log-gap");
    if (gapLabel) { this.loadIntoGap(gapLabel, { fromEnd: false }); return; }
    const expand = event.target.closest(".log-expand");
    if (expand) { this.expandLine(expand.closest(".log-line")); return; }
    const ln = event.target.closest(".ln");
    if (ln) {
      // Line numbers are permalinks; shift-click extends the highlighted range (#L10-L20).
      event.preventDefault();
      const seq = parseInt(ln.closest(".log-line").id.slice(1), 10);
      const current = /^#L(\d+)/.exec(window.location.hash);
      let hash = `#L${seq}`;
      if (event.shiftKey && current) {
        const a = Math.min(parseInt(current[1], 10), seq);
        const b = Math.max(parseInt(current[1], 10), seq);
        hash = a === b ? `#L${a}` : `#L${a}-L${b}`;
      }
      history.replaceState(null, "", hash);
      this.box.querySelectorAll(".log-line.hl").forEach((r) => r.classList.remove("hl"));
      const m = /^#L(\d+)(?:-L(\d+))?$/.exec(hash);
      const to = m[2] ? parseInt(m[2], 10) : parseInt(m[1], 10);
      for (let s = parseInt(m[1], 10); s <= to; s += 1) document.getElementById(`L${s}`)?.classList.add("hl");
      this.setFollow(false);
      return;
    }
    if (event.target.closest(".log-sec .lt") && !window.getSelection().toString()) {
      this.toggleSection(parseInt(event.target.closest(".log-line").id.slice(1), 10));
    }
  }

  async expandLine(row) {
    const button = row.querySelector(".log-expand");
    button.disabled = true;
    button.textContent = "loading…";
    try {
      const response = await fetch(this.lineUrl(row.id.slice(1)), { credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      this.setText(row.querySelector(".lt"), await response.text());
      button.remove();
      delete row.dataset.cut;
    } catch (error) {
      button.disabled = false;
      button.textContent = `could not load the whole line (${error.message}): try again`;
    }
  }

  // --- search ---------------------------------------------------------------------------------------------------------

  bindSearch() {
    const form = document.getElementById("log-search");
    const input = document.getElementById("log-search-input");
    this.searchCount = document.getElementById("log-search-count");
    this.searchPrev = document.getElementById("log-search-prev");
    this.searchNext = document.getElementById("log-search-next");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const q = input.value;
      if (this.matches && this.matches.q === q) this.step(1); else this.search(q);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.shiftKey) { event.preventDefault(); this.step(-1); }
      if (event.key === "Escape") { input.value = ""; this.search(""); }
    });
    input.addEventListener("search", () => { if (!input.value) this.search(""); });
    this.searchPrev.addEventListener("click", () => this.step(-1));
    this.searchNext.addEventListener("click", () => this.step(1));
    document.addEventListener("keydown", (event) => {
      if (event.key === "/" && !/INPUT|TEXTAREA|SELECT/.test(document.activeElement?.tagName || "")) {
        event.preventDefault();
        input.focus();
      }
    });
  }

  async search(q) {
    this.box.querySelectorAll(".log-line.match, .log-line.match-current").forEach((row) => {
      row.classList.remove("match", "match-current");
      row.querySelectorAll("mark.log-mark").forEach((mark) => mark.replaceWith(document.createTextNode(mark.textContent)));
      row.querySelector(".lt").normalize();
    });
    this.matches = null;
    this.searchPrev.disabled = this.searchNext.disabled = true;
    if (!q.trim()) { this.searchCount.textContent = "–"; return; }
    this.searchCount.textContent = "searching…";
    const url = new URL(document.getElementById("log-search").action, window.location.href);
    url.searchParams.set("q", q);
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const found = await response.json();
      this.matches = { q, count: found.count, seqs: found.seqs, more: found.more, set: new Set(found.seqs), index: -1,
        re: new RegExp(escapeRegExp(q), "gi") };
      for (const seq of found.seqs) {
        const row = document.getElementById(`L${seq}`);
        if (row) this.markMatches(row);
      }
      this.searchPrev.disabled = this.searchNext.disabled = !found.count;
      this.showMatchCount();
      if (found.count) {
        // Start from the first match at or below the middle of the view, like a browser's find.
        const middle = this.seqInView();
        const index = found.seqs.findIndex((seq) => seq >= middle);
        this.matches.index = (index < 0 ? found.seqs.length : index) - 1;
        this.step(1);
      }
    } catch (error) {
      this.searchCount.textContent = "search failed";
      this.searchCount.title = error.message;
    }
  }

  seqInView() {
    const box = this.view.getBoundingClientRect();
    const el = document.elementFromPoint(box.left + box.width / 2, box.top + 10);
    const row = el?.closest?.(".log-line");
    return row ? parseInt(row.id.slice(1), 10) : 1;
  }

  showMatchCount() {
    const m = this.matches;
    if (!m) return;
    const total = m.count.toLocaleString();
    this.searchCount.textContent = m.count ? `${m.index >= 0 ? (m.index + 1).toLocaleString() : "–"} of ${total}` : "no matches";
    this.searchCount.title = m.count ? `${total} matching line${m.count === 1 ? "" : "s"} in the whole log` : "";
  }

  async step(direction) {
    const m = this.matches;
    if (!m || !m.count) return;
    let index = m.index + direction;
    if (index >= m.seqs.length && m.more) {
      const url = new URL(document.getElementById("log-search").action, window.location.href);
      url.searchParams.set("q", m.q);
      url.searchParams.set("after", m.seqs[m.seqs.length - 1]);
      const found = await (await fetch(url, { credentials: "same-origin" })).json();
      m.seqs.push(...found.seqs);
      found.seqs.forEach((seq) => m.set.add(seq));
      m.more = found.more;
    }
    if (index >= m.seqs.length) index = 0;
    if (index < 0) index = m.seqs.length - 1;
    m.index = index;
    this.showMatchCount();
    this.box.querySelectorAll(".log-line.match-current").forEach((row) => row.classList.remove("match-current"));
    const seq = m.seqs[index];
    if (await this.goTo(seq, { highlight: false })) {
      const row = document.getElementById(`L${seq}`);
      row.classList.add("match-current");
      this.markMatches(row);
    }
  }

  markMatches(row) {
    if (!this.matches) return;
    row.classList.add("match");
    const lt = row.querySelector(".lt");
    if (lt.querySelector("mark.log-mark")) return;
    const re = this.matches.re;
    const walker = document.createTreeWalker(lt, NodeFilter.SHOW_TEXT);
    const nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    for (const node of nodes) {
      const text = node.nodeValue;
      re.lastIndex = 0;
      if (!re.test(text)) continue;
      re.lastIndex = 0;
      const frag = document.createDocumentFragment();
      let last = 0;
      for (const match of text.matchAll(re)) {
        frag.append(text.slice(last, match.index));
        const mark = document.createElement("mark");
        mark.className = "log-mark";
        mark.textContent = match[0];
        frag.append(mark);
        last = match.index + match[0].length;
      }
      frag.append(text.slice(last));
      node.replaceWith(frag);
    }
  }

  // --- status ---------------------------------------------------------------------------------------------------------

  readDuration() {
    const el = document.getElementById("run-duration");
    if (!el) return;
    this.runStartedAt = el.dataset.started ? Date.parse(el.dataset.started) : null;
    this.runFinishedAt = el.dataset.finished ? Date.parse(el.dataset.finished) : null;
  }

  tick() {
    const el = document.getElementById("run-duration");
    if (el && this.runStartedAt) el.textContent = formatDuration((this.runFinishedAt || Date.now()) - this.runStartedAt);
    if (!this.finished) {
      for (const section of this.sections) {
        if (!this.endOf(section)) {
          const row = document.getElementById(`L${section.seq}`);
          if (row) this.updateDuration(row, section);
        }
      }
      const menu = document.getElementById("log-outline");
      if (menu.closest(".dropdown").querySelector(".show")) this.renderOutline();
    }
    if (this.socket && this.socket.readyState === WebSocket.OPEN && Date.now() - this.lastMessageAt > STALE_SOCKET_MS) {
      this.socket.close(); // silent for too long: a dead connection; onclose reconnects
    }
  }

  applyStatus(msg) {
    this.status = msg.status;
    if (msg.html) {
      const badge = document.getElementById("run-status");
      if (badge) badge.innerHTML = msg.html.status;
      const result = document.getElementById("run-result");
      if (result) result.innerHTML = msg.html.result;
    }
    const el = document.getElementById("run-duration");
    if (el) {
      el.dataset.started = msg.started_at || "";
      el.dataset.finished = msg.finished_at || "";
    }
    this.runStartedAt = msg.started_at ? Date.parse(msg.started_at) : null;
    this.runFinishedAt = msg.finished_at ? Date.parse(msg.finished_at) : null;
    document.dispatchEvent(new CustomEvent("run:status", { detail: msg }));
    this.noteChange(msg);
    if (msg.finished) this.onFinished(msg);
    else this.tick();
  }

  // "run:changed" on document when the status or the phase moved since the page (or the last such event) showed it.
  // The polling fallback's status carries no phase: then only the status counts.
  noteChange(msg) {
    const phase = msg.phase === undefined ? this.seenState.phase : (msg.phase || "");
    if (msg.status === this.seenState.status && phase === this.seenState.phase) return;
    this.seenState = { status: msg.status, phase };
    document.dispatchEvent(new CustomEvent("run:changed", { detail: msg }));
  }

  onFinished(msg) {
    if (this.finished && this.view.dataset.finished === "1" && this.conn.dataset.state === "ended") return;
    this.finished = true;
    this.view.dataset.finished = "1";
    this.tick();
    document.getElementById("run-cancel")?.remove();
    const empty = document.getElementById("log-empty");
    if (!this.rowCount && !this.lastSeq) { empty.hidden = false; empty.textContent = "This run wrote no output."; }
    this.sections.forEach((section) => {
      const row = document.getElementById(`L${section.seq}`);
      if (row) this.updateDuration(row, section);
    });
    this.renderOutline();
    this.setConn("ended", "complete");
    this.stopPolling();
    if (this.socket) { const s = this.socket; this.socket = null; s.close(1000); }
    this.follow.checked = false;
    this.showJump();
    document.dispatchEvent(new CustomEvent("run:finished", { detail: msg }));
    if (window.htmx) window.htmx.trigger(document.body, "runFinished", msg);
  }

  setConn(state, label) {
    this.conn.dataset.state = state;
    this.conn.querySelector(".log-conn-label").textContent = label;
  }

  // --- transport: websocket, with htmx polling as the fallback ------------------------------------------------------

  connect() {
    if (this.finished || this.socket || this.refused) return;
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}${this.view.dataset.wsPath}?after=${this.lastSeq}`);
    this.socket = socket;
    let opened = false; // the server has spoken on this socket (a proxy may accept a socket and close it at once)
    socket.onmessage = (event) => {
      this.lastMessageAt = Date.now();
      if (!opened) {
        opened = true;
        this.failures = 0;
        this.setConn("live", "live");
        this.stopPolling();
      }
      const msg = JSON.parse(event.data);
      if (msg.t === "lines") this.append(msg);
      else if (msg.t === "skip") {
        if (msg.to > this.lastSeq) { this.appendGap(this.lastSeq, msg.to + 1); this.lastSeq = msg.to; }
      } else if (msg.t === "status") this.applyStatus(msg);
    };
    socket.onclose = (event) => {
      if (this.socket === socket) this.socket = null;
      if (this.finished) return;
      if (event.code === 4429) {
        // The user has the most live logs open that the server allows: read this one by polling, and try the
        // websocket again now and then (another tab may have closed).
        this.startPolling();
        this.setConn("polling", "polling: too many live logs open");
        setTimeout(() => this.connect(), TOO_MANY_RETRY_MS);
        return;
      }
      if (event.code >= 4400 && event.code < 4500) {
        this.refuse(event.code === 4401);
        return;
      }
      // Reconnect with backoff; from the second failed attempt on, poll over htmx meanwhile (a proxy may block
      // websockets for good, or the server is restarting). The websocket keeps being retried and takes over.
      this.failures = opened ? 1 : this.failures + 1;
      if (this.failures >= 2 && !this.poller) this.startPolling();
      if (!this.poller) this.setConn("reconnecting", "reconnecting…");
      const wait = Math.min(500 * 2 ** (this.failures - 1), MAX_RETRY_WS_MS) + Math.random() * 300;
      setTimeout(() => this.connect(), wait);
    };
  }

  refuse(signedOut) {
    this.refused = true;
    this.stopPolling();
    this.setConn("refused", signedOut ? "signed out: reload to sign in" : "no access to this log");
  }

  startPolling() {
    if (this.poller || this.finished || this.refused || !window.htmx) return;
    const poller = document.createElement("div");
    poller.id = "log-poller";
    poller.hidden = true;
    poller.setAttribute("hx-get", this.view.dataset.pollUrl);
    poller.setAttribute("hx-trigger", `load, every ${this.pollMs}ms`);
    poller.setAttribute("hx-swap", "innerHTML");
    document.body.appendChild(poller);
    this.poller = poller;
    window.htmx.process(poller);
    this.setConn("polling", "polling");
  }

  stopPolling() {
    if (!this.poller) return;
    this.poller.remove(); // htmx stops polling an element that left the page
    this.poller = null;
  }

  bindPolling() {
    document.body.addEventListener("htmx:configRequest", (event) => {
      if (event.detail.elt.id === "log-poller") event.detail.parameters.after = this.lastSeq;
    });
    // A poll answered 404/403 (removed from the team), or by the login page (the session ended: htmx followed the
    // redirect): stop polling and say so, instead of asking at every poll forever.
    document.body.addEventListener("htmx:beforeSwap", (event) => {
      if (event.detail.elt.id !== "log-poller") return;
      const xhr = event.detail.xhr;
      const signedOut = !!xhr.responseURL && new URL(xhr.responseURL).pathname.startsWith("/login/");
      if (signedOut || xhr.status === 403 || xhr.status === 404) {
        event.detail.shouldSwap = false;
        this.refuse(signedOut);
      }
    });
    document.body.addEventListener("htmx:afterSwap", (event) => {
      if (event.detail.target.id !== "log-poller") return;
      const poller = event.detail.target;
      const rows = [...poller.querySelectorAll(".log-line")];
      if (rows.length) {
        const first = parseInt(rows[0].id.slice(1), 10);
        const msg = { first, lines: [], times: [], sections: [], cut: [] };
        rows.forEach((row, i) => {
          msg.lines.push(row.querySelector(".lt").textContent);
          msg.times.push(parseInt(row.dataset.t, 10));
          if (row.dataset.sk) msg.sections.push([first + i, row.dataset.sk, row.dataset.st || "", parseInt(row.dataset.t, 10)]);
          if (row.dataset.cut) msg.cut.push([first + i, parseInt(row.dataset.cut, 10)]);
        });
        this.append(msg);
      }
      const cursor = poller.querySelector(".log-cursor");
      poller.replaceChildren();
      if (cursor) {
        const status = {
          status: cursor.dataset.status, finished: cursor.dataset.done === "1",
          started_at: cursor.dataset.startedAt || null, finished_at: cursor.dataset.finishedAt || null,
        };
        // The badge and the result came out of band; the rest of the status is ours to apply.
        this.applyStatus(status);
      }
    });
  }
}

const view = document.getElementById("log");
if (view) {
  window.logViewer = new LogViewer(view);
  window.logViewer.start();
}
