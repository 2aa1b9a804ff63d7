// The shard browser: one recipe's stage manifests, its shards with their sha256 status, the document-length
// histogram (drawn here as SVG), the most frequent tokens, and any document, a page of tokens at a time.
// Order of work: the overview, then sha256 of each small shard (one request per shard), then the statistics
// and the document: the service refuses to read a shard it knows is damaged, and says so.
"use strict";

const params = new URLSearchParams(location.search);
const $ = (selector) => document.querySelector(selector);
const banner = $("#error");
const SPLIT_COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];
const state = { recipe: null, overview: null, rows: new Map(), doc: null, openedId: null, offset: 0, limit: 1000 };

const url = (tail) => `/pages/api/shards/${encodeURIComponent(state.recipe)}${tail}`;

// ---- stage manifests
function renderStages(stages) {
  const list = $("#stages .list");
  list.textContent = "";
  if (!stages.length) list.append(el("p", { className: "muted" }, "no finished stage yet"));
  for (const stage of stages) {
    const status = stage.ok ? el("span", { className: "status-ok" }, "manifest ok")
      : el("span", { className: "status-damaged" }, stage.problem);
    const outputs = stage.outputs
      ? `${fmt(stage.outputs.files)} output files, ${fmtBytes(stage.outputs.bytes)}` : "";
    const details = el("details", { dataset: { stage: stage.stage } },
      el("summary", {}, el("b", {}, stage.stage), "  ", el("span", { className: "muted" }, `${stage.path} · ${outputs} · `), status));
    if (stage.config !== undefined) {
      details.append(el("div", { className: "muted" }, "config (the recipe section used)"),
                     el("pre", {}, JSON.stringify(stage.config, null, 2)),
                     el("div", { className: "muted" }, "inputs (fingerprints of what was read)"),
                     el("pre", {}, JSON.stringify(stage.inputs, null, 2)),
                     el("div", { className: "muted" }, "facts"),
                     el("pre", {}, JSON.stringify(stage.facts, null, 2)),
                     el("div", { className: "muted" }, `outputs (path, bytes, sha256)${stage.outputs.files > stage.outputs.listed.length ? `: the first ${stage.outputs.listed.length}` : ""}`),
                     el("pre", {}, stage.outputs.listed.map((o) => `${o.path}  ${fmt(o.bytes)}  ${o.sha256}`).join("\n")),
                     el("div", { className: "muted" }, `manifest_sha256: ${stage.checksum || "(none: written before manifests had one)"}`));
    }
    list.append(details);
  }
}

// ---- shards and their checksums
function statusCell(row) {
  const cell = row.cell;
  cell.textContent = "";
  const text = { ok: "✓ matches the manifest", damaged: "✗ " + (row.message || "damaged"),
                 unchecked: row.auto ? "checking…" : "not checked (big: verify it)" }[row.status];
  cell.append(el("span", { className: `status-${row.status}` }, text));
  cell.parentElement.dataset.status = row.status;
}

function renderShards(shards) {
  const body = $("#shards tbody");
  body.textContent = "";
  state.rows.clear();
  const splitSelect = $("#split");
  splitSelect.textContent = "";
  for (const [split, info] of Object.entries(shards.splits)) {
    splitSelect.append(el("option", { value: split }, `${split} (${fmt(info.documents)} documents)`));
    for (const shard of info.shards) {
      const cell = el("td");
      const tr = el("tr", { dataset: { split, shard: String(shard.index), path: shard.path } },
        el("td", {}, split), el("td", {}, shard.path + (shard.index_path ? ` + ${shard.index_path}` : "")),
        el("td", { className: "num" }, fmtBytes(shard.bytes)), el("td", { className: "num" }, fmt(shard.tokens)),
        el("td", { className: "num" }, fmt(shard.documents)), cell);
      body.append(tr);
      const row = { ...shard, split, cell };
      state.rows.set(`${split}/${shard.index}`, row);
      statusCell(row);
    }
  }
  const total = Object.values(shards.splits).reduce((n, s) => n + s.tokens, 0);
  $("#summary").textContent = `${shards.format} shards, ${shards.dtype}, vocabulary ${fmt(shards.vocab_size)} `
    + `(eot ${shards.eot_id}), ${fmt(total)} tokens · tokenizer ${shards.tokenizer.name || "?"} `
    + `${shards.tokenizer.fingerprint.slice(0, 16)}${shards.tokenizer.available ? "" : " (file missing: ids only)"}`;
}

