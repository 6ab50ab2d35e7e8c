"""The layout's rules, checked on every `make test` (README, "Layout"): which room may import which, and who writes a
job's status. Prints each violation as FILE:LINE and exits 1 when there is one.

    python tools/check_layout.py [ROOT]
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

# (where the rule applies, what it may not import, why); a prefix "engine" covers "engine.x.y".
RULES = [
    ("runners/", ("engine", "dsjobs", "dsjobs_pb"), "the data plane depends on nothing of the control plane"),
    ("engine/", ("dsjobs_pb",), "generated code is for the API edge (engine/api/) and the client only"),
    ("engine/", ("dsjobs",), "the engine is not the client"),
    ("engine/backends/", ("engine.lifecycle", "engine.jobs", "engine.api"), "backends report through their sink"),
    ("engine/lifecycle.py", ("engine.backends.local", "engine.backends.ray"), "the lifecycle knows backends only "
                                                                              "by their interface"),
    ("engine/ui/", ("engine.lifecycle", "engine.records", "engine.store", "engine.backends", "engine.api",
                    "engine.app"), "the job pages act through the job service, as the API does (a cancel is "
                                   "JobService.cancel, the gRPC Cancel's own method)"),
    ("dsjobs/client.py", ("engine",), "the client library needs no server"),
    ("dsjobs/jobconfig.py", ("engine",), "the client library needs no server"),
    ("dsjobs/autoenv.py", ("engine",), "the client library needs no server"),
    ("dsjobs/official.py", ("engine",), "the client library needs no server"),
    ("dsjobs/discovery.py", ("engine",), "the client library needs no server"),
    ("dsjobs/requirements.py", ("engine",), "the client library needs no server"),
    ("dsjobs/hook.py", ("engine",), "the client library needs no server"),
]
EXEMPT = {("engine/api/", "dsjobs_pb")}
# Copied into the official client's environment (which has no dsjobs) by `dsjobs hook install`: the standard
# library only (the hook falls back to dsjobs.discovery when run from this tree, inside a try).
STDLIB_ONLY = ("dsjobs/hook.py", "dsjobs/discovery.py")
HOOK_FALLBACK = {"dsjobs", "dsjobs.discovery", "dsjobs_datasphere_discovery"}
# The control plane may use these parts of the data plane anywhere; the rest (executors, the node runner, env
# builds) only where machines are wired up.
ENGINE_MAY_USE = ("runners.spec", "runners.journal", "runners.rundir", "runners.fsops")
MACHINE_WIRING = ("engine/app.py", "engine/backends/local.py")
# The only writers of a job's status after Execute (engine/records.py holds the transition-checked write).
STATUS_WRITERS = ("engine/lifecycle.py", "engine/records.py")


def imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for a in node.names:  # `from runners import pyenv` imports runners.pyenv
                yield node.lineno, f"{node.module}.{a.name}"


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def status_writes(tree: ast.AST):
    """``x.status = ...`` and ``update(..., to=...)``: the two ways a status changes."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for e in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(e, ast.Attribute) and e.attr == "status" and not (
                            isinstance(e.value, ast.Name) and e.value.id == "self"):  # an exception's own field
                        yield node.lineno, "assigns .status"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update":
            if any(k.arg == "to" for k in node.keywords):
                yield node.lineno, "calls update(..., to=...)"


def check(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.glob("**/*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".venv", "build/", "dsjobs_pb/")) or "/." in "/" + rel:  # .cache/ (bench worktrees) too
            continue
        tree = ast.parse(path.read_text(), rel)
        for line, name in imports(tree):
            for where, banned, why in RULES:
                if not rel.startswith(where) and rel != where:
                    continue
                for b in banned:
                    if under(name, b) and not any(rel.startswith(w) and b == x for w, x in EXEMPT):
                        problems.append(f"{rel}:{line}: imports {name}: {why}")
            if rel.startswith("engine/") and rel not in MACHINE_WIRING and under(name, "runners") and \
                    name != "runners" and not any(under(name, m) for m in ENGINE_MAY_USE) and \
                    not any(under(m, name) for m in ENGINE_MAY_USE):
                problems.append(f"{rel}:{line}: imports {name}: the control plane uses only "
                                f"{', '.join(ENGINE_MAY_USE)} of the data plane (machines are wired in "
                                f"{' and '.join(MACHINE_WIRING)})")
        if rel in STDLIB_ONLY:
            for line, name in imports(tree):
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and name not in HOOK_FALLBACK and top != "__future__":
                    problems.append(f"{rel}:{line}: imports {name}: it is copied into the official client's "
                                    f"environment, so the standard library only")
        if rel.startswith("engine/") and rel not in STATUS_WRITERS:
            for line, what in status_writes(tree):
                problems.append(f"{rel}:{line}: {what}: only engine/lifecycle.py writes a job's status")
    return sorted(set(problems))


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} layout violation(s); see README, Layout", file=sys.stderr)
        return 1
    print("layout: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
