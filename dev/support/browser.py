"""Headless Chromium as the browser tests and dev/screenshot_workflow.py launch it, and the newest frontend."""

from __future__ import annotations

import shutil
from pathlib import Path

from .host import host_dir

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def newest_frontend_root() -> Path | None:
    """The newest comfyui-frontend-package's static folder (dev/setup_browser.sh installs it), or None."""
    root = host_dir() / "frontend-newest" / "pkg" / "comfyui_frontend_package" / "static"
    return root if (root / "index.html").is_file() else None
