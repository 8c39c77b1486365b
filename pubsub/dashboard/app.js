// The dashboard: polls /stats, /topics and /nodes once a second, turns counter
// deltas into rates, and drives the topic view. Nothing is shown before a
// request succeeds, so with API_KEY set the page reveals nothing without the key.

import { Api, ApiError, Unauthorized, topicPath } from "/dashboard/api.js";
import { RateChart } from "/dashboard/chart.js";
import { TopicTail } from "/dashboard/tail.js";

const POLL_MS = 1000;
const TAIL_ROWS = 100;
const PAYLOAD_CHARS = 300; // a longer payload is cut in the tail (the whole one is its tooltip)
const ARM_MS = 4000; // how long a Delete button waits for the confirming click
const STALE_NODE_S = 10; // a node whose row is older than this is greyed out

const api = new Api();
const $ = (id) => document.getElementById(id);
const integer = new Intl.NumberFormat("en");

let chart = null; // made when the dashboard first shows: uPlot measures its box
let previous = null; // the last poll's counters, for rates
let topicRates = new Map(); // name -> msg/s of the last poll
let shownTopics = []; // as the table shows them
let nodesMissing = false; // /nodes answered 404: a server without it
let pollTimer = null;
let tail = null; // the open topic's TopicTail
let armed = null; // {name, timer}: the topic whose Delete button waits for a second click

// ------------------------------------------------------------------ polling

