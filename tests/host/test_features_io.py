"""AnyI2V Save/Load Features round trip and refusal of foreign files."""

import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from dev.support.comfy_run import PromptError
from tests.host import prompts

pytestmark = pytest.mark.host


def test_round_trip_gives_the_same_features(host):
    import folder_paths

    p = prompts.invert(prompts.base(motion=False))
    p["save"] = {"class_type": "AnyI2VSaveFeatures", "inputs": {"features": ["inv", 0], "filename_prefix": "anyi2v_test/feats"}}
    out = host.run(p)
    saved = out["save"]["text"][0].removeprefix("saved ")
    src = os.path.join(folder_paths.get_output_directory(), saved)
    dst = os.path.join(folder_paths.get_input_directory(), "anyi2v_test", "roundtrip.safetensors")
    shutil.copy(src, dst)
    original = host.node_output(p, "inv")[0]
    loaded = host.node_output({"l": {"class_type": "AnyI2VLoadFeatures", "inputs": {"features_file": "anyi2v_test/roundtrip.safetensors"}}}, "l")[0]
    for b in original.queries:
        assert torch.equal(loaded.queries[b], original.queries[b].cpu())
    for b in original.residuals:
        assert torch.equal(loaded.residuals[b], original.residuals[b].cpu())
    assert loaded.model_signature == original.model_signature and loaded.query_hw == original.query_hw


@pytest.mark.parametrize("content, message", [
    ("foreign", "not an AnyI2V features file"),
    ("pickle", "not a readable .safetensors file"),
])
def test_foreign_files_are_refused_clearly(host, content, message):
    import folder_paths

    path = os.path.join(folder_paths.get_input_directory(), "anyi2v_test", f"{content}.safetensors")
    if content == "foreign":
        save_file({"weight": torch.zeros(2, 2)}, path)
    else:
        import pickle

        with open(path, "wb") as f:
            pickle.dump({"boom": 1}, f)
    with pytest.raises(PromptError, match=message):
        host.run({"l": {"class_type": "AnyI2VLoadFeatures", "inputs": {"features_file": f"anyi2v_test/{content}.safetensors"}}})
