"""Profiles (``profiles/<name>.yaml``) and the notebooks' ``parameters`` cells.

A profile is a flat mapping ``parameter name -> value``. Every name must be declared in the ``parameters``
cell of at least one notebook; the runner passes each notebook only the names its cell declares (papermill
itself would silently inject unknown names). Values are checked against the type of the notebook's default.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from cxrlib.paths import notebooks_dir, profiles_dir

__all__ = [
    "ProfileError",
    "NotebookInfo",
    "available_profiles",
    "load_profile",
    "discover_notebooks",
    "notebook_parameters",
    "parse_param",
    "check_parameters",
]

_NB_RE = re.compile(r"^(\d{2})_[A-Za-z0-9_]+\.ipynb$")


class ProfileError(ValueError):
    """A profile, a ``--param`` or a notebook selection is invalid; the message says what and how to fix it."""


@dataclass(frozen=True)
class NotebookInfo:
    number: str  # "01"
    path: Path
    parameters: dict  # name -> default value (literal)

    @property
    def name(self) -> str:
        return self.path.stem


def available_profiles(folder: Path | None = None) -> list[str]:
    folder = folder or profiles_dir()
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_profile(name: str, folder: Path | None = None) -> dict:
    """Read ``profiles/<name>.yaml`` (a flat mapping). Unknown profile -> :class:`ProfileError` listing the known."""
    folder = folder or profiles_dir()
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ProfileError(
            f"unknown profile {name!r}: no {path.name} in {folder.name}/. Available: {available_profiles(folder)}"
        )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path.name} must be a mapping of parameter names to values")
    return data


def notebook_parameters(path: Path) -> dict:
    """Names and default values assigned in the notebook's cell tagged ``parameters``.

    Raises :class:`ProfileError` when the notebook has no such cell or a value is not a Python literal.
    """
    nb = json.loads(Path(path).read_text())
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ProfileError(f"{Path(path).name} has no cell tagged 'parameters' (papermill needs one)")
    src = "".join(cells[0]["source"]) if isinstance(cells[0]["source"], list) else cells[0]["source"]
    out: dict = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        else:
            continue
        try:
            out[target] = ast.literal_eval(value)
        except ValueError as exc:
            raise ProfileError(
                f"{Path(path).name}: parameter {target!r} must be a literal (number, string, bool, list, dict, None)"
            ) from exc
    return out


def discover_notebooks(folder: Path | None = None) -> list[NotebookInfo]:
    """``notebooks/NN_*.ipynb`` in number order, with their declared parameters."""
    folder = folder or notebooks_dir()
    out = []
    for p in sorted(folder.glob("*.ipynb")):
        m = _NB_RE.match(p.name)
        if m:
            out.append(NotebookInfo(m.group(1), p, notebook_parameters(p)))
    return out


def parse_param(text: str) -> tuple[str, object]:
    """``"key=value"`` -> (key, value) with the value read as YAML (``3`` int, ``0.1`` float, ``[1,2]`` list)."""
    if "=" not in text:
        raise ProfileError(f"--param expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key.isidentifier():
        raise ProfileError(f"--param {text!r}: {key!r} is not a valid parameter name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ProfileError(f"--param {text!r}: cannot read the value ({exc})") from exc
    return key, value


def _type_ok(default: object, value: object) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def check_parameters(params: dict, notebooks: list[NotebookInfo], source: str) -> None:
    """Every name in ``params`` must be declared by some notebook, with a value of the default's type."""
    declared: dict[str, tuple[str, object]] = {}
    for nb in notebooks:
        for k, v in nb.parameters.items():
            declared.setdefault(k, (nb.name, v))
    problems = []
    for k, v in params.items():
        if k not in declared:
            close = difflib.get_close_matches(k, list(declared), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"{source}: parameter {k!r} is not declared by any notebook{hint}")
        elif not _type_ok(declared[k][1], v):
            nb, default = declared[k]
            problems.append(
                f"{source}: parameter {k!r} = {v!r} ({type(v).__name__}) does not match the type of its default "
                f"{default!r} ({type(default).__name__}) in {nb}"
            )
    if problems:
        raise ProfileError(
            "\n".join(problems) + f"\nDeclared parameters: {', '.join(sorted(declared))}"
        )
