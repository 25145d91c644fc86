/* journy.io emulator tracker: the stand-in for journy.io's tracker.js / analytics.js on a development machine.
   It takes the commands the snippet's stub queued in window.__journy_queue__, and every later journy(...) call,
   and POSTs them to the emulator that served this file, which checks each call's verification hash and lists it
   under "frontend" in /_emulator/state and on its page. No eval and no inline code, so it runs under a strict
   Content-Security-Policy that allows this script's origin (script-src and connect-src). */
(function () {
  "use strict";
  var script = document.currentScript;
  var origin = script && script.src ? new URL(script.src, location.href).origin : "";
  var endpoint = origin + "/_emulator/frontend";
  var seen = [];
  // For browser tests and curious developers: every command this page handed to journy, oldest first.
  window.__journy_emulator__ = { loadedAt: Date.now(), endpoint: endpoint, commands: seen };

  function send(calls) {
    if (!calls.length) {
      return;
    }
    var body;
    try {
      body = JSON.stringify({ page: String(location.href), calls: calls });
    } catch (error) {
      body = JSON.stringify({ page: String(location.href), calls: [], error: String(error) });
    }
    // text/plain keeps the request "simple" (no CORS preflight); keepalive lets it finish when the page unloads.
    if (window.fetch) {
      window
        .fetch(endpoint, {
          method: "POST",
          body: body,
          keepalive: true,
          mode: "cors",
          credentials: "omit",
          headers: { "Content-Type": "text/plain;charset=UTF-8" },
        })
        .catch(function () {});
    } else if (navigator.sendBeacon) {
      navigator.sendBeacon(endpoint, body);
    }
  }

  function take(command, args, date, callback) {
    var item = { command: String(command), args: args === undefined ? null : args, date: date || Date.now() };
    seen.push(item);
    if (typeof callback === "function") {
      try {
        callback();
      } catch (error) {
        // A page's callback must not stop the commands after it.
      }
    }
    return item;
  }

  var queue = window.__journy_queue__ || [];
  var queued = [];
  for (var i = 0; i < queue.length; i++) {
    var entry = queue[i] || {};
    queued.push(take(entry.command, entry.args, entry.date, entry.callback));
  }
  queue.length = 0; // drained, as journy.io's tracker does: each command is sent once

  window.journy = function (command, args, callback) {
    send([take(command, args, Date.now(), callback)]);
  };
  send(queued);
})();
