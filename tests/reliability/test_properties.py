"""Property-based tests: the argument parsers and the manifest reader either accept an input (and what they return
keeps its promises) or refuse it with the one error type the CLI turns into a one-line message; never anything else."""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rdvla.cli import attach_negative_values, build_parser
from rdvla.cli.arguments import iteration_counts, int_in, positive_float, positive_int
from rdvla.cli.inputs import PROPRIO_DIM, SEED_LIMIT, instruction, parse_proprio, seed
from rdvla.runtime.halting import MAX_SUPPORTED_ITERATIONS, AdjacentMSE, CosineSimilarity, FixedIterations, parse_halting
from rdvla.runtime.horizon import parse_horizon
from rdvla.runtime.manifest import BundleError, Manifest
from rdvla.runtime.normalization import NormStats

FAST = settings(max_examples=150, deadline=None, database=None)
SLOW = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text a user could type: numbers of every shape, words, separators, and arbitrary unicode.
NUMBERS = st.one_of(st.integers(-2**80, 2**80).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "-0", "0x10", "1_000", " 7 ", "", "+3", "٣"]))
WORDS = st.one_of(NUMBERS, st.text(max_size=40), st.lists(NUMBERS, max_size=10).map(",".join))


def refuses_only_with(kind: type[BaseException], parse: Callable[[str], Any], text: str) -> Any:
    try:
        return parse(text)
    except kind:
        return None


@FAST
@given(WORDS)
def test_whole_number_types(text: str) -> None:
    for parse, low, high in ((positive_int, 1, None), (int_in(0), 0, None), (int_in(1, 32), 1, 32),
                             (seed, 0, SEED_LIMIT - 1)):
        value = refuses_only_with(argparse.ArgumentTypeError, parse, text)
        if value is not None:
            assert isinstance(value, int) and value >= low and (high is None or value <= high)
            assert value == int(text)


@FAST
@given(WORDS)
def test_positive_float(text: str) -> None:
    value = refuses_only_with(argparse.ArgumentTypeError, positive_float, text)
    if value is not None:
        assert math.isfinite(value) and value > 0


@FAST
@given(WORDS)
def test_depth_list(text: str) -> None:
    depths = refuses_only_with(argparse.ArgumentTypeError, iteration_counts, text)
    if depths is not None:
        assert depths == sorted(set(depths)) and 1 <= depths[0] and depths[-1] <= MAX_SUPPORTED_ITERATIONS


@FAST
@given(WORDS)
def test_parse_proprio(text: str) -> None:
    proprio = refuses_only_with(ValueError, parse_proprio, text)
    if proprio is not None:
        assert proprio.shape == (PROPRIO_DIM,) and np.isfinite(proprio).all()


@FAST
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=PROPRIO_DIM, max_size=PROPRIO_DIM))
def test_any_eight_finite_numbers_parse_back(values: list[float]) -> None:
    text = ",".join(repr(v) for v in values)
    assert np.array_equal(parse_proprio(text), np.asarray(values, np.float64))


@FAST
@given(st.text(max_size=60))
def test_instruction(text: str) -> None:
    value = refuses_only_with(argparse.ArgumentTypeError, instruction, text)
    if value is not None:
        assert value.strip() and value.encode("utf-8")


@FAST
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=PROPRIO_DIM, max_size=PROPRIO_DIM),
       st.sampled_from(["--proprio", "--init-latent", "--seed"]))
def test_negative_values_reach_their_option(values: list[float], option: str) -> None:
    """`--proprio -0.1,...` (and any value starting with a minus) is the option's value, whatever follows."""
    text = ",".join(repr(v) for v in values)
    argv = ["predict", "src", "--instruction", "x", "--pixel-values", "p.npy", option, text, "--out", "o.npz"]
    joined = attach_negative_values(argv)
    assert "".join(joined).replace("=", "") == "".join(argv).replace("=", "")  # nothing lost, nothing added but '='
    assert joined[-2:] == ["--out", "o.npz"] and len(joined) in (len(argv), len(argv) - 1)
    if option == "--proprio":
        args = build_parser().parse_args(joined)
        assert args.proprio == text


@FAST
@given(st.lists(st.one_of(st.sampled_from(["--proprio", "--seed", "--out", "-v", "predict", "--overwrite"]), NUMBERS),
                max_size=8))
def test_attach_negative_values_only_joins_an_option_and_its_value(argv: list[str]) -> None:
    joined = attach_negative_values(argv)
    assert "".join(joined).replace("=", "") == "".join(argv).replace("=", "")
    for before, token in zip(argv, argv[1:]):
        if token.startswith("-") and not token.startswith("--") and before.startswith("--") and "=" not in before:
            if token[1:2].isdigit() or token[1:2] == ".":
                assert f"{before}={token}" in joined


HALTING_SPECS = st.one_of(st.none(), st.builds(lambda kind, value: f"{kind}:{value}" if value is not None else kind,
                                                st.sampled_from(["mse", "cosine", "kl", "", "MSE"]), st.one_of(st.none(), NUMBERS)),
                          st.text(max_size=20))
COUNTS = st.one_of(st.none(), st.integers(-5, 2 * MAX_SUPPORTED_ITERATIONS))


@FAST
@given(HALTING_SPECS, COUNTS, COUNTS, COUNTS)
def test_parse_halting(spec: Any, iterations: Any, low: Any, high: Any) -> None:
    try:
        rule = parse_halting(spec, iterations, low, high)
    except ValueError as exc:
        assert str(exc).startswith(("--", "give either"))  # names the option at fault
        return
    assert isinstance(rule, (FixedIterations, AdjacentMSE, CosineSimilarity))
    assert 1 <= rule.max_iterations <= MAX_SUPPORTED_ITERATIONS
    if not isinstance(rule, FixedIterations):
        assert 1 <= rule.min_iterations <= rule.max_iterations and math.isfinite(rule.threshold)


HORIZON_SPECS = st.one_of(
    st.builds(lambda kind, numbers: ":".join([kind, *numbers]),
              st.sampled_from(["fixed", "binary", "dynamic", "linear", "linear-code", "forever"]),
              st.lists(st.one_of(st.integers(-10, 300).map(str), NUMBERS), max_size=4)),
    st.text(max_size=20))


@FAST
@given(HORIZON_SPECS, st.integers(1, MAX_SUPPORTED_ITERATIONS), st.integers(1, 16))
def test_parse_horizon(spec: str, iterations: int, chunk_len: int) -> None:
    try:
        rule = parse_horizon(spec)
    except ValueError as exc:
        assert str(exc).startswith("--horizon")
        return
    for _ in range(6):  # the dynamic rule needs a history
        assert 1 <= rule.actions_to_execute(iterations, chunk_len) <= chunk_len


# ----- the manifest reader ----------------------------------------------------------------------------------------

JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                              st.text(max_size=12), st.sampled_from(["../x", "/etc/passwd", "graphs/decode.onnx", "0" * 64])),
                    lambda children: st.one_of(st.lists(children, max_size=4),
                                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
                    max_leaves=12)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document (the root's children and below)."""
    out = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


def _mutate(data: dict[str, Any], draw: Any) -> dict[str, Any]:
    mutated = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(mutated)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = mutated
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON)
        else:
            parent.append(draw(JSON))
    return mutated


@pytest.fixture(scope="module")
def manifest_json(tiny_bundle: Path) -> dict[str, Any]:
    return json.loads((tiny_bundle / "manifest.json").read_text())


@SLOW
@given(st.data())
def test_a_mutated_manifest_is_read_or_refused_with_a_bundle_error(manifest_json: dict[str, Any], data: Any) -> None:
    mutated = _mutate(manifest_json, data.draw)
    try:
        manifest = Manifest.from_json(mutated)
    except BundleError:
        return
    # Accepted: everything a command reads from it is typed, inside the bundle, and writable again.
    for rel in (*manifest.referenced_files(), *manifest.files):
        assert not Path(rel).is_absolute() and ".." not in Path(rel).parts
    assert len(manifest.normalization.action_q01) == manifest.model.action_dim
    assert np.isfinite(manifest.normalization.action_q01).all() and np.isfinite(manifest.normalization.proprio_q99).all()
    text = json.dumps(manifest.to_json(), sort_keys=True)
    assert json.dumps(Manifest.from_json(json.loads(text)).to_json(), sort_keys=True) == text


@SLOW
@given(JSON)
def test_any_json_document_is_read_or_refused_with_a_bundle_error(document: Any) -> None:
    try:
        Manifest.from_json(document)
    except BundleError:
        pass


@FAST
@given(JSON, st.one_of(st.none(), st.text(max_size=8)))
def test_dataset_statistics_are_read_or_refused_with_a_value_error(document: Any, key: Any) -> None:
    try:
        stats = NormStats.from_dataset_statistics(document, key)
    except ValueError:
        return
    for low, high in ((stats.action_q01, stats.action_q99), (stats.proprio_q01, stats.proprio_q99)):
        assert np.isfinite(low).all() and np.isfinite(high).all() and (high >= low).all()
