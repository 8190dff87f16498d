"""ComfyUI node wrappers. The only package of the pack that imports ComfyUI.

Each module ``nodes/<feature>.py`` exports ``NODES``: the V3 node classes it defines.
"""

from comfy_api.latest import ComfyExtension

from . import conditions, features_io, inject, invert, render, sampler, trajectory, view

NODE_MODULES = [trajectory, invert, inject, sampler, conditions, render, features_io, view]


class AnyI2VExtension(ComfyExtension):
    async def get_node_list(self):
        return [node for module in NODE_MODULES for node in module.NODES]