async function poll() {
  clearTimeout(pollTimer);
  try {
    // /stats alone first: a refused key then costs one 401, not three.
    const stats = await api.get("/stats");
    const [topics, nodes] = await Promise.all([api.get("/topics"), fetchNodes()]);
    if (!$("key-form").hidden) return; // a concurrent request was refused meanwhile
    showDashboard();
    render(stats, topics.topics, nodes);
    setStatus("live");
  } catch (error) {
    if (error instanceof Unauthorized) return askForKey();
    setStatus(`cannot reach the server (${error.message})`, true);
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

async function fetchNodes() {
  if (nodesMissing) return null;
  try {
    return (await api.get("/nodes")).nodes;
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    nodesMissing = true;
    return null;
  }
}

/** Rates per second from the counters of this poll and the last one. */
function rates(stats, topics, nodes) {
  const before = previous;
  const now = {
    at: performance.now(),
    published: stats.total_messages,
    delivered: stats.delivery.delivered,
    topics: new Map(topics.map((topic) => [topic.name, topic.messages])),
    nodes: new Map((nodes ?? []).map((node) => [node.node_id, node])),
  };
  previous = now;
  const seconds = before ? (now.at - before.at) / 1000 : 0;
  // Counters fall when a topic is deleted or a node restarts: no negative rates.
  const rate = (value, last) =>
    seconds > 0 && last !== undefined ? Math.max(0, value - last) / seconds : null;
  return {
    publish: rate(now.published, before?.published),
    delivery: rate(now.delivered, before?.delivered),
    topic: (name) => rate(now.topics.get(name), before?.topics.get(name)),
    node: (id, field) => rate(now.nodes.get(id)[field], before?.nodes.get(id)?.[field]),
  };
}

function render(stats, topics, nodes) {
  const rate = rates(stats, topics, nodes);
  renderTotals(stats, rate);
  if (rate.publish !== null) chart.add(Date.now() / 1000, rate.publish, rate.delivery);
  topicRates = new Map(topics.map((topic) => [topic.name, rate.topic(topic.name)]));
  renderTopics(topics);
  renderNodes(nodes, rate);
}

// ------------------------------------------------------------------ totals

function renderTotals(stats, rate) {
  $("node-id").textContent = `node ${stats.node_id}`;
  $("total-connections").textContent = integer.format(stats.websocket.total_clients);
  $("total-topics").textContent = integer.format(stats.total_topics);
  $("total-publish-rate").textContent = formatRate(rate.publish);
  $("total-delivery-rate").textContent = formatRate(rate.delivery);
  $("total-dropped").textContent = integer.format(stats.delivery.dropped);
  $("total-slow").textContent = integer.format(stats.delivery.slow_consumer_disconnects);
  const latency = stats.latency; // absent on a server older than the dashboard
  $("latency-p50").textContent = formatMs(latency?.p50_ms);
  $("latency-p99").textContent = formatMs(latency?.p99_ms);
  const samples = latency ? `publish to write, over ${latency.samples} recent messages` : "";
  $("latency-p50").title = $("latency-p99").title = samples;
}

function formatRate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? integer.format(Math.round(value)) : value.toFixed(1);
}

function formatMs(value) {
  if (value === null || value === undefined) return "–";
  return `${value < 10 ? value.toFixed(2) : value.toFixed(1)} ms`;
}

// ------------------------------------------------------------------ tables

/** Make `tbody` hold one row per key, in order; rows are kept (not rebuilt) so
 * that a button stays the same element while the table refreshes under a click. */
function syncRows(tbody, keys, makeRow) {
  const existing = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  keys.forEach((key, index) => {
    let row = existing.get(key);
    existing.delete(key);
    if (row === undefined) {
      row = makeRow(key);
      row.dataset.key = key;
    }
    if (tbody.rows[index] !== row) tbody.insertBefore(row, tbody.rows[index] ?? null);
  });
  for (const row of existing.values()) row.remove();
  return [...tbody.rows];
}

function setCells(row, first, values) {
  values.forEach((value, index) => {
    const cell = row.cells[first + index];
    if (cell.textContent !== value) cell.textContent = value;
  });
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  Object.assign(node, attributes);
  node.textContent = text;
  return node;
}

function makeTopicRow(name) {
  const row = element("tr");
  row.dataset.topic = name;
  const open = element("button", { type: "button", className: "link open" }, name);
  row.append(element("td"), ...[1, 2, 3].map(() => element("td", { className: "num" })));
  row.cells[0].append(open);
  const remove = element("button", { type: "button", className: "danger delete" }, "Delete");
  row.append(element("td"));
  row.cells[4].append(remove);
  return row;
}

function renderTopics(topics) {
  shownTopics = topics;
  const byName = new Map(topics.map((topic) => [topic.name, topic]));
  const rows = syncRows($("topics").tBodies[0], [...byName.keys()], makeTopicRow);
  for (const row of rows) {
    const topic = byName.get(row.dataset.key);
    setCells(row, 1, [
      integer.format(topic.subscribers),
      integer.format(topic.messages),
      formatRate(topicRates.get(topic.name)),
    ]);
    const remove = row.querySelector(".delete");
    remove.textContent = armed?.name === topic.name ? "Confirm delete" : "Delete";
    remove.classList.toggle("armed", armed?.name === topic.name);
  }
  $("no-topics").hidden = topics.length > 0;
}

function makeNodeRow() {
  const row = element("tr");
  row.append(element("td"), ...Array.from({ length: 10 }, () => element("td", { className: "num" })));
  return row;
}

function renderNodes(nodes, rate) {
  $("nodes-panel").hidden = !nodes?.length;
  if (!nodes?.length) return;
  const byId = new Map(nodes.map((node) => [node.node_id, node]));
  const rows = syncRows($("nodes").tBodies[0], [...byId.keys()], makeNodeRow);
  for (const row of rows) {
    const node = byId.get(row.dataset.key);
    const age = Math.max(0, (Date.now() - Date.parse(node.updated_at)) / 1000);
    row.classList.toggle("stale", age > STALE_NODE_S);
    row.classList.toggle("self", node.self);
    setCells(row, 0, [
      node.self ? `${node.node_id} (this page)` : node.node_id,
      integer.format(node.connections),
      integer.format(node.subscribers),
      formatRate(rate.node(node.node_id, "published")),
      formatRate(rate.node(node.node_id, "delivered")),
      integer.format(node.dropped),
      integer.format(node.slow_consumer_disconnects),
      formatMs(node.p50_ms),
      formatMs(node.p99_ms),
      `${node.rss_mb.toFixed(1)} MB`,
      `${Math.round(age)} s ago`,
    ]);
  }
}

// ------------------------------------------------------------------ topic actions

async function refreshTopics() {
  renderTopics((await api.get("/topics")).topics);
}

/** Run a user action; a refused key brings the key form back, any other error is shown. */
async function act(resultId, action) {
  const result = $(resultId);
  result.classList.remove("error");
  try {
    result.textContent = await action();
  } catch (error) {
    if (error instanceof Unauthorized) return askForKey();
    result.textContent = error.message;
    result.classList.add("error");
  }
}

async function createTopic(event) {
  event.preventDefault();
  const input = $("create-name");
  await act("create-result", async () => {
    await api.post("/topics", { name: input.value });
    const created = `created ${input.value}`;
    input.value = "";
    await refreshTopics();
    return created;
  });
}

/** The first click arms the button, a second one within ARM_MS deletes. */
async function deleteClicked(name) {
  if (armed?.name !== name) {
    clearTimeout(armed?.timer);
    armed = { name, timer: setTimeout(disarm, ARM_MS) };
    return refreshTopics();
  }
  disarm();
  await act("create-result", async () => {
    await api.delete(topicPath(name));
    await refreshTopics();
    return `deleted ${name}`;
  });
}

function disarm() {
  clearTimeout(armed?.timer);
  armed = null;
  renderTopics(shownTopics);
}

function topicsClicked(event) {
  const row = event.target.closest("tr");
  if (row === null) return;
  if (event.target.closest(".open")) openTopic(row.dataset.key);
  if (event.target.closest(".delete")) deleteClicked(row.dataset.key);
}

// ------------------------------------------------------------------ topic view

function openTopic(name) {
  closeTopic();
  $("topic-name").textContent = name;
  $("publish-result").textContent = "";
  $("topic-view").hidden = false;
  tail = new TopicTail(api.socketUrl(), name, {
    event: showEvent,
    note: (text) => addTailRow(element("td", { colSpan: 3, className: "note" }, text)),
    status: (text, isError = false) => {
      $("tail-status").textContent = text;
      $("tail-status").classList.toggle("error", isError);
    },
  });
  $("topic-view").scrollIntoView({ block: "nearest" });
}

function closeTopic() {
  tail?.stop();
  tail = null;
  $("tail").tBodies[0].replaceChildren();
  $("topic-view").hidden = true;
}

function showEvent(frame) {
  const payload = JSON.stringify(frame.message.payload);
  const cut = payload.length > PAYLOAD_CHARS ? `${payload.slice(0, PAYLOAD_CHARS)}…` : payload;
  addTailRow(
    element("td", { className: "num" }, String(frame.offset)),
    element("td", {}, frame.message.id),
    element("td", { className: "payload", title: payload }, cut),
  );
}

/** Newest first; the oldest row goes once TAIL_ROWS are shown. */
function addTailRow(...cells) {
  const body = $("tail").tBodies[0];
  const row = element("tr");
  row.append(...cells);
  body.prepend(row);
  while (body.rows.length > TAIL_ROWS) body.lastElementChild.remove();
}

async function publish(event) {
  event.preventDefault();
  const name = $("topic-name").textContent;
  await act("publish-result", async () => {
    let payload;
    try {
      payload = JSON.parse($("publish-payload").value);
    } catch (error) {
      throw new Error(`not JSON: ${error.message}`);
    }
    const answer = await api.post(topicPath(name, "/messages"), { payload });
    return `published at offset ${answer.offset}`;
  });
}

// ------------------------------------------------------------------ key and page state

function askForKey() {
  if (!$("key-form").hidden) return;
  const refused = api.key !== null;
  api.forgetKey();
  clearTimeout(pollTimer);
  hideDashboard();
  $("key-error").textContent = refused ? "The server refused that key. Try again." : "";
  $("key-error").hidden = !refused;
  $("key-form").hidden = false;
  setStatus("needs the API key", true);
  $("key-input").focus();
}

function keyEntered(event) {
  event.preventDefault();
  api.useKey($("key-input").value);
  $("key-input").value = "";
  $("key-form").hidden = true;
  setStatus("checking the key…");
  poll();
}

function showDashboard() {
  $("dashboard").hidden = false;
  chart ??= new RateChart($("chart"));
}

/** Hide and forget everything the server said: a refused key must leave nothing on the page. */
function hideDashboard() {
  $("dashboard").hidden = true;
  closeTopic();
  for (const id of ["topics", "nodes"]) $(id).tBodies[0].replaceChildren();
  shownTopics = [];
  for (const output of document.querySelectorAll(".totals output")) output.textContent = "–";
  $("node-id").textContent = "";
  $("create-result").textContent = "";
  chart?.clear();
  previous = null;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

$("key-form").addEventListener("submit", keyEntered);
$("create-form").addEventListener("submit", createTopic);
$("publish-form").addEventListener("submit", publish);
$("topics").tBodies[0].addEventListener("click", topicsClicked);
$("topic-close").addEventListener("click", closeTopic);
// Without a key, ask for one before any request would be refused (and logged).
if (api.key === null && (await api.keyRequired())) askForKey();
else poll();
