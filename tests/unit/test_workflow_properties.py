"""Properties over random definitions: what validates compiles, levels respect dependencies, and the
machine has one token state per step (two states for for_each), whatever the graph."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.workflows import asl, refs
from chalicelib.workflows import validate as v
from chalicelib.workflows.definition import WorkflowDefinition


@st.composite
def dags(draw: st.DrawFn) -> WorkflowDefinition:
    """A random DAG: each step depends on some earlier steps and may read one of its upstream outputs."""
    n = draw(st.integers(min_value=1, max_value=25))
    steps: list[dict[str, Any]] = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3))) if i else []
        step: dict[str, Any] = {"step_id": f"s{i}", "depends_on": [f"s{d}" for d in deps]}
        kind = draw(st.sampled_from(["agent", "engine", "approval", "for_each"]))
        if kind == "approval":
            step["type"] = "approval"
        elif kind == "engine":
            step["engine"] = "count"
        else:
            step["agent_type"] = draw(st.sampled_from(["editing", "llm", "examination"]))
            source = f"$.steps.s{deps[0]}.output" if deps else "$.input.x"
            field = {"editing": "text", "llm": "prompt", "examination": "source"}[step["agent_type"]]
            step["input_data"] = {field: "$.item" if kind == "for_each" else source}
            if kind == "for_each":
                step.update(for_each=source + ".items", max_concurrency=draw(st.integers(1, 40)))
        if kind != "approval" and draw(st.booleans()):
            step["retry"] = {"max_attempts": draw(st.integers(1, 4))}
        if draw(st.booleans()):
            step["timeout_seconds"] = draw(st.integers(1, 3600))
        steps.append(step)
    return WorkflowDefinition.model_validate({"steps": draw(st.permutations(steps))})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_random_dags_validate_and_compile_into_sound_machines(d: WorkflowDefinition) -> None:
    assert v.violations(d, step_agent_types={}, engines=("count",)) == []
    level_of = {s.step_id: k for k, level in enumerate(asl.levels(d)) for s in level}
    for s in d.steps:
        assert all(level_of[dep] < level_of[s.step_id] for dep in s.depends_on)
        if s.depends_on:  # as early as possible: right after its deepest dependency
            assert level_of[s.step_id] == 1 + max(level_of[dep] for dep in s.depends_on)
    m = asl.compile_definition(d, {})
    tokens = dict(asl.token_states(m))
    expected = sum(2 if s.for_each else 1 for s in d.steps)
    assert len(tokens) == expected
    for state in tokens.values():
        beat = state.get("HeartbeatSeconds")
        assert beat is None and state["TimeoutSeconds"] == 1 or 1 <= beat < state["TimeoutSeconds"]
    names = [name for name, _ in asl.states(m)]
    assert len(names) == len(set(names))
    assert asl.transitions_on_success(m, items=0) <= 4 * len(d.steps)
    rendered = asl.render(m, agent_queue_urls={t: f"https://q/{t}" for t in asl.agent_types(m)},
                          control_queue_url="https://q/control")
    assert asl.placeholders(rendered) == set()


@st.composite
def json_values(draw: st.DrawFn) -> Any:
    plain = st.text("ab$.~/", max_size=8).filter(lambda t: not t.startswith("$."))  # "$$." escapes included
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), plain,
                       st.sampled_from(["$.input.a", "$.input.b.0", "$$.input", "$.steps.s.output.k"]))
    keys = st.text("ab~/0", max_size=4)
    return draw(st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(keys, inner, max_size=4)),
                             max_leaves=30))


@settings(max_examples=100, deadline=None)
@given(json_values())
def test_resolve_replaces_exactly_what_references_finds(value: Any) -> None:
    run_input = {"a": "A", "b": ["B0"]}
    outputs = {"s": {"k": {"deep": True}}}
    resolved = refs.resolve(value, run_input=run_input, output_of=outputs.__getitem__)
    found = dict(refs.references(value))
    for pointer, ref in found.items():
        node = resolved
        for token in pointer.split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        base = run_input if ref.root == "input" else outputs[ref.step_id or ""]
        assert node == refs.lookup(base, ref.path)
    if not found and "$$." not in repr(value):
        assert resolved == value
