// pewm play: the page. One websocket to the server; every step's images, map points and top-down
// map arrive as one "frame" message. Key presses while a step is imagined are coalesced into one
// pending action (the latest wins), so nothing queues up.
"use strict";

const $ = (id) => document.getElementById(id);
const KEYS = { ArrowUp: "forward", w: "forward", W: "forward", ArrowLeft: "left", a: "left", A: "left",
               ArrowRight: "right", d: "right", D: "right" };
const STEP_CHOICES = [1, 2, 4, 6, 10, 20, 50];
const SESSION_KEY = "pewm-play-session";

const state = { ws: null, session: null, busy: false, pending: null, coalesced: 0, step: 0, frames: 0,
                points: 0, path: [], topdown: null, pose: null, fov: 90, connected: false, errors: [],
                lastImagined: null, settings: null, full: false };
window.pewmPlay = state;  // read by the browser tests and handy in the console

const view3d = new PointView($("view3d"));
const topImg = new Image();

function setStatus(text, cls) { const s = $("status"); s.textContent = text; s.className = "status " + (cls || ""); }
function showMessage(text) { const m = $("message"); m.textContent = text; m.hidden = !text; }
function send(msg) { if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg)); }

function act(action) {
  if (!state.connected) return;
  if (state.busy) { if (state.pending) state.coalesced += 1; state.pending = action; return; }
  state.busy = true;
  setStatus("imagining…", "busy");
  send({ type: "action", action: action });
}

function fillSelect(sel, values, current) {
  sel.innerHTML = "";
  for (const v of values) { const o = document.createElement("option"); o.value = o.textContent = v; sel.appendChild(o); }
  sel.value = String(current);
}

function applySettings(s) {
  state.settings = s;
  $("memory").checked = s.memory;
  const steps = STEP_CHOICES.includes(s.steps) ? STEP_CHOICES : STEP_CHOICES.concat([s.steps]).sort((a, b) => a - b);
  fillSelect($("steps"), steps, s.steps);
  fillSelect($("anchor"), s.can_anchor ? s.anchors : ["none"], s.can_anchor ? s.anchor : "none");
  $("anchor").disabled = !s.can_anchor;
}

function decode(b64, Type) {
  const bin = atob(b64), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Type(bytes.buffer);
}

function drawTopdown() {
  const c = $("topdown"), g = c.getContext("2d"), t = state.topdown;
  g.fillStyle = "#0d0f12"; g.fillRect(0, 0, c.width, c.height);
  if (!t || !topImg.complete || !topImg.naturalWidth) return;
  const s = Math.min(c.width / topImg.naturalWidth, c.height / topImg.naturalHeight);
  const ox = (c.width - topImg.naturalWidth * s) / 2, oy = (c.height - topImg.naturalHeight * s) / 2;
  g.imageSmoothingEnabled = false;
  g.drawImage(topImg, ox, oy, topImg.naturalWidth * s, topImg.naturalHeight * s);
  const [xmin, , , ymax] = t.bounds, k = t.px_per_m * s;
  const px = (p) => [ox + (p.x - xmin) * k, oy + (ymax - p.y) * k];
  if (state.path.length > 1) {
    g.strokeStyle = "#ff5050"; g.lineWidth = 2; g.beginPath();
    state.path.forEach((p, i) => { const [u, v] = px(p); if (i) g.lineTo(u, v); else g.moveTo(u, v); });
    g.stroke();
  }
  if (state.pose) {
    const [u, v] = px(state.pose), half = (state.fov * Math.PI) / 360, r = 1.5 * k;
    g.fillStyle = "rgba(90, 176, 255, 0.35)"; g.beginPath(); g.moveTo(u, v);
    g.arc(u, v, r, -state.pose.yaw - half, -state.pose.yaw + half); g.closePath(); g.fill();
    g.fillStyle = "#ff5050"; g.beginPath(); g.arc(u, v, 4, 0, 2 * Math.PI); g.fill();
  }
}
topImg.onload = drawTopdown;

