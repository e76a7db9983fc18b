"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const S = {image: 0, block: 0, head: -1, query: 0, position: 0};
const rowsCache = {};
window.vitlens = {data: D, state: S, shown: []};
const $ = (id) => document.getElementById(id);

function bytes(b64) {
  if (rowsCache[b64]) return rowsCache[b64];
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return (rowsCache[b64] = out);
}
function colour(t) {  // a dark-to-bright ramp (inferno-like) for t in [0, 1]
  const stops = [[0,0,4],[87,16,110],[188,55,84],[249,142,9],[252,255,164]];
  const x = Math.max(0, Math.min(1, t)) * 4, i = Math.min(3, Math.floor(x)), f = x - i;
  return stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
}
function draw(canvas, values, grid, mark) {
  const ctx = canvas.getContext("2d"), [H, W] = grid;
  const hi = Math.max(...values), lo = Math.min(0, ...values), cw = canvas.width / W, ch = canvas.height / H;
  for (let r = 0; r < H; r++) for (let c = 0; c < W; c++) {
    const [R, G, B] = colour((values[r * W + c] - lo) / ((hi - lo) || 1));
    ctx.fillStyle = `rgb(${R},${G},${B})`;
    ctx.fillRect(c * cw, r * ch, Math.ceil(cw), Math.ceil(ch));
  }
  if (mark !== undefined) {
    ctx.strokeStyle = "#0f0"; ctx.lineWidth = 2;
    ctx.strokeRect((mark % W) * cw + 1, Math.floor(mark / W) * ch + 1, cw - 2, ch - 2);
  }
}
function block() { return D.blocks[S.block]; }
function queryMap() {  // the selected query's row, mean over heads or one head
  const b = block(), [H, W] = b.grid, G = H * W, data = bytes(D.rows[S.image][S.block]);
  const heads = S.head < 0 ? [...Array(b.heads).keys()] : [S.head], out = new Array(G).fill(0);
  for (const h of heads) for (let k = 0; k < G; k++) out[k] += data[(h * G + S.query) * G + k] / heads.length;
  return out;
}
function clsMap() {
  const maps = D.cls[S.image][S.block], b = block(), G = b.grid[0] * b.grid[1];
  if (S.head >= 0) return maps[S.head];
  const out = new Array(G).fill(0);
  for (const m of maps) for (let k = 0; k < G; k++) out[k] += m[k] / maps.length;
  return out;
}
function drawImage() {
  const canvas = $("image"), ctx = canvas.getContext("2d"), img = new Image();
  img.onload = () => {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    const [H, W] = block().grid, cw = canvas.width / W, ch = canvas.height / H;
    ctx.strokeStyle = "rgba(228,87,46,.55)"; ctx.lineWidth = 1;
    for (let r = 1; r < H; r++) { ctx.beginPath(); ctx.moveTo(0, r * ch); ctx.lineTo(canvas.width, r * ch); ctx.stroke(); }
    for (let c = 1; c < W; c++) { ctx.beginPath(); ctx.moveTo(c * cw, 0); ctx.lineTo(c * cw, canvas.height); ctx.stroke(); }
    ctx.strokeStyle = "#0f0"; ctx.lineWidth = 2;
    ctx.strokeRect((S.query % W) * cw + 1, Math.floor(S.query / W) * ch + 1, cw - 2, ch - 2);
  };
  img.src = D.images[S.image].src;
}
function update() {
  const b = block(), im = D.images[S.image], [H, W] = b.grid;
  S.query = Math.min(S.query, H * W - 1);
  const shown = queryMap();
  window.vitlens.shown = shown;
  Object.assign(document.body.dataset, {image: S.image, block: S.block, head: S.head, query: S.query});
  drawImage();
  draw($("query"), shown, b.grid, S.query);
  $("querytitle").textContent = `patch (${Math.floor(S.query / W)}, ${S.query % W}) attends`;
  const cls = clsMap(), peak = Math.max(...cls) * H * W;  // 1.0: uniform over the grid
  draw($("cls"), cls, b.grid);
  const who = b.query === "cls" ? "the class token attends" : "every query, averaged";
  $("clstitle").textContent = `${who} (peak ${peak.toFixed(1)}× uniform)`;
  const g0 = D.blocks[0].grid;
  if (D.rollout.length) draw($("rollout"), D.rollout[S.image], g0); else $("rollout").style.opacity = .2;
  if (D.gradient.length) draw($("gradient"), D.gradient[S.image], g0); else $("gradient").style.opacity = .2;
  $("gradtitle").textContent = `gradient rollout, class ${im.explained}`;
  $("where").textContent = `${b.name}: ${H}×${W} grid, ${b.heads} heads`;
  $("verdict").textContent = `${im.name}: label ${im.label < 0 ? "unknown" : im.label}, predicted ${im.predicted}`;
  document.querySelectorAll(".thumbs button").forEach((el, i) => el.classList.toggle("on", i === S.image));
}
function heads() {
  const sel = $("head"); sel.innerHTML = "";
  sel.add(new Option("mean of heads", -1));
  for (let h = 0; h < block().heads; h++) sel.add(new Option(`head ${h}`, h));
  S.head = Math.min(S.head, block().heads - 1); sel.value = S.head;
}
function pick(event) {
  const canvas = $("image"), rect = canvas.getBoundingClientRect(), [H, W] = block().grid;
  const c = Math.floor((event.clientX - rect.left) / rect.width * W);
  const r = Math.floor((event.clientY - rect.top) / rect.height * H);
  if (r >= 0 && r < H && c >= 0 && c < W) { S.query = r * W + c; update(); }
}
function positions() {
  const P = D.positions, host = $("positions");
  if (!P) { host.textContent = "This model has no absolute position embedding."; return; }
  const [H, W] = P.grid, grid = document.createElement("canvas"), map = document.createElement("canvas");
  grid.width = map.width = 220; grid.height = map.height = 220; grid.id = "posgrid"; map.id = "posmap";
  const mosaic = grid.getContext("2d"), cw = 220 / W, ch = 220 / H;
  for (let q = 0; q < H * W; q++) {  // tile q: position q's similarity to every position
    const tile = document.createElement("canvas"); tile.width = W; tile.height = H;
    draw(tile, P.similarity[q], P.grid);
    mosaic.drawImage(tile, (q % W) * cw, Math.floor(q / W) * ch, cw - 1, ch - 1);
  }
  grid.onclick = (e) => {
    const rect = grid.getBoundingClientRect();
    S.position = Math.floor((e.clientY - rect.top) / rect.height * H) * W + Math.floor((e.clientX - rect.left) / rect.width * W);
    draw(map, P.similarity[S.position], P.grid, S.position);
    document.body.dataset.position = S.position;
  };
  draw(map, P.similarity[0], P.grid, 0);
  for (const [el, text] of [[grid, `every position (${P.parameter})`], [map, "one position: click the grid"]]) {
    const panel = document.createElement("div"); panel.className = "panel";
    panel.append(el, document.createTextNode(text)); host.append(panel);
  }
}
function init() {
  D.images.forEach((im, i) => {
    const b = document.createElement("button"), img = document.createElement("img");
    img.src = im.src; img.alt = im.name; b.append(img);
    b.onclick = () => { S.image = i; update(); }; $("thumbs").append(b);
  });
  D.blocks.forEach((b, i) => $("block").add(new Option(b.name, i)));
  $("block").onchange = (e) => { S.block = +e.target.value; heads(); update(); };
  $("head").onchange = (e) => { S.head = +e.target.value; update(); };
  $("image").onclick = pick; $("image").onmousemove = pick;
  $("rolloutnote").textContent = D.rolloutNote;
  const unread = Object.entries(D.unread).map(([k, v]) => `${k}: ${v}`);
  $("notes").textContent = [...D.notes, ...unread].join(" · ");
  for (const f of D.filters || []) {
    const panel = document.createElement("div"), img = document.createElement("img");
    panel.className = "panel"; img.src = f.src; panel.append(img, `${(100 * f.share).toFixed(1)}%`);
    $("filters").append(panel);
  }
  if (!(D.filters || []).length) $("filters").textContent = "No convolution to read filters from.";
  for (const src of Object.values(D.charts)) { const img = document.createElement("img"); img.src = src; $("charts").append(img); }
  positions(); heads(); update();
  document.body.dataset.ready = "1";
}
init();
