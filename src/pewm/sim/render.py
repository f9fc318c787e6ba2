"""RGB-D rendering of a :class:`~pewm.sim.house.House` with MuJoCo's OpenGL renderer.

The house becomes a static MuJoCo model (boxes, cylinders and spheres, procedural textures, no
shadows, no multisampling) with one camera whose pose is written straight into ``MjData`` before
each frame. RGB and depth are read from the same rendered frame. Depth is converted from MuJoCo's
(reversed-z) depth buffer to metric z-depth; images match
``pewm.geometry.intrinsics_from_fov(width, height, fov_y_deg)`` exactly (OpenGL's symmetric frustum
puts the principal point at ``(W - 1) / 2``, ``(H - 1) / 2`` in OpenCV pixel-centre coordinates).

The GL backend comes from ``MUJOCO_GL`` (default ``egl``; chosen before MuJoCo is imported, falling
back between ``egl`` and ``osmesa`` when only the other library is installed). A context that fails
to start raises a ``RuntimeError`` naming every backend tried.
"""

from __future__ import annotations

import ctypes.util
import os
import warnings


def _choose_gl_backend() -> str:
    """Pick ``MUJOCO_GL`` before MuJoCo is imported (PyOpenGL fixes its platform on first import).

    Default ``egl``; if the requested headless backend's library is missing but the other one's is
    present, fall back to it (``egl`` <-> ``osmesa``) with a warning.
    """
    libs = {"egl": "EGL", "osmesa": "OSMesa"}
    requested = os.environ.get("MUJOCO_GL", "").lower().strip()
    want = requested or "egl"
    if want in libs and ctypes.util.find_library(libs[want]) is None:
        other = "osmesa" if want == "egl" else "egl"
        if ctypes.util.find_library(libs[other]) is not None:
            if requested:
                warnings.warn(f"pewm.sim: MUJOCO_GL={requested} but lib{libs[want]} is missing; using {other}",
                              RuntimeWarning, stacklevel=2)
            want = other
    os.environ["MUJOCO_GL"] = want
    if want in libs:
        os.environ.setdefault("PYOPENGL_PLATFORM", want)
    return want


GL_BACKEND = _choose_gl_backend()

try:
    import mujoco  # noqa: E402
except Exception as _e:  # noqa: BLE001 - MuJoCo raises assorted errors when the GL backend is broken
    raise ImportError(
        f"pewm.sim: importing mujoco failed with MUJOCO_GL={GL_BACKEND!r} ({type(_e).__name__}: {_e}). "
        "Offscreen rendering needs EGL (libegl1, e.g. Mesa llvmpipe on CPU) or OSMesa (libosmesa6); "
        "set MUJOCO_GL=egl or MUJOCO_GL=osmesa accordingly."
    ) from _e
import numpy as np  # noqa: E402

from pewm.geometry import Intrinsics, check_pose, intrinsics_from_fov  # noqa: E402
from pewm.sim.house import House, Part  # noqa: E402
from pewm.sim.meshes import Atlas, MeshBuilder  # noqa: E402
from pewm.sim.textures import TextureSpec, make_texture  # noqa: E402

ZNEAR_M = 0.02
"""Near clipping plane (metres)."""
ZFAR_M = 100.0
"""Far clipping plane (metres); pixels that hit nothing get depth 0."""

# OpenCV camera axes (x right, y down, z forward) -> MuJoCo/OpenGL camera axes (x right, y up, z back)
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])
TEXTURE_METRES = 2.0
"""World size (metres) covered by one copy of a floor or wall texture."""


# ----------------------------------------------------------------------------------------------
# GL context
# ----------------------------------------------------------------------------------------------


def _gl_context(width: int, height: int):
    """An offscreen GL context: the ``MUJOCO_GL`` backend first, then the other headless one."""
    first = os.environ.get("MUJOCO_GL", "egl").lower().strip() or "egl"
    order = [first] + [b for b in ("egl", "osmesa") if b != first]
    errors = []
    for backend in order:
        try:
            if backend == "egl":
                from mujoco.egl import GLContext
            elif backend == "osmesa":
                from mujoco.osmesa import GLContext
            elif backend == "glfw":
                from mujoco.glfw import GLContext
            else:
                errors.append(f"{backend}: not a supported backend")
                continue
            ctx = GLContext(width, height)
            ctx.make_current()
            return ctx, backend
        except Exception as e:  # noqa: BLE001 - report every backend's failure below
            errors.append(f"{backend}: {type(e).__name__}: {e}")
    raise RuntimeError(
        "pewm.sim: no OpenGL backend works for offscreen rendering (tried "
        + "; ".join(errors)
        + "). Install EGL (libegl1, e.g. Mesa's llvmpipe for CPU) or OSMesa (libosmesa6) and set MUJOCO_GL."
    )


