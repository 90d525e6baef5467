"""Profiles and parameters cells: loading, discovery, ``--param`` parsing and checking (no kernel started)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from cxrlib.profiles import (
    NotebookInfo,
    ProfileError,
    available_profiles,
    check_parameters,
    discover_notebooks,
    load_profile,
    notebook_parameters,
    parse_param,
)

PARAMS_SRC = """\
# Parameters
profile = "demo"  # a string
n_rows = 3  # an int
scale: float = 0.5  # an annotated float
tags = ["a", "b"]  # a list
verbose = False  # a bool
options = {"k": 1}  # a dict
nothing = None  # None accepts any type
import math  # not an assignment: ignored
a = b = 2  # chained assignment: ignored
"""


def write_nb(path: Path, params: str | None = PARAMS_SRC, extra: tuple[str, ...] = ("x = 1",)) -> Path:
    """A notebook: a markdown cell, the parameters cell (when ``params`` is given), then ``extra`` code cells."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# fixture"))
    if params is not None:
        cell = nbformat.v4.new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in extra]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def info(number: str, **params) -> NotebookInfo:
    return NotebookInfo(number, Path(f"{number}_nb.ipynb"), params)


# ---------------------------------------------------------------------------------------------- load_profile


def test_load_profile_reads_flat_mapping(tmp_path):
    (tmp_path / "fixture.yaml").write_text(
        "# comment\nn_rows: 4  # int\nscale: 2.0\ntags: [x, y]\nverbose: true\nlabel: '007'\n"
    )
    assert load_profile("fixture", tmp_path) == {
        "n_rows": 4,
        "scale": 2.0,
        "tags": ["x", "y"],
        "verbose": True,
        "label": "007",
    }


