"""The committed notebooks: thin, in order, with a parameters cell, and executed in full mode (not tiny).

Every notebook prints ``run mode: <mode>`` early (``ebft_repro.notebook.session.Session``), so a notebook
saved after a tiny-mode run (``pytest --nbmake``) is caught here.
"""

import ast
import json
import re

import nbformat
import pytest

from ebft_repro.utils import repo_root

NOTEBOOKS = [
    "00_quickstart",
    "01_feature_matching_objective",
    "02_strided_sampling",
    "03_features",
    "04_qa_coding",
    "05_unstructured_code",
    "06_translation",
    "07_ablations",
    "08_reproduction_report",
]
MAX_CELL_LINES = 15
ASSIGNMENT = re.compile(r"^[A-Z][A-Z0-9_]* = [^=]")
DEFINITION = re.compile(r"^\s*(async\s+def|def|class)\s")


def _load(name: str):
    return nbformat.read(repo_root() / "notebooks" / f"{name}.ipynb", as_version=4)


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join(output.get("traceback", []))
    data = output.get("data", {})
    return "\n".join(str(data.get(kind, "")) for kind in ("text/plain", "text/html", "text/markdown"))


def _is_parameters(cell) -> bool:
    return "parameters" in cell.get("metadata", {}).get("tags", [])


def test_all_notebooks_present_in_order():
    found = sorted(path.stem for path in (repo_root() / "notebooks").glob("*.ipynb"))
    assert found == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_structure(name):
    cells = _load(name).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {name[:2]} "), (
        "title cell first"
    )
    assert "Paper" in cells[0].source, (
        "the opening cell says which claim or figure of the paper it reproduces"
    )
    assert cells[-1].cell_type == "markdown" and cells[-1].source.startswith("## Conclusion"), (
        "conclusion last"
    )
    assert "_(written after" not in cells[-1].source, "the conclusion is still a placeholder"
    parameters = [cell for cell in cells if _is_parameters(cell)]
    assert len(parameters) == 1, "exactly one cell tagged 'parameters'"
    for line in parameters[0].source.splitlines():
        assert ASSIGNMENT.match(line) or not line.strip() or line.startswith("#"), (
            f"not a simple assignment: {line}"
        )
    assert "RUN_MODE" in parameters[0].source and "SEED" in parameters[0].source
    for cell in cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        assert len(lines) <= MAX_CELL_LINES, f"code cell of {len(lines)} lines:\n{cell.source}"
        assert not any(DEFINITION.match(line) for line in lines), (
            f"definition in a notebook cell:\n{cell.source}"
        )
        assert "lambda" not in cell.source, f"a lambda is a function definition:\n{cell.source}"
        assert "../" not in cell.source and "sys.path" not in cell.source, "paths come from the package"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_with_full_mode_outputs(name):
    cells = [cell for cell in _load(name).cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in cells), "every code cell was executed"
    parameters = next(cell for cell in cells if _is_parameters(cell))
    assert not parameters.outputs, "the parameters cell prints nothing"
    for cell in cells:
        lines = [line for line in cell.source.splitlines() if line.strip()]
        imports_only = all(line.startswith(("import ", "from ")) for line in lines)
        if not (imports_only or _is_parameters(cell)):
            assert cell.outputs, f"a code cell without output:\n{cell.source}"
    texts = [_text(output) for cell in cells for output in cell.outputs]
    joined = "\n".join(texts)
    assert "run mode: full" in joined, "the notebook prints its run mode"
    assert "run mode: tiny" not in joined, "committed with tiny-mode outputs"
    assert "MICRO RUNS" not in joined, "committed with tiny-mode micro runs"
    assert not any(output.get("output_type") == "error" for cell in cells for output in cell.outputs)
    assert str(repo_root()) not in joined, "outputs leak an absolute local path"
    for cell in cells:
        if "nb.show(" in cell.source:
            kinds = {kind for output in cell.outputs for kind in output.get("data", {})}
            assert "image/png" in kinds, f"figure cell without an image output:\n{cell.source}"


# ---------------------------------------------------------- ebft_repro.notebook.session (no notebook run)


