"""The pack people install: what the registry package holds, that it runs by itself, and that a missing or
broken optional dependency (trimesh) disables only the nodes that need it.

The registry package is built by the real packer: comfy-cli (pinned; dev/setup_host.sh installs it in a venv
of its own), whose `comfy node pack` / `comfy node publish` zip the git-tracked files minus `.comfyignore`
plus `[tool.comfy].includes`.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from dev.support.examples import INPUTS
from dev.support.host import REPO, host_dir
from dev.support.server import ComfyServer, error_message

pytestmark = pytest.mark.host

SHIPPED_TOP = {"__init__.py", "core", "nodes", "web", "example_workflows", "README.md", "LICENSE", "requirements.txt",
               "pyproject.toml"}
DEV_PACKAGES = {"dev", "tests", "scripts", "miniature"}
NODE_IDS = sorted(set(re.findall(r'node_id="(AnyI2V\w+)"', "".join(p.read_text() for p in (REPO / "nodes").glob("*.py")))))
RENDER_NODES = {"AnyI2VRenderMesh", "AnyI2VRenderPointCloud"}

PACK = """
import sys
from comfy_cli.file_utils import zip_files
from comfy_cli.registry import extract_node_configuration

config = extract_node_configuration()
if config is None:
    sys.exit("pyproject.toml: comfy-cli could not read the node configuration")
zip_files(sys.argv[1], includes=config.tool_comfy.includes if config.tool_comfy else [])
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The registry archive of this checkout's git-tracked files, as comfy-cli packs it."""
    packer = host_dir() / "packer" / "bin" / "python"
    assert packer.is_file(), "comfy-cli's venv is missing: run `make host` (dev/setup_host.sh builds it)"
    out = tmp_path_factory.mktemp("package") / "node.zip"
    run = subprocess.run([str(packer), "-c", PACK, str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return out


def test_the_registry_package_holds_only_the_runtime_pack(package):
    names = zipfile.ZipFile(package).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == SHIPPED_TOP, f"unexpected: {sorted(top - SHIPPED_TOP)}, missing: {sorted(SHIPPED_TOP - top)}"
    assert any(n.startswith("web/") and n.endswith(".js") for n in names)
    assert "example_workflows/input/anyi2v_canny_car.png" in names
    assert sum(zipfile.ZipFile(package).getinfo(n).file_size for n in names) < 4 << 20  # no models, no docs images


def test_shipped_code_never_imports_development_code():
    """The pack (everything that ships) imports neither dev/ nor tests/; dev/ never imports tests/."""
    def imports(path: Path):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                yield from (a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.module.split(".")[0]

    shipped = [REPO / "__init__.py", *(REPO / "core").rglob("*.py"), *(REPO / "nodes").rglob("*.py")]
    bad = {str(p.relative_to(REPO)): m for p in shipped for m in imports(p) if m in DEV_PACKAGES}
    assert not bad, bad
    bad = {str(p.relative_to(REPO)): m for p in (REPO / "dev").rglob("*.py") for m in imports(p) if m == "tests"}
    assert not bad, bad


def test_the_unpacked_package_runs_in_comfyui(package, tmp_path):
    """The archive alone (no dev/, no tests/) loads in a real ComfyUI server with every node, and runs a prompt."""
    pack = tmp_path / "ComfyUI-AnyI2V"
    zipfile.ZipFile(package).extractall(pack)
    with ComfyServer(pack_dir=pack, base_dir=with_inputs(tmp_path / "base")) as server:
        info = server.object_info()
        assert [n for n in NODE_IDS if n not in info] == []
        entry = server.run(mix_prompt())
        assert entry["status"]["status_str"] == "success", error_message(entry)


def with_inputs(base: Path) -> Path:
    """A server base folder whose input/ holds the example inputs (the car's edges and the torus)."""
    shutil.copytree(INPUTS, base / "input")
    return base


def mix_prompt() -> dict:
    return {
        "img": {"class_type": "LoadImage", "inputs": {"image": "anyi2v_canny_car.png"}},
        "mix": {"class_type": "AnyI2VMixConditions",
                "inputs": {"base": ["img", 0], "overlay": ["img", 0], "mode": "inside box", "position": 0.5,
                           "x1": 8, "y1": 8, "x2": 64, "y2": 64, "feather": 0}},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["mix", 0]}},
    }


BLOCK_MISSING = """
import importlib.abc, sys

class _NoTrimesh(importlib.abc.MetaPathFinder):  # as if trimesh were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "trimesh" or name.startswith("trimesh."):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None

sys.meta_path.insert(0, _NoTrimesh())
"""
BROKEN = 'raise OSError("libspatialindex_c.so: cannot open shared object file")  # a broken native dependency\n'


@pytest.mark.parametrize("how", ["missing", "broken"])
def test_without_trimesh_only_the_render_nodes_are_disabled(tmp_path, how):
    shadow = tmp_path / "site"
    if how == "missing":
        (shadow).mkdir()
        (shadow / "sitecustomize.py").write_text(BLOCK_MISSING)
        why = "ModuleNotFoundError: No module named 'trimesh'"
    else:
        (shadow / "trimesh").mkdir(parents=True)
        (shadow / "trimesh" / "__init__.py").write_text(BROKEN)
        why = "OSError: libspatialindex_c.so"
    with ComfyServer(env={"PYTHONPATH": str(shadow)}, base_dir=with_inputs(tmp_path / "base")) as server:
        log = server.log_path.read_text(errors="replace")
        assert "AnyI2V Render Mesh and AnyI2V Render Point Cloud are disabled" in log and why in log, log[-3000:]
        info = server.object_info()
        assert [n for n in NODE_IDS if n not in info] == []  # every node listed: workflows that use them still load
        assert all("DISABLED" in info[n]["description"] for n in RENDER_NODES)
        assert not any("DISABLED" in info[n]["description"] for n in set(NODE_IDS) - RENDER_NODES)

        render = {"r": {"class_type": "AnyI2VRenderMesh", "inputs": {
            "mesh_file": "3d/anyi2v_torus.obj", "mode": "depth", "width": 64, "height": 64, "azimuth": 0.0,
            "elevation": 0.0, "distance": 3.0, "fov": 45.0, "fit": True}},
            "out": {"class_type": "PreviewImage", "inputs": {"images": ["r", 0]}}}
        entry = server.run(render)
        message = error_message(entry)
        assert entry["status"]["status_str"] == "error"
        assert "trimesh could not be imported" in message and why in message and "pip install" in message, message
        entry = server.run(mix_prompt())  # the other nodes work
        assert entry["status"]["status_str"] == "success", error_message(entry)
