"""Finding the user's project (-f, -m, pyproject.toml, runsense.toml) and loading its Definitions."""

from __future__ import annotations

import sys
import uuid

import pytest

from runsense_cli.errors import ProjectError
from runsense_cli.project import ProjectRef, find_project, load_project

DEFS = """
from runsense_cli import Definitions, job, op, run_failure_sensor

@op
def work():
    return 1

@job
def my_job():
    work()

@run_failure_sensor
def on_failure(context):
    pass

defs = Definitions(jobs=[my_job], sensors=[on_failure])
"""


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch):
    """Loading a project edits sys.path and sys.modules; undo both after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def unique(prefix: str = "proj") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def test_file_option_finds_the_file_and_its_stem_is_the_location(project, tmp_path):
    """Given -f defs.py (relative to cwd), then the project is that file; loading it gives its
    Definitions named after the file's stem, with jobs and sensors."""
    path = project(DEFS)

    ref = find_project(file=f"proj/{path.name}", cwd=tmp_path)
    defs = load_project(ref)

    assert ref == ProjectRef(path.stem, str(path.parent), str(path))
    assert ref.location == path.stem
    assert defs.location == path.stem
    assert defs.get_job("my_job").location == path.stem
    assert list(defs.jobs) == ["my_job"] and list(defs.sensors) == ["on_failure"]
    assert sys.path[0] == str(path.parent)


def test_file_option_refuses_missing_and_non_python_files(tmp_path):
    """Given -f pointing nowhere or at a non-.py file, then a ProjectError says so."""
    with pytest.raises(ProjectError, match=r"no such file: nope\.py"):
        find_project(file="nope.py", cwd=tmp_path)
    (tmp_path / "defs.txt").write_text("x = 1")
    with pytest.raises(ProjectError, match=r"defs\.txt is not a Python file"):
        find_project(file="defs.txt", cwd=tmp_path)


def test_module_option_imports_from_the_working_directory(tmp_path):
    """Given -m NAME, then the module is imported from the working directory and the location is
    the module name."""
    name = unique()
    (tmp_path / f"{name}.py").write_text(DEFS)

    ref = find_project(module=name, cwd=tmp_path)
    defs = load_project(ref)

    assert ref == ProjectRef(name, str(tmp_path.resolve()))
    assert defs.location == name
    assert defs.get_job("my_job").location == name


def test_file_beats_module_and_module_beats_pyproject(project, tmp_path):
    """Given -f, -m and a pyproject.toml together, then -f wins, then -m."""
    path = project(DEFS)
    (tmp_path / "pyproject.toml").write_text('[tool.runsense]\nmodule = "from_pyproject"\n')

    assert find_project(file=str(path), module="from_m", cwd=tmp_path).module == path.stem
    assert find_project(module="from_m", cwd=tmp_path).module == "from_m"
    assert find_project(cwd=tmp_path).module == "from_pyproject"


def test_pyproject_tool_runsense_module_is_found_from_a_subdirectory(tmp_path):
    """Given [tool.runsense] module in a parent's pyproject.toml, when run from a nested
    directory, then that module is loaded with the pyproject's directory on sys.path."""
    package = unique("pkg")
    root = tmp_path / "repo"
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "defs.py").write_text(DEFS)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "x"\n\n[tool.runsense]\nmodule = "{package}.defs"\n'
    )
    nested = root / "src" / "deep"
    nested.mkdir(parents=True)

    ref = find_project(cwd=nested)
    defs = load_project(ref)

    assert ref == ProjectRef(f"{package}.defs", str(root.resolve()))
    assert defs.location == f"{package}.defs"
    assert sys.path[0] == str(root.resolve())


def test_a_pyproject_without_runsense_settings_is_skipped_on_the_way_up(tmp_path):
    """Given a nearer pyproject.toml without [tool.runsense] and a runsense.toml above it, then
    the runsense.toml is used."""
    (tmp_path / "runsense.toml").write_text('module = "outer_defs"\n')
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "inner"\n')

    ref = find_project(cwd=inner)

    assert ref == ProjectRef("outer_defs", str(tmp_path.resolve()))


def test_runsense_toml_module_is_loaded(tmp_path):
    """Given runsense.toml with module = NAME, then that module is loaded from its directory."""
    name = unique()
    (tmp_path / f"{name}.py").write_text(DEFS)
    (tmp_path / "runsense.toml").write_text(f'module = "{name}"\n')

    defs = load_project(find_project(cwd=tmp_path))

    assert defs.location == name and "my_job" in defs.jobs


def test_runsense_toml_without_module_is_an_error(tmp_path):
    """Given a runsense.toml without a module line, then the error says what to add."""
    (tmp_path / "runsense.toml").write_text('home = "x"\n')

    with pytest.raises(ProjectError, match=r'has no `module = "\.\.\."` line'):
        find_project(cwd=tmp_path)