# ----------------------------------------------------------------------------------------------
# Model building
# ----------------------------------------------------------------------------------------------


class _Assets:
    """Deduplicated textures and materials of one spec."""

    def __init__(self, spec: mujoco.MjSpec, texture_size: int) -> None:
        self.spec = spec
        self.size = texture_size
        self.textures: dict[object, str] = {}
        self.materials: dict[tuple, str] = {}

    def texture(self, ts: TextureSpec) -> str:
        key = (ts.kind, ts.color1, ts.color2, ts.period, ts.seed)
        if key not in self.textures:
            self.textures[key] = self.raw_texture(make_texture(ts, self.size)[::-1])
        return self.textures[key]

    def raw_texture(self, img: np.ndarray) -> str:
        """Add an ``(H, W, 3)`` uint8 texture given in upload order (row 0 is ``v = 0``)."""
        t = self.spec.add_texture()
        t.name = f"tex{len(self.spec.textures) - 1}"
        t.type = mujoco.mjtTexture.mjTEXTURE_2D
        t.width, t.height, t.nchannel = img.shape[1], img.shape[0], 3
        t.data = np.ascontiguousarray(img, dtype=np.uint8).tobytes()
        return t.name

    def material(self, color=(1.0, 1.0, 1.0), texture: str = "", emission: float = 0.0) -> str:
        """A matte material: plain ``color``, or white modulated by the texture named ``texture``."""
        rgba = (1.0, 1.0, 1.0, 1.0) if texture else (*(float(c) for c in color), 1.0)
        key = (rgba, texture, float(emission))
        if key not in self.materials:
            m = self.spec.add_material()
            m.name = f"mat{len(self.materials)}"
            m.rgba = list(rgba)
            m.specular = 0.05
            m.shininess = 0.1
            m.reflectance = 0.0
            m.emission = float(emission)
            if texture:
                m.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = texture
            self.materials[key] = m.name
        return self.materials[key]


_S2 = float(np.sqrt(0.5))
_AXIS_QUAT = {"z": [1.0, 0.0, 0.0, 0.0], "x": [_S2, 0.0, _S2, 0.0], "y": [_S2, -_S2, 0.0, 0.0]}


def _add_mesh_geom(spec: mujoco.MjSpec, mb: MeshBuilder, material: str) -> None:
    v, f, uv = mb.arrays()
    mesh = spec.add_mesh()
    mesh.name = f"mesh{len(spec.meshes) - 1}"
    mesh.uservert = v.ravel().tolist()
    mesh.userface = f.ravel().tolist()
    mesh.usertexcoord = uv.ravel().tolist()
    mesh.userfacetexcoord = f.ravel().tolist()
    mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL
    g = spec.worldbody.add_geom()
    g.type = mujoco.mjtGeom.mjGEOM_MESH
    g.meshname = mesh.name
    g.material = material
    g.contype = 0
    g.conaffinity = 0


def _add_primitive(spec: mujoco.MjSpec, part: Part, material: str) -> None:
    g = spec.worldbody.add_geom()
    g.type = {"box": mujoco.mjtGeom.mjGEOM_BOX, "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
              "sphere": mujoco.mjtGeom.mjGEOM_SPHERE}[part.shape]
    g.pos = list(part.pos)
    g.size = list(part.size)
    if part.shape == "cylinder":
        g.quat = _AXIS_QUAT[part.axis]
    g.material = material
    g.contype = 0
    g.conaffinity = 0


