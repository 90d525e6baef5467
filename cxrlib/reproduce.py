"""The papermill runner: ``python -m cxrlib.reproduce --profile demo|paper [--from NN] [--only NN] [--param k=v]``.

It discovers ``notebooks/NN_*.ipynb``, checks the profile and the ``--param`` overrides against the notebooks'
``parameters`` cells, runs the notebooks in order with papermill on an explicitly named Jupyter kernel, writes
the executed copies to ``results/<profile>/executed/``, and ends by writing ``results/<profile>/SUMMARY.md``
(run times plus every table the notebooks wrote under ``results/<profile>/tables/``).

On a failing cell it prints the notebook, the cell and the error in plain words and exits with status 1.
Exit status 2 means bad usage (unknown profile or parameter, no notebook with that number, missing kernel).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

from cxrlib.paths import REPO_ROOT, notebooks_dir, results_dir
from cxrlib.profiles import (
    NotebookInfo,
    ProfileError,
    check_parameters,
    discover_notebooks,
    load_profile,
    parse_param,
    split_settings,
)

__all__ = [
    "KERNEL_NAME",
    "RunnerError",
    "select_notebooks",
    "check_kernel",
    "run",
    "write_summary",
    "isolate",
    "main",
]

#: The Jupyter kernel that `make reproduce` / `make test` register for the project's venv.
KERNEL_NAME = "cxr-retrieval"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class RunnerError(RuntimeError):
    """A notebook failed; carries a plain-words description."""


def select_notebooks(
    notebooks: list[NotebookInfo], start: str | None, only: list[str] | None
) -> list[NotebookInfo]:
    """Apply ``--from NN`` / ``--only NN [NN ...]``; a number with no notebook raises :class:`ProfileError`."""
    numbers = [nb.number for nb in notebooks]

    def norm(n: str) -> str:
        if not str(n).isdigit():
            raise ProfileError(f"notebook numbers are like 01 or 2, got {n!r}")
        n2 = f"{int(n):02d}"
        if n2 not in numbers:
            raise ProfileError(f"no notebook numbered {n2}; available: {', '.join(numbers) or 'none'}")
        return n2

    if only:
        wanted = {norm(n) for n in only}
        return [nb for nb in notebooks if nb.number in wanted]
    if start is not None:
        s = norm(start)
        return [nb for nb in notebooks if nb.number >= s]
    return list(notebooks)


def check_kernel(name: str) -> None:
    """Raise :class:`ProfileError` with the fix when no Jupyter kernel ``name`` is installed."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if name not in specs:
        raise ProfileError(
            f"no Jupyter kernel named {name!r} (installed: {sorted(specs)}). `make reproduce` and `make test` "
            f"register it; by hand: .venv/bin/python -m ipykernel install --sys-prefix --name {name}"
        )


def _source_cell_number(nb: NotebookInfo, executed_index: int, injected: bool) -> int:
    """1-based position in the source notebook of the cell papermill reports as ``executed_index``.

    papermill counts cells of the parameterised notebook, which has its ``injected-parameters`` cell right after
    the ``parameters`` cell whenever parameters were passed; a reader looks at the source notebook.
    """
    if injected:
        cells = json.loads(nb.path.read_text()).get("cells", [])
        tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
        if tagged and executed_index > tagged[0]:
            executed_index -= 1
    return executed_index + 1


