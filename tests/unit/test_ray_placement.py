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


def test_a_submit_whose_answer_is_lost_is_not_taken_for_a_failure():
    """Under a loaded head, Ray took a job but its answer came after the client's timeout: the attempt is Ray's (its
    submission id says so), not lost; a submit Ray never saw is sent again; Ray's own refusal is not retried."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pytest

    from engine.backends.ray.client import RayClient, RayError

    jobs, posts, mode = {}, [], {"post": "slow"}

    class Ray(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _answer(self, code, body):
            data = json.dumps(body).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on this answer

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            posts.append(body["submission_id"])
            how = mode["post"]
            if how == "drop":  # never reaches Ray: no answer in time
                time.sleep(0.6)
                return self._answer(503, {})
            if how == "refuse":
                return self._answer(400, {"error": "bad entrypoint"})
            if how == "busy":  # a proxy (or a head) saying "not now", at once
                return self._answer(503, {"error": "unavailable"})
            jobs[body["submission_id"]] = {"status": "PENDING"}
            if how == "slow":
                time.sleep(0.6)  # taken, answered after the client gave up
            self._answer(200, {"submission_id": body["submission_id"]})

        def do_GET(self):
            sid = self.path.rsplit("/", 1)[-1]
            self._answer(200, jobs[sid]) if sid in jobs else self._answer(404, {})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Ray)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = RayClient(f"http://127.0.0.1:{srv.server_port}", timeout_s=0.3)
        client.submit_pause_s = 0.05
        args = dict(cpus=1, gpus=0, memory=0, selector={}, env_vars={}, metadata={})
        client.submit("a1", "true", **args)  # timed out, yet Ray has it: once
        assert posts == ["a1"] and "a1" in jobs
        mode["post"] = "drop"
        threading.Timer(0.5, lambda: mode.update(post="ok")).start()
        client.submit("a2", "true", **args)  # dropped, then sent again
        assert posts.count("a2") >= 2 and "a2" in jobs
        mode["post"] = "refuse"
        with pytest.raises(RayError) as e:
            client.submit("a3", "true", **args)
        assert e.value.status == 400 and posts.count("a3") == 1
        mode["post"] = "drop"
        with pytest.raises(RayError) as e:
            client.submit("a4", "true", **args)  # never answered: given up after its tries
        assert not e.value.status and posts.count("a4") == client.submit_tries
        mode["post"] = "busy"
        client.submit_pause_s = 0.1  # 4 tries span ~0.3 s: the head is ready again after the first
        threading.Timer(0.05, lambda: mode.update(post="ok")).start()
        client.submit("a5", "true", **args)  # "not now", then taken
        assert posts.count("a5") >= 2 and "a5" in jobs
        mode["post"] = "drop"
        client.submit_budget_s = 0.5
        t = time.monotonic()
        with pytest.raises(RayError):
            client.submit("a6", "true", **args)  # given up within its time, before its tries
        assert posts.count("a6") < client.submit_tries and time.monotonic() - t < 3
    finally:
        srv.shutdown()
