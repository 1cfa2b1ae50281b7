"""Every violation of a workflow definition at once (the 422's `details.violations`).

The request model (`definition.py`) checks each field; this checks what needs the whole definition: the
dependency graph, references against it, the targets (agent types, the user's agents, engines) and inputs
against the agent type's input schema. It mirrors `chalicelib/schemas/plans.py` (orchestrator plans), but
collects instead of raising at the first problem. Pure: the caller resolves the user's agents first.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import RootModel

from chalicelib.workflows import refs
from chalicelib.workflows.definition import MAX_STEPS, WorkflowDefinition, WorkflowStep

# Violation codes (stable: clients and tests match on them).
TOO_MANY_STEPS = "TOO_MANY_STEPS"
DUPLICATE_STEP_ID = "DUPLICATE_STEP_ID"
UNKNOWN_AGENT_TYPE = "UNKNOWN_AGENT_TYPE"
UNKNOWN_AGENT = "UNKNOWN_AGENT"
ORCHESTRATOR_STEP_FORBIDDEN = "ORCHESTRATOR_STEP_FORBIDDEN"
UNKNOWN_ENGINE = "UNKNOWN_ENGINE"
UNKNOWN_DEPENDENCY = "UNKNOWN_DEPENDENCY"
DEPENDENCY_CYCLE = "DEPENDENCY_CYCLE"
MALFORMED_REFERENCE = "MALFORMED_REFERENCE"
UNKNOWN_STEP_REFERENCE = "UNKNOWN_STEP_REFERENCE"
REFERENCE_NOT_UPSTREAM = "REFERENCE_NOT_UPSTREAM"
ITEM_OUTSIDE_FOR_EACH = "ITEM_OUTSIDE_FOR_EACH"
FOR_EACH_NOT_ARRAY = "FOR_EACH_NOT_ARRAY"
UNKNOWN_INPUT_PATH = "UNKNOWN_INPUT_PATH"
INPUT_SCHEMA_MISMATCH = "INPUT_SCHEMA_MISMATCH"
INVALID_JSON_SCHEMA = "INVALID_JSON_SCHEMA"


@dataclass(frozen=True)
class Violation:
    path: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


def violations(defn: WorkflowDefinition, *, step_agent_types: Mapping[str, str],
               engines: Collection[str]) -> list[Violation]:
    """Every violation of `defn`, in definition order (an empty list: the definition can be compiled).

    `step_agent_types`: {step_id: agent type} for the agent_id steps whose agent the caller found among the
    user's own agents (owner-filtered); an agent_id step missing from it names an unknown agent.
    `engines`: the names of the engines that exist; a mapping {name: input JSON Schema or None} also has
    engine steps' input_data checked against the schema (with the same leave-out rule for references).
    """
    found: list[Violation] = []
    steps = defn.steps
    if len(steps) > MAX_STEPS:
        found.append(Violation("steps", TOO_MANY_STEPS,
                               f"a workflow has at most {MAX_STEPS} steps (this one has {len(steps)})"))
    found.extend(_json_schema("input_schema", defn.input_schema))
    index = _first_index(steps)
    ancestors = _ancestors(steps, index)
    for i, step in enumerate(steps):
        here = f"steps[{i}]"
        if index[step.step_id] != i:
            found.append(Violation(f"{here}.step_id", DUPLICATE_STEP_ID,
                                   f"step id {step.step_id!r} is already used by steps[{index[step.step_id]}]"))
        found.extend(_target(here, step, step_agent_types, engines))
        for j, dep in enumerate(step.depends_on):
            if dep not in index:
                found.append(Violation(f"{here}.depends_on[{j}]", UNKNOWN_DEPENDENCY,
                                       f"step {step.step_id!r} depends on unknown step {dep!r}"))
        found.extend(_references(here, step, index, ancestors[step.step_id], defn.input_schema))
        found.extend(_input(here, step, step_agent_types))
        if step.engine is not None and isinstance(engines, Mapping) and engines.get(step.engine):
            found.extend(_engine_input(here, step, engines[step.engine]))
        if step.type == "approval":
            found.extend(_json_schema(f"{here}.input_schema", step.input_schema))
    found.extend(_cycles(steps, index, ancestors))
    return found


def _first_index(steps: list[WorkflowStep]) -> dict[str, int]:
    """step id -> position of its first step (a later one with the same id is a DUPLICATE_STEP_ID)."""
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        index.setdefault(step.step_id, i)
    return index


def _ancestors(steps: list[WorkflowStep], index: Mapping[str, int]) -> dict[str, frozenset[str]]:
    """Each step's transitive depends_on (unknown ids ignored; safe on cycles: a visited set per step)."""
    direct = {s.step_id: [d for d in s.depends_on if d in index] for i, s in enumerate(steps) if index[s.step_id] == i}
    result: dict[str, frozenset[str]] = {}
    for step_id in direct:
        seen: set[str] = set()
        stack = list(direct[step_id])
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(direct.get(dep, ()))
        result[step_id] = frozenset(seen)
    return result


