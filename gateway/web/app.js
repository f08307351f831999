// gavel's web page: a client of the gateway's WebSocket protocol
// (docs/gateway.md) on /ws of the host that served this page. Plain script,
// no build step, no dependencies.
//
// Identity: ?token=T in the page's URL (a token of `gavel token`) is passed
// on to /ws (auth mode); otherwise the bidder name comes from ?bidder=NAME
// or the name field (open mode), and is sent as ?bidder=NAME on every
// (re)connection.
//
// Stable hooks for tests and scripts (ids and data attributes; the visible
// texts may change, these do not):
//
//   #status                      connection indicator; data-state is
//                                "connecting", "open" or "closed" (waiting
//                                to reconnect); click it to reconnect now
//   #me                          the bidder this page acts as; data-bidder
//   #name-form, #name            open mode: set the bidder name (login)
//   #auctions                    the auction list; one child per auction:
//     [data-auction="ID"]          data-state "open"|"closed",
//                                  data-outbid "true" while this bidder has
//                                  been outbid and not led again,
//                                  data-leader "true" while this bidder leads,
//                                  data-won "true" once this bidder has won,
//                                  data-seq the last seq applied
//       .item                      item text
//       .highest                   highest bid (digits only; "–" when none);
//                                  data-amount has the number
//       .bidder                    highest bidder ("–" when none), or the
//                                  winner once closed
//       .countdown                 time left until closes_at, in server time;
//                                  data-closes-at (Unix ms)
//       .state                     "open" / "closed"
//       .outbid                    the outbid mark (empty when not outbid)
//       .my-bid                    outcome of this page's last bid there
//       .bid-here                  selects the auction in the bid form
//   #bid-form                    one form for every auction:
//     #bid-auction                 <select>, option values are auction ids
//     #bid-amount                  amount (integer, minor units)
//     #bid-submit
//   #bid-outcome                 the last bid's outcome: data-outcome
//                                "pending"|"success"|"fail"|"exception"|
//                                "error", data-reason (e.g. "too_low"),
//                                data-auction, data-amount. A bid whose
//                                reply the connection lost stays pending
//                                and is sent again, with the same id, on
//                                the next connection (within resendWindow):
//                                the gateway answers with its outcome,
//                                placing it at most once (docs/gateway.md)
//   #bid-history                 every bid's outcome, newest first (li with
//                                the same data attributes)
//   #open-panel                  the open form's section (hidden for a
//                                token that is not an admin's)
//   #open-form, #open-auction, #open-duration, #open-item,
//   #open-min-increment, #open-starting-price, #open-soft-close (empty:
//   the gateway's defaults: 1, 0, none), #open-submit
//   #open-outcome                data-outcome, data-reason, data-auction
//   #chain                       chain members head first:
//                                li[data-member=ID][data-role=head|middle|tail|single]
//   #epoch, #head, #tail, #bids-per-s, #latency, #gateway, #watchers,
//   #connections                 from the metrics pushes
//   #events                      recent events (outbid, extended, closed,
//                                connection changes), newest first
//   document.body data-clock-offset  server_time - Date.now(), in ms
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);

  // ---- identity --------------------------------------------------------

  const params = new URLSearchParams(location.search);
  const token = params.get("token") || "";
  const claims = token ? tokenClaims(token) : {};
  let me = token ? String(claims.sub || claims.bidder || "") : (params.get("bidder") || "").trim();

  // tokenClaims reads the claims of a gateway token (PAYLOAD.SIGNATURE,
  // unpadded base64url JSON: {"sub":bidder,"role":..}); the gateway checks
  // the token, this is only for display.
  function tokenClaims(t) {
    const parts = t.split(".");
    if (parts.length < 2) return {};
    try {
      const json = atob(parts[parts.length === 3 ? 1 : 0].replace(/-/g, "+").replace(/_/g, "/"));
      const c = JSON.parse(json);
      return c && typeof c === "object" ? c : {};
    } catch (e) {
      return {};
    }
  }

  function setMe(name) {
    me = name;
    const el = $("#me");
    el.dataset.bidder = me;
    el.textContent = me ? "bidding as " + me + (claims.role ? " (" + claims.role + ")" : "") : token ? "signed in with a token" : "no bidder name";
    if (!token) {
      $("#name").value = me;
      const u = new URL(location.href);
      if (me) u.searchParams.set("bidder", me);
      else u.searchParams.delete("bidder");
      history.replaceState(null, "", u);
    }
    for (const a of auctions.values()) renderAuction(a);
  }

  // ---- state -----------------------------------------------------------

  // auctions: id -> {id, item, state, highest, bidder, winner, closesAt,
  // seq, outbid (text or ""), myBid (text or ""), el}
  const auctions = new Map();
  let clockOffset = 0; // server_time - Date.now()
  let haveOffset = false;

  // ---- connection --------------------------------------------------------

  let ws = null;
  let attempts = 0; // failed connections since the last good one
  let retryTimer = 0;
  let retryAt = 0;
  // Command ids: unique to this page load, so that a bid's id (which the
  // gateway makes the bid's request id at the chain, per bidder and
  // auction) never names an earlier page's bid.
  const idPrefix = "p" + Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("") + "-";
  let nextID = 1;
  const pending = new Map(); // command id -> {op, auction, amount, cmd, sentAt, bidder}
  // A bid whose reply was lost with the connection is sent again on the
  // next one if it was first sent less than this long ago; after that
  // the page says the outcome is unknown rather than place it late.
  const resendWindow = 30000;
  let watching = new Set(); // auctions watched on the current connection
  let refreshTimer = 0;

  function wsURL() {
    const u = new URL("/ws", location.href);
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (token) u.searchParams.set("token", token);
    else if (me) u.searchParams.set("bidder", me);
    return u.toString();
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    if (ws) return;
    setStatus("connecting", attempts ? "reconnecting…" : "connecting…");
    let sock;
    try {
      sock = new WebSocket(wsURL());
    } catch (e) {
      logEvent("cannot connect: " + e.message);
      scheduleReconnect();
      return;
    }
    ws = sock;
    watching = new Set();
    sock.onopen = () => {
      if (ws !== sock) return;
      attempts = 0;
      setStatus("open", "connected");
      logEvent("connected to " + location.host);
      // Bids whose replies were lost go again, same id: the gateway
      // answers with their outcome, placing each at most once.
      resendBids();
      // Resume the watches of the auctions already known, from the last
      // seq seen of each, then learn about new ones and follow the chain.
      for (const a of auctions.values()) watch(a);
      send({ op: "auctions" });
      send({ op: "metrics", on: true });
      clearInterval(refreshTimer);
      refreshTimer = setInterval(() => send({ op: "auctions" }), 5000);
    };
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      for (const line of String(ev.data).split("\n")) {
        if (!line.trim()) continue;
        let msg;
        try {
          msg = JSON.parse(line);
        } catch (e) {
          logEvent("unreadable message from the gateway: " + line.slice(0, 200));
          continue;
        }
        try {
          handle(msg);
        } catch (e) {
          console.error("handling", msg, e);
        }
      }
    };
    sock.onerror = () => {}; // onclose follows and says what to do
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      clearInterval(refreshTimer);
      const why = ev.code === 1000 || ev.code === 1005 ? "" : " (code " + ev.code + (ev.reason ? ": " + ev.reason : "") + ")";
      logEvent("connection closed" + why);
      for (const [id, p] of pending) {
        if (p.op === "bid") {
          if (Date.now() - p.sentAt < resendWindow && p.bidder === me) {
            $("#bid-outcome").textContent = "connection lost: bid of " + p.amount + " on " + p.auction + " will be sent again on reconnection…";
            continue; // resendBids sends it again
          }
          showBid(p, { outcome: "error", reason: "disconnected", detail: "connection lost before the reply: look at the auction to see whether the bid was placed" });
        } else if (p.op === "open") {
          showOpen(p, { outcome: "error", reason: "disconnected", detail: "connection lost before the reply" });
        }
        pending.delete(id);
      }
      scheduleReconnect();
    };
  }

  // Reconnect with exponential backoff (0.5 s doubling to 10 s, jittered).
  function scheduleReconnect() {
    attempts++;
    const base = Math.min(10000, 500 * Math.pow(2, attempts - 1));
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    retryAt = Date.now() + delay;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
    updateRetryStatus();
  }

  function updateRetryStatus() {
    if (ws || !retryTimer) return;
    const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    setStatus("closed", "disconnected — retrying in " + s + " s");
  }

  function reconnectNow() {
    if (ws) {
      // Named changes or a stuck socket: start over at once.
      const old = ws;
      ws = null;
      clearInterval(refreshTimer);
      old.onclose = null;
      old.close();
    }
    attempts = 0;
    connect();
  }

  function setStatus(state, text) {
    const el = $("#status");
    el.dataset.state = state;
    el.textContent = text;
  }

  // send writes one JSON command; it returns its id, or "" when there is
  // no open connection.
  function send(cmd, meta) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return "";
    const id = idPrefix + nextID++;
    cmd.id = id;
    if (meta) {
      meta.cmd = cmd;
      meta.sentAt = Date.now();
      meta.bidder = me;
      pending.set(id, meta);
    }
    ws.send(JSON.stringify(cmd));
    return id;
  }

  // resendBids sends again, with their ids, the bids still pending from
  // a connection that was lost; those too old, or of another bidder name,
  // are reported as unknown.
  function resendBids() {
    for (const [id, p] of pending) {
      if (p.op !== "bid") continue;
      if (Date.now() - p.sentAt >= resendWindow || p.bidder !== me) {
        pending.delete(id);
        showBid(p, { outcome: "error", reason: "disconnected", detail: "connection lost before the reply: look at the auction to see whether the bid was placed" });
        continue;
      }
      ws.send(JSON.stringify(p.cmd));
      logEvent("sent again: bid of " + p.amount + " on " + p.auction + " (same id: placed at most once)");
    }
  }

  function watch(a) {
    if (watching.has(a.id) || a.state === "closed") return;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    watching.add(a.id);
    send({ op: "watch", auction: a.id, from: a.seq }, { op: "watch", auction: a.id });
  }

  // ---- messages from the gateway ----------------------------------------

  function handle(m) {
    if (typeof m.server_time === "number" && m.server_time > 0) syncClock(m.server_time);
    const p = m.id !== undefined ? pending.get(String(m.id)) : undefined;
    if (p) pending.delete(String(m.id));
    switch (m.type) {
      case "auctions":
        for (const x of m.auctions || []) upsertListed(x);
        break;
      case "highest":
        onHighest(m);
        break;
      case "extended":
        onExtended(m);
        break;
      case "closed":
        onClosed(m);
        break;
      case "outbid":
        onOutbid(m);
        break;
      case "metrics":
        showMetrics(m);
        break;
      case "bid":
        showBid(p || { op: "bid", auction: m.auction, amount: m.amount }, m);
        break;
      case "open":
        showOpen(p || { op: "open", auction: m.auction }, m);
        if (m.outcome === "success") send({ op: "auctions" });
        break;
      case "login":
        if (m.bidder && m.bidder !== me) setMe(m.bidder);
        logEvent("logged in as " + m.bidder);
        break;
      case "result":
        upsertListed(m);
        break;
      case "error":
        if (p && p.op === "bid") showBid(p, { outcome: "error", reason: "", detail: m.error });
        else if (p && p.op === "open") showOpen(p, { outcome: "error", reason: "", detail: m.error });
        else if (p && p.op === "watch") { watching.delete(p.auction); logEvent("watch " + p.auction + ": " + m.error); }
        else logEvent("gateway: " + m.error + (m.line ? " (in " + JSON.stringify(m.line) + ")" : ""));
        break;
      case "watching":
      case "unwatched":
      case "help":
        break;
      default:
        console.debug("unhandled message", m);
    }
  }

  function syncClock(serverTime) {
    const sample = serverTime - Date.now();
    // Snap on the first sample or a jump; smooth the jitter otherwise, so
    // that the countdowns do not flicker between two seconds.
    if (!haveOffset || Math.abs(sample - clockOffset) > 1000) clockOffset = sample;
    else clockOffset = Math.round(clockOffset * 0.8 + sample * 0.2);
    haveOffset = true;
    document.body.dataset.clockOffset = String(clockOffset);
  }

  function serverNow() {
    return Date.now() + clockOffset;
  }

  function getAuction(id) {
    let a = auctions.get(id);
    if (!a) {
      a = { id, item: "", state: "open", highest: 0, bidder: "", winner: "", closesAt: 0, seq: 0, outbid: "", myBid: "", el: null };
      auctions.set(id, a);
      a.el = makeAuctionElement(a);
      renderSelect();
    }
    return a;
  }

  // upsertListed applies an entry of the auctions list (or a result reply):
  // it is a snapshot at its version, applied unless a push already brought
  // something newer.
  function upsertListed(x) {
    if (!x || !x.auction) return;
    const isNew = !auctions.has(x.auction);
    const a = getAuction(x.auction);
    if (x.item !== undefined && x.item !== "") a.item = x.item;
    const version = Number(x.version || 0);
    if (isNew || version >= a.seq) {
      if (x.state) a.state = x.state;
      if (x.highest !== undefined) a.highest = Number(x.highest);
      if (x.bidder !== undefined) a.bidder = x.bidder;
      // The auctions list has no winner: once closed, the highest bidder won.
      if (x.winner !== undefined) a.winner = x.winner;
      else if (a.state === "closed") a.winner = a.bidder;
      if (x.closes_at) a.closesAt = Number(x.closes_at);
      if (version > a.seq) a.seq = version;
    }
    // Watch from the version listed: the gateway sends what is newer.
    watch(a);
    renderAuction(a);
    renderSelect();
  }

  function onHighest(m) {
    const a = getAuction(m.auction);
    if (m.seq !== undefined && m.seq <= a.seq) return; // already applied
    a.seq = m.seq || a.seq;
    a.highest = Number(m.amount);
    a.bidder = m.bidder || "";
    if (m.closes_at) a.closesAt = Number(m.closes_at);
    if (me && a.bidder === me) a.outbid = ""; // leading again
    renderAuction(a);
    flash(a.el.querySelector(".highest"));
  }

  function onExtended(m) {
    const a = getAuction(m.auction);
    if (m.seq !== undefined && m.seq <= a.seq) return;
    a.seq = m.seq || a.seq;
    a.closesAt = Number(m.closes_at);
    renderAuction(a);
    flash(a.el.querySelector(".countdown"));
    logEvent(a.id + ": closing extended to " + new Date(a.closesAt).toLocaleTimeString());
  }

  function onClosed(m) {
    const a = getAuction(m.auction);
    // Always applied: a close is final whatever arrived before it.
    if (m.seq && m.seq > a.seq) a.seq = m.seq;
    a.state = "closed";
    a.winner = m.winner || "";
    if (m.amount !== undefined) a.highest = Number(m.amount);
    if (a.winner) a.bidder = a.winner;
    watching.delete(a.id);
    renderAuction(a);
    renderSelect();
    logEvent(a.id + " closed: " + (a.winner ? "won by " + a.winner + " with " + a.highest : "no bids"));
  }

  function onOutbid(m) {
    const a = getAuction(m.auction);
    a.outbid = "outbid: " + (m.bidder || "someone") + " bid " + m.amount + " over your " + m.your_bid;
    if (m.seq && m.seq > a.seq) {
      // The outbid push may come before the matching highest push.
      a.seq = m.seq;
      a.highest = Number(m.amount);
      a.bidder = m.bidder || a.bidder;
    }
    renderAuction(a);
    flash(a.el);
    logEvent(a.id + ": " + a.outbid);
  }

  // ---- rendering ---------------------------------------------------------

  function makeAuctionElement(a) {
    const el = $("#auction-template").content.firstElementChild.cloneNode(true);
    el.dataset.auction = a.id;
    el.querySelector(".id").textContent = a.id;
    el.querySelector(".bid-here").addEventListener("click", () => {
      $("#bid-auction").value = a.id;
      const amt = $("#bid-amount");
      if (a.highest > 0) amt.placeholder = "more than " + a.highest;
      amt.focus();
    });
    // Keep the list sorted by id, numbers in ids compared as numbers.
    const list = $("#auctions");
    const after = [...list.children].find((c) => collate(c.dataset.auction, a.id) > 0);
    list.insertBefore(el, after || null);
    $("#auctions-empty").hidden = true;
    return el;
  }

  const collator = new Intl.Collator(undefined, { numeric: true });
  function collate(x, y) {
    return collator.compare(x, y);
  }

  function renderAuction(a) {
    const el = a.el;
    if (!el) return;
    el.dataset.state = a.state;
    el.dataset.seq = String(a.seq);
    el.dataset.outbid = a.outbid ? "true" : "false";
    const leads = !!me && a.state === "open" && a.bidder === me;
    el.dataset.leader = leads ? "true" : "false";
    const won = !!me && a.state === "closed" && a.winner === me;
    el.dataset.won = won ? "true" : "false";
    el.querySelector(".lead").textContent = won ? "you won" : "you lead";
    el.querySelector(".item").textContent = a.item;
    const h = el.querySelector(".highest");
    h.textContent = a.highest > 0 ? String(a.highest) : "–";
    h.dataset.amount = String(a.highest);
    const who = a.state === "closed" ? a.winner : a.bidder;
    el.querySelector(".bidder").textContent = who || (a.state === "closed" ? "no bids" : "–");
    el.querySelector(".bidder-label").textContent = a.state === "closed" ? "Winner" : "Bidder";
    el.querySelector(".state").textContent = a.state;
    el.querySelector(".outbid").textContent = a.outbid;
    el.querySelector(".my-bid").textContent = a.myBid;
    el.querySelector(".countdown").dataset.closesAt = String(a.closesAt);
    el.querySelector(".bid-here").disabled = a.state === "closed";
    renderCountdown(a);
  }

  function renderCountdown(a) {
    const el = a.el.querySelector(".countdown");
    let text;
    if (a.state === "closed") text = "closed";
    else if (!a.closesAt) text = "–";
    else {
      const left = a.closesAt - serverNow();
      text = left <= 0 ? "closing…" : formatDuration(left);
      el.dataset.urgent = left > 0 && left < 30000 ? "true" : "false";
    }
    if (el.textContent !== text) el.textContent = text;
  }

  function formatDuration(ms) {
    let s = Math.ceil(ms / 1000);
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (d > 0) return d + "d " + pad(h) + "h " + pad(m) + "m";
    if (h > 0) return h + ":" + pad(m) + ":" + pad(s);
    return m + ":" + pad(s);
  }

  function renderSelect() {
    const sel = $("#bid-auction");
    const keep = sel.value;
    const ids = [...auctions.keys()].sort(collate);
    const have = [...sel.options].map((o) => o.value);
    if (have.join("\n") !== ids.join("\n")) {
      sel.replaceChildren(...ids.map((id) => {
        const o = document.createElement("option");
        o.value = id;
        o.textContent = id;
        return o;
      }));
      if (ids.includes(keep)) sel.value = keep;
    }
    for (const o of sel.options) {
      const a = auctions.get(o.value);
      const label = a.id + (a.item ? " — " + a.item : "") + (a.state === "closed" ? " (closed)" : "");
      if (o.textContent !== label) o.textContent = label;
      o.disabled = a.state === "closed";
    }
    // Never leave a closed auction selected while an open one exists.
    const cur = auctions.get(sel.value);
    if (!cur || cur.state === "closed") {
      const open = ids.find((id) => auctions.get(id).state !== "closed");
      if (open) sel.value = open;
    }
  }

  function showBid(p, m) {
    const outcome = m.outcome || "error";
    const reason = m.reason || "";
    let text;
    if (outcome === "success") text = "success: " + (me ? me + " leads " : "you lead ") + p.auction + " with " + p.amount;
    else text = outcome + (reason ? " (" + reason + ")" : "") + ": bid of " + p.amount + " on " + p.auction;
    if (m.detail && outcome !== "success") text += " — " + m.detail;
    const out = $("#bid-outcome");
    setOutcome(out, outcome, reason, p);
    out.textContent = text;
    if (outcome === "pending") return;
    const li = document.createElement("li");
    setOutcome(li, outcome, reason, p);
    li.textContent = new Date().toLocaleTimeString() + " " + text;
    const hist = $("#bid-history");
    hist.insertBefore(li, hist.firstChild);
    while (hist.children.length > 20) hist.lastChild.remove();
    const a = auctions.get(p.auction);
    if (a) {
      a.myBid = "your bid " + p.amount + ": " + outcome + (reason ? " (" + reason + ")" : "");
      if (outcome === "success") a.outbid = "";
      renderAuction(a);
    }
  }

  function showOpen(p, m) {
    const outcome = m.outcome || "error";
    const reason = m.reason || "";
    const out = $("#open-outcome");
    setOutcome(out, outcome, reason, p);
    let text;
    if (outcome === "pending") text = "opening " + p.auction + "…";
    else if (outcome === "success") text = "opened " + p.auction + (m.closes_at ? ", closes at " + new Date(Number(m.closes_at)).toLocaleTimeString() : "");
    else text = outcome + (reason ? " (" + reason + ")" : "") + ": " + p.auction + (m.detail ? " — " + m.detail : "");
    out.textContent = text;
  }

  function setOutcome(el, outcome, reason, p) {
    el.dataset.outcome = outcome;
    el.dataset.reason = reason;
    el.dataset.auction = p.auction || "";
    if (p.amount !== undefined) el.dataset.amount = String(p.amount);
  }

  function showMetrics(m) {
    const chain = Array.isArray(m.chain) ? m.chain : [];
    const list = $("#chain");
    list.replaceChildren(...chain.flatMap((id, i) => {
      const li = document.createElement("li");
      li.dataset.member = id;
      const role = chain.length === 1 ? "single" : i === 0 ? "head" : i === chain.length - 1 ? "tail" : "middle";
      li.dataset.role = role;
      li.textContent = id;
      li.title = role;
      if (i === 0) return [li];
      const arrow = document.createElement("li");
      arrow.className = "arrow";
      arrow.setAttribute("aria-hidden", "true");
      arrow.textContent = "→";
      return [arrow, li];
    }));
    if (chain.length === 0) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "no chain";
      list.append(li);
    }
    setText("#epoch", m.epoch);
    setText("#head", m.head);
    setText("#tail", m.tail);
    setText("#bids-per-s", typeof m.bids_per_s === "number" ? m.bids_per_s.toFixed(m.bids_per_s < 10 ? 1 : 0) : m.bids_per_s);
    const l = m.latency_ms || {};
    const ms = (v) => (typeof v === "number" ? (v < 10 ? v.toFixed(2) : v.toFixed(0)) : "–");
    // All zero: no bid in the window to measure.
    setText("#latency", l.p50 || l.p90 || l.p99 ? "p50 " + ms(l.p50) + " · p90 " + ms(l.p90) + " · p99 " + ms(l.p99) + " ms" : "no bids lately");
    setText("#gateway", m.gateway);
    setText("#watchers", m.watchers);
    setText("#connections", m.connections);
  }

  function setText(sel, v) {
    $(sel).textContent = v === undefined || v === null || v === "" ? "–" : String(v);
  }

  function flash(el) {
    if (!el) return;
    el.classList.remove("flash");
    void el.offsetWidth; // restart the animation
    el.classList.add("flash");
  }

  function logEvent(text) {
    const li = document.createElement("li");
    li.textContent = new Date().toLocaleTimeString() + " " + text;
    const list = $("#events");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 30) list.lastChild.remove();
  }

  // ---- forms ------------------------------------------------------------

  $("#bid-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const auction = $("#bid-auction").value;
    const raw = $("#bid-amount").value.trim();
    const p = { op: "bid", auction, amount: raw };
    if (!auction) return showBid(p, { outcome: "error", reason: "no_auction", detail: "choose an auction" });
    if (!/^[0-9]+$/.test(raw) || Number(raw) <= 0 || !Number.isSafeInteger(Number(raw))) {
      return showBid(p, { outcome: "error", reason: "invalid_amount", detail: "the amount must be a positive whole number" });
    }
    p.amount = Number(raw);
    if (!token && !me) return showBid(p, { outcome: "error", reason: "no_bidder", detail: "enter your name first" });
    const id = send({ op: "bid", auction, amount: p.amount }, p);
    if (!id) return showBid(p, { outcome: "error", reason: "disconnected", detail: "not connected to the gateway" });
    showBid(p, { outcome: "pending" });
    $("#bid-outcome").textContent = "bidding " + p.amount + " on " + auction + "…";
  });

  $("#open-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const auction = $("#open-auction").value.trim();
    const duration = $("#open-duration").value.trim();
    const item = $("#open-item").value.trim();
    const p = { op: "open", auction };
    if (!auction || /\s/.test(auction)) return showOpen(p, { outcome: "error", reason: "invalid", detail: "the auction id must be one word" });
    const cmd = { op: "open", auction, duration, item };
    // The options of gavel open; empty ones are left to the gateway.
    for (const [field, sel] of [["min_increment", "#open-min-increment"], ["starting_price", "#open-starting-price"]]) {
      const raw = $(sel).value.trim();
      if (raw === "") continue;
      if (!/^[0-9]+$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
        return showOpen(p, { outcome: "error", reason: "invalid", detail: field.replace("_", " ") + " must be a whole number ≥ 0" });
      }
      cmd[field] = Number(raw);
    }
    const soft = $("#open-soft-close").value.trim();
    if (soft !== "" && soft !== "none") cmd.soft_close = soft;
    const id = send(cmd, p);
    if (!id) return showOpen(p, { outcome: "error", reason: "disconnected", detail: "not connected to the gateway" });
    showOpen(p, { outcome: "pending" });
  });

  $("#name-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("#name").value.trim();
    if (!name || name === me) return;
    if (/[\s\x00-\x1f\x7f]/.test(name)) {
      logEvent("a bidder name is one word: " + JSON.stringify(name) + " has spaces");
      return;
    }
    setMe(name);
    // The next connections use ?bidder=; this one switches by login.
    if (!send({ op: "login", bidder: name }, { op: "login" })) reconnectNow();
  });

  $("#status").addEventListener("click", () => {
    if (!ws) reconnectNow();
  });

  // ---- start --------------------------------------------------------------

  if (token) $("#name-form").hidden = true;
  // Only admins may open auctions when tokens are in use.
  if (token && claims.role && claims.role !== "admin") $("#open-panel").hidden = true;
  setMe(me);
  setInterval(() => {
    for (const a of auctions.values()) renderCountdown(a);
    updateRetryStatus();
  }, 250);
  connect();
})();
