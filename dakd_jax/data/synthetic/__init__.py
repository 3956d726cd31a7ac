"""The embedded synthetic domain pair: procedural driving scenes in the official layouts.

Real GTA5 / Cityscapes / BDD100K cannot be fetched by the program, so this module draws road
scenes in perspective (sky, road to a vanishing point, sidewalks, buildings, walls, fences,
vegetation, terrain, poles with lights and signs, vehicles, people) and writes them where the real
loaders look:

  <out>/gta5/images/NNNNN.png, <out>/gta5/labels/NNNNN.png           (source, Cityscapes label ids)
  <out>/cityscapes/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <out>/cityscapes/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
  <out>/bdd100k/images/10k/<split>/<name>.jpg                         (optional second target)
  <out>/bdd100k/labels/sem_seg/masks/<split>/<name>.png               (train ids, 255 = ignore)

Every scene is a list of primitives (polygons, ellipses, lines) sorted far to near; the label map
and the image are rasterised from the same list (labels without anti-aliasing), so labels are exact.
The domains differ in palette, white balance, contrast, texture, blur, noise, vignetting, haze,
camera height / horizon / field of view and object frequencies; shapes and layout are shared.
Each image has its own generator seeded by (seed, domain, split, index): bytes do not depend on
the order or the number of workers.

Modules, in the order an image is made: `styles` (what each domain looks like), `canvas` (camera and
primitives), `street` (the layout) and `objects` (what stands on it), `render` (rasterising and the
colour pipeline), `layouts` (the files and the manifest; `generate`).
"""

from dakd_jax.data.synthetic.layouts import (
    CITYSCAPES_CITIES, GENERATOR_VERSION, MANIFEST_NAME, generate, main)
from dakd_jax.data.synthetic.render import render_scene, scene_rng
from dakd_jax.data.synthetic.styles import STYLES, Style

__all__ = ['CITYSCAPES_CITIES', 'GENERATOR_VERSION', 'MANIFEST_NAME', 'STYLES', 'Style', 'generate',
           'main', 'render_scene', 'scene_rng']