def _room_atlas_mesh(house: House, room, parts: list[Part], image_size: int) -> tuple[MeshBuilder, np.ndarray]:
    """Ceiling + all non-glowing object parts of one room as one mesh over one atlas texture."""
    atlas = Atlas(image_size)
    H = house.wall_height
    atlas.color(room.ceiling_color)
    for p in parts:
        if p.texture is not None and p.shape == "box":
            atlas.image(p.texture, lambda ts=p.texture: make_texture(ts, image_size))
        else:
            atlas.color(p.color)
    mb = MeshBuilder()
    cu = atlas.color_uv(atlas.color(room.ceiling_color))
    mb.add_box_uv((room.x0, room.y0, H, room.x1, room.y1, H + 0.1), (*cu, *cu))
    for p in parts:
        if p.texture is not None and p.shape == "box":
            mb.add_box_uv(p.bbox(), atlas.image_rect(atlas.image(p.texture, None)))
            continue
        uv = atlas.color_uv(atlas.color(p.color))
        if p.shape == "box":
            mb.add_box_uv(p.bbox(), (*uv, *uv))
        elif p.shape == "cylinder":
            mb.add_cylinder(p.pos, p.size[0], p.size[1], p.axis, uv)
        elif p.shape == "sphere":
            mb.add_sphere(p.pos, p.size[0], uv)
        else:
            raise ValueError(f"unknown part shape {p.shape!r}; valid: box, cylinder, sphere")
    return mb, atlas.build()


def build_spec(house: House, width: int = 64, height: int = 64, fov_y_deg: float = 90.0,
               texture_size: int | None = None) -> mujoco.MjSpec:
    """The MuJoCo spec of ``house``: per room a floor, a wall and an 'everything else' mesh, glowing
    parts as primitives, two directional lights plus the headlight, and one camera ``"cam"``."""
    spec = mujoco.MjSpec()
    spec.modelname = f"house_{house.seed}"
    vis = spec.visual
    vis.quality.shadowsize = 0
    vis.quality.offsamples = 0
    vis.global_.offwidth = int(width)
    vis.global_.offheight = int(height)
    vis.headlight.ambient = [0.42, 0.42, 0.42]
    vis.headlight.diffuse = [0.38, 0.38, 0.38]
    vis.headlight.specular = [0.0, 0.0, 0.0]
    vis.rgba.haze = [0.0, 0.0, 0.0, 1.0]
    size = texture_size or house.config.texture_size
    assets = _Assets(spec, size)
    for r in house.rooms:
        mb = MeshBuilder()
        mb.add_box_world((r.x0, r.y0, -0.1, r.x1, r.y1, 0.0), TEXTURE_METRES)
        _add_mesh_geom(spec, mb, assets.material(texture=assets.texture(r.floor_texture)))
        mb = MeshBuilder()
        for w in house.walls:
            if w.room == r.id:
                mb.add_box_world((w.x0, w.y0, w.z0, w.x1, w.y1, w.z1), TEXTURE_METRES)
        if len(mb):
            _add_mesh_geom(spec, mb, assets.material(texture=assets.texture(r.wall_texture)))
        parts = [p for o in house.objects if o.room == r.id for p in o.parts if p.emission <= 0]
        mb, atlas = _room_atlas_mesh(house, r, parts, size)
        _add_mesh_geom(spec, mb, assets.material(texture=assets.raw_texture(atlas)))
    for o in house.objects:  # glowing parts keep their own emissive material
        for p in o.parts:
            if p.emission > 0:
                if p.texture is not None and p.shape == "box":
                    mb = MeshBuilder()
                    mb.add_box_uv(p.bbox(), (0.0, 0.0, 1.0, 1.0))
                    _add_mesh_geom(spec, mb, assets.material(texture=assets.texture(p.texture), emission=p.emission))
                else:
                    _add_primitive(spec, p, assets.material(p.color, emission=p.emission))
    for k, (d, diffuse) in enumerate((([0.3, 0.5, -1.0], 0.4), ([-0.6, -0.3, -0.6], 0.14))):
        light = spec.worldbody.add_light()
        light.name = f"sun{k}"
        light.type = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
        light.dir = d
        light.pos = [0.0, 0.0, house.wall_height]
        light.castshadow = False
        light.diffuse = [diffuse] * 3
        light.ambient = [0.0, 0.0, 0.0]
        light.specular = [0.0, 0.0, 0.0]
    cam = spec.worldbody.add_camera()
    cam.name = "cam"
    cam.fovy = float(fov_y_deg)
    return spec


# ----------------------------------------------------------------------------------------------
# Renderer
# ----------------------------------------------------------------------------------------------