def test_empty_profile_is_an_empty_mapping(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing set: every notebook keeps its defaults\n")
    assert load_profile("empty", tmp_path) == {}


def test_unknown_profile_lists_available(tmp_path):
    for name in ("demo", "paper"):
        (tmp_path / f"{name}.yaml").write_text("seed: 0\n")
    (tmp_path / "notes.txt").write_text("not a profile")
    assert available_profiles(tmp_path) == ["demo", "paper"]
    with pytest.raises(ProfileError) as err:
        load_profile("papr", tmp_path)
    msg = str(err.value)
    assert "unknown profile 'papr'" in msg
    assert "'demo'" in msg and "'paper'" in msg


@pytest.mark.parametrize(
    "text, says",
    [
        ("n_rows: [1, 2\n", "not valid YAML"),  # unclosed flow sequence
        ("n_rows: 1\n  scale: 2\n", "not valid YAML"),  # bad indentation
        ("- 1\n- 2\n", "must be a mapping"),
        ("seed: 0\nseed: 1\n", "given twice"),  # plain YAML would keep 1 silently
        ("on: 1\n", "keys must be parameter names"),  # YAML 1.1 reads `on` as True
        ("bad-name: 1\n", "keys must be parameter names"),
    ],
)
def test_malformed_profile_names_the_file(tmp_path, text, says):
    (tmp_path / "broken.yaml").write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile("broken", tmp_path)
    assert "broken.yaml" in str(err.value)
    assert says in str(err.value)


# ---------------------------------------------------------------------------------------- notebook_parameters


def test_notebook_parameters_reads_the_tagged_cell(tmp_path):
    # a later untagged cell assigning a parameter name must not count
    path = write_nb(tmp_path / "01_a.ipynb", extra=("n_rows = 99", "other = 1"))
    assert notebook_parameters(path) == {
        "profile": "demo",
        "n_rows": 3,
        "scale": 0.5,
        "tags": ["a", "b"],
        "verbose": False,
        "options": {"k": 1},
        "nothing": None,
    }


def test_only_the_first_parameters_cell_counts(tmp_path):
    path = write_nb(tmp_path / "01_a.ipynb", params="first = 1\n")
    nb = nbformat.read(path, as_version=4)
    second = nbformat.v4.new_code_cell("second = 2\n")
    second.metadata["tags"] = ["parameters"]
    nb.cells.append(second)
    nbformat.write(nb, path)
    assert notebook_parameters(path) == {"first": 1}


def test_notebook_without_parameters_cell_is_an_error(tmp_path):
    path = write_nb(tmp_path / "01_a.ipynb", params=None)
    with pytest.raises(ProfileError, match=r"01_a\.ipynb has no cell tagged 'parameters'"):
        notebook_parameters(path)


@pytest.mark.parametrize(
    "src, says",
    [
        ("n = len([1, 2])\n", "parameter 'n' must be a literal"),
        (
            "d = {[1]: 2}\n",
            "parameter 'd' must be a literal",
        ),  # unhashable key: TypeError inside literal_eval
        ("%matplotlib inline\nn = 1\n", "not plain Python"),
        ("n = (1,\n", "not plain Python"),
    ],
)
def test_bad_parameters_cell_names_the_notebook(tmp_path, src, says):
    path = write_nb(tmp_path / "03_bad.ipynb", params=src)
    with pytest.raises(ProfileError) as err:
        notebook_parameters(path)
    assert "03_bad.ipynb" in str(err.value)
    assert says in str(err.value)


def test_not_a_notebook_names_the_file(tmp_path):
    path = tmp_path / "01_a.ipynb"
    path.write_text("{ this is not json")
    with pytest.raises(ProfileError, match=r"01_a\.ipynb is not a valid notebook"):
        notebook_parameters(path)


# ----------------------------------------------------------------------------------------- discover_notebooks


def test_discover_orders_by_number_and_ignores_other_files(tmp_path):
    write_nb(tmp_path / "10_last.ipynb", params="z = 1\n")
    write_nb(tmp_path / "02_middle.ipynb", params="y = 'b'\n")
    write_nb(tmp_path / "01_first.ipynb", params="x = 0.5\n")
    # none of these is NN_*.ipynb; none has a parameters cell, so reading one would raise
    for name in ("scratch.ipynb", "1_one_digit.ipynb", "03-dash.ipynb", "004_three.ipynb", "05_x.ipynb.bak"):
        write_nb(tmp_path / name, params=None)
    (tmp_path / "06_notes.md").write_text("not a notebook")
    write_nb(tmp_path / "sub" / "07_nested.ipynb")  # only the folder itself is searched

    found = discover_notebooks(tmp_path)
    assert [nb.number for nb in found] == ["01", "02", "10"]
    assert [nb.name for nb in found] == ["01_first", "02_middle", "10_last"]
    assert [nb.parameters for nb in found] == [{"x": 0.5}, {"y": "b"}, {"z": 1}]


def test_discover_rejects_two_notebooks_with_one_number(tmp_path):
    write_nb(tmp_path / "02_a.ipynb", params="x = 1\n")
    write_nb(tmp_path / "02_b.ipynb", params="y = 1\n")
    with pytest.raises(ProfileError, match="02_a.ipynb and 02_b.ipynb share the number 02"):
        discover_notebooks(tmp_path)


def test_discover_reports_the_notebook_without_parameters_cell(tmp_path):
    write_nb(tmp_path / "01_ok.ipynb", params="x = 1\n")
    write_nb(tmp_path / "02_untagged.ipynb", params=None)
    with pytest.raises(ProfileError, match="02_untagged.ipynb"):
        discover_notebooks(tmp_path)


def test_discover_empty_folder(tmp_path):
    assert discover_notebooks(tmp_path) == []


# ------------------------------------------------------------------------------------------------ parse_param


@pytest.mark.parametrize(
    "text, expected",
    [
        ("n=3", ("n", 3)),
        ("lr=0.001", ("lr", 0.001)),
        ("lr=1e-3", ("lr", 0.001)),  # plain PyYAML (YAML 1.1) would give the string "1e-3"
        ("lr=-2E5", ("lr", -200000.0)),
        ("lr=1.0e-3", ("lr", 0.001)),
        ("name=e5", ("name", "e5")),
        ("ratios=[0.7, 0.1, 0.2]", ("ratios", [0.7, 0.1, 0.2])),
        ("names=[clip, biomedclip]", ("names", ["clip", "biomedclip"])),
        ("opts={a: 1}", ("opts", {"a": 1})),
        ("flag=true", ("flag", True)),
        ("flag=False", ("flag", False)),
        ("dataset=iu_xray", ("dataset", "iu_xray")),
        ("label='007'", ("label", "007")),
        ("data_dir=", ("data_dir", "")),
        ("url=a=b", ("url", "a=b")),  # only the first '=' splits
        (" seed = 7", ("seed", 7)),
        ("x=null", ("x", None)),
    ],
)
def test_parse_param_reads_values_as_yaml(text, expected):
    key, value = parse_param(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])  # 3 is an int, not 3.0; "007" stays a string


