"""The example workflows load in the real frontend, name their models where it looks for them, and its
graphToPrompt agrees with our converter."""

import json

import pytest

from dev.support.examples import EXAMPLES
from dev.support.workflow_api import ui_to_api
from tests.browser.conftest import screenshot
from tests.browser.editor import load_workflow, workflow_models

pytestmark = [pytest.mark.browser, pytest.mark.host]


def strip(prompt):
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_frontend_loads_the_example_and_converts_it_like_ours(page, server, path):
    workflow = json.loads(path.read_text())
    # a user without the models is told which and in which folder, with a link to each (properties.models)
    told = load_workflow(page, workflow)
    models = workflow_models(workflow)
    assert models and all(m["name"] in told and m["directory"] in told for m in models), told
    frontend = page.evaluate("""async () => {
        const missing = app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type);
        const p = await app.graphToPrompt(); return {output: p.output, missing}; }""")
    assert frontend["missing"] == []
    ours = ui_to_api(workflow, server.object_info())
    assert strip(frontend["output"]) == strip(ours)
    screenshot(page, f"{path.stem}-{server.frontend.split()[0]}.png")
