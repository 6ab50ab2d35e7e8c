"""Placement on a Ray cluster is the engine's decision: first type in the job's order with room on an alive node."""
from __future__ import annotations

from engine.config import DEFAULT_INSTANCE_TYPES as T
from engine.backends.ray.client import LABEL, Node, place, shape

GIB = 1 << 30
HEAD = Node("head", 4, 0, 32 * GIB, {LABEL: "c1.4"})
GPU = Node("gpu", 8, 1, 48 * GIB, {LABEL: "g1.1"})
BIG = Node("big", 32, 0, 256 * GIB)  # no label: serves any type its shape fits


def test_a_labelled_node_serves_only_its_type():
    assert place([T["c1.4"]], [GPU], {}) == (None, None, None)  # the shape fits, the kind does not
    assert place([T["g1.1"]], [GPU], {}) == (T["g1.1"], GPU, None)


def test_an_unlabelled_node_serves_what_its_shape_fits():
    assert place([T["c1.8"]], [BIG], {}) == (T["c1.8"], BIG, None)
    assert place([T["g1.1"]], [BIG], {}) == (None, None, None)  # no GPU
    assert place([T["c1.80"]], [BIG], {}) == (None, None, None)  # too small


def test_types_are_tried_in_the_jobs_order():
    assert place([T["g2.1"], T["g1.1"], T["c1.4"]], [HEAD, GPU], {}) == (T["g1.1"], GPU, None)
    assert place([T["c1.4"], T["g1.1"]], [HEAD, GPU], {}) == (T["c1.4"], HEAD, None)


def test_room_is_what_dsjobs_has_not_placed_yet():
    used = {"head": shape(T["c1.4"])}
    # c1.4 could run once the head is free; g1.1 has room now, so it is taken (the cloud's fallback).
    assert place([T["c1.4"], T["g1.1"]], [HEAD, GPU], used) == (T["g1.1"], GPU, None)
    assert place([T["c1.4"]], [HEAD, GPU], used) == (None, None, T["c1.4"])  # wait for room
    half = {"big": {"cpus": 24.0, "gpus": 0.0, "memory": 0.0}}
    assert place([T["c1.8"]], [BIG], half) == (T["c1.8"], BIG, None)
    assert place([T["c1.32"]], [BIG], half) == (None, None, T["c1.32"])
