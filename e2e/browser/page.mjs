// The real-browser test of the gateway's web page, driven by
// e2e/browser_test.go (TestBrowserPage): playwright-core launches Debian's
// chromium, headless, and uses the page the way two bidders would.
//
//   node page.mjs --url http://127.0.0.1:PORT/ --auction a1 --screenshot out.png \
//       [--chain n1,n2,n3] [--steps] [--timeout 60]
//
// With --steps the script asks its driver to act outside the browser: it
// prints a line "GAVEL-STEP <name> <args...>" and waits for a line on stdin,
// "ok" or "error <message>":
//
//   GAVEL-STEP chain-bid AUCTION BIDDER AMOUNT
//       place a bid straight at the chain (not through this gateway)
//   GAVEL-STEP restart-gateway AUCTION BIDDER AMOUNT
//       kill the gateway, place that bid at the chain while it is down,
//       start the gateway again
//
// It exits 0 when every check passed, 1 with a message saying what the page
// showed instead otherwise; the browser is closed either way, and the run is
// bounded by --timeout seconds. The element ids it relies on are listed at
// the top of gateway/web/app.js.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    auction: { type: "string", default: "a1" },
    screenshot: { type: "string" },
    chain: { type: "string", default: "" },
    steps: { type: "boolean", default: false },
    timeout: { type: "string", default: "60" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
if (!opt.url || !opt.screenshot) {
  console.error("usage: node page.mjs --url URL --screenshot FILE.png [--auction a1] [--chain n1,n2,n3] [--steps] [--timeout 60]");
  process.exit(2);
}

const started = Date.now();
const A = opt.auction;
const card = `#auctions [data-auction="${A}"]`;
const WAIT = 15000; // one check's bound

function log(...args) {
  const t = ((Date.now() - started) / 1000).toFixed(1).padStart(5);
  console.log(`[${t}s]`, ...args);
}

class Failure extends Error {}

// ---- the driver's side of the steps --------------------------------------

const stdinLines = [];
let stdinWaiter = null;
if (opt.steps) {
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    stdinLines.push(line);
    if (stdinWaiter) stdinWaiter();
  });
}

async function step(name, ...args) {
  if (!opt.steps) throw new Failure(`step ${name} needs --steps (a driver on stdin)`);
  console.log(`GAVEL-STEP ${name} ${args.join(" ")}`);
  const deadline = Date.now() + 30000;
  while (stdinLines.length === 0) {
    if (Date.now() > deadline) throw new Failure(`step ${name}: no answer from the driver within 30s`);
    await new Promise((resolve) => {
      stdinWaiter = resolve;
      setTimeout(resolve, 500);
    });
  }
  const answer = stdinLines.shift().trim();
  if (answer !== "ok") throw new Failure(`step ${name}: the driver answered: ${answer}`);
  log(`step ${name} ${args.join(" ")}: done by the driver`);
}

// ---- checks -------------------------------------------------------------

// text returns the trimmed text of the first element matching sel, or null.
async function text(page, sel) {
  return page.evaluate((s) => {
    const el = document.querySelector(s);
    return el ? el.textContent.trim() : null;
  }, sel);
}

async function attr(page, sel, name) {
  return page.evaluate(([s, n]) => {
    const el = document.querySelector(s);
    return el ? el.getAttribute(n) : null;
  }, [sel, name]);
}

// waitFor polls until check(page) returns true, or fails with what the
// page shows (describe(page)) after `within` ms.
async function waitFor(page, what, check, describe, within = WAIT) {
  const deadline = Date.now() + within;
  for (;;) {
    if (await check(page)) return;
    if (Date.now() > deadline) {
      throw new Failure(`${page.who}: ${what}: not seen within ${within / 1000}s; the page shows ${await describe(page)}`);
    }
    await page.waitForTimeout(100);
  }
}

async function waitText(page, sel, want, what) {
  await waitFor(page, `${what} (${sel} = ${JSON.stringify(want)})`,
    async (p) => (await text(p, sel)) === want,
    async (p) => JSON.stringify(await text(p, sel)));
}

async function waitAttr(page, sel, name, want, what) {
  await waitFor(page, `${what} (${sel} [${name}=${JSON.stringify(want)}])`,
    async (p) => (await attr(p, sel, name)) === want,
    async (p) => `${name}=${JSON.stringify(await attr(p, sel, name))}`);
}

// cardState is what a bidder sees of the auction.
async function cardState(page) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) return null;
    const t = (c) => el.querySelector(c)?.textContent.trim();
    return {
      state: el.dataset.state, seq: el.dataset.seq, leader: el.dataset.leader, outbid: el.dataset.outbid,
      highest: t(".highest"), bidder: t(".bidder"), countdown: t(".countdown"), outbidMark: t(".outbid"),
    };
  }, card);
}

