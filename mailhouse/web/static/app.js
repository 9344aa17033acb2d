// The webmail's small amount of script: theme, phone menu, keyboard shortcuts,
// address completion, local times, and new mail without reloading (SSE).
// Every page works without it.
(function () {
  "use strict";
  var doc = document;
  var body = doc.body;
  var csrf = (doc.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // ---- theme
  function setTheme(t) {
    doc.documentElement.setAttribute("data-theme", t);
    try { localStorage.setItem("mh-theme", t); } catch (e) { /* storage off */ }
    doc.querySelectorAll("[data-theme-choice]").forEach(function (r) { r.checked = r.value === t; });
  }
  var current = doc.documentElement.getAttribute("data-theme") || "auto";
  doc.querySelectorAll("[data-theme-choice]").forEach(function (r) {
    r.checked = r.value === current;
    r.addEventListener("change", function () { setTheme(r.value); });
  });
  var themeBtn = doc.getElementById("theme-toggle");
  if (themeBtn) {
    themeBtn.addEventListener("click", function () {
      var now = doc.documentElement.getAttribute("data-theme");
      var dark = now === "dark" || (now === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
      setTheme(dark ? "light" : "dark");
    });
  }

  // ---- phone menu
  var menu = doc.getElementById("menu-toggle");
  if (menu) {
    menu.addEventListener("click", function () {
      var open = body.classList.toggle("menu-open");
      menu.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  // ---- confirmations
  doc.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });

  // ---- local times (the server writes UTC)
  function localTimes(root) {
    var today = new Date();
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var v = t.getAttribute("datetime");
      if (!v) { return; }
      var d = new Date(v);
      if (isNaN(d)) { return; }
      if (t.hasAttribute("data-long")) {
        t.textContent = d.toLocaleString([], { dateStyle: "full", timeStyle: "short" });
      } else if (d.toDateString() === today.toDateString()) {
        t.textContent = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      } else if (d.getFullYear() === today.getFullYear()) {
        t.textContent = d.toLocaleDateString([], { month: "short", day: "numeric" });
      } else {
        t.textContent = d.toLocaleDateString();
      }
      t.title = d.toLocaleString();
    });
  }
  localTimes(doc);

  // ---- keyboard shortcuts
  var cursor = -1;
  function rows() { return Array.prototype.slice.call(doc.querySelectorAll("#list li.msg")); }
  function moveCursor(delta) {
    var r = rows();
    if (!r.length) { return; }
    if (cursor >= 0 && r[cursor]) { r[cursor].classList.remove("cursor"); }
    cursor = Math.max(0, Math.min(r.length - 1, cursor + delta));
    r[cursor].classList.add("cursor");
    r[cursor].scrollIntoView({ block: "nearest" });
    var link = r[cursor].querySelector("a.row");
    if (link) { link.focus({ preventScroll: true }); }
  }
  function cursorRow() { var r = rows(); return cursor >= 0 ? r[cursor] : null; }
  function follow(id) { var a = doc.getElementById(id); if (a) { location.href = a.href; } }
  function click(id) { var b = doc.getElementById(id); if (b) { b.click(); } }
  var help = doc.getElementById("help");
  var lastKey = "";
  doc.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) {
      if (e.key === "Escape") { t.blur(); }
      return;
    }
    var k = e.key;
    var page = body.getAttribute("data-page");
    var prev = lastKey;
    lastKey = k;
    if (prev === "g" && k === "i") { location.href = "/mail/INBOX"; return; }
    if (k === "?") { if (help) { help.hidden = !help.hidden; } return; }
    if (k === "Escape") { if (help) { help.hidden = true; } return; }
    if (k === "/") { var q = doc.getElementById("search-q"); if (q) { e.preventDefault(); q.focus(); } return; }
    if (k === "c") { location.href = "/compose"; return; }
    if (page === "list") {
      if (k === "j" || k === "ArrowDown") { e.preventDefault(); moveCursor(1); return; }
      if (k === "k" || k === "ArrowUp") { e.preventDefault(); moveCursor(-1); return; }
      var row = cursorRow();
      if (!row) { return; }
      if (k === "o" || k === "Enter") { e.preventDefault(); location.href = row.querySelector("a.row").href; return; }
      if (k === "x") { var cb = row.querySelector("input[type=checkbox]"); cb.checked = !cb.checked; return; }
      if (k === "#" || k === "Delete") {
        row.querySelectorAll("input[type=checkbox]").forEach(function (c) { c.checked = true; });
        click("delete-selected");
        return;
      }
    }
    if (page === "message") {
      if (k === "r") { follow("reply-link"); return; }
      if (k === "a") { follow("reply-all-link"); return; }
      if (k === "f") { follow("forward-link"); return; }
      if (k === "u") { follow("back-link"); return; }
      if (k === "s") { click("flag-button"); return; }
      if (k === "#" || k === "Delete") { click("delete-button"); return; }
    }
  });
  var helpClose = doc.getElementById("help-close");
  if (helpClose) { helpClose.addEventListener("click", function () { help.hidden = true; }); }

  // ---- address completion from past correspondents
  doc.querySelectorAll("input[data-complete]").forEach(function (input) {
    var box = doc.createElement("ul");
    box.className = "suggest";
    box.setAttribute("role", "listbox");
    box.hidden = true;
    input.parentNode.appendChild(box);
    input.setAttribute("aria-autocomplete", "list");
    var timer = null;
    var active = -1;
    function lastToken() { var parts = input.value.split(","); return parts[parts.length - 1].trim(); }
    function pick(value) {
      var parts = input.value.split(",");
      parts[parts.length - 1] = " " + value;
      input.value = parts.join(",").replace(/^\s+/, "") + ", ";
      box.hidden = true;
      input.focus();
    }
    function show(items) {
      box.textContent = "";
      active = -1;
      items.forEach(function (it) {
        var li = doc.createElement("li");
        li.textContent = it;
        li.setAttribute("role", "option");
        li.addEventListener("mousedown", function (ev) { ev.preventDefault(); pick(it); });
        box.appendChild(li);
      });
      box.hidden = items.length === 0;
    }
    input.addEventListener("input", function () {
      clearTimeout(timer);
      var q = lastToken();
      if (q.length < 1) { show([]); return; }
      timer = setTimeout(function () {
        fetch("/app/contacts?q=" + encodeURIComponent(q), { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.json() : []; })
          .then(function (items) { if (lastToken() === q) { show(items); } })
          .catch(function () { show([]); });
      }, 120);
    });
    input.addEventListener("keydown", function (e) {
      var items = box.querySelectorAll("li");
      if (box.hidden || !items.length) { return; }
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        if (active >= 0) { items[active].classList.remove("active"); }
        active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
        items[active].classList.add("active");
      } else if ((e.key === "Enter" || e.key === "Tab") && active >= 0) {
        e.preventDefault();
        pick(items[active].textContent);
      } else if (e.key === "Escape") {
        box.hidden = true;
      }
    });
    input.addEventListener("blur", function () { setTimeout(function () { box.hidden = true; }, 150); });
  });

  // ---- new mail without reloading
  var listEl = doc.getElementById("list");
  function unreadTitle() {
    var inbox = doc.querySelector('#folders a[data-name="INBOX"] .count');
    var base = doc.title.replace(/^\(\d+\) /, "");
    doc.title = inbox ? "(" + inbox.textContent + ") " + base : base;
  }
  unreadTitle();
  var refreshing = false;
  function refresh() {
    if (refreshing) { return; }
    refreshing = true;
    // The list page reloads itself; elsewhere only the folder counts matter.
    var url = body.getAttribute("data-page") === "list" ? location.href : "/mail/INBOX";
    fetch(url, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var folders = fresh.getElementById("folders");
        if (folders) { doc.getElementById("folders").replaceWith(doc.adoptNode(folders)); }
        var selected = doc.querySelectorAll("#list input[type=checkbox]:checked").length;
        var newList = fresh.getElementById("list");
        if (listEl && newList && !selected && body.getAttribute("data-page") === "list") {
          listEl.replaceWith(doc.adoptNode(newList));
          listEl = newList;
          cursor = -1;
          localTimes(listEl);
          var counts = fresh.querySelector(".counts");
          var mine = doc.querySelector(".counts");
          if (counts && mine) { mine.textContent = counts.textContent; }
        }
        unreadTitle();
      })
      .catch(function () { /* the next event tries again */ })
      .then(function () { refreshing = false; });
  }
  if (window.EventSource && csrf) {
    var es = new EventSource("/api/events");
    es.addEventListener("change", function (ev) {
      // Any change may move the unread counts, so every event refreshes.
      if (ev.data) { refresh(); }
    });
  }
})();
