"use strict";
// The station page: one server-sent event per change, each the whole snapshot.
// The token, when the page was opened with ?token=..., is kept for this tab and
// taken off the address bar; the page's own requests carry it.
(function () {
  const params = new URLSearchParams(window.location.search);
  let token = params.get("token") || sessionStorage.getItem("atflash-token") || "";
  if (params.has("token")) {
    sessionStorage.setItem("atflash-token", token);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
  }
  const withToken = (path) => token ? path + "?token=" + encodeURIComponent(token) : path;
  const WORDS = { empty: "EMPTY", working: "WORKING", ok: "OK", failed: "FAILED", remove: "REMOVE" };
  const ACTION = { failed: "take it out", remove: "take it out, it was not written" };
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const clock = (epoch) => new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
  const ago = (seconds) => seconds < 90 ? Math.round(seconds) + " s" : Math.round(seconds / 60) + " min";

  function renderSlots(snapshot) {
    const box = $("slots");
    box.replaceChildren(...snapshot.slots.map((s) => {
      const tile = el("div", { class: "slot", "data-slot": s.name, "data-state": s.state });
      tile.append(el("div", { class: "name" }, "Slot " + s.name));
      tile.append(el("div", { class: "state" }, WORDS[s.state] || s.state.toUpperCase()));
      if (s.state === "failed" || s.state === "remove") {
        tile.append(el("div", { class: "why", title: s.message }, s.short || s.message));
      }
      tile.append(el("div", { class: "mac" }, s.mac || s.where));
      const left = s.skipped ? "  left " + s.skipped : "";
      tile.append(el("div", { class: "tally" }, "ok " + s.ok + "  failed " + s.failed + left +
                                              "  · " + ago(snapshot.now - s.since)));
      return tile;
    }));
    const attention = snapshot.slots.filter((s) => s.state === "failed" || s.state === "remove");
    $("attention").hidden = attention.length === 0;
    $("attention-list").replaceChildren(...attention.map((s) => {
      const item = el("li", { "data-slot": s.name });
      const short = s.short && s.short !== s.message ? ": " + s.short : "";
      item.append(el("div", { class: "head" }, "Slot " + s.name + " " + WORDS[s.state] + short + " — " +
                                              ACTION[s.state] + (s.mac ? " · " + s.mac : "")),
                  el("div", { class: "reason", title: s.message }, s.message || ""));
      return item;
    }));
  }

  function renderCounts(c) {
    $("count-total").textContent = c.total;
    $("count-ok").textContent = c.ok;
    $("count-failed").textContent = c.failed;
    $("count-yield").textContent = c.yield === null ? "-" : c.yield + "%";
    $("count-rate").textContent = c.per_hour;
  }

  function renderChart(chart) {
    const svg = $("chart"), NS = "http://www.w3.org/2000/svg";
    const most = Math.max(1, ...chart.map((b) => b.boards));
    const width = 360 / chart.length;
    const nodes = [];
    chart.forEach((bucket, i) => {
      const h = Math.round(90 * bucket.boards / most);
      const bar = document.createElementNS(NS, "rect");
      bar.setAttribute("x", i * width + 3); bar.setAttribute("y", 100 - h);
      bar.setAttribute("width", width - 6); bar.setAttribute("height", h);
      const title = document.createElementNS(NS, "title");
      title.textContent = bucket.hour + ": " + bucket.boards + " boards";
      bar.append(title);
      const value = document.createElementNS(NS, "text");
      value.setAttribute("x", i * width + 4); value.setAttribute("y", 97 - h);
      value.textContent = bucket.boards || "";
      const label = document.createElementNS(NS, "text");
      label.setAttribute("x", i * width + 2); label.setAttribute("y", 114);
      label.textContent = bucket.hour.slice(0, 2);
      nodes.push(bar, value, label);
    });
    svg.replaceChildren(...nodes);
  }

  function renderEvents(events) {
    $("events").tBodies[0].replaceChildren(...events.map((e) => {
      const row = el("tr");
      row.append(el("td", {}, clock(e.time)), el("td", {}, e.slot),
                 el("td", { class: "result " + e.result }, e.result.toUpperCase()),
                 el("td", {}, e.mac || "-"), el("td", {}, e.message || ""));
      return row;
    }));
  }

  function renderLine(line, now) {
    $("line-section").hidden = !line;
    if (!line) return;
    $("line").tBodies[0].replaceChildren(...line.stations.map((s) => {
      const row = el("tr", { "data-station": s.station });
      const stale = s.seen === null || now - s.seen > 30;
      const status = s.seen === null ? "NO HEARTBEAT" : (stale ? "SILENT " + ago(now - s.seen) : "RUNNING");
      const total = s.ok + s.failed;
      row.append(el("td", {}, s.station), el("td", { class: "result " + (stale ? "failed" : "ok") }, status),
                 el("td", {}, s.ok), el("td", {}, s.failed),
                 el("td", {}, total ? Math.round(1000 * s.ok / total) / 10 + "%" : "-"),
                 el("td", {}, s.ledger_ok + " / " + s.ledger_failed),
                 el("td", { class: "attention" }, (s.attention || []).join("; ") || "none"));
      return row;
    }));
    $("line-failures").tBodies[0].replaceChildren(...line.failures.map((f) => {
      const row = el("tr");
      row.append(el("td", {}, f.time ? clock(f.time) : "-"), el("td", {}, f.station), el("td", {}, f.device));
      return row;
    }));
  }

  function render(snapshot) {
    $("station").textContent = snapshot.station + (snapshot.stopping ? " (stopping)" : "");
    document.title = snapshot.station + " · atflash station";
    renderSlots(snapshot);
    renderCounts(snapshot.counts);
    renderChart(snapshot.counts.chart);
    renderEvents(snapshot.counts.events);
    renderLine(snapshot.line, snapshot.now);
  }

  const link = $("link");
  const source = new EventSource(withToken("events"));
  source.onopen = () => { link.dataset.live = "yes"; link.textContent = "LIVE"; };
  source.onerror = () => { link.dataset.live = "no"; link.textContent = "NOT CONNECTED (retrying)"; };
  source.onmessage = (message) => render(JSON.parse(message.data));
})();
