// Shared by the tokenizer playground and the shard browser (service/pages.py).
// Everything a request returns is put into the page with textContent, never as HTML: a document or a
// tokenizer file may hold any text at all.
"use strict";

const PALETTE = 8;   // .c0 .. .c7 in pages.css

/** A refusal of the service: its HTTP status and its {"error": code, "message": ...} body. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Call one of the service's JSON endpoints; resolve to the parsed answer, or reject with an ApiError that
 *  carries the service's own code and message (or says why there was no JSON answer at all). */
async function api(method, url, body, signal) {
  let response;
  try {
    response = await fetch(url, {
      method,
      signal,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "no_answer", `the service did not answer (${e.message}): is it still running?`);
  }
  const text = await response.text();
  let data = null;
  try { data = JSON.parse(text); } catch (e) { /* not JSON: said below */ }
  if (!response.ok) {
    if (data && typeof data.error === "string") throw new ApiError(response.status, data.error, data.message);
    throw new ApiError(response.status, "http_" + response.status, text.slice(0, 500) || response.statusText);
  }
  if (data === null) throw new ApiError(response.status, "not_json", "the answer is not JSON");
  return data;
}

/** Show a refusal in `box`: the status and code, then the service's message as it is. */
function showError(box, err) {
  box.textContent = "";
  const code = document.createElement("span");
  code.className = "code";
  code.textContent = err.status ? `${err.status} ${err.code}` : err.code || "error";
  const message = document.createElement("span");
  message.className = "message";
  message.textContent = err.message;
  box.append(code, message);
  box.dataset.code = err.code || "";
  box.hidden = false;
}

function clearError(box) {
  box.hidden = true;
  box.textContent = "";
  delete box.dataset.code;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

const fmt = (n) => Number(n).toLocaleString("en-US");

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** What hovering a token says: id and rank, its bytes, and how it was made. */
function tokenTitle(id, info) {
  const lines = [`id ${id}`];
  if (info.kind === "special") lines.push("special token (never made by a merge)");
  else if (info.kind === "byte") lines.push(`rank ${info.rank}: a single byte, one of the 256 base tokens`);
  else if (info.merge) lines.push(`rank ${info.rank}: merge of ${info.merge[0]} ${JSON.stringify(info.merge_text[0])} `
                                  + `+ ${info.merge[1]} ${JSON.stringify(info.merge_text[1])}`);
  else lines.push(`rank ${info.rank}`);
  lines.push(`bytes: ${info.hex}`);
  if (info.partial) lines.push("not whole UTF-8 characters: the bytes shown <0x..> belong to a character "
                               + "that a neighbouring token completes");
  return lines.join("\n");
}

/** The text of a token as it is shown: newlines marked (and kept, unless `breakLines` is false), bytes that
 *  are not whole characters as <0xNN>. */
function tokenContent(info, breakLines = true) {
  const parts = [];
  const pieces = info.partial ? info.text.split(/(<0x[0-9A-F]{2}>)/) : [info.text];
  for (const piece of pieces) {
    if (!piece) continue;
    if (info.partial && /^<0x[0-9A-F]{2}>$/.test(piece)) {
      parts.push(el("span", { className: "byte" }, piece));
      continue;
    }
    const lines = piece.split("\n");
    lines.forEach((line, i) => {
      if (i > 0) parts.push(el("span", { className: "nl" }, "↵"), ...(breakLines ? ["\n"] : []));
      if (line) parts.push(line);
    });
  }
  return parts;
}

/** One coloured span per token id; `infos` maps an id (as a string) to what the service says of it. */
function renderTokens(box, ids, infos, breakLines = true) {
  box.textContent = "";
  const fragment = document.createDocumentFragment();
  ids.forEach((id, i) => {
    const info = infos ? infos[String(id)] : null;
    const span = el("span", { className: `tok c${i % PALETTE}`, dataset: { id: String(id), index: String(i) } });
    if (info) {
      if (info.kind === "special") span.classList.add("special");
      if (info.partial) span.classList.add("partial");
      span.title = tokenTitle(id, info);
      span.append(...tokenContent(info, breakLines));
    } else {
      span.title = `id ${id} (no tokenizer file: ids only)`;
      span.textContent = `[${id}]`;
    }
    fragment.append(span);
  });
  box.append(fragment);
}