async function waitHighest(page, amount, bidder, what) {
  await waitFor(page, `${what}: highest ${amount} by ${bidder}`,
    async (p) => {
      const s = await cardState(p);
      return s && s.highest === String(amount) && s.bidder === bidder;
    },
    async (p) => JSON.stringify(await cardState(p)));
}

// bid places a bid through the page's form and returns the outcome shown.
async function bid(page, amount) {
  await page.selectOption("#bid-auction", A);
  await page.fill("#bid-amount", String(amount));
  await page.click("#bid-submit");
  await waitFor(page, `outcome of the bid of ${amount}`,
    async (p) => {
      const o = await attr(p, "#bid-outcome", "data-outcome");
      return o && o !== "pending" && (await attr(p, "#bid-outcome", "data-amount")) === String(amount);
    },
    async (p) => JSON.stringify(await text(p, "#bid-outcome")));
  return {
    outcome: await attr(page, "#bid-outcome", "data-outcome"),
    reason: await attr(page, "#bid-outcome", "data-reason"),
    text: await text(page, "#bid-outcome"),
  };
}

async function expectOutcome(page, amount, outcome, reason) {
  const got = await bid(page, amount);
  if (got.outcome !== outcome || (reason !== undefined && got.reason !== reason)) {
    throw new Failure(`${page.who}: bid of ${amount} on ${A}: want ${outcome}${reason ? " (" + reason + ")" : ""}, the page shows ${JSON.stringify(got.text)} (outcome=${got.outcome} reason=${got.reason})`);
  }
  log(`${page.who}: bid ${amount} on ${A}: ${got.text}`);
}

// ---- the run ------------------------------------------------------------

const pageErrors = [];

async function openPage(browser, bidder) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.who = bidder;
  page.on("pageerror", (err) => pageErrors.push(`${bidder}: uncaught ${err.message}`));
  page.on("console", (msg) => {
    const t = msg.text();
    if (/Content.Security.Policy/i.test(t)) pageErrors.push(`${bidder}: ${t}`);
    if (msg.type() === "error" || msg.type() === "warning") log(`${bidder} console.${msg.type()}: ${t}`);
  });
  const u = new URL(opt.url);
  u.searchParams.set("bidder", bidder);
  const resp = await page.goto(u.toString(), { waitUntil: "load", timeout: WAIT });
  if (!resp || !resp.ok()) throw new Failure(`${bidder}: GET ${u}: ${resp ? resp.status() : "no response"}`);
  await waitAttr(page, "#status", "data-state", "open", "connected to /ws");
  log(`${bidder}: page loaded and connected`);
  return page;
}

function checkPageErrors() {
  if (pageErrors.length) throw new Failure(`errors in the page:\n  ${pageErrors.join("\n  ")}`);
}

