// The page: picks or fetches a capture, decodes it with the wasm module (through walcap.js)
// and shows the transactions, the relations and the selected message's JSON and raw bytes.
// `?file=URL` fetches a capture instead of waiting for a pick, and `&select=N` selects the
// N-th message (from 0): the end-to-end test and the README's screenshot use both.
// <body data-state> is idle, loading, done or error, for a reader that cannot watch the page.

import { compile, inspect } from "./walcap.js";

const $ = (id) => document.getElementById(id);
// The frame layout, for colouring the raw bytes: the 4-byte length prefix, then XLogData's
// 'w' and its 24-byte header (wal_start, wal_end, send_time), then the pgoutput message.
const LENGTH_PREFIX = 4;
const XLOG_HEADER = 25;
// The most bytes the hex view shows of one message.
const HEX_LIMIT = 64 * 1024;
// A change: what a transaction's summary counts.
const CHANGES = new Set(["insert", "update", "delete", "truncate"]);
// The messages that end (or settle) a transaction.
const ENDS = new Set(["commit", "stream_commit", "stream_abort", "prepare", "stream_prepare", "commit_prepared", "rollback_prepared"]);

let modulePromise = null;
let current = null;

function wasmModule() {
  modulePromise ??= fetch("walcap_inspector.wasm").then((r) => {
    if (!r.ok) throw new Error(`the decoder walcap_inspector.wasm could not be loaded: HTTP ${r.status}`);
    return r.arrayBuffer();
  }).then(compile);
  return modulePromise;
}

function setState(state) {
  document.body.dataset.state = state;
}

function showError(text) {
  $("error").textContent = text;
  $("error").classList.remove("hidden");
}

async function open(name, bytesPromise, select = 0) {
  setState("loading");
  $("error").classList.add("hidden");
  $("summary").textContent = `Decoding ${name}…`;
  try {
    const [module, bytes] = await Promise.all([wasmModule(), bytesPromise]);
    const file = new Uint8Array(bytes);
    const found = await inspect(module, file);
    render(name, file, found, select);
    if (found.error !== null) {
      showError(found.messages.length === 0
        ? `${name} cannot be read as a capture: ${found.error}`
        : `${name} stops decoding at ${found.error}. The ${found.messages.length} messages before it are shown.`);
      setState("error");
    } else {
      setState("done");
    }
  } catch (e) {
    $("result").classList.add("hidden");
    $("summary").textContent = name;
    showError(`${name} could not be inspected: ${e.message ?? e}`);
    setState("error");
  }
}

function render(name, file, found, select) {
  const parsed = found.messages.map((m) => JSON.parse(m.line));
  current = { file, found, parsed, selected: null };
  $("drop").classList.add("hidden");
  $("summary").textContent = `${name}: ${file.length} bytes, ${found.messages.length} messages` +
    headerSummary(found.header);
  $("jsonl").textContent = found.jsonl;
  renderTransactions(parsed, found.messages);
  renderRelations(parsed);
  $("result").classList.toggle("hidden", found.messages.length === 0);
  if (found.messages.length > 0) selectMessage(Math.min(Math.max(select, 0), found.messages.length - 1));
}

