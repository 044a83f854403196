"""The house: imports run one way along the data's path, words are defined once, test hooks stay in tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "melset"

# The house plan, written once: the data's path, in order. A module may import only from its
# own layer or those before it. README.md's Architecture section and docs/architecture.md list
# these rooms in this order (checked below); `python docs/house.py` draws docs/house.png from it.
LAYERS = [
    {"vocab", "errors", "system", "outputs"},
    {"melscale"},
    {"recipe"},
    {"location"},
    {"catalog"},
    {"audio"},
    {"features"},
    {"track"},
    {"store"},
    {"engines"},
    {"extract"},
    {"train_config", "runs"},
    {"dataset", "export", "exportdir", "card", "plots", "model", "augment"},
    {"train", "evaluate", "predict"},
    {"report"},
    {"cli"},
]
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


ENTRY_POINTS = {"__main__"}  # `python -m melset`: runs the cli, holds nothing; ranked after it
PLAN = dict(RANK)
RANK.update({entry: len(LAYERS) for entry in ENTRY_POINTS})


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SRC.parent).with_suffix("").parts): p for p in SRC.rglob("*.py")}


def _room(module: str) -> str:
    """melset.catalog.fma -> catalog; melset.engines.local -> engines; melset -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("melset.")}


def test_every_module_has_a_room():
    rooms = {_room(m) for m in _modules()} - {"__init__", ""} - ENTRY_POINTS
    assert rooms <= set(PLAN), f"modules outside the house plan: {sorted(rooms - set(PLAN))}"
    assert set(PLAN) <= rooms, f"rooms in the plan with no module: {sorted(set(PLAN) - rooms)}"


def _rooms_listed(path: Path, heading: str) -> list[str]:
    """The rooms a document's house listing names, in order: the code block under `heading`,
    one room a line (`  name.py  what it does` or `  name/  what it does`)."""
    text = path.read_text()
    assert heading in text, f"{path.name} has no {heading!r} section"
    block = text.split(heading, 1)[1].split("```", 2)[1]
    names = []
    for line in block.splitlines():
        first = line.split()[0] if line.strip() else ""
        if line.startswith("  ") and not line.startswith("   ") and (first.endswith((".py", "/"))):
            names.append(first.removesuffix(".py").removesuffix("/"))
    return names


@pytest.mark.parametrize(
    "doc, heading", [("README.md", "## Architecture"), ("docs/architecture.md", "## The rooms")]
)
def test_the_docs_list_the_rooms_of_the_plan_in_order(doc, heading):
    listed = _rooms_listed(SRC.parents[1] / doc, heading)
    plan = [room for layer in LAYERS for room in layer]
    assert sorted(listed) == sorted(plan), f"{doc} lists {sorted(set(listed) ^ set(plan))} differently from LAYERS"
    ranks = [RANK[r] for r in listed]
    assert ranks == sorted(ranks), f"{doc} lists the rooms out of the data's order: {listed}"


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _room(m) in RANK))
def test_imports_point_back_along_the_data_path(module):
    here = RANK[_room(module)]
    for imported in _imports(_modules()[module]):
        room = _room(imported)
        if room in RANK:
            assert RANK[room] <= here, (
                f"{module} imports {imported}: {room} comes after {_room(module)} on the data's path"
            )


def test_no_import_cycles():
    mods = _modules()
    graph = {m: {i for i in _imports(p) if i in mods} for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*stack, m, n])}")
            if n not in state:
                visit(n, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_no_module_named_after_a_library_it_imports():
    libraries = {
        "torch",
        "ray",
        "numpy",
        "pandas",
        "pyarrow",
        "scipy",
        "soundfile",
        "soxr",
        "av",
        "click",
        "rich",
        "matplotlib",
        "sklearn",
        "datasets",
        "webdataset",
        "pebble",
    }
    for module in _modules():
        name = module.rsplit(".", 1)[-1]
        assert name not in libraries, f"{module} shadows the {name} library"


def test_engines_front_door_is_short():
    assert len((SRC / "engines" / "__init__.py").read_text().splitlines()) <= 40


def test_fault_injection_lives_in_test_support_only():
    for path in SRC.rglob("*.py"):
        assert "MELSET_FAULT_INJECT" not in path.read_text(), f"{path} reads the test-only fault variable"


def test_vocabulary_is_spelled_only_in_vocab():
    from melset import vocab

    words = {*vocab.STATUSES, vocab.PENDING, *vocab.SPLITS, *vocab.STORE_FILES, *vocab.RUN_FILES}
    words |= {vocab.TRACK_ID, vocab.GENRE_TOP, vocab.SUBSET, vocab.STATUS, vocab.DURATION_S}
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "vocab.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in words:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}")
    assert not offenders, "spell these through melset.vocab: " + ", ".join(offenders)


def test_bare_import_reaches_the_public_api():
    import melset

    assert callable(melset.extract.extract)
    assert melset.Recipe().shape == (128, 1024)
    assert callable(melset.open_catalog) and callable(melset.catalog.fma.catalog)
    assert issubclass(melset.errors.StoreError, melset.MelsetError)


def test_the_extract_driver_imports_neither_the_features_nor_scipy(tmp_path):
    """Workers compute; the driver only reads metadata, dispatches and writes the journal.
    scipy (0.14 s of imports) and the features in the driver would be CPU taken from the
    workers on every run; unpickling a TrackResult must not pull them in."""
    import subprocess
    import sys

    from conftest import sample_extract

    code = (
        "import sys\n"
        "from melset.cli import main\n"
        "try:\n"
        f"    main({[str(a) for a in sample_extract(tmp_path / 'store')]!r}, standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('scipy', 'melset.features', 'melset.audio', 'melset.track') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['melset.track']", (
        "the driver received results without the recipe's imports"
    )


def test_the_command_runs_openblas_on_one_thread_unless_told_otherwise():
    """`import melset` loads no numpy, so the command sets OPENBLAS_NUM_THREADS before numpy
    starts OpenBLAS's threads (idle ones spin, taking CPU from the workers at every start);
    a value the user set is kept."""
    import os
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "import melset\n"
        "assert 'numpy' not in sys.modules, 'import melset loaded numpy'\n"
        "import melset.cli, numpy\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    for given, expected in ((None, "1"), ("3", "3")):
        run_env = env if given is None else {**env, "OPENBLAS_NUM_THREADS": given}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=run_env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected
