// A small WebGL point-splat viewer for the persistent 3D map (world frame: metres, z up).
// No libraries: an orbit camera (drag to orbit, wheel to zoom), points appended as the map grows,
// and the agent drawn as a larger red point.
"use strict";

function PointView(canvas) {
  const gl = canvas.getContext("webgl", { antialias: false, preserveDrawingBuffer: true });
  this.gl = gl;
  this.canvas = canvas;
  this.count = 0;
  this.capacity = 0;
  this.xyz = new Float32Array(0);
  this.rgb = new Uint8Array(0);
  this.agent = null;
  this.zmax = 1e9;  // points above this height (the ceiling) are not drawn, so the rooms can be seen
  this.yaw = -0.8; this.pitch = 0.9; this.dist = 12; this.target = [0, 0, 1];
  this.dirty = true;
  if (!gl) { return; }
  const vs = `attribute vec3 p; attribute vec3 c; uniform mat4 m; uniform float s; uniform float zmax; varying vec3 v;
    void main() {
      gl_Position = p.z > zmax ? vec4(2.0, 2.0, 2.0, 1.0) : m * vec4(p, 1.0);  // above the cut: off screen
      gl_PointSize = clamp(s / gl_Position.w, 1.5, 24.0); v = c; }`;
  const fs = `precision mediump float; varying vec3 v; void main() { gl_FragColor = vec4(v, 1.0); }`;
  const sh = (type, src) => { const o = gl.createShader(type); gl.shaderSource(o, src); gl.compileShader(o); return o; };
  const prog = gl.createProgram();
  gl.attachShader(prog, sh(gl.VERTEX_SHADER, vs));
  gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, fs));
  gl.linkProgram(prog);
  this.prog = prog;
  this.loc = { p: gl.getAttribLocation(prog, "p"), c: gl.getAttribLocation(prog, "c"),
               m: gl.getUniformLocation(prog, "m"), s: gl.getUniformLocation(prog, "s"),
               zmax: gl.getUniformLocation(prog, "zmax") };
  this.bufP = gl.createBuffer(); this.bufC = gl.createBuffer();
  this.agentP = gl.createBuffer(); this.agentC = gl.createBuffer();
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = [e.clientX, e.clientY]; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    this.yaw -= (e.clientX - drag[0]) * 0.01;
    this.pitch = Math.min(1.5, Math.max(0.05, this.pitch + (e.clientY - drag[1]) * 0.01));
    drag = [e.clientX, e.clientY]; this.dirty = true;
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    this.dist = Math.min(60, Math.max(1.5, this.dist * Math.exp(e.deltaY * 0.001))); this.dirty = true;
  }, { passive: false });
  const loop = () => { if (this.dirty) { this.draw(); } requestAnimationFrame(loop); };
  requestAnimationFrame(loop);
}

PointView.prototype.clear = function () { this.count = 0; this.dirty = true; };

// Put `n` points (Float32Array xyz, Uint8Array rgb) at rows start..start+n.
PointView.prototype.set = function (start, xyz, rgb) {
  const n = rgb.length / 3, need = start + n;
  if (need > this.capacity) {
    const cap = Math.max(need, this.capacity * 2, 4096);
    const x = new Float32Array(cap * 3); x.set(this.xyz.subarray(0, this.count * 3)); this.xyz = x;
    const c = new Uint8Array(cap * 3); c.set(this.rgb.subarray(0, this.count * 3)); this.rgb = c;
    this.capacity = cap;
  }
  this.xyz.set(xyz, start * 3);
  this.rgb.set(rgb, start * 3);
  this.count = Math.max(this.count, need);
  this.uploaded = false; this.dirty = true;
};

PointView.prototype.setCeiling = function (z) { if (z !== this.zmax) { this.zmax = z; this.dirty = true; } };

PointView.prototype.setAgent = function (x, y, z) { this.agent = [x, y, z]; this.target = [x, y, 1.0]; this.dirty = true; };

function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
  return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0];
}
function lookAt(eye, at, up) {
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const norm = (a) => { const l = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / l, a[1] / l, a[2] / l]; };
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const z = norm(sub(eye, at)), x = norm(cross(up, z)), y = cross(z, x);
  return [x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0, -dot(x, eye), -dot(y, eye), -dot(z, eye), 1];
}
function mul(a, b) {  // column-major 4x4: a * b
  const o = new Array(16).fill(0);
  for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) for (let k = 0; k < 4; k++) o[c * 4 + r] += a[k * 4 + r] * b[c * 4 + k];
  return o;
}

PointView.prototype.draw = function () {
  const gl = this.gl;
  this.dirty = false;
  if (!gl) return;
  gl.viewport(0, 0, this.canvas.width, this.canvas.height);
  gl.clearColor(0.05, 0.06, 0.07, 1); gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
  gl.enable(gl.DEPTH_TEST);
  gl.useProgram(this.prog);
  const t = this.target, d = this.dist;
  const eye = [t[0] + d * Math.cos(this.pitch) * Math.cos(this.yaw), t[1] + d * Math.cos(this.pitch) * Math.sin(this.yaw),
               t[2] + d * Math.sin(this.pitch)];
  const m = mul(perspective(0.9, this.canvas.width / this.canvas.height, 0.05, 200), lookAt(eye, t, [0, 0, 1]));
  gl.uniformMatrix4fv(this.loc.m, false, new Float32Array(m));
  gl.uniform1f(this.loc.zmax, this.zmax);
  const drawBuffers = (bp, bc, n, size) => {
    gl.uniform1f(this.loc.s, size);
    gl.bindBuffer(gl.ARRAY_BUFFER, bp); gl.enableVertexAttribArray(this.loc.p);
    gl.vertexAttribPointer(this.loc.p, 3, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, bc); gl.enableVertexAttribArray(this.loc.c);
    gl.vertexAttribPointer(this.loc.c, 3, gl.UNSIGNED_BYTE, true, 0, 0);
    gl.drawArrays(gl.POINTS, 0, n);
  };
  if (this.count > 0) {
    if (!this.uploaded) {
      gl.bindBuffer(gl.ARRAY_BUFFER, this.bufP); gl.bufferData(gl.ARRAY_BUFFER, this.xyz.subarray(0, this.count * 3), gl.DYNAMIC_DRAW);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.bufC); gl.bufferData(gl.ARRAY_BUFFER, this.rgb.subarray(0, this.count * 3), gl.DYNAMIC_DRAW);
      this.uploaded = true;
    }
    drawBuffers(this.bufP, this.bufC, this.count, 60.0);
  }
  if (this.agent) {
    gl.bindBuffer(gl.ARRAY_BUFFER, this.agentP); gl.bufferData(gl.ARRAY_BUFFER, new Float32Array(this.agent), gl.DYNAMIC_DRAW);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.agentC); gl.bufferData(gl.ARRAY_BUFFER, new Uint8Array([255, 40, 40]), gl.DYNAMIC_DRAW);
    drawBuffers(this.agentP, this.agentC, 1, 400.0);
  }
};

window.PointView = PointView;