def test_run_mode_and_paths(monkeypatch, tmp_path):
    from ebft_repro.notebook import session as nb

    monkeypatch.setenv("EBFT_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("EBFT_RUN_MODE", "tiny")
    assert nb.run_mode() == "tiny" and nb.run_mode("full") == "full"
    with pytest.raises(ValueError, match="run mode"):
        nb.run_mode("medium")
    assert nb.by_mode("tiny", full=8, tiny=1) == 1 and nb.by_mode("full", full=8, tiny=1) == 8
    tiny, full = nb.Session("03_features", "tiny"), nb.Session("03_features", "full")
    assert tiny.figure_path("pca") == tmp_path / "_tiny" / "figures" / "03_pca.png"
    assert full.figure_path("pca") == tmp_path / "figures" / "03_pca.png"
    assert str(tiny).startswith("run mode: tiny") and str(full).startswith("run mode: full")


def _fake_run(root, task, method, lr=3e-4):
    from ebft_repro.utils import write_json

    summary = {"task": task, "method": method, "seed": 0, "lr": lr, "n_steps": 16, "final": {"val_ce": 1.0}}
    write_json(root / "runs" / f"{task}-{method}-seed0" / "summary.json", summary)


def test_results_source_prefers_small_and_falls_back_to_tiny(monkeypatch, tmp_path):
    from ebft_repro.notebook import session as nb
    from ebft_repro.utils import write_json

    monkeypatch.setenv("EBFT_RESULTS_DIR", str(tmp_path))
    methods = ("ebft", "sft", "rlvr")
    for method in methods:
        _fake_run(tmp_path / "tiny", "qa_code", method)
    selection = {f"qa_code-{m}": {"grid": [3e-4], "picked": 3e-4} for m in methods}
    write_json(tmp_path / "tiny" / "lr_selection.json", selection)
    _fake_run(tmp_path / "small", "qa_code", "ebft")  # small is unfinished: SFT and RLVR are missing
    session = nb.Session("04_qa_coding", "full")
    source = nb.comparison_source(session, "qa_code", run_missing=False)
    assert source.preset == "tiny" and not source.micro
    assert "SMOKE-TEST" in source.banner() and "16 steps, 1 seed per method" in source.banner()
    assert nb.finished_tasks(tmp_path / "small") == []
    with pytest.raises(FileNotFoundError):
        nb.comparison_source(session, "translation", run_missing=False)
    assert nb.report_source(session).preset == "tiny"
    for method in ("sft", "rlvr"):  # once small is finished it wins
        _fake_run(tmp_path / "small", "qa_code", method)
    write_json(tmp_path / "small" / "lr_selection.json", selection)
    assert nb.comparison_source(session, "qa_code", run_missing=False).preset == "small"


def test_finished_cpu_results_win_over_tiny_and_lose_to_small(monkeypatch, tmp_path):
    from ebft_repro.notebook import session as nb
    from ebft_repro.utils import write_json

    monkeypatch.setenv("EBFT_RESULTS_DIR", str(tmp_path))
    methods = ("ebft", "sft", "rlvr")
    selection = {f"qa_code-{m}": {"grid": [3e-4], "picked": 3e-4} for m in methods}
    session = nb.Session("04_qa_coding", "full")
    for preset in ("tiny", "cpu", "small"):
        for method in methods:
            _fake_run(tmp_path / preset, "qa_code", method)
        write_json(tmp_path / preset / "lr_selection.json", selection)
        source = nb.comparison_source(session, "qa_code", run_missing=False)
        assert source.preset == preset  # each finished preset outranks the ones before it
    cpu = nb.ResultsSource("cpu", tmp_path / "cpu", selection=selection)
    assert "`cpu` preset" in cpu.banner() and "SMOKE-TEST" not in cpu.banner()


@pytest.mark.parametrize(
    ("name", "task"),
    [("04_qa_coding", "qa_code"), ("05_unstructured_code", "code"), ("06_translation", "translation")],
)
def test_committed_task_tables_match_the_results_they_read(name, task):
    """Every cell of the committed task table is what ``results/cpu/summary.csv`` says today."""
    from ebft_repro.experiments.report import task_summary
    from ebft_repro.utils import results_dir

    cells = [cell for cell in _load(name).cells if cell.cell_type == "code"]
    banner = "\n".join(_text(output) for cell in cells for output in cell.outputs)
    if "Results of the `cpu` preset" not in banner:
        pytest.skip("the committed notebook shows another preset")
    table_cell = next(cell for cell in cells if "report.task_summary(" in cell.source)
    shown = "\n".join(_text(output) for output in table_cell.outputs)
    expected = task_summary(results_dir() / "cpu", task)
    assert len(expected) == 4  # the base model and the three methods
    for method, row in expected.iterrows():
        for column, value in row.items():
            if value:
                assert str(value) in shown, f"{method} {column}: {value} is not in the committed table"


def _shown(name: str, marker: str) -> str:
    """The plain-text output of the first code cell of notebook ``name`` whose source contains ``marker``."""
    cell = next(c for c in _load(name).cells if c.cell_type == "code" and marker in c.source)
    texts = [output.get("text") or output.get("data", {}).get("text/plain", "") for output in cell.outputs]
    return _tidy("\n".join(texts))


def _tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def _as_shown(frame) -> str:
    """A DataFrame's text as a notebook's ``text/plain`` shows it (pandas' Jupyter display options)."""
    import pandas as pd

    with pd.option_context("display.max_columns", 20, "display.width", 80):
        return _tidy(repr(frame))


def test_committed_verdicts_match_the_results_they_read():
    """Notebook 08's verdict and effect-size tables are what ``results/cpu`` gives today, to the character."""
    from ebft_repro.experiments import report
    from ebft_repro.utils import results_dir

    if "Results of the `cpu` preset" not in _shown("08_reproduction_report", "report_source("):
        pytest.skip("the committed notebook shows another preset")
    claims = report.claims_table(report.load_runs(results_dir() / "cpu"), margin=0.1)
    assert _shown("08_reproduction_report", "claims = report.claims_table(frame, margin=MARGIN)")  # displayed
    verdicts = claims.pivot_table(index="claim", columns="task", values="verdict", aggfunc="first")
    assert _as_shown(verdicts) == _shown("08_reproduction_report", 'values="verdict"')
    advantage = claims.pivot_table(index="claim", columns="task", values="EBFT advantage", aggfunc="first")
    assert _as_shown(advantage.round(4)) == _shown("08_reproduction_report", 'values="EBFT advantage"')


def test_committed_quickstart_tables_match_its_run_files():
    """Notebook 00's training and evaluation tables are the rows of the run folder it committed."""
    from ebft_repro.notebook.session import metrics_table
    from ebft_repro.utils import read_jsonl, results_dir

    rows = read_jsonl(results_dir() / "notebooks" / "00_quickstart" / "run" / "metrics.jsonl")
    for kind in ("train", "eval"):
        marker = f'metrics_table(result.metrics, "{kind}", '
        cell = next(c for c in _load("00_quickstart").cells if marker in c.source)
        shown_list = cell.source.split(marker, 1)[1].split(")", 1)[0]
        columns = ast.literal_eval(shown_list)
        assert _as_shown(metrics_table(rows, kind, columns).round(4)) == _shown("00_quickstart", marker)


def test_committed_ablation_table_matches_its_run_files():
    """Notebook 07's whitening table is the final and step-0 CFM loss in each committed run's summary."""
    from ebft_repro.experiments import ablations
    from ebft_repro.utils import read_json, results_dir

    cfg = ablations.base_config("full", seed=0)
    shown = _shown("07_ablations", 'frame["factor"] == "whitening"').splitlines()[2:]  # skip the header lines
    settings = ablations.variants(cfg, ablations.factors_for("full"))
    settings = [s for s in settings if s["factor"] == "whitening"]
    assert [line.split()[0] for line in shown] == [s["value"] for s in settings]
    for line, setting in zip(shown, settings, strict=True):
        run_dir = results_dir() / "ablations" / cfg.preset / setting["run"]
        config = read_json(run_dir / "config.json")
        expected_cfg = ablations.apply_overrides(cfg, setting["overrides"]).to_dict()
        assert config == json.loads(json.dumps(expected_cfg)), f"{run_dir} holds a run of another config"
        summary = read_json(run_dir / "summary.json")
        values = [float(v) for v in line.split()[1:]]
        final, initial = summary["final"]["val_fm_loss"], summary["initial"]["val_fm_loss"]
        assert values == [round(final, 4), round(initial, 4)]


LISTING = re.compile(r"^# (?P<name>\S+) \((?P<path>[^,]+), lines (?P<start>\d+)-(?P<end>\d+)\)\n")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_source_listings_are_the_current_source(name):
    """Every ``show_source`` output a notebook committed is, line for line, the package's source today."""
    listings = []
    for cell in _load(name).cells:
        if cell.cell_type != "code" or "show_source(" not in cell.source:
            continue
        shown = [LISTING.match(o.get("data", {}).get("text/plain", "")) for o in cell.outputs]
        assert any(shown), f"{name}: a show_source cell has no listing in its committed output"
        listings += [(m, o["data"]["text/plain"][m.end() :]) for m, o in zip(shown, cell.outputs) if m]
    for match, code in listings:
        lines = (repo_root() / match["path"]).read_text().splitlines(keepends=True)
        current = "".join(lines[int(match["start"]) - 1 : int(match["end"])])
        assert current.rstrip("\n") == code.rstrip("\n"), f"{name}: {match['name']} changed; re-execute it"
