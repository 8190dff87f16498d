"""A new user's first minute: example 1 dropped into a ComfyUI without AnimateDiff-Evolved (its nodes
show as missing). The picture behind the boxes depends only on the image chain: the editor posts just
that chain and its preview, so node types missing elsewhere in the graph never matter. Both frontends."""

import json

import numpy as np
import pytest

from dev.support.examples import copy_inputs
from dev.support.server import ComfyServer
from tests.browser.conftest import FRONTENDS, newest_frontend_root
from tests.browser.editor import find_node, load_workflow, our_deprecations
from tests.browser.test_editor_background import (
    EXAMPLE_1,
    count_prompts,
    input_image,
    picture,
    show_editor,
    wait_picture,
    white_on_canvas,
)

pytestmark = [pytest.mark.browser, pytest.mark.host]
ADE_TYPES = {n["type"] for n in EXAMPLE_1["nodes"] if n["type"].startswith("ADE_")}


@pytest.fixture(scope="module", params=FRONTENDS)
def server(request):
    """This module's own server per frontend: the pack alone, no AnimateDiff-Evolved (nor its stand-in)."""
    root = None
    if request.param == "newest":
        root = newest_frontend_root()
        if root is None:
            pytest.skip("the newest comfyui-frontend-package could not be installed (no registry access?)")
    with ComfyServer(front_end_root=root) as s:
        copy_inputs(s.base / "input")
        yield s


def test_example_1_without_animatediff_shows_the_car_before_any_run(page, server):
    assert ADE_TYPES and not ADE_TYPES & set(server.object_info())  # the graph's ADE nodes are missing here
    bodies = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data))
            if r.method == "POST" and r.url.endswith("/prompt") else None)
    posts = count_prompts(page)
    history = set(server.get("/history"))
    load_workflow(page, EXAMPLE_1)  # closes the missing nodes and missing models dialogs once they are open
    find_node(page)
    show_editor(page)
    src = wait_picture(page)
    assert np.abs(picture(server, src).astype(int) - input_image("anyi2v_canny_car.png")).max() <= 1
    assert white_on_canvas(page) > 300
    # one job, holding only the image chain (Load Image -> Upscale Image) and the editor's preview of it
    assert len(posts) == 1 and len(bodies) == 1
    posted = sorted(entry["class_type"] for entry in bodies[0]["prompt"].values())
    assert posted == ["ImageScale", "LoadImage", "PreviewImage"], posted
    assert set(server.get("/history")) == history
    assert our_deprecations(page) == []
