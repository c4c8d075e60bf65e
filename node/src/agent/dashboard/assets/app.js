// The m2m dashboard: polls the agent's read-only API and draws what it answers. No framework,
// no network beyond this origin (the page's CSP allows nothing else). Text goes in with
// textContent only: peer names, resources and reasons come from other machines.
"use strict";

const SUMMARY_EVERY_MS = 2000;
const BALANCE_EVERY_MS = 15000;
const COLOURS = {
  "evm received": "#2f80ed",
  "evm sent": "#9bbcf0",
  "btc received": "#f2994a",
  "btc sent": "#f6c89a",
  "lightning received": "#9b51e0",
  "lightning sent": "#cfa8f0",
};
const UNITS = { evm: "units", btc: "sat", lightning: "msat" };

// The token arrives in the URL fragment (never sent to a server); keep it for this tab only
// and take it out of the address bar and the history.
function token() {
  const match = /(?:^#|&)token=([0-9a-f]{64})/.exec(location.hash);
  if (match) {
    sessionStorage.setItem("m2m-dashboard-token", match[1]);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("m2m-dashboard-token");
}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: "Bearer " + (token() || "") },
    cache: "no-store",
  });
  if (response.status === 401) {
    throw new Error("not authorised: open the URL `m2m dashboard` prints");
  }
  if (!response.ok) {
    throw new Error(path + ": HTTP " + response.status);
  }
  return response.json();
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? ""));
  }
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

// Amounts are decimal strings of up to 128 bits: group digits without Number().
function grouped(text) {
  const digits = String(text ?? "");
  return /^\d+$/.test(digits) ? digits.replace(/\B(?=(\d{3})+(?!\d))/g, " ") : digits;
}

function ether(wei) {
  const value = BigInt(wei);
  const unit = 10n ** 18n;
  const fraction = (value % unit).toString().padStart(18, "0").slice(0, 6);
  return grouped((value / unit).toString()) + "." + fraction;
}

function short(id) {
  const text = String(id ?? "");
  return text.length > 20 ? text.slice(0, 10) + "…" + text.slice(-6) : text;
}

function tile(id, label, value, unit) {
  return el("div", { class: "tile" },
    el("div", { class: "label" }, label),
    el("div", { class: "value", id }, value),
    el("div", { class: "unit" }, unit || ""));
}

function setError(text) {
  const problem = document.getElementById("problem");
  problem.hidden = !text;
  problem.textContent = text || "";
  const state = document.getElementById("state");
  state.className = "state " + (text ? "down" : "live");
  state.textContent = text ? "not reachable" : "live";
}

function showStatus(status) {
  document.getElementById("ethereum").textContent = status.ethereum || "";
  document.getElementById("bitcoin").textContent = status.bitcoin || "";
  document.getElementById("tls-pin").textContent = status.tlsPin || "";
  const serving = [];
  for (const [name, key] of [["EVM seller", "evm"], ["Bitcoin seller", "btc"], ["gateway", "gateway"]]) {
    if (status[key]) serving.push(name + " " + status[key]);
  }
  if (status.evmPaidReadings != null) serving.push(status.evmPaidReadings + " EVM readings sold");
  if (status.btcPaidReadings != null) serving.push(status.btcPaidReadings + " Bitcoin readings sold");
  document.getElementById("serving").textContent = serving.join(" · ") || "buying only";
}

function showChannels(rows) {
  const body = document.querySelector("#channels tbody");
  body.replaceChildren();
  if (!Array.isArray(rows)) {
    body.append(el("tr", {}, el("td", { colspan: 10 }, rows && rows.error)));
    return;
  }
  document.getElementById("channel-count").textContent = rows.length;
  for (const row of rows) {
    const deadline = row.withdrawReadyAt
      ? "withdrawal " + new Date(row.withdrawReadyAt * 1000).toLocaleTimeString()
      : row.expiryHeight ? "expires at block " + row.expiryHeight : "";
    const cell = (field, text, cls) => el("td", { "data-field": field, class: cls, title: text }, text);
    body.append(el("tr", { "data-id": row.id, "data-leg": row.leg, "data-role": row.role },
      cell("leg", row.leg),
      cell("role", row.role),
      el("td", { class: "mono", title: row.id }, short(row.id)),
      el("td", { class: "mono", title: row.peer }, short(row.peer)),
      el("td", { class: "mono", title: row.asset }, short(row.asset)),
      cell("capacity", grouped(row.capacity), "num"),
      cell("paid", grouped(row.paid ?? row.spendable ?? ""), "num"),
      cell("claimed", grouped(row.claimed ?? ""), "num"),
      cell("state", row.state),
      el("td", {}, deadline)));
  }
}