async function verifyRows(rows) {
  const progress = $("#shards .progress");
  let done = 0;
  for (const row of rows) {
    progress.textContent = `sha256: ${done} of ${rows.length} shards checked…`;
    try {
      const verdict = await api("POST", url("/verify"), { split: row.split, shard: row.index });
      Object.assign(row, { status: verdict.status, message: verdict.message });
    } catch (err) {
      Object.assign(row, { status: "damaged", message: err.message });
    }
    statusCell(row);
    done++;
  }
  const rowsAll = [...state.rows.values()];
  const bad = rowsAll.filter((r) => r.status === "damaged");
  const unchecked = rowsAll.filter((r) => r.status === "unchecked").length;
  progress.textContent = `sha256: ${fmt(rowsAll.length - unchecked)} of ${fmt(rowsAll.length)} shards checked, `
    + `${bad.length ? `${bad.length} damaged` : "all match the manifest"}`
    + (unchecked ? ` · ${fmt(unchecked)} bigger than 16 MB not checked yet` : "");
  if (bad.length) showError($("#shards .error"), new ApiError(409, "shard_damaged", bad[0].message));
  $("#shards").dataset.state = "checked";
}

// ---- histogram, drawn as SVG from the numbers (the same bins as make inspect's PNG)
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function drawHistogram(box, histogram) {
  box.textContent = "";
  const edges = histogram.edges;
  const splits = Object.entries(histogram.splits);
  const W = 720, left = 52, right = 12, bottom = 46, top = 20 + 18 * splits.length;   // the legend sits on top
  const H = top + 250;
  const maxShare = Math.max(0.01, ...splits.flatMap(([, s]) => s.shares));
  const lo = Math.log10(edges[0]), hi = Math.log10(edges[edges.length - 1]);
  const x = (v) => left + (Math.log10(v) - lo) / Math.max(1e-9, hi - lo) * (W - left - right);
  const y = (share) => H - bottom - share / maxShare * (H - top - bottom);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "histogram", role: "img",
                            "aria-label": "document lengths per split" });
  plot.append(svg("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: "axis" }),
              svg("line", { x1: left, y1: top, x2: left, y2: H - bottom, class: "axis" }));
  for (let p = Math.ceil(lo); p <= Math.floor(hi); p++) {
    const at = x(10 ** p);
    plot.append(svg("line", { x1: at, y1: H - bottom, x2: at, y2: H - bottom + 5, class: "axis" }),
                svg("text", { x: at, y: H - bottom + 17, "text-anchor": "middle" }, fmt(10 ** p)));
  }
  for (const f of [0, 0.5, 1]) {
    plot.append(svg("text", { x: left - 6, y: y(maxShare * f) + 4, "text-anchor": "end" }, `${(maxShare * f * 100).toFixed(0)}%`));
  }
  plot.append(svg("text", { x: (left + W - right) / 2, y: H - 8, "text-anchor": "middle" }, "document length (tokens, incl. eot; log axis)"));
  splits.forEach(([split, data], k) => {
    const colour = SPLIT_COLOURS[k % SPLIT_COLOURS.length];
    const group = svg("g", { "data-split": split });
    data.shares.forEach((share, i) => {
      if (!share) return;
      const bar = svg("rect", { x: x(edges[i]), y: y(share), width: Math.max(1, x(edges[i + 1]) - x(edges[i])),
                                height: H - bottom - y(share), fill: colour, "fill-opacity": 0.55,
                                "data-share": share, "data-count": data.counts[i] });
      bar.append(svg("title", {}, `${split}: ${fmt(Math.ceil(edges[i]))}–${fmt(Math.floor(edges[i + 1]))} tokens: `
                                  + `${(share * 100).toFixed(1)}% of its documents (${fmt(data.counts[i])})`));
      group.append(bar);
    });
    plot.append(group);
    const ly = 14 + 18 * k;
    plot.append(svg("rect", { x: left, y: ly - 10, width: 12, height: 12, fill: colour, "fill-opacity": 0.55 }),
                svg("text", { x: left + 18, y: ly, class: "legend" },
                    `${split}: ${fmt(data.documents)} documents, mean ${fmt(data.mean)} tokens, longest ${fmt(data.max)}`));
  });
  box.append(plot);
}

async function loadStats() {
  const section = $("#histogram"), top = $("#top");
  section.dataset.state = top.dataset.state = "loading";
  try {
    const stats = await api("GET", url("/stats?top=25"));
    drawHistogram(section.querySelector(".plot"), stats.histogram);
    const body = top.querySelector("tbody");
    body.textContent = "";
    stats.top_tokens.forEach((t, i) => {
      const cell = el("td", { className: "tokens" });
      if (t.info) renderTokens(cell, [t.id], { [t.id]: t.info }, false);
      else cell.textContent = "(no tokenizer)";
      body.append(el("tr", { dataset: { id: String(t.id) } }, el("td", { className: "num" }, String(i + 1)),
                     el("td", { className: "num" }, String(t.id)), cell, el("td", { className: "num" }, fmt(t.count)),
                     el("td", { className: "num" }, `${(t.share * 100).toFixed(2)}%`)));
    });
    const samples = Object.entries(stats.sample);
    top.querySelector(".sample").textContent = samples.every(([, s]) => s.all)
      ? "counted over every token of every split"
      : "counted over a sample: " + samples.map(([split, s]) => `${split} ${fmt(s.counted)} of ${fmt(s.tokens)} tokens`).join(", ")
        + " (the first tokens of each shard)";
    section.dataset.state = top.dataset.state = "ready";
  } catch (err) {
    for (const s of [section, top]) {
      showError(s.querySelector(".error"), err);
      s.dataset.state = "error";
    }
  }
}