class RGBDRenderer:
    """Renders ``(rgb uint8 (H, W, 3), depth float32 (H, W))`` of a house from camera-to-world poses.

    Poses use the OpenCV camera frame (x right, y down, z forward); depth is metric z-depth and 0
    where nothing is hit. Call :meth:`close` (or use as a context manager) to free the GL context.
    """

    def __init__(self, house: House, width: int = 64, height: int = 64, fov_y_deg: float = 90.0,
                 texture_size: int | None = None) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"RGBDRenderer: width and height must be positive, got {width}x{height}")
        if not 0.0 < fov_y_deg < 180.0:
            raise ValueError(f"RGBDRenderer: fov_y_deg must be in (0, 180), got {fov_y_deg}")
        self.house = house
        self.width, self.height = int(width), int(height)
        self.fov_y_deg = float(fov_y_deg)
        self._intrinsics = intrinsics_from_fov(self.width, self.height, self.fov_y_deg)
        self._gl = None
        self._con = None
        self._setup(build_spec(house, self.width, self.height, self.fov_y_deg, texture_size).compile())

    def _setup(self, model: mujoco.MjModel) -> None:
        """Create the GL and MuJoCo render contexts for ``model`` (whose camera 0 is ours)."""
        self.model = m = model
        extent = float(m.stat.extent)
        m.vis.map.znear = ZNEAR_M / extent
        m.vis.map.zfar = ZFAR_M / extent
        m.vis.map.fogstart = 1e4
        m.vis.map.fogend = 1e4 + 1
        self._near = np.float32(m.vis.map.znear * extent)
        self._far = np.float32(m.vis.map.zfar * extent)
        self.data = mujoco.MjData(m)
        mujoco.mj_kinematics(m, self.data)
        if self._gl is None:
            self._gl, self.backend = _gl_context(self.width, self.height)
        self._gl.make_current()
        if self._con is not None:
            self._con.free()
            self._con = None
        self._scene = mujoco.MjvScene(m, maxgeom=max(1000, 2 * m.ngeom + 100))
        self._opt = mujoco.MjvOption()
        self._con = mujoco.MjrContext(m, mujoco.mjtFontScale.mjFONTSCALE_100.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._con)
        if self._con.currentBuffer != mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value:
            raise RuntimeError("RGBDRenderer: the offscreen framebuffer is not available")
        self._con.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = 0
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._depth = np.empty((self.height, self.width), dtype=np.float32)
        # reversed-z depth buffer -> metric depth (same algebra as mujoco.Renderer)
        near, far = np.float64(self._near), np.float64(self._far)
        c = -(far + near) / (far - near)
        d = -(2.0 * far * near) / (far - near)
        self._c = -0.5 * c - 0.5
        self._d = -0.5 * d

    def set_house(self, house: House, texture_size: int | None = None) -> None:
        """Switch to another house, keeping the GL context (cheaper than a new renderer)."""
        if self._gl is None:
            raise RuntimeError("RGBDRenderer.set_house called after close()")
        self.house = house
        self._setup(build_spec(house, self.width, self.height, self.fov_y_deg, texture_size).compile())

    @property
    def intrinsics(self) -> Intrinsics:
        return self._intrinsics

    def render(self, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB and z-depth seen from ``cam_to_world`` (4x4, OpenCV camera axes)."""
        if self._con is None:
            raise RuntimeError("RGBDRenderer.render called after close()")
        T = np.asarray(cam_to_world, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"RGBDRenderer.render: cam_to_world must be 4x4, got shape {T.shape}")
        R = T[:3, :3]
        if not np.isfinite(T).all() or np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0:
            check_pose(T, "cam_to_world")  # raises with the precise reason
        self.data.cam_xpos[0] = T[:3, 3]
        self.data.cam_xmat[0] = (T[:3, :3] @ _CV_TO_GL).ravel()
        self._gl.make_current()
        mujoco.mjv_updateScene(self.model, self.data, self._opt, None, self._cam,
                               mujoco.mjtCatBit.mjCAT_ALL.value, self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._con)
        mujoco.mjr_readPixels(self._rgb, self._depth, self._rect, self._con)
        rgb = self._rgb[::-1].copy()
        raw = self._depth[::-1].astype(np.float64)
        depth = (self._d / (raw + self._c)).astype(np.float32)
        depth[(raw <= 0.0) | (depth >= 0.999 * self._far)] = 0.0
        return rgb, depth

    def close(self) -> None:
        """Free the MuJoCo render context and the GL context (idempotent)."""
        if self._con is not None:
            if self._gl is not None:
                self._gl.make_current()
            self._con.free()
            self._con = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None

    def __enter__(self) -> "RGBDRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
