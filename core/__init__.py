"""AnyI2V's method in plain PyTorch/NumPy. Nothing here imports ComfyUI."""
