"""Workflows saved when low_memory was a boolean widget, in the real frontend: the widget shows the choice the
boolean means, and the prompt carries it."""

import json

import pytest

from dev.support.examples import EXAMPLES

pytestmark = [pytest.mark.browser, pytest.mark.host]


@pytest.mark.parametrize("saved, shown", [(True, "on"), (False, "auto")])
def test_a_boolean_low_memory_loads_as_its_choice(page, server, saved, shown):
    workflow = json.loads(EXAMPLES[0].read_text())
    node = next(n for n in workflow["nodes"] if n["type"] == "AnyI2VKSampler")
    node["widgets_values"][-1] = saved  # low_memory is the node's last widget, as it was when it was a boolean
    got = page.evaluate("""async (wf) => { await app.loadGraphData(wf);
        const node = app.graph._nodes.find(n => n.type === "AnyI2VKSampler");
        const widget = node.widgets.find(w => w.name === "low_memory");
        const p = await app.graphToPrompt();
        return {widget: widget.value, options: widget.options.values, prompt: p.output[String(node.id)].inputs.low_memory}; }""",
                        workflow)
    assert got == {"widget": shown, "options": ["auto", "on", "off"], "prompt": shown}
