// cellpipe UI: a run page follows its run live (server-sent events; no polling, no timers).
//
// The page (pages/run.py) marks what changes: <main data-run-id data-run-status>,
// #cp-run-status, #cp-graph, step rows <tr data-step> with .cp-state/.cp-duration/.cp-reason
// cells and <pre class="cp-output" data-step>. The events are `cellpipe run --json`'s
// documents: {"event": "run"} first, {"event": "step", "status": ...} per state change,
// {"event": "output", "text": ...} per output line, {"event": "summary"} last.
// The Cancel button (#cp-cancel) posts /api/runs/{id}/cancel (same origin, the cookie).
"use strict";
(function () {
  var main = document.querySelector("main[data-run-id]");
  if (!main || typeof window.EventSource === "undefined") return;
  var runId = main.getAttribute("data-run-id");
  var base = (document.querySelector("a.cp-brand") || { getAttribute: function () { return "/"; } })
    .getAttribute("href").replace(/\/$/, "");
  var runPath = base + "/api/runs/" + encodeURIComponent(runId);

  function setStatusElement(element, status) {
    if (!element) return;
    element.textContent = status;
    element.className = element.className
      .split(/\s+/)
      .filter(function (c) { return c && c.indexOf("cp-status-") !== 0; })
      .concat(["cp-status-" + status])
      .join(" ");
  }

  function seconds(value) {
    if (typeof value !== "number" || !isFinite(value)) return "";
    if (value < 60) return value.toFixed(1) + " s";
    var whole = Math.floor(value);
    var rest = whole % 60;
    return Math.floor(whole / 60) + " min " + (rest < 10 ? "0" : "") + rest + " s";
  }

  function stepRow(name) {
    var rows = document.querySelectorAll("tr[data-step]");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute("data-step") === name) return rows[i];
    }
    return null;
  }

  // -- the graph: fetched again after a state change (one request at a time) ----------------
  var graphBusy = false, graphDirty = false;
  function refreshGraph() {
    var holder = document.getElementById("cp-graph");
    if (!holder) return;
    if (graphBusy) { graphDirty = true; return; }
    graphBusy = true;
    graphDirty = false;
    fetch(base + "/runs/" + encodeURIComponent(runId) + "/graph", {
      credentials: "same-origin",
      headers: { Accept: "image/svg+xml, text/html" },
    })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (svg) {
        if (svg !== null) {
          var parsed = new DOMParser().parseFromString(svg, "image/svg+xml");
          var root = parsed.documentElement;
          if (root && root.nodeName.toLowerCase() === "svg") {
            holder.replaceChildren(document.importNode(root, true));
          } else {
            holder.innerHTML = svg; // the server's own markup (escaped there), not XML-clean
          }
        }
      })
      .catch(function () { /* the next change fetches again */ })
      .then(function () {
        graphBusy = false;
        if (graphDirty) refreshGraph();
      });
  }

  // -- output lines ---------------------------------------------------------------------------
  function outputFor(step) {
    var pres = document.querySelectorAll("pre.cp-output[data-step]");
    for (var i = 0; i < pres.length; i++) {
      if (pres[i].getAttribute("data-step") === step) return pres[i];
    }
    var section = document.querySelector("section.cp-live");
    if (!section) {
      section = document.createElement("section");
      section.className = "cp-live";
      section.setAttribute("aria-label", "Output");
      var heading = document.createElement("h2");
      heading.textContent = "Output";
      section.appendChild(heading);
      main.appendChild(section);
    }
    var title = document.createElement("h3");
    title.textContent = step;
    var pre = document.createElement("pre");
    pre.className = "cp-output";
    pre.setAttribute("data-step", step);
    section.appendChild(title);
    section.appendChild(pre);
    return pre;
  }

  function appendOutput(step, text) {
    var pre = outputFor(step || "run");
    var lines = pre.textContent === "" ? [] : pre.textContent.split("\n");
    var parts = String(text).split("\r");
    if (parts.length > 1) {
      // A progress line: what follows the last \r replaces the line being rewritten.
      var last = parts[parts.length - 1];
      if (lines.length && parts[0] === "") lines[lines.length - 1] = last;
      else lines.push(last);
    } else {
      lines.push(parts[0]);
    }
    pre.textContent = lines.join("\n");
    pre.scrollTop = pre.scrollHeight;
  }

  function clearOutputs() {
    var pres = document.querySelectorAll("pre.cp-output[data-step]");
    for (var i = 0; i < pres.length; i++) pres[i].textContent = "";
  }

  // -- states -------------------------------------------------------------------------------
  function onStep(event) {
    var row = stepRow(event.step);
    if (row) {
      var state = row.querySelector(".cp-state");
      if (state) {
        var badge = state.querySelector(".cp-status");
        if (!badge) {
          badge = document.createElement("span");
          badge.className = "cp-status";
          state.replaceChildren(badge);
        }
        setStatusElement(badge, event.status);
      }
      row.setAttribute("data-state", event.status);
      var duration = row.querySelector(".cp-duration");
      if (duration && typeof event.duration_s === "number") {
        duration.textContent = seconds(event.duration_s);
      }
      var reason = row.querySelector(".cp-reason");
      var why = event.reason || event.error;
      if (reason && why) reason.textContent = why;
    }
    refreshGraph();
  }

  // -- cancel --------------------------------------------------------------------------------
  function cancelButton() {
    var button = document.getElementById("cp-cancel");
    if (!button && main.getAttribute("data-run-status") === "running") {
      var status = document.getElementById("cp-run-status");
      if (!status || !status.parentNode) return null;
      button = document.createElement("button");
      button.type = "button";
      button.id = "cp-cancel";
      button.textContent = "Cancel run";
      status.parentNode.appendChild(document.createTextNode(" "));
      status.parentNode.appendChild(button);
    }
    return button;
  }

  var cancel = cancelButton();
  if (cancel) {
    cancel.addEventListener("click", function () {
      cancel.disabled = true;
      cancel.textContent = "Cancelling…";
      fetch(runPath + "/cancel", { method: "POST", credentials: "same-origin" })
        .then(function (response) { return response.json().catch(function () { return {}; }); })
        .then(function (body) {
          if (body && body.error) {
            cancel.textContent = "Cannot cancel";
            cancel.title = body.error;
          }
        })
        .catch(function () {
          cancel.disabled = false;
          cancel.textContent = "Cancel run";
        });
    });
  }

  function finish(event) {
    var status = event.status || "finished";
    main.setAttribute("data-run-status", status);
    setStatusElement(document.getElementById("cp-run-status"), status);
    var button = document.getElementById("cp-cancel");
    if (button) button.remove();
    if (event.error && !document.getElementById("cp-live-error")) {
      var pre = document.createElement("pre");
      pre.className = "cp-error";
      pre.id = "cp-live-error";
      pre.textContent = event.error;
      main.insertBefore(pre, main.children[1] || null);
    }
    if (!document.getElementById("cp-reload")) {
      var note = document.createElement("p");
      note.id = "cp-reload";
      var link = document.createElement("a");
      link.href = window.location.pathname;
      link.textContent = "Show the finished run (metrics, outputs)";
      note.appendChild(link);
      main.insertBefore(note, main.children[1] || null);
    }
    refreshGraph();
  }

  // -- the stream ----------------------------------------------------------------------------
  if (main.getAttribute("data-run-status") !== "running") return;
  var source = new EventSource(runPath + "/events", { withCredentials: true });
  source.onmessage = function (message) {
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    var kind = event.event;
    if (kind === "run" || kind === "run_started") {
      clearOutputs(); // a (re)connected stream replays from the start
    } else if (kind === "step" || /^step_/.test(kind || "")) {
      if (kind === "step_output") appendOutput(event.step, event.text);
      else onStep(event);
    } else if (kind === "output") {
      appendOutput(event.step, event.text);
    } else if (kind === "summary" || kind === "run_finished") {
      source.close();
      finish(event);
    }
  };
})();
