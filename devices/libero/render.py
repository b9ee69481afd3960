"""Camera images from the simulator, in two modes.

* `default`: the images robosuite renders for its observation, with LIBERO's lighting, shadows,
  reflections and multisampling: what released checkpoints were trained and evaluated on.
* `fast`: the same cameras through `mujoco.Renderer` with multisampling, shadows, reflections and the
  skybox off and geom group 0 (collision meshes) hidden as robosuite hides it: several times cheaper on
  a CPU (llvmpipe is triangle-bound on LIBERO's 307 k-face scenes), images alike to the eye but not bit
  for bit. A policy trained on one mode is evaluated in that mode; results of two modes never mix.

Both return images in robosuite's observation orientation (bottom row first, as OpenGL reads pixels
and robosuite hands them out), so the evaluation protocol treats them alike.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

RENDER_MODES = ("default", "fast")


class FastRenderer:
    """`mujoco.Renderer` on the simulator's current model; rebuilt when a hard reset replaces the model."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._model: Any = None
        self._renderer: Any = None
        self._option: Any = None

    def render(self, model: Any, data: Any, cameras: Sequence[str]) -> list[np.ndarray]:
        import mujoco

        if model is not self._model:
            self.close()
            model.vis.quality.offsamples = 0
            self._renderer = mujoco.Renderer(model, self.size, self.size)
            self._option = mujoco.MjvOption()
            self._option.geomgroup[0] = 0
            self._model = model
        images = []
        for camera in cameras:
            self._renderer.update_scene(data, camera=camera, scene_option=self._option)
            flags = self._renderer.scene.flags
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
                flags[flag] = 0
            # mujoco.Renderer returns the top row first; robosuite's observation images are flipped vertically.
            images.append(self._renderer.render()[::-1].copy())
        return images

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
        self._renderer = self._model = None
