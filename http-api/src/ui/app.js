// The raftmq web console: reads this node's API every second and draws what it finds.
// Changes to the cluster (leader transfer, members) ask for confirmation first.
"use strict";

const $ = (sel) => document.querySelector(sel);
const tokenInput = $("#token");
tokenInput.value = sessionStorage.getItem("raftmq-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("raftmq-token", tokenInput.value));

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (tokenInput.value) headers.authorization = "Bearer " + tokenInput.value;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { json = text; }
  if (!resp.ok) {
    const e = json && json.error ? `${json.error.code}: ${json.error.message}` : `HTTP ${resp.status}`;
    throw new Error(e);
  }
  return json;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}

function button(label, question, action) {
  const td = document.createElement("td");
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", async () => {
    if (!window.confirm(question)) return;
    try { await action(); status(""); } catch (e) { status(e.message); }
    refresh();
  });
  td.append(b);
  return td;
}

function status(msg) { $("#status").textContent = msg; }

async function drawCluster() {
  const c = await api("GET", "/v1/cluster");
  $("#node").textContent = `group ${c.group} · node ${c.node_id}`;
  const groups = (c.groups || []).map((g) => `${g.group} (leader ${g.leader ?? "none"}, ${g.topics} topics)`);
  $("#cluster-summary").textContent =
    `leader ${c.leader_id ?? "none"} · term ${c.term} · commit ${c.commit_index} · applied ${c.applied_index}` +
    (groups.length ? ` · broker groups: ${groups.join(", ")}` : "");
  const top = Math.max(0, ...c.members.map((m) => m.matched_index ?? 0));
  fill($("#members tbody"), c.members.map((m) => [
    cell(m.id, m.id === c.leader_id ? "leader" : ""),
    cell(m.addr),
    cell(m.role),
    cell(m.matched_index ?? "", "num"),
    cell(m.matched_index == null ? "" : top - m.matched_index, "num"),
    m.id === c.leader_id
      ? cell("")
      : button("make leader", `Hand leadership to node ${m.id}?`, () => api("POST", "/v1/cluster/leader", { to: m.id })),
    button("remove", `Remove node ${m.id} from the group?`, () => api("DELETE", `/v1/cluster/members/${m.id}`)),
  ]));
}

$("#add-member").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const body = { id: Number(f.id.value), addr: f.addr.value, voter: f.voter.checked };
  if (!window.confirm(`Add node ${body.id} at ${body.addr}?`)) return;
  try { await api("POST", "/v1/cluster/members", body); status(""); } catch (e) { status(e.message); }
});

async function drawTopics() {
  const { topics } = await api("GET", "/v1/topics");
  const rows = [];
  for (const t of topics) {
    const d = await api("GET", `/v1/topics/${encodeURIComponent(t.name)}`);
    const queues = (d.queue_stats || []).map((q) => `${q.queue}: ${q.min_offset}–${q.max_offset}`).join(", ");
    rows.push([cell(t.name), cell(t.queues, "num"), cell(t.fifo ? "yes" : "no"),
      cell(`${Math.round(t.retention_ms / 3600000)} h`), cell(queues)]);
  }
  fill($("#topics tbody"), rows);
}

async function drawGroups() {
  const { groups } = await api("GET", "/v1/groups");
  const rows = [];
  for (const g of groups) {
    const d = await api("GET", `/v1/groups/${encodeURIComponent(g.name)}`);
    const lag = (d.queues || []).map((q) => `${q.topic}/${q.queue}: ${q.lag}`).join(", ");
    rows.push([cell(g.name), cell(g.mode), cell(lag), cell(d.in_flight, "num"),
      cell(`${d.dlq_depth} in ${d.dlq_topic}`)]);
  }
  fill($("#groups tbody"), rows);
}

// Rates from this node's counters, one point a second.
const series = { t: [], produced: [], consumed: [] };
let last = null;
const chart = new uPlot({
  width: 520, height: 200,
  // The last two minutes, whatever the first points would make of the time axis.
  scales: { x: { time: true, range: (u, min, max) => [max - 120, max] } },
  series: [{}, { label: "produced/s", stroke: "#2a6fdb" }, { label: "consumed/s", stroke: "#23a26d" }],
  axes: [{}, { label: "msgs/s" }],
}, [series.t, series.produced, series.consumed], $("#rates"));
window.raftmqRates = series;

function counter(text, name) {
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

async function drawRates() {
  const headers = tokenInput.value ? { authorization: "Bearer " + tokenInput.value } : {};
  const resp = await fetch("/metrics", { headers });
  if (!resp.ok) return;
  const text = await resp.text();
  const now = { at: Date.now() / 1000, produced: counter(text, "raftmq_produced_messages_total"),
    consumed: counter(text, "raftmq_consumed_messages_total") };
  if (last) {
    const dt = Math.max(now.at - last.at, 0.001);
    series.t.push(now.at);
    series.produced.push((now.produced - last.produced) / dt);
    series.consumed.push((now.consumed - last.consumed) / dt);
    for (const s of Object.values(series)) if (s.length > 300) s.shift();
    chart.setData([series.t, series.produced, series.consumed]);
  }
  last = now;
}

$("#lookup").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const topic = encodeURIComponent(f.topic.value);
  const v = f.value.value.trim();
  let path;
  if (f.by.value === "id") path = `/v1/messages/${encodeURIComponent(v)}`;
  else if (f.by.value === "key") path = `/v1/topics/${topic}/messages?key=${encodeURIComponent(v)}`;
  else {
    const [from, to] = v.split("..");
    path = `/v1/topics/${topic}/messages?from_ms=${Number(from)}&to_ms=${Number(to || Date.now())}`;
  }
  try { $("#found").textContent = JSON.stringify(await api("GET", path), null, 2); status(""); }
  catch (e) { $("#found").textContent = e.message; }
});

async function refresh() {
  try {
    await Promise.all([drawCluster(), drawTopics(), drawGroups(), drawRates()]);
    status("");
  } catch (e) {
    status(e.message);
  }
}

refresh();
setInterval(refresh, 1000);
