"""Ops and jobs as users declare them.

A job's body runs once, at decoration time, with op calls recorded instead of executed: that is
how passing one op's output to another becomes a dependency, and why call order is already a
topological order.
"""

from __future__ import annotations

import contextvars
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from .config import ConfigSchema, check_schema
from .errors import DefinitionError
from .values import check_tags

if TYPE_CHECKING:
    from .execution import ExecuteInProcessResult


@dataclass(frozen=True)
class OpOutput:
    """What an op call returns inside a job body: a handle on a future value."""

    node_name: str


@dataclass
class Node:
    """One invocation of an op in a job; `inputs` maps parameter name to upstream node name."""

    name: str
    op: OpDefinition
    inputs: dict[str, str] = field(default_factory=dict)


class _JobBuilder:
    def __init__(self, job_name: str) -> None:
        self.job_name = job_name
        self.nodes: list[Node] = []
        self._names: set[str] = set()

    def add(self, op_def: OpDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]) -> OpOutput:
        name, n = op_def.name, 1
        while name in self._names:
            n += 1
            name = f"{op_def.name}_{n}"
        params = op_def.input_params
        if len(args) > len(params):
            raise DefinitionError(
                f"job '{self.job_name}': op '{op_def.name}' takes {len(params)} input(s), "
                f"got {len(args)}"
            )
        given = dict(zip((p.name for p in params), args, strict=False))
        for key, value in kwargs.items():
            if key not in {p.name for p in params} or key in given:
                raise DefinitionError(
                    f"job '{self.job_name}': op '{op_def.name}' got input '{key}'"
                )
            given[key] = value
        inputs: dict[str, str] = {}
        for param in params:
            if param.name not in given:
                if param.default is inspect.Parameter.empty:
                    raise DefinitionError(
                        f"job '{self.job_name}': input '{param.name}' of op '{op_def.name}' "
                        "is not connected",
                        "pass another op's output to it in the job body",
                    )
                continue
            value = given[param.name]
            if not isinstance(value, OpOutput):
                raise DefinitionError(
                    f"job '{self.job_name}': input '{param.name}' of op '{op_def.name}' must be "
                    f"another op's output, got {type(value).__name__}",
                    "use op config for constant values",
                )
            inputs[param.name] = value.node_name
        self._names.add(name)
        self.nodes.append(Node(name, op_def, inputs))
        return OpOutput(name)


_building: contextvars.ContextVar[_JobBuilder | None] = contextvars.ContextVar(
    "runsense_job_builder", default=None
)


class OpDefinition:
    """A step of a job. Called inside a job body it records a dependency; outside, it just runs."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        config_schema: Any = None,
        description: str | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description or inspect.getdoc(fn)
        self.config_schema: ConfigSchema | None = check_schema(config_schema, f"op '{self.name}'")
        params = list(inspect.signature(fn).parameters.values())
        self.takes_context = bool(params) and params[0].name == "context"
        self.input_params = params[1:] if self.takes_context else params

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = _building.get()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<op {self.name}>"


@overload
def op(fn: Callable[..., Any]) -> OpDefinition: ...
@overload
def op(
    *, name: str | None = None, config_schema: Any = None, description: str | None = None
) -> Callable[[Callable[..., Any]], OpDefinition]: ...
def op(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    config_schema: Any = None,
    description: str | None = None,
) -> Any:
    """Declare an op: `@op` or `@op(name=..., config_schema=..., description=...)`."""
    if fn is not None:
        return OpDefinition(fn)
    return lambda f: OpDefinition(
        f, name=name, config_schema=config_schema, description=description
    )


class JobDefinition:
    """A named graph of op invocations, plus the tags every run of it carries."""

    def __init__(
        self,
        fn: Callable[[], Any],
        name: str | None = None,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name or fn.__name__
        self.description = description or inspect.getdoc(fn)
        self.tags = check_tags(tags, f"job '{self.name}': tags", DefinitionError)
        self.location: str = module_location(fn.__module__)
        builder = _JobBuilder(self.name)
        token = _building.set(builder)
        try:
            fn()
        finally:
            _building.reset(token)
        if not builder.nodes:
            raise DefinitionError(
                f"job '{self.name}' has no ops", "call at least one op in its body"
            )
        self.nodes: list[Node] = builder.nodes

    def execute_in_process(
        self,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        home: str | None = None,
        raise_on_error: bool = False,
    ) -> ExecuteInProcessResult:
        """Run this job here and now against the home's storage, like any other run."""
        from .execution import execute_in_process

        return execute_in_process(self, run_config, tags, home, raise_on_error=raise_on_error)

    def __repr__(self) -> str:
        return f"<job {self.name}>"


@overload
def job(fn: Callable[[], Any]) -> JobDefinition: ...
@overload
def job(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Callable[[Callable[[], Any]], JobDefinition]: ...
def job(
    fn: Callable[[], Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Any:
    """Declare a job: `@job` or `@job(name=..., description=..., tags=...)`."""
    if fn is not None:
        return JobDefinition(fn)
    return lambda f: JobDefinition(f, name=name, description=description, tags=tags)


def module_location(module_name: str) -> str:
    if module_name == "__main__":
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        if path:
            import os

            return os.path.splitext(os.path.basename(path))[0]
    return module_name
