"""The papermill runner end to end, on small fixture notebooks written into tmp dirs at test time.

Every papermill execution starts a kernel (a few seconds), so the executions are module-scoped fixtures shared
by many assertions: a full run through ``run(...)``, ``--only 01`` and ``--from 02`` through ``main([...])``,
and a failing notebook through ``main([...])``. Usage errors are checked before any kernel starts, so those
tests are cheap. The kernel is the project's (``make venv`` registers it).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

import cxrlib.profiles
from cxrlib import reproduce
from cxrlib.profiles import ProfileError, discover_notebooks
from cxrlib.reproduce import KERNEL_NAME, check_kernel, main, run, select_notebooks, write_summary

# ------------------------------------------------------------------------------------------------- fixtures

FIRST_PARAMS = """\
profile = "demo"  # the runner sets it to the profile being run
out_dir = ""  # where tables/ and figures/ go (the tests pass a tmp dir)
n_rows = 3  # rows of the table
scale = 0.5  # value = row * scale
tags = ["a"]  # joined into the third column
"""
FIRST_BODY = """\
from pathlib import Path

if not out_dir:
    raise ValueError("pass out_dir")
tables = Path(out_dir) / "tables"
tables.mkdir(parents=True, exist_ok=True)
rows = "\\n".join(f"| {i} | {i * scale} | {','.join(tags)} |" for i in range(n_rows))
(tables / f"01_first_{profile}.md").write_text("| i | value | tags |\\n|---|---|---|\\n" + rows + "\\n")
print(f"wrote {n_rows} rows")
"""
SECOND_PARAMS = """\
out_dir = ""  # where tables/ and figures/ go
label = "none"  # written into the table
n_rows = 1  # declared here too, so both notebooks get it
"""
SECOND_BODY = """\
from pathlib import Path

root = Path(out_dir)
(root / "tables").mkdir(parents=True, exist_ok=True)
(root / "figures").mkdir(parents=True, exist_ok=True)
(root / "tables" / "02_second.md").write_text(f"| label | n_rows |\\n|---|---|\\n| {label} | {n_rows} |\\n")
(root / "figures" / "02_second_dot.png").write_bytes(b"\\x89PNG\\r\\n\\x1a\\n")  # only its name is used
"""
OUT_PARAM = 'out_dir = ""  # unused here\n'
BOOM_CELL = 'raise ValueError(f"fixture boom: x={x}, the table is empty")'


def write_nb(path: Path, params: str, *code: str) -> None:
    """Markdown title, the ``parameters`` cell, then the code cells; kernelspec = the project's kernel."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {path.stem}"))
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in code]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@dataclass
class Fixture:
    root: Path
    notebooks: Path  # 01_first, 02_second, plus files the runner must ignore
    failing: Path  # 01_ok, 02_boom (raises in cell 4), 03_after
    profiles: Path  # fixture.yaml, failing.yaml, typo.yaml


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Fixture:
    root = tmp_path_factory.mktemp("runner")
    f = Fixture(root, root / "notebooks", root / "failing", root / "profiles")
    write_nb(f.notebooks / "01_first.ipynb", FIRST_PARAMS, FIRST_BODY)
    write_nb(f.notebooks / "02_second.ipynb", SECOND_PARAMS, SECOND_BODY)
    write_nb(f.notebooks / "scratch.ipynb", OUT_PARAM, BOOM_CELL.replace("{x}", "scratch ran"))  # not NN_*
    write_nb(f.failing / "01_ok.ipynb", OUT_PARAM, "ok = True")
    write_nb(f.failing / "02_boom.ipynb", OUT_PARAM, "x = 1", BOOM_CELL, "after = True")
    write_nb(f.failing / "03_after.ipynb", OUT_PARAM, "ran = True")
    f.profiles.mkdir()
    (f.profiles / "fixture.yaml").write_text("n_rows: 4  # an int\nscale: 2.0  # a float\ntags: [x, y, z]\n")
    (f.profiles / "failing.yaml").write_text("# no settings: the notebooks' defaults\n")
    (f.profiles / "typo.yaml").write_text("n_row: 4\n")
    return f