function onFrame(m) {
  state.frames += 1;
  state.step = m.step;
  $("step").textContent = m.step;
  $("imagined-rgb").src = m.imagined.rgb; $("imagined-depth").src = m.imagined.depth;
  $("real-rgb").src = m.real.rgb; $("real-depth").src = m.real.depth;
  state.lastImagined = m.imagined.rgb;
  $("psnr").textContent = m.psnr === null ? "– (start frame is real)" : m.psnr.toFixed(2);
  $("seconds").textContent = m.seconds.toFixed(2);
  $("collided").hidden = !m.collided;
  $("house").textContent = "house " + m.house_seed;
  if (m.full) { state.path = m.path.slice(); view3d.clear(); } else { state.path.push(m.pose); }
  state.pose = m.pose; state.fov = m.fov_deg;
  if (m.points.count > 0) view3d.set(m.points.start, decode(m.points.xyz, Float32Array), decode(m.points.rgb, Uint8Array));
  state.points = m.points.start + m.points.count;
  $("points").textContent = m.points.map_size;
  view3d.setAgent(m.pose.x, m.pose.y, 1.2);
  view3d.setCeiling(m.topdown.z_max);
  state.topdown = m.topdown; topImg.src = m.topdown.png;
  applySettings(m.settings);
  state.busy = false;
  if (state.pending) { const a = state.pending; state.pending = null; act(a); } else { setStatus("ready", "ready"); }
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/ws");
  state.ws = ws;
  setStatus("connecting…");
  ws.onopen = () => ws.send(JSON.stringify({ type: "hello", session: sessionStorage.getItem(SESSION_KEY) }));
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "welcome") {
      state.session = m.session; state.connected = true; sessionStorage.setItem(SESSION_KEY, m.session);
      $("dl-video").href = "/session/" + m.session + "/video.mp4";
      $("dl-ply").href = "/session/" + m.session + "/map.ply";
      applySettings(m.settings); showMessage("");
    } else if (m.type === "frame") { onFrame(m); }
    else if (m.type === "busy") { setStatus("imagining…", "busy"); }
    else if (m.type === "settings") { applySettings(m.settings); }
    else if (m.type === "error") {
      state.errors.push(m.message); showMessage(m.message);
      if (state.busy && m.message.startsWith("step failed")) { state.busy = false; setStatus("ready", "ready"); }
    } else if (m.type === "full" || m.type === "expired") {
      state.full = m.type === "full"; state.connected = false; showMessage(m.message); setStatus(m.type, "error");
      if (m.type === "expired") sessionStorage.removeItem(SESSION_KEY);
    }
  };
  ws.onclose = () => {
    const wasConnected = state.connected;
    state.connected = false; state.busy = false;
    if (wasConnected) { setStatus("reconnecting…", "error"); setTimeout(connect, 1000); }
  };
}

document.addEventListener("keydown", (e) => {
  const a = KEYS[e.key];
  if (!a || e.target.tagName === "SELECT" || e.target.tagName === "INPUT") return;
  e.preventDefault();
  act(a);
});
$("btn-forward").onclick = () => act("forward");
$("btn-left").onclick = () => act("left");
$("btn-right").onclick = () => act("right");
$("memory").onchange = (e) => send({ type: "settings", memory: e.target.checked });
$("anchor").onchange = (e) => send({ type: "settings", anchor: e.target.value });
$("steps").onchange = (e) => send({ type: "settings", steps: parseInt(e.target.value, 10) });
$("show-real").onchange = (e) => document.body.classList.toggle("hide-real", !e.target.checked);
$("btn-reset").onclick = () => { state.pending = null; send({ type: "reset" }); };
$("btn-new-house").onclick = () => { state.pending = null; send({ type: "new_house" }); };
connect();
