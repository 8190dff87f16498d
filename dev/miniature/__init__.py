"""A miniature video model trained here, on procedural videos, to see and measure AnyI2V's effect without
downloaded weights (docs/eval.md).

- ``scenes``: the procedural videos (textured objects moving over structured backgrounds) and their
  conditions of other modalities (edges, depth-like maps, silhouettes);
- ``latent``: the latent space (defined analytically; the TAESD-format VAE is trained to it);
- ``locator``: finds objects in decoded frames; ObjMC and first-frame IoU;
- ``model``: the model's widths and files, loaded by ComfyUI's real loaders;
- ``testset``, ``workflow``, ``evaluate``: the evaluation's fixed test set, its ComfyUI graphs and metrics
  (``make eval``, dev/eval.py);
- ``train``: ``make miniature``.

This package never runs inside ComfyUI: it is used by the training script, ``make eval`` and the tests. It imports
ComfyUI only where it builds ComfyUI's own modules.
"""
