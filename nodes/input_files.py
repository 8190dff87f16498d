"""Files a node reads from ComfyUI's input folder: listing them for a combo, resolving a choice safely."""

from __future__ import annotations

import os

import folder_paths


def input_files(extensions: tuple[str, ...]) -> list[str]:
    """Paths (relative, with /) of the files under the input folder whose names end with one of `extensions`."""
    root = folder_paths.get_input_directory()
    found = []
    for base, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(extensions):
                found.append(os.path.relpath(os.path.join(base, f), root).replace(os.sep, "/"))
    return sorted(found)


def input_path(name: str, extensions: tuple[str, ...], input_name: str) -> str:
    """The absolute path of input-folder file `name`, or a ValueError naming `input_name` if it is not a
    file with one of `extensions` inside the input folder."""
    root = os.path.realpath(folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(root, name))
    if not path.startswith(root + os.sep) or not path.lower().endswith(extensions) or not os.path.isfile(path):
        raise ValueError(f"{input_name}: '{name}' is not a {' / '.join(extensions)} file in the input folder")
    return path


def fingerprint(name: str):
    """Changes when the file changes, so a node reading it runs again."""
    path = os.path.join(folder_paths.get_input_directory(), name)
    return (name, os.path.getmtime(path), os.path.getsize(path)) if os.path.isfile(path) else name