// The capture header's options, from its JSON line (as `walstream record` wrote them).
function headerSummary(header) {
  let fields;
  try {
    fields = JSON.parse(header);
  } catch {
    return "";
  }
  const parts = [];
  if (fields.server_version) parts.push(`PostgreSQL ${fields.server_version}`);
  for (const [key, value] of Object.entries(fields)) {
    if (key === "server_version" || key === "server_version_num" || value === null) continue;
    parts.push(`${key} ${Array.isArray(value) ? value.join(",") : value}`);
  }
  return parts.length ? ` · ${parts.join(" · ")}` : "";
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function renderTransactions(parsed, messages) {
  const groups = new Map();
  messages.forEach((m, i) => {
    const key = m.xid ?? "none";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(i);
  });
  const box = $("txns");
  box.replaceChildren();
  for (const [key, items] of groups) {
    const details = el("details", "txn");
    details.dataset.key = String(key);
    const kinds = items.map((i) => parsed[i].type);
    const changes = kinds.filter((k) => CHANGES.has(k)).length;
    const ends = items.filter((i) => ENDS.has(parsed[i].type));
    const last = ends.length ? parsed[ends[ends.length - 1]] : null;
    const streamed = kinds.includes("stream_start") ? " · streamed" : "";
    const title = key === "none" ? "outside transactions" : `xid ${key}`;
    const end = last ? ` · ${last.type} ${last.commit_lsn ?? last.end_lsn ?? last.lsn}` : " · not ended";
    details.append(el("summary", null, `${title} · ${changes} change${changes === 1 ? "" : "s"}${streamed}${end}`));
    const list = el("ol");
    for (const i of items) {
      const p = parsed[i];
      const li = el("li", "msg mono");
      li.dataset.i = String(i);
      li.value = i + 1;
      li.append(el("span", "kind", p.type));
      const what = p.table !== undefined && p.schema !== undefined ? `${p.schema}.${p.table}` : (p.gid ?? p.prefix ?? p.name ?? "");
      li.append(document.createTextNode(`${what} `), el("span", "dim", p.lsn));
      list.append(li);
    }
    details.append(list);
    box.append(details);
  }
}

function renderRelations(parsed) {
  const relations = new Map();
  for (const p of parsed) if (p.type === "relation") relations.set(p.relation_id, p);
  const body = $("relations").tBodies[0];
  body.replaceChildren();
  for (const r of relations.values()) {
    const tr = el("tr");
    const cols = r.columns.map((c) => `${c.name}${c.key ? " (key)" : ""} oid ${c.type_oid}`).join(", ");
    tr.append(el("td", "mono", `${r.schema}.${r.table}`), el("td", "mono", String(r.relation_id)),
      el("td", null, r.replica_identity), el("td", "mono", cols));
    body.append(tr);
  }
  if (relations.size === 0) {
    const tr = el("tr");
    tr.append(el("td", "dim", "none"));
    body.append(tr);
  }
}

function selectMessage(i) {
  const { file, found, parsed } = current;
  const m = found.messages[i];
  document.querySelectorAll(".msg.selected").forEach((e) => e.classList.remove("selected"));
  const li = document.querySelector(`.msg[data-i="${i}"]`);
  if (li) {
    li.classList.add("selected");
    li.closest("details").open = true;
    li.scrollIntoView({ block: "nearest" });
  }
  current.selected = i;
  $("selected-title").textContent = `Message ${i + 1} of ${found.messages.length}: ${parsed[i].type} at LSN ${parsed[i].lsn}`;
  $("json-one").textContent = JSON.stringify(parsed[i], null, 2);
  const pg = m.length - LENGTH_PREFIX - XLOG_HEADER;
  $("hex-title").textContent = `Raw bytes: frame at byte offset ${m.offset}, ${m.length} bytes ` +
    `(${LENGTH_PREFIX} length, ${XLOG_HEADER} XLogData header, ${pg} pgoutput message)`;
  renderHex(file.subarray(m.offset, m.offset + Math.min(m.length, HEX_LIMIT)), m.offset, m.length);
}

function renderHex(bytes, base, total) {
  const hex = $("hex");
  hex.replaceChildren();
  const cls = (k) => (k < LENGTH_PREFIX ? "len" : k < LENGTH_PREFIX + XLOG_HEADER ? "xlog" : k === LENGTH_PREFIX + XLOG_HEADER ? "tag" : "");
  for (let row = 0; row < bytes.length; row += 16) {
    hex.append(document.createTextNode((base + row).toString(16).padStart(8, "0") + "  "));
    let ascii = "";
    for (let k = row; k < row + 16; k++) {
      if (k < bytes.length) {
        const b = bytes[k];
        const c = cls(k);
        const text = b.toString(16).padStart(2, "0");
        hex.append(c ? el("span", c, text) : document.createTextNode(text), document.createTextNode(k % 8 === 7 ? "  " : " "));
        ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
      } else {
        hex.append(document.createTextNode(k % 8 === 7 ? "    " : "   "));
      }
    }
    hex.append(document.createTextNode(`|${ascii}|\n`));
  }
  if (total > bytes.length) hex.append(document.createTextNode(`… ${total - bytes.length} more bytes`));
}

$("txns").addEventListener("click", (e) => {
  const li = e.target.closest(".msg");
  if (li) selectMessage(Number(li.dataset.i));
});

$("pick").addEventListener("change", () => {
  const f = $("pick").files[0];
  if (f) open(f.name, f.arrayBuffer());
});

document.addEventListener("dragover", (e) => {
  e.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (e) => {
  e.preventDefault();
  document.body.classList.remove("dragging");
  const f = e.dataTransfer.files[0];
  if (f) open(f.name, f.arrayBuffer());
});

const params = new URLSearchParams(location.search);
const url = params.get("file");
if (url !== null) {
  const name = url.split("/").pop() || url;
  open(name, fetch(url).then((r) => {
    if (!r.ok) throw new Error(`HTTP ${r.status} ${r.statusText} for ${url}`);
    return r.arrayBuffer();
  }), Number(params.get("select") ?? 0));
}