def _target(here: str, step: WorkflowStep, step_agent_types: Mapping[str, str],
            engines: Collection[str]) -> Iterator[Violation]:
    from chalicelib.agents import registry
    from chalicelib.domain.agents import AGENT_TYPES

    if step.agent_type is not None:
        t = step.agent_type
        if t == "orchestrator":
            yield Violation(f"{here}.agent_type", ORCHESTRATOR_STEP_FORBIDDEN,
                            "a workflow step may not run an orchestrator: plans do not nest")
        elif t not in AGENT_TYPES:
            yield Violation(f"{here}.agent_type", UNKNOWN_AGENT_TYPE,
                            f"unknown agent type {t!r}; expected one of: {', '.join(AGENT_TYPES)}")
        elif t not in registry.available_types():
            yield Violation(f"{here}.agent_type", UNKNOWN_AGENT_TYPE, f"agent type {t!r} has no implementation yet")
    elif step.agent_id is not None:
        resolved = step_agent_types.get(step.step_id)
        if resolved is None:
            yield Violation(f"{here}.agent_id", UNKNOWN_AGENT, f"you have no agent {step.agent_id}")
        elif resolved == "orchestrator":
            yield Violation(f"{here}.agent_id", ORCHESTRATOR_STEP_FORBIDDEN,
                            f"agent {step.agent_id} is an orchestrator: plans do not nest")
    elif step.engine is not None and step.engine not in engines:
        known = ", ".join(sorted(engines)) or "none"
        yield Violation(f"{here}.engine", UNKNOWN_ENGINE, f"unknown engine {step.engine!r}; known engines: {known}")


def _references(here: str, step: WorkflowStep, index: Mapping[str, int], upstream: frozenset[str],
                input_schema: dict[str, Any] | None) -> Iterator[Violation]:
    located = [(f"{here}.input_data{dotted(pointer)}", text) for pointer, text in refs.strings(step.input_data)]
    if step.when is not None:
        located.append((f"{here}.when.path", step.when.path))
    if step.for_each is not None:
        located.append((f"{here}.for_each", step.for_each))
    for path, text in located:
        is_for_each = path.endswith(".for_each")
        problems = list(_reference(path, text, step, index, upstream,
                                   item_allowed=step.for_each is not None and not path.endswith(".when.path")))
        yield from problems
        ref = None if problems else refs.parse(text)
        if ref is None:
            continue
        if is_for_each and ref.root == "item":
            yield Violation(path, FOR_EACH_NOT_ARRAY, "for_each must name an array in the run's input or in an "
                                                      "upstream step's output, not $.item (for_each steps do not nest)")
        elif ref.root == "input":
            verdict, types = refs.declared(input_schema if input_schema is not None else {}, ref.path)
            if verdict == "absent":
                yield Violation(path, UNKNOWN_INPUT_PATH, f"{text!r} can never resolve: the workflow's input_schema "
                                                          f"(a run's input is a JSON object) leaves nothing there")
            elif is_for_each and types and "array" not in types:
                yield Violation(path, FOR_EACH_NOT_ARRAY, f"for_each must name an array; the workflow's input_schema "
                                                          f"makes {text!r} {' or '.join(sorted(types))}")


def _reference(path: str, text: str, step: WorkflowStep, index: Mapping[str, int], upstream: frozenset[str],
               *, item_allowed: bool) -> Iterator[Violation]:
    try:
        ref = refs.parse(text)
    except refs.MalformedReferenceError as exc:
        yield Violation(path, MALFORMED_REFERENCE, str(exc))
        return
    if ref is None:
        return
    if ref.root == "item" and not item_allowed:
        yield Violation(path, ITEM_OUTSIDE_FOR_EACH, "$.item is the current item of a for_each step: it may only "
                                                     "appear in that step's input_data")
    elif ref.root == "steps":
        target = ref.step_id
        if target not in index:
            yield Violation(path, UNKNOWN_STEP_REFERENCE, f"{text!r} refers to unknown step {target!r}")
        elif target not in upstream:
            whose = "its own output" if target == step.step_id else f"step {target!r}"
            yield Violation(path, REFERENCE_NOT_UPSTREAM,
                            f"step {step.step_id!r} refers to {whose}, which is not upstream of it: add {target!r} "
                            f"to depends_on (directly or through another step)")


def dotted(pointer: str) -> str:
    """A JSON pointer as a violation path suffix: "/a/0/b" -> ".a[0].b"."""
    out = []
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        out.append(f"[{key}]" if key.isdigit() else f".{key}")
    return "".join(out)