@contextlib.contextmanager
def pointed_at(nb_folder: Path, profiles_folder: Path, results_root: Path):
    """Make ``main`` (which takes no folders) use the fixture folders instead of notebooks/, profiles/, results/."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reproduce, "notebooks_dir", lambda: nb_folder)
        mp.setattr(cxrlib.profiles, "profiles_dir", lambda: profiles_folder)
        mp.setattr(reproduce, "results_dir", lambda profile, *parts: results_root.joinpath(profile, *parts))
        yield


@dataclass
class Outcome:
    rc: int | None
    out: str
    err: str
    base: Path  # results root: the profile's outputs are in base/<profile>/


def cli(fx: Fixture, argv: list[str], base: Path, nb_folder: Path | None = None) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    with pointed_at(nb_folder or fx.notebooks, fx.profiles, base):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    return Outcome(rc, out.getvalue(), err.getvalue(), base)


def injected_source(executed_nb: Path) -> str:
    nb = nbformat.read(executed_nb, as_version=4)
    cells = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{executed_nb.name}: expected one injected-parameters cell"
    return cells[0].source


# ------------------------------------------------------------------------- full run through run(...)


@pytest.fixture(scope="module")
def full(fx, tmp_path_factory):
    out_root = tmp_path_factory.mktemp("full") / "fixture"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = run(
            "fixture",
            overrides=[f"out_dir={out_root}", "label=from-cli"],
            nb_folder=fx.notebooks,
            profiles_folder=fx.profiles,
            out_root=out_root,
        )
    return result, out_root, stdout.getvalue()


def test_run_executes_every_nn_notebook_in_order(full):
    result, out_root, _ = full
    assert result["notebooks"] == ["01_first", "02_second"]
    assert sorted(result["seconds"]) == ["01_first", "02_second"]
    assert all(s > 0 for s in result["seconds"].values())
    assert result["total_seconds"] >= sum(result["seconds"].values())
    executed = out_root / "executed"
    assert sorted(p.name for p in executed.iterdir()) == ["01_first.ipynb", "02_second.ipynb"]  # no scratch
    first = nbformat.read(executed / "01_first.ipynb", as_version=4)
    assert "wrote 4 rows" in "".join(o.get("text", "") for c in first.cells for o in c.get("outputs", []))


def test_run_prints_progress(full):
    _, _, stdout = full
    assert "profile 'fixture': running 2 notebook(s) on kernel 'cxr-retrieval'" in stdout
    lines = stdout.splitlines()
    start_1 = lines.index("[1/2] 01_first.ipynb ...")
    start_2 = lines.index("[2/2] 02_second.ipynb ...")
    assert start_1 < start_2
    assert any(line.startswith("[1/2] 01_first.ipynb done in ") and line.endswith(" s") for line in lines)
    assert any(line.startswith("all done in ") for line in lines[start_2:])


def test_each_notebook_gets_only_its_declared_parameters(full, fx):
    _, out_root, _ = full
    first = injected_source(out_root / "executed" / "01_first.ipynb")
    second = injected_source(out_root / "executed" / "02_second.ipynb")
    # profile values (typed), the runner's own profile name, --param overrides
    for line in (
        'profile = "fixture"',
        "n_rows = 4",
        "scale = 2.0",
        'tags = ["x", "y", "z"]',
        f'out_dir = "{out_root}"',
    ):
        assert line in first
    assert "label" not in first
    for line in ('label = "from-cli"', "n_rows = 4", f'out_dir = "{out_root}"'):
        assert line in second
    for name in ("scale", "tags", "profile"):  # papermill itself would inject them all
        assert name not in second


def test_summary_gathers_tables_figures_times_and_parameters(full):
    _, out_root, _ = full
    summary = (out_root / "SUMMARY.md").read_text()
    assert summary.startswith("# Results summary — profile `fixture`")
    assert "SYNTHETIC" not in summary  # the demo disclaimer is for the demo profile only
    # the tables the notebooks wrote, with values that came from the profile and --param
    assert "## 01_first_fixture\n\n| i | value | tags |" in summary
    assert "| 3 | 6.0 | x,y,z |" in summary
    assert "## 02_second\n\n| label | n_rows |\n|---|---|\n| from-cli | 4 |" in summary
    assert "- [02_second_dot.png](figures/02_second_dot.png)" in summary
    times = json.loads((out_root / "run_times.json").read_text())
    assert sorted(times) == ["01_first", "02_second"]
    assert f"| 01_first | {times['01_first']} |" in summary
    assert 'label: "from-cli"' in summary and 'profile: "fixture"' in summary and "n_rows: 4" in summary


# ------------------------------------------------------------- --only / --from through main([...])


@pytest.fixture(scope="module")
def only_01(fx, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    o = cli(fx, ["--profile", "fixture", "--only", "1", "--param", f"out_dir={base / 'fixture'}"], base)
    executed = base / "fixture" / "executed"
    # snapshot: the --from run below writes into the same results folder
    listing = sorted(p.name for p in executed.iterdir()) if executed.is_dir() else []
    summary = (
        (base / "fixture" / "SUMMARY.md").read_text() if (base / "fixture" / "SUMMARY.md").exists() else ""
    )
    return o, listing, summary


@pytest.fixture(scope="module")
def from_02(fx, only_01, tmp_path_factory):
    """``--from 02 --refresh-notebooks`` on a copy of the notebooks, into the results folder of ``--only 01``."""
    base = only_01[0].base
    copy = tmp_path_factory.mktemp("nbcopy") / "notebooks"
    shutil.copytree(fx.notebooks, copy)
    argv = [
        "--profile",
        "fixture",
        "--from",
        "02",
        "--refresh-notebooks",
        "--param",
        f"out_dir={base / 'fixture'}",
    ]
    return cli(fx, argv, base, nb_folder=copy), copy


def test_only_runs_just_that_notebook(only_01):
    o, listing, summary = only_01
    assert o.rc == 0, o.err
    assert listing == ["01_first.ipynb"]
    assert "[1/1] 01_first.ipynb" in o.out and "02_second" not in o.out
    assert "| 3 | 6.0 | x,y,z |" in summary and "## 02_second" not in summary


def test_from_runs_that_notebook_and_the_rest(from_02):
    o, _ = from_02
    assert o.rc == 0, o.err
    assert "[1/1] 02_second.ipynb" in o.out and "01_first" not in o.out


def test_partial_runs_accumulate_in_the_summary(from_02):
    o, _ = from_02
    out_root = o.base / "fixture"
    assert sorted(p.name for p in (out_root / "executed").iterdir()) == ["01_first.ipynb", "02_second.ipynb"]
    assert sorted(json.loads((out_root / "run_times.json").read_text())) == ["01_first", "02_second"]
    summary = (out_root / "SUMMARY.md").read_text()
    assert "## 01_first_fixture" in summary  # from the earlier --only 01 run
    assert "| none | 4 |" in summary  # 02 with its default label and the profile's n_rows


def test_refresh_notebooks_copies_outputs_back_without_papermill_traces(from_02, fx):
    _, copy = from_02
    refreshed = nbformat.read(copy / "02_second.ipynb", as_version=4)
    original = nbformat.read(fx.notebooks / "02_second.ipynb", as_version=4)
    assert [c.source for c in refreshed.cells] == [c.source for c in original.cells]  # no injected cell
    assert refreshed.cells[1].metadata["tags"] == ["parameters"]
    assert all(c.execution_count for c in refreshed.cells if c.cell_type == "code")
    assert "papermill" not in refreshed.metadata
    assert not any("papermill" in c.metadata or "execution" in c.metadata for c in refreshed.cells)
    assert discover_notebooks(copy)[1].parameters == discover_notebooks(fx.notebooks)[1].parameters
    # 01 was not selected, so it is untouched
    assert (copy / "01_first.ipynb").read_bytes() == (fx.notebooks / "01_first.ipynb").read_bytes()


def test_select_notebooks():
    nbs = [reproduce.NotebookInfo(n, Path(f"{n}_x.ipynb"), {}) for n in ("01", "02", "03", "10")]
    assert [nb.number for nb in select_notebooks(nbs, None, None)] == ["01", "02", "03", "10"]
    assert [nb.number for nb in select_notebooks(nbs, "2", None)] == ["02", "03", "10"]
    assert [nb.number for nb in select_notebooks(nbs, "10", None)] == ["10"]
    assert [nb.number for nb in select_notebooks(nbs, None, ["10", "1", "01"])] == [
        "01",
        "10",
    ]  # in order, once
    with pytest.raises(ProfileError, match="no notebook numbered 04; available: 01, 02, 03, 10"):
        select_notebooks(nbs, "04", None)
    with pytest.raises(ProfileError, match="no notebook numbered 09"):
        select_notebooks(nbs, None, ["01", "9"])
    with pytest.raises(ProfileError, match="notebook numbers are like 01 or 2, got 'first'"):
        select_notebooks(nbs, "first", None)


# -------------------------------------------------------------------------------- a failing notebook


@pytest.fixture(scope="module")
def failing(fx, tmp_path_factory):
    base = tmp_path_factory.mktemp("failing")
    return cli(fx, ["--profile", "failing", "--param", f"out_dir={base}"], base, nb_folder=fx.failing)


def test_failing_notebook_exits_non_zero(failing):
    assert failing.rc == 1


def test_failure_names_notebook_cell_and_error(failing):
    err = failing.err
    assert "[2/3] FAILED after" in err
    # cell 4 of the source notebook: title, parameters, x = 1, the raise
    assert "notebook 02_boom.ipynb failed in cell 4 (counting all cells from 1" in err
    assert f"which starts with: {BOOM_CELL}" in err
    assert "error: ValueError: fixture boom: x=1, the table is empty" in err
    assert "\x1b[" not in err  # colour codes stripped
    assert "the partly executed notebook is at" in err and "02_boom.ipynb" in err.splitlines()[-1]


@pytest.mark.parametrize(
    "cell_index, injected, number",
    [
        (3, False, 4),  # no parameters passed: papermill's 0-based index in the source notebook
        (4, True, 4),  # parameters passed: papermill counts its injected cell after the parameters cell
        (0, True, 1),  # a cell above the parameters cell is not shifted
    ],
)
def test_failure_cell_is_numbered_as_in_the_source_notebook(fx, cell_index, injected, number):
    from papermill.exceptions import PapermillExecutionError

    exc = PapermillExecutionError(
        cell_index=cell_index,
        exec_count=2,
        source=BOOM_CELL + "\nmore = 1",
        ename="ValueError",
        evalue="fixture boom",
        traceback=["\x1b[0;31mValueError\x1b[0m: fixture boom"],
    )
    nb = discover_notebooks(fx.failing)[1]
    msg = reproduce._describe_failure(nb, exc, injected=injected)
    assert msg.startswith(f"notebook 02_boom.ipynb failed in cell {number} (counting all cells from 1; ")
    assert f"which starts with: {BOOM_CELL}\n" in msg
    assert "error: ValueError: fixture boom" in msg and "\x1b[" not in msg


def test_failure_stops_the_run(failing):
    executed = failing.base / "failing" / "executed"
    assert sorted(p.name for p in executed.iterdir()) == ["01_ok.ipynb", "02_boom.ipynb"]  # 03 never ran
    assert "[1/3] 01_ok.ipynb done in" in failing.out
    assert "03_after" not in failing.out + failing.err
    assert not (failing.base / "failing" / "SUMMARY.md").exists()


# ------------------------------------------------------- usage errors: exit 2, before any kernel starts


def usage_error(fx: Fixture, tmp_path: Path, *argv: str, nb_folder: Path | None = None) -> str:
    o = cli(fx, list(argv), tmp_path, nb_folder=nb_folder)
    assert o.rc == 2, (o.out, o.err)
    assert not any(tmp_path.iterdir()), "a usage error must not create outputs"
    assert o.err.startswith("error: ")
    return o.err


def test_unknown_param_is_rejected_with_suggestion(fx, tmp_path):
    err = usage_error(fx, tmp_path, "--profile", "fixture", "--param", "n_row=3")
    assert "--param: parameter 'n_row' is not declared by any notebook (did you mean n_rows?)" in err


def test_param_of_wrong_type_is_rejected(fx, tmp_path):
    err = usage_error(fx, tmp_path, "--profile", "fixture", "--param", "n_rows=many")
    assert "parameter 'n_rows' = 'many' (str) does not match the type of its default 3 (int)" in err


def test_malformed_param_is_rejected(fx, tmp_path):
    err = usage_error(fx, tmp_path, "--profile", "fixture", "--param", "n_rows")
    assert "--param expects key=value (e.g. loss.w_bce=0.5), got 'n_rows'" in err


def test_unknown_name_in_profile_is_rejected(fx, tmp_path):
    err = usage_error(fx, tmp_path, "--profile", "typo")
    assert (
        "profiles/typo.yaml: parameter 'n_row' is not declared by any notebook (did you mean n_rows?)" in err
    )


def test_unknown_profile_lists_available(fx, tmp_path):
    err = usage_error(fx, tmp_path, "--profile", "paper")
    assert "unknown profile 'paper'" in err
    assert "['failing', 'fixture', 'typo']" in err


@pytest.mark.parametrize(
    "selection, says",
    [
        (["--from", "09"], "no notebook numbered 09; available: 01, 02"),
        (["--only", "02", "9"], "no notebook numbered 09; available: 01, 02"),
        (["--from", "second"], "notebook numbers are like 01 or 2"),
    ],
)
def test_notebook_number_without_notebook_is_rejected(fx, tmp_path, selection, says):
    assert says in usage_error(fx, tmp_path, "--profile", "fixture", *selection)


def test_contradicting_profile_parameter_is_rejected(fx, tmp_path):
    err = usage_error(fx, tmp_path, "--profile", "fixture", "--param", "profile=demo")
    assert "parameter profile='demo'" in err and "contradicts --profile fixture" in err


def test_folder_without_notebooks_is_rejected(fx, tmp_path):
    empty = tmp_path.parent / f"{tmp_path.name}_empty"
    empty.mkdir()
    assert "no notebooks named NN_*.ipynb" in usage_error(
        fx, tmp_path, "--profile", "fixture", nb_folder=empty
    )


def test_missing_kernel_is_a_clear_usage_error(fx, tmp_path):
    with pytest.raises(ProfileError) as exc:
        check_kernel("no-such-kernel-cxr")
    assert "no Jupyter kernel named 'no-such-kernel-cxr'" in str(exc.value)
    assert "ipykernel install --sys-prefix --name no-such-kernel-cxr" in str(exc.value)
    err = usage_error(fx, tmp_path, "--profile", "fixture", "--kernel", "no-such-kernel-cxr")
    assert "no Jupyter kernel named 'no-such-kernel-cxr'" in err


def test_project_kernel_is_installed():
    check_kernel(KERNEL_NAME)  # raises with the fix when `make venv` did not register it


def test_from_and_only_together_is_a_usage_error(fx, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--profile", "fixture", "--from", "01", "--only", "02"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_write_summary_without_tables(tmp_path):
    path = write_summary("demo", tmp_path, {"01_a": 1.234}, {"seed": 0})
    text = path.read_text()
    assert "SYNTHETIC" in text  # the demo profile is labelled as synthetic data
    assert "| 01_a | 1.2 |" in text and "seed: 0" in text
    assert "## Figures" not in text


# --------------------------------------------------------------------------------------------------------
# settings (cxrlib.config): checked before the first notebook starts
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("param", "says"),
    [
        ("loss.pos_weight=balanced2", "pos_weight must be None, 'balanced' or a float > 0"),
        ("projector.cls_on=imagez", "'imagez' is not accepted (did you mean 'image'?). Accepted: 'both'"),
        ("viz.methods=[tsne,pca2]", "'pca2' is not accepted"),
        ("eval.split=tset", "eval.split = 'tset'"),
        ("lossy.w_bce=1", "unknown section 'lossy'"),
        ("pos_weight=1.5", "it is a setting: write loss.pos_weight=..."),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(fx, tmp_path, param, says):
    err = usage_error(fx, tmp_path, "--profile", "fixture", "--param", param)
    assert says in err


def test_a_profile_section_with_a_bad_value_is_refused(fx, tmp_path):
    (fx.profiles / "badsettings.yaml").write_text("train:\n  epochs: many  # not a number\n")
    err = usage_error(fx, tmp_path, "--profile", "badsettings")
    assert "profiles/badsettings.yaml: train.epochs = 'many' (str): expected int" in err


def test_setting_overrides_reach_notebooks_that_declare_overrides(tmp_path):
    from cxrlib.profiles import split_settings

    settings, params = split_settings({"loss.w_bce": 0.5, "train": {"epochs": 3}, "n_rows": 2})
    assert settings == {"loss": {"w_bce": 0.5}, "train": {"epochs": 3}} and params == {"n_rows": 2}


def test_isolated_run_sends_results_and_caches_under_out(tmp_path, monkeypatch):
    from cxrlib import paths
    from cxrlib.reproduce import isolate

    for var in ("CXR_RESULTS_DIR", "CXR_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)  # restored after the test
    assert paths.results_dir("demo") == paths.REPO_ROOT / "results" / "demo"
    root = isolate(tmp_path / "me")
    assert paths.results_dir("demo", "tables") == root / "results" / "demo" / "tables"
    assert paths.profile_cache_dir("demo") == root / "cache" / "demo" and root.is_dir()
