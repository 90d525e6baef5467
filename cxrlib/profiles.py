"""Profiles (``profiles/<name>.yaml``) and the notebooks' ``parameters`` cells.

A project profile is nested by settings section (``data:``, ``loss:``, ... — :data:`cxrlib.config.SECTIONS`)
and lists only what differs from the defaults declared in :mod:`cxrlib.config`; the project's notebooks
declare just ``profile`` and ``overrides`` and build their settings with :func:`cxrlib.config.load_settings`.

A top-level key that is not a section is a *notebook parameter*: it must be declared in the ``parameters``
cell of at least one notebook, and the runner passes each notebook only the names its cell declares
(papermill itself would silently inject unknown names), type-checked against the notebook's default. The
project's profiles have none; a notebook of your own can use them.
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
    "split_settings",
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"key {key!r} is given twice",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _ParamLoader(_UniqueKeyLoader):
    """For ``--param`` values only: also reads ``1e-3`` as a float.

    Profiles keep plain YAML 1.1 (as ``papermill -f profiles/x.yaml`` reads them), where ``1e-3`` is a string;
    :func:`check_parameters` flags that there with the fix.
    """


_ParamLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


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
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{folder.name}/{path.name} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{folder.name}/{path.name} must be a mapping of parameter names to values")
    bad = [k for k in data if not (isinstance(k, str) and k.isidentifier())]
    if bad:
        raise ProfileError(
            f"{folder.name}/{path.name}: keys must be parameter names (Python identifiers), got {bad!r}"
            " (YAML reads unquoted yes/no/on/off/null as booleans/None)"
        )
    return data


def notebook_parameters(path: Path) -> dict:
    """Names and default values assigned in the notebook's cell tagged ``parameters``.

    Raises :class:`ProfileError` when the notebook has no such cell or a value is not a Python literal.
    """
    name = Path(path).name
    try:
        nb = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{name} is not a valid notebook file (JSON error: {exc})") from exc
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ProfileError(f"{name} has no cell tagged 'parameters' (papermill needs one)")
    src = "".join(cells[0]["source"]) if isinstance(cells[0]["source"], list) else cells[0]["source"]
    try:
        body = ast.parse(src).body
    except SyntaxError as exc:
        raise ProfileError(
            f"{name}: the 'parameters' cell is not plain Python (line {exc.lineno}: {exc.msg}); "
            "keep it to `name = literal  # comment` lines, no magics"
        ) from exc
    out: dict = {}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        else:
            continue
        try:
            out[target] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError) as exc:
            raise ProfileError(
                f"{name}: parameter {target!r} must be a literal (number, string, bool, list, dict, None)"
            ) from exc
    return out


def discover_notebooks(folder: Path | None = None) -> list[NotebookInfo]:
    """``notebooks/NN_*.ipynb`` in number order, with their declared parameters.

    Other files (``scratch.ipynb``, ``1_x.ipynb``, sub-folders) are ignored; two notebooks with one number are an error.
    """
    folder = folder or notebooks_dir()
    out: list[NotebookInfo] = []
    for p in sorted(folder.glob("*.ipynb")):
        m = _NB_RE.match(p.name)
        if m:
            if out and out[-1].number == m.group(1):
                raise ProfileError(
                    f"{out[-1].path.name} and {p.name} share the number {m.group(1)}: "
                    "--from/--only would be ambiguous; renumber one of them"
                )
            out.append(NotebookInfo(m.group(1), p, notebook_parameters(p)))
    return out


def parse_param(text: str) -> tuple[str, object]:
    """``"key=value"`` -> (key, value) with the value read as YAML, as in a profile.

    ``3`` int, ``0.1`` and ``1e-3`` float, ``[1,2]`` list, ``true`` bool, ``'007'`` string, ``none`` None.
    ``key`` is a notebook parameter name or ``section.field`` (a setting, e.g. ``loss.w_bce``).
    """
    if "=" not in text:
        raise ProfileError(f"--param expects key=value (e.g. loss.w_bce=0.5), got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if len(parts) > 2 or not all(p.isidentifier() for p in parts):
        raise ProfileError(
            f"--param {text!r}: {key!r} is neither a parameter name nor section.field (e.g. train.epochs)"
        )
    try:
        value = yaml.load(raw, Loader=_ParamLoader) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ProfileError(f"--param {text!r}: cannot read the value ({exc})") from exc
    if isinstance(value, str) and value.strip().lower() == "none":
        value = None
    return key, value


def split_settings(values: dict) -> tuple[dict, dict]:
    """``(settings, notebook parameters)``: top-level keys that name a settings section vs the others.

    Dotted keys (``"loss.w_bce"``, from ``--param``) become ``{"loss": {"w_bce": ...}}``.
    """
    from cxrlib.config import SECTIONS

    settings: dict = {}
    params: dict = {}
    for k, v in values.items():
        if "." in k:
            section, name = k.split(".", 1)
            settings.setdefault(section, {})[name] = v
        elif k in SECTIONS:
            if not isinstance(v, dict):
                raise ProfileError(f"section {k!r} must map field names to values, got {v!r}")
            settings.setdefault(k, {}).update(v)
        else:
            params[k] = v
    return settings, params


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


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _setting_fields() -> dict[str, list[str]]:
    """Field name -> the settings sections that declare it (for the "write section.field" hint)."""
    import dataclasses

    from cxrlib.config import SECTIONS

    out: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, []).append(section)
    return out


def check_parameters(params: dict, notebooks: list[NotebookInfo], source: str) -> None:
    """Every name in ``params`` must be declared by some notebook, with a value of the default's type."""
    declared: dict[str, tuple[str, object]] = {}
    for nb in notebooks:
        for k, v in nb.parameters.items():
            declared.setdefault(k, (nb.name, v))
    problems = []
    for k, v in params.items():
        if k not in declared:
            close = difflib.get_close_matches(str(k), list(declared), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            fields = _setting_fields().get(str(k))
            if fields:
                hint = f" (it is a setting: write {' or '.join(f'{s}.{k}' for s in fields)}=...)"
            problems.append(f"{source}: parameter {k!r} is not declared by any notebook{hint}")
        elif not _type_ok(declared[k][1], v):
            nb, default = declared[k]
            hint = ""
            if isinstance(default, float) and isinstance(v, str) and _looks_like_float(v):
                hint = f" (YAML reads {v} as a string: write it with a dot, e.g. {float(v)!r})"
            problems.append(
                f"{source}: parameter {k!r} = {v!r} ({type(v).__name__}) does not match the type of its default "
                f"{default!r} ({type(default).__name__}) in {nb}{hint}"
            )
    if problems:
        raise ProfileError("\n".join(problems) + f"\nDeclared parameters: {', '.join(sorted(declared))}")