def _describe_failure(nb: NotebookInfo, exc: Exception, injected: bool = False) -> str:
    """Plain words for a failed notebook: file, cell (1-based, counting every cell of the source), error."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        src = exc.source.strip().splitlines()
        first = src[0] if src else ""
        tb = _ANSI.sub("", "\n".join(exc.traceback or []))
        last_lines = "\n".join(tb.strip().splitlines()[-6:])
        number = _source_cell_number(nb, exc.cell_index, injected)
        return (
            f"notebook {nb.path.name} failed in cell {number} (counting all cells from 1; "
            f"shown as In [{exc.exec_count}] in the executed copy), which starts with: {first[:100]}\n"
            f"error: {exc.ename}: {exc.evalue}\n"
            f"last lines of the traceback:\n{last_lines}"
        )
    return f"notebook {nb.path.name} could not run: {type(exc).__name__}: {exc}"


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def run(
    profile: str,
    start: str | None = None,
    only: list[str] | None = None,
    overrides: list[str] | None = None,
    kernel: str = KERNEL_NAME,
    nb_folder: Path | None = None,
    profiles_folder: Path | None = None,
    out_root: Path | None = None,
    refresh_notebooks: bool = False,
) -> dict:
    """Run the selected notebooks; returns ``{"notebooks": [...], "seconds": {...}, "total_seconds": ...}``.

    Each notebook gets only the parameters its ``parameters`` cell declares. A notebook that declares
    ``profile`` always gets the profile being run (a contradicting value is a usage error).
    ``nb_folder``, ``profiles_folder`` and ``out_root`` default to ``notebooks/``, ``profiles/`` and
    ``results/<profile>/``. ``out_root`` only moves the executed copies, ``run_times.json`` and ``SUMMARY.md``:
    the project's notebooks write their tables under ``results/<profile>/`` themselves, so point it elsewhere
    only for notebooks that take their output folder as a parameter (the test fixtures do).

    Raises :class:`ProfileError` for bad usage and :class:`RunnerError` when a notebook fails.
    """
    import papermill as pm

    notebooks = discover_notebooks(nb_folder or notebooks_dir())
    if not notebooks:
        raise ProfileError(f"no notebooks named NN_*.ipynb in {nb_folder or notebooks_dir()}")
    settings, params = split_settings(dict(load_profile(profile, profiles_folder)))
    check_parameters(params, notebooks, f"profiles/{profile}.yaml")
    extra_settings, extra = split_settings(dict(parse_param(p) for p in (overrides or [])))
    check_parameters(extra, notebooks, "--param")
    params.update(extra)
    if settings or extra_settings or any("overrides" in nb.parameters for nb in notebooks):
        # every setting's value is checked before the first notebook starts (not minutes later, on a GPU
        # server after the extraction): the notebooks build the same Settings from the profile + overrides
        from cxrlib.config import ConfigError, build_settings, merge_overrides

        source = f"profiles/{profile}.yaml" + (" + --param" if extra_settings else "")
        try:
            build_settings(merge_overrides(settings, extra_settings), profile=profile, source=source)
        except ConfigError as exc:
            raise ProfileError(str(exc)) from exc
        if extra_settings:
            params["overrides"] = extra_settings
    if any("profile" in nb.parameters for nb in notebooks):
        # Notebooks place their outputs by their `profile` parameter: it must be the profile being run.
        given = params.get("profile", profile)
        if given != profile:
            raise ProfileError(
                f"parameter profile={given!r} (from profiles/{profile}.yaml or --param) contradicts "
                f"--profile {profile}: the notebooks would write under results/{given}/ while the runner writes "
                f"results/{profile}/. Drop it; the runner sets `profile` itself."
            )
        params["profile"] = profile
    chosen = select_notebooks(notebooks, start, only)
    check_kernel(kernel)
    out_root = out_root or results_dir(profile)
    executed = out_root / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    print(f"profile {profile!r}: running {len(chosen)} notebook(s) on kernel {kernel!r}", flush=True)
    # each notebook's kernel is started (and imports torch) while the notebook before it runs: start-up and
    # imports are single-threaded, so they overlap the previous notebook's work instead of adding to it
    kernels = _KernelQueue(kernel, [str(nb.path.parent) for nb in chosen])
    for i, nb in enumerate(chosen, 1):
        nb_params = {k: v for k, v in params.items() if k in nb.parameters}
        print(f"[{i}/{len(chosen)}] {nb.path.name} ...", flush=True)
        t0 = time.perf_counter()
        out_path = executed / nb.path.name
        km = kernels.take()  # this notebook's kernel, already started; the next one starts now
        try:
            pm.execute_notebook(
                str(nb.path),
                str(out_path),
                parameters=nb_params,
                kernel_name=kernel,
                progress_bar=False,
                cwd=str(nb.path.parent),
                log_output=False,
                km=km,
            )
        except Exception as exc:  # papermill raises its own and kernel/startup errors
            timings[nb.name] = time.perf_counter() - t0
            kernels.stop(km)
            kernels.close()
            msg = _describe_failure(nb, exc, injected=bool(nb_params))
            print(
                f"[{i}/{len(chosen)}] FAILED after {_fmt_seconds(timings[nb.name])}\n{msg}", file=sys.stderr
            )
            print(f"the partly executed notebook is at {out_path}", file=sys.stderr)
            raise RunnerError(msg) from exc
        # every output is in and every file written once the last cell is done: stop the kernel at once
        # instead of waiting ~2 s for its interpreter to tear torch down
        kernels.stop(km)
        timings[nb.name] = time.perf_counter() - t0
        print(f"[{i}/{len(chosen)}] {nb.path.name} done in {_fmt_seconds(timings[nb.name])}", flush=True)
        if refresh_notebooks:
            _refresh(out_path, nb.path)
    total = time.perf_counter() - t_all
    shown = executed.relative_to(REPO_ROOT) if executed.is_relative_to(REPO_ROOT) else executed
    print(f"all done in {_fmt_seconds(total)}; executed copies in {shown}", flush=True)
    diff = None
    if any("overrides" in nb.parameters for nb in notebooks):
        from cxrlib.config import diff_from_defaults, load_settings

        diff = diff_from_defaults(load_settings(profile, params.get("overrides"), profiles_folder))
    write_summary(profile, out_root, timings, params, diff)
    return {"notebooks": [nb.name for nb in chosen], "seconds": timings, "total_seconds": total}


class _KernelQueue:
    """Jupyter kernels for the notebooks in order, each started one notebook ahead (``take`` hands out the
    started kernel and starts the next). A kernel imports torch, numpy and pandas as it starts
    (``IPKernelApp.exec_lines``): what every notebook's first cell imports anyway, done while the notebook
    before it runs. Numbers do not change: the notebooks seed and set threads themselves."""

    PRELOAD = "import numpy, pandas, torch"

    def __init__(self, kernel: str, cwds: list[str]) -> None:
        self.kernel, self.cwds, self.next = kernel, list(cwds), 0
        self.ahead = self._start() if self.cwds else None

    def _start(self):
        from jupyter_client import KernelManager

        km = KernelManager(kernel_name=self.kernel)
        km.start_kernel(
            cwd=self.cwds[self.next], extra_arguments=[f"--IPKernelApp.exec_lines={self.PRELOAD}"]
        )
        self.next += 1
        return km

    def take(self):
        km, self.ahead = self.ahead, (self._start() if self.next < len(self.cwds) else None)
        return km

    @staticmethod
    def stop(km) -> None:
        if km is not None and km.has_kernel:
            km.shutdown_kernel(now=True)

    def close(self) -> None:
        self.stop(self.ahead)
        self.ahead = None


def _refresh(executed: Path, target: Path) -> None:
    """Copy an executed notebook back over its source, without papermill's injected cell and metadata."""
    nb = json.loads(executed.read_text())
    nb["cells"] = [
        c for c in nb["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ]
    for c in nb["cells"]:
        c.get("metadata", {}).pop("papermill", None)
        c.get("metadata", {}).pop("execution", None)
    nb.get("metadata", {}).pop("papermill", None)
    tmp = target.with_suffix(".ipynb.tmp")
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    shutil.move(str(tmp), str(target))


def write_summary(
    profile: str, out_root: Path, timings: dict[str, float], params: dict, settings_diff: dict | None = None
) -> Path:
    """``results/<profile>/SUMMARY.md``: warnings the notebooks recorded (``warnings/*.txt``), run times,
    parameters, every table under ``tables/*.md``, figures."""
    lines = [f"# Results summary — profile `{profile}`", ""]
    if profile == "demo":
        lines += [
            "All data in the demo profile are SYNTHETIC (the phantom corpus); the backbones are small open_clip models "
            "trained here, not CLIP or BiomedCLIP. The numbers show that the pipeline works, not clinical performance.",
            "",
        ]
    warn_dir = out_root / "warnings"
    warned = sorted(warn_dir.glob("*.txt")) if warn_dir.is_dir() else []
    if warned:
        lines += ["## ⚠ Warnings", ""]
        for f in warned:
            lines += [f"- notebook {f.stem}: {w}" for w in f.read_text().splitlines() if w.strip()]
        lines += [""]
    timings_file = out_root / "run_times.json"
    old = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    old.update({k: round(v, 1) for k, v in timings.items()})
    timings_file.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    lines += ["## Run times (last run of each notebook)", "", "| notebook | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(old.items())]
    lines += ["", "## Parameters", "", "```yaml"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in sorted(params.items())]
    lines += ["```", ""]
    if settings_diff:
        lines += ["## Settings that differ from the defaults of cxrlib/config.py", "", "```yaml"]
        for section, values in settings_diff.items():
            lines += [f"{section}:"] + [f"  {k}: {json.dumps(v)}" for k, v in values.items()]
        lines += ["```", ""]
    tables = sorted((out_root / "tables").glob("*.md")) if (out_root / "tables").is_dir() else []
    for t in tables:
        lines += [f"## {t.stem}", "", t.read_text().strip(), ""]
    figs = sorted((out_root / "figures").glob("*.png")) if (out_root / "figures").is_dir() else []
    if figs:
        lines += ["## Figures", ""] + [f"- [{f.name}](figures/{f.name})" for f in figs] + [""]
    path = out_root / "SUMMARY.md"
    path.write_text("\n".join(lines))
    return path


def isolate(out: str | Path) -> Path:
    """Send this process's (and its notebooks' kernels') results and caches under ``out``.

    Sets ``CXR_RESULTS_DIR=<out>/results`` and ``CXR_CACHE_DIR=<out>/cache`` (kernels inherit the environment),
    so a run for an exercise never overwrites ``results/<profile>/`` or the shared ``.cache/``. Returns the
    absolute ``out``.
    """
    import os

    root = Path(out).expanduser()
    root = root if root.is_absolute() else Path.cwd() / root
    root.mkdir(parents=True, exist_ok=True)
    os.environ["CXR_RESULTS_DIR"] = str(root / "results")
    os.environ["CXR_CACHE_DIR"] = str(root / "cache")
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cxrlib.reproduce",
        description="Run the notebooks in order with papermill, with a parameter profile.",
    )
    p.add_argument(
        "--profile", required=True, help="profiles/<name>.yaml: demo (offline, CPU) or paper (GPU server)"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--from", dest="start", metavar="NN", help="start at notebook NN and run the rest")
    g.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a setting, e.g. loss.w_bce=0.5 or train.epochs=5 (repeatable; see the README's method card)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="an isolated run: results and caches under DIR (DIR/results/<profile>, DIR/cache), never results/",
    )
    p.add_argument("--kernel", default=KERNEL_NAME, help=f"Jupyter kernel name (default {KERNEL_NAME})")
    p.add_argument(
        "--refresh-notebooks",
        action="store_true",
        help="copy the executed notebooks back into notebooks/ (so the committed notebooks carry these outputs)",
    )
    a = p.parse_args(argv)
    if a.out:
        root = isolate(a.out)
        print(
            f"isolated run: results in {root / 'results' / a.profile}, caches in {root / 'cache'}", flush=True
        )
    try:
        run(a.profile, a.start, a.only, a.param, a.kernel, refresh_notebooks=a.refresh_notebooks)
        if a.refresh_notebooks and a.profile == "demo" and not a.out and not a.param:
            # the committed demo was refreshed: the README's demo section is generated from its tables
            from cxrlib.demo_report import update_readme

            print(
                "README.md demo results " + ("updated" if update_readme() else "already up to date"),
                flush=True,
            )
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunnerError:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