async function run(browser) {
  const carol = await openPage(browser, "carol");

  // The auction the driver opened shows up, open, with a countdown.
  await waitFor(carol, `auction ${A} listed`, async (p) => (await cardState(p))?.state === "open",
    async (p) => JSON.stringify(await cardState(p)) + "; listed: " +
      JSON.stringify(await p.$$eval("#auctions [data-auction]", (els) => els.map((e) => `${e.dataset.auction} (${e.dataset.state})`))));
  const cd = (await cardState(carol)).countdown;
  if (!/^(\d+d )?\d+:\d\d(:\d\d)?/.test(cd)) throw new Failure(`carol: countdown of ${A} is ${JSON.stringify(cd)}, want a time left like 9:58`);
  log(`carol: ${A} listed, closes in ${cd}`);

  // The chain, from the metrics pushes.
  if (opt.chain) {
    const want = opt.chain.split(",");
    await waitFor(carol, `chain ${want.join(" -> ")}`,
      async (p) => JSON.stringify(await p.$$eval("#chain [data-member]", (els) => els.map((e) => e.dataset.member))) === JSON.stringify(want),
      async (p) => JSON.stringify(await p.$$eval("#chain [data-member]", (els) => els.map((e) => e.dataset.member))));
    await waitAttr(carol, `#chain [data-member="${want[0]}"]`, "data-role", want.length === 1 ? "single" : "head", "the head is marked");
    const epoch = await text(carol, "#epoch");
    if (!/^\d+$/.test(epoch)) throw new Failure(`carol: #epoch shows ${JSON.stringify(epoch)}, want a number`);
    log(`carol: chain ${want.join(" -> ")}, epoch ${epoch}`);
  }

  // The countdown follows the server's clock: same machine, small offset.
  const offset = Number(await carol.evaluate(() => document.body.dataset.clockOffset));
  if (!Number.isFinite(offset) || Math.abs(offset) > 5000) throw new Failure(`carol: clock offset to the server is ${offset} ms, want within 5 s on one machine`);

  // carol bids through the form: success, and she leads.
  await expectOutcome(carol, 100, "success");
  await waitHighest(carol, 100, "carol", "carol's page after her bid");
  await waitAttr(carol, card, "data-leader", "true", "carol is marked as the leader");

  // dave, in a second browser, outbids her through the same gateway:
  // carol's page shows the new highest live and marks her outbid.
  const dave = await openPage(browser, "dave");
  await waitHighest(dave, 100, "carol", "dave's page shows the current highest");
  await expectOutcome(dave, 150, "success");
  await waitHighest(carol, 150, "dave", "carol's page, live, after dave's bid");
  await waitAttr(carol, card, "data-outbid", "true", "carol is marked outbid");
  const mark = await text(carol, `${card} .outbid`);
  if (!mark.includes("dave")) throw new Failure(`carol: outbid mark is ${JSON.stringify(mark)}, want it to name dave`);
  log(`carol: live update to 150 by dave; outbid mark ${JSON.stringify(mark)}`);

  // A bid below the highest fails, with its reason shown.
  await expectOutcome(carol, 120, "fail", "too_low");

  if (opt.steps) {
    // A bid that reaches the chain by another way shows up live as well,
    // and dave, who bid through this gateway, is marked outbid.
    await step("chain-bid", A, "erin", 200);
    await waitHighest(carol, 200, "erin", "carol's page after a bid at the chain");
    await waitHighest(dave, 200, "erin", "dave's page after a bid at the chain");
    await waitAttr(dave, card, "data-outbid", "true", "dave is marked outbid");

    // The gateway dies and comes back; meanwhile a bid is placed. The page
    // reconnects by itself and resumes its watch from the last seq it saw.
    const before = Number((await cardState(carol)).seq);
    await step("restart-gateway", A, "erin", 250);
    await waitFor(carol, "reconnected after the gateway restart",
      async (p) => (await attr(p, "#status", "data-state")) === "open",
      async (p) => JSON.stringify(await text(p, "#status")), 20000);
    await waitHighest(carol, 250, "erin", "carol's page after the reconnection");
    const after = Number((await cardState(carol)).seq);
    if (!(after > before)) throw new Failure(`carol: seq of ${A} went from ${before} to ${after}, want it to grow`);
    const events = await carol.$$eval("#events li", (els) => els.map((e) => e.textContent));
    if (!events.some((e) => e.includes("connection closed"))) throw new Failure(`carol: no "connection closed" event seen; events: ${JSON.stringify(events)}`);
    log(`carol: reconnected by herself, ${A} at 250 by erin (seq ${before} -> ${after})`);

    // And the page works again after the reconnection.
    await expectOutcome(carol, 300, "success");
    await waitHighest(carol, 300, "carol", "carol's page after her bid on the new connection");
    await waitHighest(dave, 300, "carol", "dave's page after carol's bid on the new connection");
    await waitAttr(carol, card, "data-outbid", "false", "carol's outbid mark is cleared once she leads again");
  }

  checkPageErrors();
  await carol.screenshot({ path: opt.screenshot, fullPage: true, animations: "disabled" });
  log(`screenshot: ${opt.screenshot}`);
}

let browser;
let code = 0;
const timer = setTimeout(() => {
  console.error(`FAIL: the run took more than ${opt.timeout}s`);
  // Close the browser even now; exit regardless.
  Promise.race([browser?.close(), new Promise((r) => setTimeout(r, 5000))]).finally(() => process.exit(1));
}, Number(opt.timeout) * 1000);

try {
  browser = await chromium.launch({
    executablePath: opt.chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
    timeout: WAIT,
  });
  log(`chromium ${browser.version()}`);
  await run(browser);
  log("PASS");
} catch (err) {
  code = 1;
  console.error(`FAIL: ${err instanceof Failure ? err.message : err.stack || err}`);
  // A picture of what carol saw, next to where the passing one would be.
  if (browser) {
    const pages = browser.contexts().flatMap((c) => c.pages());
    const failShot = opt.screenshot.replace(/(\.png)?$/, "-failure.png");
    try {
      if (pages[0]) {
        await pages[0].screenshot({ path: failShot, fullPage: true, timeout: 5000 });
        console.error(`failure screenshot: ${failShot}`);
        const events = await pages[0].$$eval("#events li", (els) => els.map((e) => e.textContent));
        console.error(`events on carol's page, newest first:\n  ${events.join("\n  ")}`);
      }
    } catch (e) {
      console.error(`no failure screenshot: ${e.message}`);
    }
  }
} finally {
  try {
    await browser?.close();
  } catch (e) {
    console.error(`closing the browser: ${e.message}`);
  }
  clearTimeout(timer);
}
process.exit(code);