def _input(here: str, step: WorkflowStep, step_agent_types: Mapping[str, str]) -> Iterator[Violation]:
    """input_data against the agent type's input schema, with what references will supply left out."""
    from chalicelib.agents import registry
    from chalicelib.errors import ValidationError

    agent_type = step.agent_type if step.agent_type is not None else step_agent_types.get(step.step_id)
    if step.type != "task" or agent_type is None or agent_type == "orchestrator" \
            or agent_type not in registry.available_types():
        return
    known, unknown = _known_part(step.input_data)
    # A union input (a RootModel: security's `mode`, validation's shapes) picks its member from its keys, so a
    # left-out top-level key may change the member, and with it every top-level error: skip them all.
    union_root = isinstance(registry.get_agent(agent_type).Input, type) and \
        issubclass(registry.get_agent(agent_type).Input, RootModel)
    try:
        registry.validate_input(agent_type, known)
    except ValidationError as exc:
        for err in exc.details.get("errors", []):
            loc = tuple(str(p) for p in err["loc"][1:])  # [0] is "input_data"
            if any(_related(loc, u) for u in unknown) or (union_root and any(len(u) == 1 for u in unknown)):
                continue  # a reference fills (or sits under) this location at run time: unknowable now
            suffix = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc)
            yield Violation(f"{here}.input_data{suffix}", INPUT_SCHEMA_MISMATCH,
                            f"{err['msg']} (the {agent_type!r} agent's input schema)")


def _engine_input(here: str, step: WorkflowStep, schema: Mapping[str, Any]) -> Iterator[Violation]:
    """input_data against an engine's input JSON Schema, with what references will supply left out."""
    from jsonschema import Draft202012Validator

    known, unknown = _known_part(step.input_data)
    for err in Draft202012Validator(schema).iter_errors(known):
        loc = tuple(str(p) for p in err.absolute_path)
        if err.validator == "required" and isinstance(err.instance, dict):
            # one error per missing property, at the object: locate it at the property, as pydantic does
            missing = [p for p in err.validator_value if p not in err.instance and err.message.startswith(repr(p))]
            loc = (*loc, str(missing[0])) if missing else loc
        if any(_related(loc, u) for u in unknown):
            continue
        suffix = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc)
        yield Violation(f"{here}.input_data{suffix}", INPUT_SCHEMA_MISMATCH,
                        f"{err.message} (the {step.engine!r} engine's input schema)")


def _related(loc: tuple[str, ...], unknown: tuple[str, ...]) -> bool:
    """One location is under (or is) the other: an error there may be caused by the left-out value."""
    n = min(len(loc), len(unknown))
    return loc[:n] == unknown[:n]


def _known_part(value: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """`value` without the keys whose value is, or holds inside a list, a reference; and those keys' paths.

    Sound: a left-out key can only cause "missing" errors (or a parent model's own check) at or above its
    location, and those are the ones skipped; a list is left out whole, so no length or index shifts.
    Escaped literals ("$$.x") are unescaped, as they will be at run time.
    """
    unknown: list[tuple[str, ...]] = []

    def has_ref(node: Any) -> bool:
        if isinstance(node, list):
            return any(has_ref(v) for v in node)
        return refs.looks_like_reference(node)

    def clean(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            kept = {}
            for k, v in node.items():
                if has_ref(v):
                    unknown.append((*path, str(k)))
                else:
                    kept[k] = clean(v, (*path, str(k)))
            return kept
        if isinstance(node, list):
            return [clean(v, (*path, str(i))) for i, v in enumerate(node)]
        return refs.unescape(node) if isinstance(node, str) else node

    return clean(value, ()), unknown


def _json_schema(path: str, schema: dict[str, Any] | None) -> Iterator[Violation]:
    """A user's JSON Schema (run input, approval payload) within the platform's bounds (size, $refs, RE2
    patterns: chalicelib/agents/schema_limits.py) and valid against its dialect's meta-schema."""
    if schema is None:
        return
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import SchemaError

    from chalicelib.agents.schema_limits import SchemaLimitError, check_schema_input, format_checker

    try:
        check_schema_input(schema, {})
    except SchemaLimitError as exc:
        yield Violation(f"{path}{dotted(exc.pointer or '')}", INVALID_JSON_SCHEMA, str(exc))
        return
    dialect = schema.get("$schema")
    cls: Any = validators.validator_for(schema, default=None) if isinstance(dialect, str) else Draft202012Validator
    if cls is None:
        yield Violation(f"{path}.$schema", INVALID_JSON_SCHEMA, f"unsupported JSON Schema dialect {dialect!r}")
        return
    try:
        cls.check_schema(schema, format_checker=format_checker(cls))
    except SchemaError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        yield Violation(f"{path}{where}", INVALID_JSON_SCHEMA, f"not a valid JSON Schema: {exc.message}")


def _cycles(steps: list[WorkflowStep], index: Mapping[str, int],
            ancestors: Mapping[str, frozenset[str]]) -> Iterator[Violation]:
    """One violation per dependency cycle (strongly connected component), naming its steps.

    Two steps are in one cycle iff each is upstream of the other: with at most MAX_STEPS steps, comparing
    the upstream sets already computed is simpler than a graph algorithm and just as exact.
    """
    reported: set[str] = set()
    for i, step in enumerate(steps):
        sid = step.step_id
        if index[sid] != i or sid in reported or sid not in ancestors[sid]:
            continue
        component = sorted((other for other in ancestors[sid] if sid in ancestors[other]), key=index.__getitem__)
        reported.update(component)
        yield Violation(f"steps[{i}].depends_on", DEPENDENCY_CYCLE,
                        f"steps {', '.join(repr(s) for s in component)} depend on each other in a cycle: no order "
                        f"lets them start")
