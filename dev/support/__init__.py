"""Test-only support: the real ComfyUI host, tiny generated models, and marked test doubles."""