def test_a_module_setting_that_is_not_a_module_name_is_an_error(tmp_path):
    """Given module = "my-defs.py", then the error says it is not a module name."""
    (tmp_path / "pyproject.toml").write_text('[tool.runsense]\nmodule = "my-defs.py"\n')

    with pytest.raises(ProjectError, match=r"module = 'my-defs\.py' is not a module name"):
        find_project(cwd=tmp_path)


def test_no_project_found_explains_the_three_ways(tmp_path):
    """Given an empty directory tree, then the error says how to point runsense at a project."""
    with pytest.raises(ProjectError) as info:
        find_project(cwd=tmp_path)

    assert info.value.message == "no runsense project found here"
    assert "-f defs.py" in info.value.hint and "[tool.runsense]" in info.value.hint
    assert info.value.exit_code == 2


def test_malformed_pyproject_is_an_error_naming_the_file(tmp_path):
    """Given a pyproject.toml that is not valid TOML, then the error names it and the problem."""
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.runsense\nmodule = 'x'\n")

    with pytest.raises(ProjectError, match="is not valid TOML") as info:
        find_project(cwd=tmp_path)

    assert str(path) in info.value.message


def test_syntax_error_names_the_file_and_line(project):
    """Given a module with a syntax error on line 3, then the error names the file and line."""
    path = project("import os\n\ndef broken(:\n    pass\n")

    with pytest.raises(ProjectError) as info:
        load_project(find_project(file=str(path)))

    assert info.value.message.startswith(f"could not import '{path.stem}': syntax error in ")
    assert f"{path}, line 3" in info.value.message


def test_an_exception_at_import_is_reported_with_its_type_and_message(project):
    """Given a module that raises while importing, then the error shows the exception, and the
    half-imported module is not left behind."""
    path = project(DEFS + "\nraise RuntimeError('no database configured')\n")

    with pytest.raises(ProjectError) as info:
        load_project(find_project(file=str(path)))

    assert info.value.message == (
        f"importing '{path.stem}' raised RuntimeError: no database configured"
    )
    assert path.stem not in sys.modules


def test_a_module_without_definitions_is_an_error(project):
    """Given a module with jobs but no Definitions, then the error says to add one."""
    path = project("from runsense_cli import job, op\n")

    with pytest.raises(ProjectError, match=f"module '{path.stem}' has no Definitions object"):
        load_project(find_project(file=str(path)))


def test_a_module_with_two_definitions_names_both(project):
    """Given two Definitions objects, then the error counts and names them."""
    path = project(DEFS + "\nmore_defs = Definitions(jobs=[my_job])\n")

    with pytest.raises(ProjectError) as info:
        load_project(find_project(file=str(path)))

    assert info.value.message == (
        f"module '{path.stem}' has 2 Definitions objects (defs, more_defs)"
    )


def test_the_same_definitions_under_two_names_is_fine(project):
    """Given one Definitions bound to two names, then it loads."""
    path = project(DEFS + "\nalias = defs\n")

    assert "my_job" in load_project(find_project(file=str(path))).jobs


def test_a_missing_module_is_an_error_saying_where_it_looked(tmp_path):
    """Given -m for a module that does not exist, then the error names it and the directory."""
    name = unique("missing")

    with pytest.raises(ProjectError) as info:
        load_project(find_project(module=name, cwd=tmp_path))

    assert info.value.message == (
        f"no module named '{name}' (looked in {tmp_path.resolve()} and on sys.path)"
    )


def test_a_missing_submodule_of_a_missing_package_is_reported_as_missing(tmp_path):
    """Given module = "nopkg.defs" where the package does not exist, then it is a missing module."""
    name = f"{unique('nopkg')}.defs"

    with pytest.raises(ProjectError, match=f"no module named '{name}'"):
        load_project(find_project(module=name, cwd=tmp_path))


def test_a_missing_import_inside_the_module_is_not_reported_as_the_module_missing(tmp_path):
    """Given module `<x>_defs` that imports a missing module `<x>`, then the error says the import
    inside it failed, not that `<x>_defs` itself is missing."""
    missing = unique("helpers")
    name = f"{missing}_defs"
    (tmp_path / f"{name}.py").write_text(f"import {missing}\n" + DEFS)

    with pytest.raises(ProjectError) as info:
        load_project(find_project(module=name, cwd=tmp_path))

    assert info.value.message == (
        f"importing '{name}' raised ModuleNotFoundError: No module named '{missing}'"
    )


def test_a_project_can_import_its_own_sibling_modules(tmp_path):
    """Given -f defs.py that imports a sibling module, then it loads as it would under pytest."""
    sibling = unique("shared")
    name = unique("defs")
    (tmp_path / f"{sibling}.py").write_text("JOB_NAME = 'from_sibling'\n")
    (tmp_path / f"{name}.py").write_text(
        f"from {sibling} import JOB_NAME\n"
        "from runsense_cli import Definitions, job, op\n"
        "@op\ndef work():\n    return 1\n"
        "@job(name=JOB_NAME)\ndef my_job():\n    work()\n"
        "defs = Definitions(jobs=[my_job])\n"
    )

    defs = load_project(find_project(file=f"{name}.py", cwd=tmp_path))

    assert list(defs.jobs) == ["from_sibling"]