// ---- one document, a page at a time
async function openDocument({ split, position, id, offset = 0 }) {
  const section = $("#document");
  const error = section.querySelector(".error"), warning = section.querySelector(".warning");
  const query = new URLSearchParams({ offset: String(offset), limit: String(state.limit) });
  if (split) query.set("split", split);
  if (id) query.set("id", id);
  else query.set("position", String(position ?? 0));
  section.dataset.state = "loading";
  try {
    const doc = await api("GET", url(`/document?${query}`));
    clearError(error);
    state.doc = doc;
    state.openedId = doc.id;
    $("#split").value = doc.split;
    $("#position").value = String(doc.position);
    $("#doc-id").value = doc.id;
    section.querySelector(".docmeta").textContent = `document ${JSON.stringify(doc.id)} · position ${fmt(doc.position)} `
      + `of ${doc.split} · ${fmt(doc.length)} tokens (the leading end-of-text included) · in ${doc.shards.join(", ")}`;
    warning.hidden = !doc.unverified.length;
    warning.textContent = doc.unverified.length
      ? `read without a sha256 check (bigger than 16 MB): ${doc.unverified.join(", ")}; "verify every shard" checks them` : "";
    renderTokens(section.querySelector(".tokens"), doc.ids, doc.tokens);
    section.querySelector(".range").textContent = `tokens ${fmt(doc.offset)}–${fmt(doc.offset + doc.ids.length)} of ${fmt(doc.length)}`;
    $("#prev").disabled = doc.offset === 0;
    $("#next").disabled = doc.offset + doc.ids.length >= doc.length;
    const shown = new URLSearchParams({ recipe: state.recipe, split: doc.split, position: String(doc.position) });
    history.replaceState(null, "", `?${shown}`);
    section.dataset.state = "ready";
  } catch (err) {
    section.querySelector(".tokens").textContent = "";
    section.querySelector(".docmeta").textContent = section.querySelector(".range").textContent = "";
    warning.hidden = true;
    $("#prev").disabled = $("#next").disabled = true;
    showError(error, err);
    section.dataset.state = "error";
  }
}

function onSubmit(event) {
  event.preventDefault();
  const id = $("#doc-id").value;
  const split = $("#split").value;
  if (id && id !== state.openedId) openDocument({ id });
  else openDocument({ split, position: Number($("#position").value) });
}

function page(step) {
  const doc = state.doc;
  if (doc) openDocument({ split: doc.split, position: doc.position, offset: Math.max(0, doc.offset + step * state.limit) });
}

async function loadRecipe() {
  let overview;
  try {
    overview = await api("GET", url(""));
  } catch (err) {
    showError(banner, err);
    document.body.dataset.state = "error";
    return;
  }
  state.overview = overview;
  renderStages(overview.stages);
  if (overview.shards_error || !overview.shards) {
    const err = overview.shards_error
      ? new ApiError(409, overview.shards_error.error, overview.shards_error.message)
      : new ApiError(0, "no_shards", `${state.recipe} has no finished shards stage yet: run \`make shards\``);
    for (const box of ["#shards .error", "#histogram .error", "#top .error", "#document .error"]) showError($(box), err);
    document.body.dataset.state = "ready";
    return;
  }
  renderShards(overview.shards);
  await verifyRows([...state.rows.values()].filter((r) => r.status === "unchecked" && r.auto));
  await loadStats();
  const id = params.get("id");
  await openDocument(id ? { id } : { split: params.get("split"), position: Number(params.get("position") || 0) });
  document.body.dataset.state = "ready";
}

async function start() {
  let list;
  try {
    list = await api("GET", "/pages/api/shards");
  } catch (err) {
    showError(banner, err);
    return;
  }
  $("#root").textContent = `artifacts: ${list.root}`;
  const select = $("#recipe");
  const wanted = params.get("recipe") || list.recipes[0];
  for (const name of new Set([...list.recipes, ...(wanted ? [wanted] : [])])) select.append(el("option", { value: name }, name));
  if (!wanted) {
    showError(banner, new ApiError(0, "no_recipes", `no recipes under ${list.root}${list.exists ? "" : " (it does not exist)"}: `
                                                    + "run `make shards` (or start the service with --artifacts DIR)"));
    document.body.dataset.state = "ready";
    return;
  }
  select.value = wanted;
  select.addEventListener("change", () => { location.search = `?recipe=${encodeURIComponent(select.value)}`; });
  $("#doc-form").addEventListener("submit", onSubmit);
  $("#prev").addEventListener("click", () => page(-1));
  $("#next").addEventListener("click", () => page(1));
  $("#verify-all").addEventListener("click", () => verifyRows([...state.rows.values()].filter((r) => r.status === "unchecked")));
  state.recipe = wanted;
  await loadRecipe();
}

start();