function showActivity(activity) {
  const totals = document.getElementById("totals");
  totals.replaceChildren();
  for (const series of activity.series) {
    const name = series.leg + "-" + series.direction;
    totals.append(tile("total-" + name + "-count", series.leg + " " + series.direction,
      grouped(String(series.totalCount)), "payments"));
    totals.append(tile("total-" + name + "-amount", series.leg + " " + series.direction,
      grouped(series.totalAmount), UNITS[series.leg]));
  }
  if (!activity.series.length) totals.append(el("p", { class: "muted" }, "no payments yet"));
  drawChart(activity);
}

// The smallest 1, 2 or 5 × 10^k at or above `value`, so that axis labels are round.
function roundUp(value) {
  let step = 1;
  while (step * 5 < value) step *= 10;
  return [step, 2 * step, 5 * step, 10 * step].find((candidate) => candidate >= value);
}

// One group of bars per minute, one bar per leg and direction, heights in payments.
function drawChart(activity) {
  const chart = document.getElementById("chart");
  chart.replaceChildren();
  const [width, height, left, right, bottom, top] = [800, 220, 44, 8, 24, 10];
  const minutes = activity.minutes;
  const most = roundUp(Math.max(1, ...activity.series.flatMap((s) => s.counts)));
  const slot = (width - left - right) / Math.max(1, minutes.length);
  const y = (count) => height - bottom - (count * (height - bottom - top)) / most;
  for (const value of [0, most / 2, most]) {
    if (!Number.isInteger(value)) continue;
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }));
    const label = svg("text", { x: left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" });
    label.textContent = String(value);
    chart.append(label);
  }
  for (const [x, anchor, text] of [[left, "start", "−60 min"], [width - right, "end", "now"]]) {
    const label = svg("text", { x, y: height - 6, class: "axis", "text-anchor": anchor });
    label.textContent = text;
    chart.append(label);
  }
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  const count = Math.max(1, activity.series.length);
  activity.series.forEach((series, k) => {
    const name = series.leg + " " + series.direction;
    const colour = COLOURS[name] || "#555";
    const group = svg("g", { fill: colour, "data-series": name });
    series.counts.forEach((value, i) => {
      if (!value) return;
      const bar = svg("rect", {
        x: left + i * slot + (k * slot) / count,
        y: y(value),
        width: Math.max(1, slot / count - 1),
        height: y(0) - y(value),
      });
      const tip = svg("title");
      tip.textContent = name + ": " + value + " at " + new Date(minutes[i] * 1000).toLocaleTimeString();
      bar.append(tip);
      group.append(bar);
    });
    chart.append(group);
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = colour;
    legend.append(el("span", {}, swatch, name));
  });
}

// What the channels hold, per leg: earned as payee (and not yet claimed on EVM), and what is
// left to spend in the channels this device pays on.
function showChannelBalances(rows) {
  const tiles = document.getElementById("channel-balances");
  tiles.replaceChildren();
  if (!Array.isArray(rows)) return;
  const legs = [...new Set(rows.map((row) => row.leg))];
  for (const leg of legs) {
    const mine = rows.filter((row) => row.leg === leg);
    const sum = (list, pick) => list.reduce((total, row) => total + BigInt(pick(row) ?? 0), 0n);
    const payee = mine.filter((row) => row.role === "payee");
    const payer = mine.filter((row) => row.role === "payer" && row.paid != null);
    const unit = UNITS[leg] === "msat" ? "sat" : UNITS[leg];
    if (payee.length) {
      tiles.append(tile("channels-" + leg + "-earned", leg + " earned in channels",
        grouped(sum(payee, (row) => row.paid ?? 0).toString()), unit));
      if (leg === "evm") {
        tiles.append(tile("channels-" + leg + "-unclaimed", leg + " not yet claimed",
          grouped((sum(payee, (row) => row.paid) - sum(payee, (row) => row.claimed)).toString()), unit));
      }
    }
    if (payer.length) {
      tiles.append(tile("channels-" + leg + "-left", leg + " left to spend",
        grouped((sum(payer, (row) => row.capacity) - sum(payer, (row) => row.paid)).toString()), unit));
    }
  }
}

