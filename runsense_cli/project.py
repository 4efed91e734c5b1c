"""Finding and importing the user's project: the module that holds one `Definitions`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ProjectError, describe

if TYPE_CHECKING:
    # Imported when a project loads: `settings` reads TOML through here, and a command that needs
    # no project (`runs list`, `status`) must not pay for jobs, sensors and storage (~15 ms).
    from .definitions import Definitions


@dataclass(frozen=True)
class ProjectRef:
    """How to import a project; stored on runs so a run worker imports the same code."""

    module: str
    directory: str
    file: str | None = None

    @property
    def location(self) -> str:
        return self.module

    def to_origin(self) -> dict[str, Any]:
        return {"module": self.module, "directory": self.directory, "file": self.file}

    @classmethod
    def from_origin(cls, origin: dict[str, Any]) -> ProjectRef:
        return cls(origin["module"], origin["directory"], origin.get("file"))


def find_project(
    file: str | None = None, module: str | None = None, cwd: str | os.PathLike[str] | None = None
) -> ProjectRef:
    """`-f`, then `-m`, then `[tool.runsense]` or `runsense.toml` searched upward from `cwd`."""
    here = Path(cwd or os.getcwd()).resolve()
    if file:
        path = (here / file).resolve()
        if not path.is_file():
            raise ProjectError(f"no such file: {file}", "check the path given to -f/--file")
        if path.suffix != ".py":
            raise ProjectError(f"{file} is not a Python file", "-f/--file takes a .py file")
        return ProjectRef(path.stem, str(path.parent), str(path))
    if module:
        return ProjectRef(module, str(here))
    for directory in (here, *here.parents):
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file():
            name = read_toml(pyproject).get("tool", {}).get("runsense", {}).get("module")
            if name:
                return ProjectRef(_module_name(name, pyproject), str(directory))
        runsense_toml = directory / "runsense.toml"
        if runsense_toml.is_file():
            name = read_toml(runsense_toml).get("module")
            if not name:
                raise ProjectError(
                    f'{runsense_toml} has no `module = "..."` line',
                    "name the module that holds your Definitions",
                )
            return ProjectRef(_module_name(name, runsense_toml), str(directory))
    raise ProjectError(
        "no runsense project found here",
        'pass -f defs.py or -m module, or add [tool.runsense] module = "..." to pyproject.toml',
    )


def _module_name(value: Any, source: Path) -> str:
    if not isinstance(value, str) or not all(part.isidentifier() for part in value.split(".")):
        raise ProjectError(
            f"{source}: module = {value!r} is not a module name",
            'use e.g. module = "my_project.defs"',
        )
    return value


def read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{path} is not valid TOML: {exc}", "fix the file's syntax") from exc
    except OSError as exc:
        raise ProjectError(f"cannot read {path}: {exc.strerror}") from exc


def load_project(ref: ProjectRef) -> Definitions:
    """Import the project's module and return its single `Definitions`, named after the module."""
    from .definitions import Definitions

    if ref.directory not in sys.path:
        sys.path.insert(0, ref.directory)
    try:
        if ref.file:
            module = sys.modules.get(ref.module)
            if module is None or getattr(module, "__file__", None) != ref.file:
                module = _import_file(ref.module, ref.file)
        else:
            module = importlib.import_module(ref.module)
    except ProjectError:
        raise
    except ModuleNotFoundError as exc:
        # The project module itself (or a package on its path) is missing, not an import inside it.
        if exc.name and (ref.module == exc.name or ref.module.startswith(exc.name + ".")):
            raise ProjectError(
                f"no module named '{ref.module}' (looked in {ref.directory} and on sys.path)",
                "run from the project's directory, or use -f path/to/defs.py",
            ) from exc
        raise _import_failed(ref, exc) from exc
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else "its source"
        raise ProjectError(
            f"could not import '{ref.module}': syntax error in {where}: {exc.msg}",
            "fix the syntax and run again",
        ) from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _import_failed(ref, exc) from exc
    found = [
        (name, value) for name, value in vars(module).items() if isinstance(value, Definitions)
    ]
    if not found:
        raise ProjectError(
            f"module '{ref.module}' has no Definitions object",
            "add e.g. `defs = Definitions(jobs=[my_job])` at module level",
        )
    if len({id(value) for _, value in found}) > 1:
        names = ", ".join(name for name, _ in found)
        raise ProjectError(
            f"module '{ref.module}' has {len(found)} Definitions objects ({names})",
            "keep exactly one; merge the jobs and sensors into it",
        )
    definitions = found[0][1]
    definitions.set_location(ref.location)
    return definitions


def _import_file(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ProjectError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_failed(ref: ProjectRef, exc: BaseException) -> ProjectError:
    return ProjectError(
        f"importing '{ref.module}' raised {describe(exc)}",
        "fix the module (run with -v for the traceback)",
    )