@pytest.mark.parametrize(
    "text, says",
    [
        ("seed", "expects key=value"),
        ("=3", "neither a parameter name nor section.field"),
        ("my-seed=3", "neither a parameter name nor section.field"),
        ("ratios=[1, 2", "cannot read the value"),
    ],
)
def test_parse_param_rejects_bad_text(text, says):
    with pytest.raises(ProfileError, match=says):
        parse_param(text)


# ------------------------------------------------------------------------------------------- check_parameters

NOTEBOOKS = [
    info("01", profile="demo", n_patients=1600, seed=0, split_ratios=[0.7, 0.1, 0.2], frontal_only=True),
    info("02", profile="demo", batch_size=64, temperature=0.07, backbones=["demo"], cache={}, limit=None),
]


def test_check_parameters_accepts_declared_names_of_matching_type():
    check_parameters(
        {
            "n_patients": 10,
            "temperature": 1,  # an int where the default is a float is fine
            "split_ratios": [0.5, 0.5, 0.0],
            "frontal_only": False,
            "backbones": ["clip", "biomedclip"],
            "cache": {"dir": "x"},
            "limit": 5,  # default None accepts anything
            "seed": None,  # and None is accepted for any default
        },
        NOTEBOOKS,
        "profiles/demo.yaml",
    )


def test_unknown_parameter_gets_a_suggestion():
    with pytest.raises(ProfileError) as err:
        check_parameters({"n_patient": 10}, NOTEBOOKS, "--param")
    msg = str(err.value)
    assert "--param: parameter 'n_patient' is not declared by any notebook" in msg
    assert "did you mean n_patients" in msg
    assert "Declared parameters: backbones, batch_size, cache" in msg


def test_unknown_parameter_without_close_match_has_no_suggestion():
    with pytest.raises(ProfileError) as err:
        check_parameters({"zzzzzz": 1}, NOTEBOOKS, "profiles/x.yaml")
    assert "'zzzzzz' is not declared" in str(err.value)
    assert "did you mean" not in str(err.value)


@pytest.mark.parametrize(
    "name, value",
    [
        ("n_patients", 0.5),  # float for an int
        ("n_patients", "10"),  # quoted number
        ("n_patients", True),  # bool is an int subclass in Python, still rejected
        ("frontal_only", 1),  # int for a bool
        ("temperature", True),
        ("temperature", "0.1"),
        ("split_ratios", 0.7),
        ("backbones", "clip"),  # a string where a list is expected
        ("cache", [1]),
        ("profile", 3),
    ],
)
def test_wrong_type_is_an_error(name, value):
    with pytest.raises(ProfileError) as err:
        check_parameters({name: value}, NOTEBOOKS, "profiles/demo.yaml")
    msg = str(err.value)
    assert f"profiles/demo.yaml: parameter {name!r} = {value!r}" in msg
    assert "does not match the type of its default" in msg


def test_exponent_without_dot_in_a_profile_gets_the_fix(tmp_path):
    # profiles stay plain YAML 1.1, as `papermill -f profiles/x.yaml` reads them: 1e-3 is a string there
    (tmp_path / "p.yaml").write_text("temperature: 1e-3\nbatch_size: 1e3\n")
    params = load_profile("p", tmp_path)
    assert params == {"temperature": "1e-3", "batch_size": "1e3"}
    with pytest.raises(ProfileError) as err:
        check_parameters(params, NOTEBOOKS, "profiles/p.yaml")
    lines = {line.split("'")[1]: line for line in str(err.value).splitlines()[:2]}
    assert "(YAML reads 1e-3 as a string: write it with a dot, e.g. 0.001)" in lines["temperature"]
    assert "write it with a dot" not in lines["batch_size"]  # an int default: no float hint


def test_all_problems_are_reported_at_once():
    with pytest.raises(ProfileError) as err:
        check_parameters({"sed": 1, "batch_size": "big", "seed": 1}, NOTEBOOKS, "--param")
    lines = str(err.value).splitlines()
    assert any("'sed' is not declared" in line and "did you mean seed" in line for line in lines)
    assert any("'batch_size' = 'big'" in line for line in lines)
    assert not any("'seed' =" in line for line in lines)


def test_non_string_key_does_not_crash_the_suggestion():
    with pytest.raises(ProfileError, match="parameter 1 is not declared"):
        check_parameters({1: "x"}, NOTEBOOKS, "profiles/demo.yaml")
