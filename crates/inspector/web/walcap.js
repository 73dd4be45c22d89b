// The one caller of the inspector module's exports (crates/inspector/src/wasm.rs), shared by
// the page (app.js) and the Node.js test (tests/node.mjs). No JSON is rendered here: the lines
// come from the module, which writes them with the CLI's own writer.

// The parts of a result, as the module numbers them (PART_* in src/wasm.rs).
const PART_HEADER = 0;
const PART_JSONL = 1;
const PART_ERROR = 2;
const PART_INDEX = 3;

/** Compiles the module's bytes once; `inspect` instantiates it afresh for each file. */
export function compile(wasmBytes) {
  return WebAssembly.compile(wasmBytes);
}

/**
 * Decodes a capture file (a Uint8Array) with a fresh instance of `module`.
 *
 * Returns { header, jsonl, messages, error }: `header` is the capture's header line (JSON),
 * `jsonl` is exactly what `walstream decode` prints for the file (up to the first problem),
 * `messages` has one entry per line
 * ({ line, offset, length, xid }: the line, its frame's file offset and length, and the xid of
 * its transaction or null), and `error` is null or why decoding stopped. Throws only when the
 * file is too large or the module itself fails (a trap), never for what the file holds.
 */
export async function inspect(module, file) {
  // A fresh instance per file: a trap leaves nothing behind for the next one.
  const instance = await WebAssembly.instantiate(module, {});
  const x = instance.exports;
  const ptr = x.walcap_input(file.length) >>> 0;
  if (ptr === 0) {
    throw new Error(`the file is too large for the inspector (${file.length} bytes)`);
  }
  new Uint8Array(x.memory.buffer, ptr, file.length).set(file);
  const count = x.walcap_inspect() >>> 0;
  // Taken after the call: the memory may have grown during it.
  const part = (p) =>
    new Uint8Array(x.memory.buffer, x.walcap_output(p) >>> 0, x.walcap_output_len(p) >>> 0);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const text = (p) => utf8.decode(part(p));
  const indexBytes = part(PART_INDEX).slice();
  const index = new Uint32Array(indexBytes.buffer, 0, indexBytes.length / 4);
  const jsonl = text(PART_JSONL);
  const lines = jsonl === "" ? [] : jsonl.slice(0, -1).split("\n");
  if (lines.length !== count || index.length !== count * 4) {
    throw new Error(`the module returned ${lines.length} lines and ${index.length / 4} index entries for ${count} messages`);
  }
  const messages = lines.map((line, i) => ({
    line,
    offset: index[4 * i],
    length: index[4 * i + 1],
    xid: index[4 * i + 2] ? index[4 * i + 3] : null,
  }));
  const error = text(PART_ERROR);
  return {
    header: text(PART_HEADER),
    jsonl,
    messages,
    error: error === "" ? null : error,
  };
}
