"""pewm: Persistent Embodied World Models (arXiv 2505.05495).

Conventions used everywhere in the package (see ``docs/conventions.md``):

* World frame: metres, z up.
* Camera frame: OpenCV (x right, y down, z forward). Poses are camera-to-world 4x4 matrices.
* Depth is metric z-depth along the optical axis (not ray length); 0 means "no measurement".
* ``action[t]`` moves the agent from the pose of frame ``t`` to the pose of frame ``t + 1``.
"""

__version__ = "0.1.0"
