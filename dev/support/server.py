"""Start and stop a REAL ComfyUI server (the host's main.py) on a free loopback port.

    with ComfyServer(extra_nodes=[STANDIN_ADE, TINY_MODELS_PACK], models_dir=...) as server:
        server.object_info(); server.queue(prompt); server.wait(prompt_id) ...

The base directory (custom_nodes, input, output, user, the database) is a fresh temporary folder
unless one is given; this pack and any extra custom-node folders are linked into it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .host import REPO, comfy_dir, host_dir

STANDIN_ADE = REPO / "dev" / "standin_ade"
TINY_MODELS_PACK = REPO / "dev" / "tiny_models_pack"
PACK_LINK_NAME = "ComfyUI-AnyI2V"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    pass


class ComfyServer:
    def __init__(self, extra_nodes=(), models_dir: Path | None = None, base_dir: Path | None = None,
                 front_end_root: Path | None = None, extra_args=(), startup_timeout: float = 120.0,
                 pack_dir: Path = REPO, env: dict | None = None):
        """pack_dir: the pack folder linked into custom_nodes (this checkout, or e.g. an unpacked registry archive);
        env: extra environment variables of the server process."""
        self.pack_dir = Path(pack_dir)
        self.env = dict(env or {})
        self.extra_nodes = [Path(p) for p in extra_nodes]
        self.models_dir = Path(models_dir) if models_dir else None
        self._own_base = base_dir is None
        self.base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="anyi2v-server-"))
        self.front_end_root = front_end_root
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base / "server.log"

    # lifecycle -------------------------------------------------------------------------------
    def _prepare(self):
        nodes_dir = self.base / "custom_nodes"
        nodes_dir.mkdir(parents=True, exist_ok=True)
        for name, target in [(PACK_LINK_NAME, self.pack_dir)] + [(p.name, p) for p in self.extra_nodes]:
            link = nodes_dir / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target, target_is_directory=True)
        for sub in ("input", "output", "user", "temp"):
            (self.base / sub).mkdir(exist_ok=True)
        args = []
        if self.models_dir is not None:
            config = self.base / "extra_model_paths.yaml"
            folders = ["checkpoints", "loras", "vae", "animatediff_models", "controlnet", "clip", "unet", "diffusion_models"]
            lines = ["anyi2v:", f"  base_path: {self.models_dir}"] + [f"  {f}: {f}" for f in folders]
            config.write_text("\n".join(lines) + "\n")
            args += ["--extra-model-paths-config", str(config)]
        return args

    def start(self):
        args = self._prepare()
        python = host_dir() / "venv" / "bin" / "python"
        cmd = [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--database-url", f"sqlite:///{self.base / 'comfy.db'}",
               "--disable-auto-launch", *args, *self.extra_args]
        if self.front_end_root is not None:
            cmd += ["--front-end-root", str(self.front_end_root)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=comfy_dir(), stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                info = self.get("/object_info/AnyI2VTrajectory")
                if "AnyI2VTrajectory" in info:
                    return self
                raise ServerError(f"the pack's nodes are missing from /object_info:\n{self.log_tail()}")
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise ServerError(f"ComfyUI did not start within {self.startup_timeout} s:\n{self.log_tail()}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        if self._own_base and os.environ.get("ANYI2V_KEEP_SERVER_DIR") is None:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # HTTP --------------------------------------------------------------------------------------
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def post(self, path: str, payload: dict | None = None):
        data = json.dumps(payload or {}).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
        return 200, json.loads(body) if body else None

    def post_raw(self, path: str, body: bytes) -> int:
        req = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status

    def object_info(self) -> dict:
        return self.get("/object_info")

    def queue(self, prompt: dict, extra_data: dict | None = None) -> tuple[int, dict]:
        """POST /prompt; returns (status, body). body has prompt_id on success, node_errors otherwise."""
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        return self.post("/prompt", payload)

    def history(self, prompt_id: str) -> dict | None:
        return (self.get(f"/history/{prompt_id}") or {}).get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Wait until the prompt is in /history; return its entry (status, outputs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return entry
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        status, body = self.queue(prompt)
        if status != 200:
            raise ServerError(f"/prompt refused the prompt ({status}): {json.dumps(body)[:2000]}")
        return self.wait(body["prompt_id"], timeout)

    def interrupt(self):
        return self.post("/interrupt")

    def view(self, image: dict) -> bytes:
        q = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=30) as r:
            return r.read()

    def rss_mb(self) -> float:
        """Resident memory of the server process (MB), from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise ServerError("no VmRSS")


def error_message(entry: dict) -> str:
    """The execution_error message of a failed /history entry ('' if none)."""
    for event, data in entry.get("status", {}).get("messages", []):
        if event == "execution_error":
            return f"{data.get('exception_type', '')}: {data.get('exception_message', '')}"
    return ""


if __name__ == "__main__":  # manual use: python -m dev.support.server
    with ComfyServer(extra_nodes=[STANDIN_ADE, TINY_MODELS_PACK]) as s:
        print(s.url, file=sys.stderr)
        input("press enter to stop")
