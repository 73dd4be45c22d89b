// walproto's decoding under wasm: the inspector module, run in Node.js through the page's own
// loader (web/walcap.js), over every recorded capture in testdata/ and over bad input.
//
//   node crates/inspector/tests/node.mjs MODULE.wasm TESTDATA_DIR
//
// Run by `cargo xtask wasm --test`. Exits 1 on the first difference, naming it.

import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { compile, inspect } from "../web/walcap.js";

const [wasmPath, testdata] = process.argv.slice(2);
if (!wasmPath || !testdata) {
  console.error("usage: node tests/node.mjs MODULE.wasm TESTDATA_DIR");
  process.exit(2);
}
const module = await compile(readFileSync(wasmPath));

function fail(what) {
  console.error(`FAIL ${what}`);
  process.exit(1);
}

// Every recorded capture decodes in wasm to its expected lines, which the CLI's test pins to
// `walstream decode`'s output; and each line's index entry points at a whole XLogData frame.
const captures = readdirSync(testdata).filter((f) => f.endsWith(".walcap")).sort();
if (captures.length === 0) fail(`no captures in ${testdata}`);
let total = 0;
for (const name of captures) {
  const file = new Uint8Array(readFileSync(join(testdata, name)));
  const expected = readFileSync(join(testdata, name.replace(/\.walcap$/, ".jsonl")), "utf8");
  const got = await inspect(module, file);
  if (got.error !== null) fail(`${name}: ${got.error}`);
  if (got.jsonl !== expected) {
    const a = got.jsonl.split("\n");
    const b = expected.split("\n");
    const i = a.findIndex((line, n) => line !== b[n]);
    fail(`${name}: line ${i + 1} differs\n  wasm:     ${a[i]}\n  expected: ${b[i]}`);
  }
  let end = 0;
  for (const [i, m] of got.messages.entries()) {
    const view = new DataView(file.buffer, file.byteOffset);
    if (m.offset < end || m.offset + m.length > file.length || view.getUint32(m.offset) !== m.length - 4 || file[m.offset + 4] !== 0x77) {
      fail(`${name}: message ${i} has frame offset ${m.offset} and length ${m.length}, which is not its XLogData frame`);
    }
    end = m.offset + m.length;
  }
  const xids = got.messages.filter((m) => m.xid !== null).length;
  if (xids === 0) fail(`${name}: no message was given a transaction`);
  total += got.messages.length;
  console.log(`ok ${name}: ${got.messages.length} lines identical to ${name.replace(/\.walcap$/, ".jsonl")}`);
}

// Bad input: a clear error, the lines before it kept, never a trap.
const good = new Uint8Array(readFileSync(join(testdata, "pg16-v2-stream.walcap")));
const goodLines = readFileSync(join(testdata, "pg16-v2-stream.jsonl"), "utf8");
// The magic ends in a newline, the header line after it too.
const firstFrame = good.indexOf(0x0a, 8) + 1;
// The first XLogData frame's pgoutput tag: after the 4-byte length, 'w' and the 24-byte
// XLogData header. Frames before it are keepalives.
let xlog = firstFrame;
while (good[xlog + 4] !== 0x77) xlog += 4 + new DataView(good.buffer).getUint32(xlog);
const corrupt = good.slice();
corrupt[xlog + 4 + 25] = 0xff;
const bad = [
  ["an empty file", new Uint8Array(0), /^byte offset 0: the file ends after 0 bytes/],
  ["a PNG image", new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0]), /not a WALCAP1 capture file/],
  ["a JSON file", new TextEncoder().encode('{"type":"begin"}\n'), /not a WALCAP1 capture file/],
  ["the module itself", new Uint8Array(readFileSync(wasmPath)), /not a WALCAP1 capture file/],
  ["a capture cut in its magic", good.slice(0, 5), /the file ends after 5 bytes, before the header line's newline/],
  ["a capture cut in its header", good.slice(0, 40), /the file ends after 40 bytes, before the header line's newline/],
  ["a header that is not JSON", new TextEncoder().encode("WALCAP1\nnot json\n"), /^byte offset 8, capture header: /],
  ["a capture cut in a length prefix", good.slice(0, firstFrame + 2), /truncated frame: the file ends after 2 of the 4 bytes/],
  ["a capture cut in a frame", good.slice(0, good.length - 3), /truncated frame: its length prefix says \d+ bytes of payload but the file ends after \d+ of them/],
  ["a capture with an unknown message type", corrupt, /message type 0xff at LSN .*: unknown message type/],
];
for (const dir of ["capture_file", "capture_header"]) {
  const path = join(testdata, "malformed", dir);
  for (const name of readdirSync(path)) {
    const bytes = new Uint8Array(readFileSync(join(path, name)));
    bad.push([`malformed/${dir}/${name}`, bytes, null]);
    if (dir === "capture_header") {
      // The header fuzz target's input is the header line alone: also as a capture's header.
      const wrapped = new Uint8Array([...new TextEncoder().encode("WALCAP1\n"), ...bytes, 0x0a]);
      bad.push([`malformed/${dir}/${name} as a header`, wrapped, /^byte offset 8, capture header: /]);
    }
  }
}
for (const [what, file, pattern] of bad) {
  let got;
  try {
    got = await inspect(module, file);
  } catch (e) {
    fail(`${what}: the module failed: ${e}`);
  }
  if (got.error === null && pattern !== null) fail(`${what}: decoded without an error`);
  if (pattern !== null && !pattern.test(got.error)) fail(`${what}: error ${JSON.stringify(got.error)} does not match ${pattern}`);
  if (file.length > 100 && file[0] === good[0] && !goodLines.startsWith(got.jsonl)) {
    fail(`${what}: the lines before the error are not the file's first lines`);
  }
  console.log(`ok ${what}: ${got.error}`);
}
console.log(`wasm decode: ${captures.length} captures (${total} lines) and ${bad.length} bad inputs`);