function showBudget(legs) {
  const budget = document.getElementById("budget");
  budget.replaceChildren();
  if (!Array.isArray(legs)) {
    budget.append(el("p", { class: "problem" }, legs && legs.error));
    return;
  }
  for (const leg of legs) {
    const perDay = leg.caps ? BigInt(leg.caps.perDay) : 0n;
    const spent = leg.day.reduce((sum, entry) => sum + BigInt(entry.spent), 0n);
    const share = perDay > 0n ? Number((spent * 1000n) / perDay) / 10 : 0;
    const bar = el("div", { class: "bar" }, el("div", { class: "fill" }));
    bar.firstChild.style.width = Math.min(100, share) + "%";
    bar.classList.toggle("high", share >= 80);
    budget.append(el("div", { class: "gauge", id: "budget-" + leg.leg },
      el("div", { class: "label" }, leg.leg + (leg.caps ? "" : " (no caps)")),
      bar,
      el("div", { class: "muted" }, leg.caps
        ? grouped(spent.toString()) + " of " + grouped(leg.caps.perDay) + " today (" + share + " %), at most "
          + grouped(leg.caps.perRequest) + " a payment, " + grouped(leg.caps.perPayeePerHour) + " a payee an hour"
        : grouped(spent.toString()) + " today")));
  }
  if (!legs.length) budget.append(el("p", { class: "muted" }, "no buying legs"));
}

function showEvents(recent) {
  const list = document.getElementById("events");
  list.replaceChildren();
  for (const event of recent) {
    const when = new Date(event.at * 1000).toLocaleTimeString();
    let text = event.event.replace(/_/g, " ");
    if (event.amount !== undefined) {
      text += ": " + grouped(String(event.amount)) + " " + (UNITS[event.leg] || "") + " on " + event.leg
        + " (" + event.scheme + ") for " + event.resource;
    } else if (event.reason) {
      text += ": " + (event.url || event.payee || "") + " — " + event.reason;
    } else if (event.leg) {
      text += " on " + event.leg + (event.channels ? " (" + event.channels + " channels)" : "")
        + (event.id ? " " + short(event.id) : "") + (event.txid ? " " + short(event.txid) : "");
    }
    list.append(el("li", { "data-event": event.event }, el("time", {}, when), " ", text));
  }
  if (!recent.length) list.append(el("li", { class: "muted" }, "nothing yet"));
}

function showBalance(answer) {
  const tiles = document.getElementById("balances");
  tiles.replaceChildren();
  const { evm, bitcoin, lightning } = answer.balance;
  const failed = (leg, part) => tiles.append(tile("balance-" + leg + "-error", leg, "—", part.error));
  if (evm && evm.error) failed("evm", evm);
  else if (evm) {
    tiles.append(tile("balance-evm-eth", "ETH (chain " + evm.chainId + ")", ether(evm.wei), "ETH"));
    for (const token of evm.tokens) {
      tiles.append(tile("balance-evm-" + token.token, "token " + short(token.token),
        grouped(token.balance), "units"));
    }
  }
  if (bitcoin && bitcoin.error) failed("btc", bitcoin);
  else if (bitcoin) {
    tiles.append(tile("balance-btc-confirmed", "Bitcoin wallet", grouped(bitcoin.confirmedSats),
      "sat confirmed, " + grouped(bitcoin.pendingSats) + " pending"));
  }
  if (lightning) {
    tiles.append(tile("balance-ln-channels", "Lightning channels", grouped(lightning.channelSats), "sat"));
    tiles.append(tile("balance-ln-onchain", "Lightning on-chain", grouped(lightning.onchainSats), "sat"));
  }
  if (!tiles.children.length) tiles.append(el("p", { class: "muted" }, "no chain configured"));

  const topups = document.getElementById("topups");
  topups.replaceChildren();
  for (const request of answer.topUps) {
    topups.append(el("figure", { "data-leg": request.leg },
      request.qr ? el("img", { src: request.qr, alt: "QR code: " + request.uri, width: 180, height: 180 }) : "",
      el("figcaption", {}, el("strong", { title: request.label }, short(request.label)), el("br"),
        el("span", { class: "mono uri" }, request.uri))));
  }
  if (!answer.topUps.length) topups.append(el("p", { class: "muted" }, "no address to show"));
}

let summaryShown = false;
let balanceShown = false;

function markReady() {
  if (summaryShown && balanceShown) document.body.dataset.ready = "1";
}

async function refreshSummary() {
  try {
    const summary = await api("/dashboard/api/summary");
    showStatus(summary.status);
    showChannels(summary.channels);
    showChannelBalances(summary.channels);
    showActivity(summary.activity);
    showBudget(summary.budget);
    showEvents(summary.activity.recent);
    document.getElementById("updated").textContent =
      "updated " + new Date(summary.activity.now * 1000).toLocaleTimeString();
    setError(null);
    summaryShown = true;
    markReady();
  } catch (error) {
    setError(error.message);
  }
}

async function refreshBalance() {
  try {
    showBalance(await api("/dashboard/api/balance"));
    balanceShown = true;
    markReady();
  } catch (error) {
    setError(error.message);
  }
}

token();
refreshSummary();
refreshBalance();
setInterval(refreshSummary, SUMMARY_EVERY_MS);
setInterval(refreshBalance, BALANCE_EVERY_MS);
