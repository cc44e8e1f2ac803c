// plugbridge admin page: the gateway's own API (contract section 9), nothing else.
//
// Every string that comes from a plugin or the server reaches the page through
// textContent, a text node, or an attribute: never through innerHTML.
"use strict";

(() => {
  const POLL_MS = 2000;
  const LOG_RETRY_MS = 3000;
  const MAX_LOG_LINES = 500;
  const LEVELS = ["trace", "debug", "info", "warn", "error", "off"];
  const TOKEN_KEY = "plugbridge.token";
  const numbers = new Intl.NumberFormat("en");

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  /** An element with properties (class, dataset, DOM properties, else attributes) and
   * children (nodes, or strings appended as text). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key in node) node[key] = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  // -- the token -------------------------------------------------------------------------

  class Unauthorized extends Error {}

  let token = readToken();
  let locked = false;

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  function storeToken(value) {
    token = value;
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled: the token lives as long as the page
    }
  }

  /** A 401: show the token form (once), stop polling and the log stream until it is sent. */
  function askForToken() {
    const refused = Boolean(token);
    storeToken(null);
    closeLogs("token needed");
    clearTimeout(pollTimer);
    setConnection("locked", "Token needed");
    $("token-message").textContent = refused ? "That token was refused." : "";
    if (!locked) {
      locked = true;
      $("token-panel").hidden = false;
      $("token-input").focus();
    }
  }

  function submitToken(event) {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) {
      $("token-message").textContent = "Enter the token.";
      return;
    }
    storeToken(value);
    locked = false;
    $("token-input").value = "";
    $("token-message").textContent = "";
    $("token-panel").hidden = true;
    $("plugins-title").focus();
    refresh();
    openLogs($("log-plugin").value);
  }

  // -- the API ---------------------------------------------------------------------------

  /** One request to the gateway; resolves to {ok, status, data, text}, throws Unauthorized
   * on 401 (after asking for the token). */
  async function api(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = body;
    }
    const response = await fetch(path, init);
    const text = await response.text();
    if (response.status === 401) {
      askForToken();
      throw new Unauthorized("a token is needed");
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    return { ok: response.ok, status: response.status, data, text };
  }

  /** The gateway's JSON error body {"error": {code, name, message}}, or a stand-in. */
  function errorOf(result) {
    const error = result.data && typeof result.data === "object" ? result.data.error : null;
    if (error && typeof error === "object") {
      return {
        name: String(error.name ?? `HTTP ${result.status}`),
        code: error.code ?? null,
        message: String(error.message ?? ""),
      };
    }
    return { name: `HTTP ${result.status}`, code: null, message: result.text.slice(0, 500) };
  }

  function failureText(error) {
    if (error instanceof Unauthorized) return "a token is needed";
    return `the gateway did not answer (${error.message})`;
  }

  // -- status polling --------------------------------------------------------------------

  let pollTimer = null;
  let refreshSeq = 0;
  let plugins = [];

  async function refresh() {
    clearTimeout(pollTimer);
    const seq = ++refreshSeq;
    if (document.hidden || locked) {
      schedule();
      return;
    }
    try {
      const result = await api("GET", "/v1/plugins");
      if (!result.ok || !Array.isArray(result.data)) {
        const error = errorOf(result);
        throw new Error(`${error.name}: ${error.message}`);
      }
      if (seq === refreshSeq) {
        render(result.data);
        setConnection("live", `Live · updated ${clock(new Date())}`);
      }
    } catch (error) {
      if (error instanceof Unauthorized) return; // polling resumes with the token
      setConnection("error", `Offline: ${failureText(error)}`);
    }
    if (seq === refreshSeq) schedule();
  }

  function schedule() {
    clearTimeout(pollTimer);
    if (!locked) pollTimer = setTimeout(refresh, POLL_MS);
  }

  function setConnection(state, text) {
    $("connection").dataset.state = state;
    $("connection-text").textContent = text;
  }

  // -- the plugins table -----------------------------------------------------------------

  const rows = new Map();

  function render(list) {
    plugins = list;
    const tbody = $("plugin-rows");
    const seen = new Set();
    list.forEach((status, index) => {
      const name = String(status.name);
      seen.add(name);
      let row = rows.get(name);
      if (!row) {
        row = createRow(name);
        rows.set(name, row);
      }
      updateRow(row, status);
      if (tbody.children[index] !== row.tr) tbody.insertBefore(row.tr, tbody.children[index] || null);
    });
    for (const [name, row] of rows) {
      if (!seen.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
    $("no-plugins").hidden = list.length > 0;
    const active = list.filter((p) => p.state === "ACTIVE").length;
    const failed = list.filter((p) => p.state === "FAILED").length;
    let summary = `${list.length} plugin${list.length === 1 ? "" : "s"} · ${active} active`;
    if (failed) summary += ` · ${failed} failed`;
    $("summary").textContent = summary;
    const names = list.map((p) => String(p.name));
    syncOptions($("request-plugin"), names);
    syncTags();
    if (syncOptions($("log-plugin"), names)) openLogs($("log-plugin").value);
  }

  function createRow(name) {
    const cell = (cls, ...children) => el("td", { class: cls }, ...children);
    const row = {
      name,
      level: null,
      pendingLevel: false,
      reloading: false,
      nameText: el("span", { class: "plugin-name" }, name),
      error: el("span", { class: "plugin-error" }),
      badge: el("span", { class: "badge" }),
      select: el("select", { "aria-label": `Log level of ${name}` }),
      reload: el("button", { type: "button", class: "reload", "aria-label": `Reload ${name}` }, "Reload"),
    };
    for (const level of LEVELS) row.select.append(el("option", { value: level }, level));
    row.select.addEventListener("change", () => changeLevel(row));
    row.reload.addEventListener("click", () => reload(row));
    row.cells = {
      name: cell("name", row.nameText, row.error),
      version: cell("version"),
      isolation: cell("isolation meta"),
      state: cell("state", row.badge),
      level: cell("level", row.select),
      calls: cell("calls num"),
      errors: cell("errors num"),
      rejected: cell("rejected num"),
      p99: cell("p99 num"),
      trust: cell("trust"),
      actions: cell("actions", row.reload),
    };
    row.tr = el("tr", { dataset: { plugin: name } }, ...Object.values(row.cells));
    return row;
  }

  function updateRow(row, status) {
    const meta = status.metadata || {};
    const stats = status.stats || {};
    const c = row.cells;
    c.name.title = `source: ${status.source ?? "?"}`;
    row.error.textContent = status.error ? String(status.error) : "";
    row.error.hidden = !status.error;
    c.version.textContent = meta.version ? String(meta.version) : "—";
    c.isolation.textContent = String(status.isolation ?? "");
    row.badge.textContent = String(status.state ?? "?");
    row.badge.dataset.state = String(status.state ?? "");
    row.level = String(status.log_level ?? "");
    if (!row.pendingLevel) row.select.value = row.level;
    c.calls.textContent = count(stats.calls);
    const errors = stats.errors && typeof stats.errors === "object" ? stats.errors : {};
    const errorTotal = Object.values(errors).reduce((sum, n) => sum + Number(n || 0), 0);
    c.errors.textContent = count(errorTotal);
    c.errors.dataset.nonzero = String(errorTotal > 0);
    c.errors.title = Object.entries(errors).map(([code, n]) => `${code}: ${n}`).join("\n");
    c.rejected.textContent = count(stats.rejected);
    c.rejected.dataset.nonzero = String(Number(stats.rejected) > 0);
    c.p99.textContent = duration(stats.latency_p99_ms);
    c.p99.title = `p50 ${duration(stats.latency_p50_ms)} · max ${duration(stats.latency_max_ms)}`;
    c.trust.textContent = String(meta.trust ?? "");
    c.trust.dataset.trust = String(meta.trust ?? "");
  }

  function count(value) {
    return typeof value === "number" ? numbers.format(value) : "—";
  }

  function duration(ms) {
    if (typeof ms !== "number") return "—";
    if (ms < 1) return `${Math.round(ms * 1000)} µs`;
    if (ms < 10) return `${ms.toFixed(2)} ms`;
    if (ms < 1000) return `${ms.toFixed(1)} ms`;
    return `${(ms / 1000).toFixed(2)} s`;
  }

  function announce(outcome, text) {
    const status = $("action-status");
    status.dataset.outcome = outcome;
    status.textContent = text;
  }

  async function changeLevel(row) {
    const level = row.select.value;
    row.pendingLevel = true;
    row.select.setAttribute("aria-busy", "true");
    try {
      const result = await api("PUT", `/v1/plugins/${enc(row.name)}/log-level`, JSON.stringify({ level }));
      row.pendingLevel = false;
      if (result.ok && result.data) {
        updateRow(row, result.data);
        announce("ok", `Log level of ${row.name} set to ${level}.`);
      } else {
        const error = errorOf(result);
        row.select.value = row.level;
        announce("error", `Changing the level of ${row.name} failed: ${error.name}: ${error.message}`);
      }
    } catch (error) {
      row.pendingLevel = false;
      row.select.value = row.level;
      announce("error", `Changing the level of ${row.name} failed: ${failureText(error)}`);
    } finally {
      row.select.removeAttribute("aria-busy");
    }
  }

  async function reload(row) {
    // aria-disabled, not disabled: a disabled button would lose the keyboard focus
    if (row.reloading) return;
    row.reloading = true;
    row.reload.setAttribute("aria-disabled", "true");
    row.reload.textContent = "Reloading…";
    announce("busy", `Reloading ${row.name}…`);
    try {
      const result = await api("POST", `/v1/plugins/${enc(row.name)}/reload`);
      if (result.ok && result.data) {
        updateRow(row, result.data);
        const reloads = result.data.stats ? result.data.stats.reloads : null;
        const ordinal = typeof reloads === "number" ? ` (reload #${reloads})` : "";
        announce("ok", `${row.name} reloaded${ordinal}.`);
      } else {
        const error = errorOf(result);
        announce("error", `Reloading ${row.name} failed: ${error.name}: ${error.message}`);
      }
    } catch (error) {
      announce("error", `Reloading ${row.name} failed: ${failureText(error)}`);
    } finally {
      row.reloading = false;
      row.reload.removeAttribute("aria-disabled");
      row.reload.textContent = "Reload";
      refresh();
    }
  }

  // -- selects of plugin names and type tags --------------------------------------------

  /** Give `select` one option per value, keeping its choice when it still exists; true
   * when the chosen value changed. */
  function syncOptions(select, values) {
    const current = Array.from(select.options, (o) => o.value);
    const before = select.value;
    if (current.length !== values.length || current.some((v, i) => v !== values[i])) {
      select.replaceChildren(...values.map((v) => el("option", { value: v }, v)));
      if (values.includes(before)) select.value = before;
    }
    select.disabled = values.length === 0;
    return select.value !== before;
  }

  function syncTags() {
    const chosen = plugins.find((p) => String(p.name) === $("request-plugin").value);
    const tags = chosen && chosen.metadata && Array.isArray(chosen.metadata.type_tags)
      ? chosen.metadata.type_tags.map(String)
      : [];
    syncOptions($("request-tag"), tags);
  }

  // -- the request form ------------------------------------------------------------------

  async function sendRequest(event) {
    event.preventDefault();
    const name = $("request-plugin").value;
    const tag = $("request-tag").value;
    if (!name || !tag) {
      showResult("error", "Choose a plugin and a type tag first.");
      return;
    }
    const send = $("request-send");
    if (send.dataset.busy === "true") return; // aria-disabled only: keep the focus
    send.dataset.busy = "true";
    send.setAttribute("aria-disabled", "true");
    showResult("busy", `Sending ${tag} to ${name}…`);
    const started = performance.now();
    try {
      const result = await api("POST", `/v1/plugins/${enc(name)}/call/${enc(tag)}`, $("request-body").value);
      const took = duration(performance.now() - started);
      if (result.ok) {
        const body = result.data !== null ? JSON.stringify(result.data, null, 2) : result.text;
        showResult("ok", `${result.status} OK · ${name} · ${tag} · ${took}`, null, body);
      } else {
        showResult("error", `${result.status} · ${name} · ${tag} · ${took}`, errorOf(result));
      }
    } catch (error) {
      showResult("error", `Not sent: ${failureText(error)}.`);
    } finally {
      send.dataset.busy = "false";
      send.removeAttribute("aria-disabled");
    }
  }

  function showResult(outcome, statusText, error = null, body = null) {
    $("request-result").dataset.outcome = outcome;
    $("result-status").textContent = statusText;
    $("result-error").hidden = !error;
    $("result-error-name").textContent = error ? error.name : "";
    $("result-error-code").textContent = error && error.code !== null ? `code ${error.code}` : "";
    $("result-error-message").textContent = error ? error.message : "";
    $("result-body").hidden = body === null;
    $("result-body").textContent = body === null ? "" : body;
  }

  // -- the live log pane -----------------------------------------------------------------

  let source = null;
  let retryTimer = null;
  let scrollQueued = false;

  function closeLogs(stateText) {
    clearTimeout(retryTimer);
    if (source) source.close();
    source = null;
    setLogState("idle", stateText || "not connected");
  }

  /** Follow `name`'s log stream (the server replays its last records first). */
  function openLogs(name) {
    closeLogs();
    clearLogs();
    if (!name || locked) return;
    let url = `/v1/plugins/${enc(name)}/logs`;
    if (token) url += `?token=${enc(token)}`; // EventSource cannot send headers
    const stream = new EventSource(url);
    source = stream;
    setLogState("connecting", `connecting to ${name}…`);
    stream.onopen = () => {
      if (source === stream) setLogState("live", `live · ${name}`);
    };
    stream.onmessage = (event) => {
      if (source !== stream) return;
      let record;
      try {
        record = JSON.parse(event.data);
      } catch {
        return;
      }
      if (record && typeof record === "object") appendLog(record);
    };
    stream.onerror = () => {
      if (source !== stream) return;
      if (stream.readyState === EventSource.CLOSED) {
        // refused (not an event stream): try again later; the replay refills the pane
        stream.close();
        setLogState("error", `disconnected from ${name}; retrying…`);
        retryTimer = setTimeout(() => {
          if (source === stream) openLogs(name);
        }, LOG_RETRY_MS);
      } else {
        setLogState("connecting", `reconnecting to ${name}…`);
      }
    };
  }

  function setLogState(state, text) {
    $("log-state").dataset.state = state;
    $("log-state").textContent = text;
  }

  function clearLogs() {
    $("log-lines").replaceChildren(el("p", { class: "log-empty" }, "No records yet."));
  }

  function appendLog(record) {
    const pane = $("log-lines");
    const empty = pane.querySelector(".log-empty");
    if (empty) empty.remove();
    const level = String(record.level ?? "");
    const target = String(record.target ?? "");
    pane.append(
      el(
        "div",
        { class: "log-line", dataset: { level } },
        el("span", { class: "log-time", title: String(record.time ?? "") }, logTime(record.time)),
        el("span", { class: "log-level" }, level),
        el("span", { class: "log-target", title: target }, target),
        el("span", { class: "log-message" }, String(record.message ?? "")),
      ),
    );
    while (pane.childElementCount > MAX_LOG_LINES) pane.firstElementChild.remove();
    if ($("log-follow").checked && !scrollQueued) {
      scrollQueued = true; // one scroll per frame, however many records arrive
      requestAnimationFrame(() => {
        scrollQueued = false;
        pane.scrollTop = pane.scrollHeight;
      });
    }
  }

  function logTime(value) {
    const moment = new Date(String(value));
    return Number.isNaN(moment.getTime()) ? String(value ?? "") : clock(moment, true);
  }

  function clock(moment, millis = false) {
    const two = (n) => String(n).padStart(2, "0");
    const base = `${two(moment.getHours())}:${two(moment.getMinutes())}:${two(moment.getSeconds())}`;
    return millis ? `${base}.${String(moment.getMilliseconds()).padStart(3, "0")}` : base;
  }

  // -- wiring ----------------------------------------------------------------------------

  function start() {
    $("token-form").addEventListener("submit", submitToken);
    $("request-form").addEventListener("submit", sendRequest);
    $("request-plugin").addEventListener("change", syncTags);
    $("request-body").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        $("request-form").requestSubmit();
      }
    });
    $("log-plugin").addEventListener("change", () => openLogs($("log-plugin").value));
    $("log-clear").addEventListener("click", clearLogs);
    $("log-follow").addEventListener("change", () => {
      if ($("log-follow").checked) $("log-lines").scrollTop = $("log-lines").scrollHeight;
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
    clearLogs();
    refresh();
  }

  start();
})();
