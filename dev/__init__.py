"""Development tooling of ComfyUI-AnyI2V: never shipped, never imported by the pack.

It imports the pack (through ComfyUI's own custom-node loader, support/host.py) and is imported by the tests:
the ComfyUI test host and server (support/), tiny generated models, the AnimateDiff-Evolved stand-in
(standin_ade/, a TEST DOUBLE), the miniature video model (miniature/), and the scripts behind `make demo`,
`make bench`, `make scale`, `make eval` and the example generators.
"""
