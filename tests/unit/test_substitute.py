"""runners/workspace.py substitute: a ${VAR} path is that one path to bash wherever it stands in the cmd, whatever
the path holds. Each command is run by a real bash against a real file at that path."""
from __future__ import annotations

import os
import subprocess
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from runners.workspace import substitute

# where ${IN} stands: what the cloud's users write (a /job/... path is the same in all of them)
SHAPES = [
    "cat ${IN}",
    'cat "${IN}"',
    "cat '${IN}'",
    "cat $'${IN}'",
    'cat "$(printf %s "${IN}")"',
    'cat "$(printf %s ${IN})"',
    'x=`printf %s ${IN}`; cat "$x"',
    'x=`printf %s "${IN}"`; cat "$x"',
    'cat "`printf %s ${IN}`"',
    'x="${IN}"; cat "$x"',
    'f() { cat "$1"; }; f ${IN}',
    ": '# a quote in a comment'; cat \"${IN}\" | (cat)",
    "# it's a comment, with a quote\ncat \"${IN}\"",
    "echo -n  # don't\ncat ${IN}",
    'cat > cfg <<END_OF_CFG\n${IN}\nEND_OF_CFG\ncat "$(cat cfg)"',
    "cat > cfg <<'END_OF_CFG'\n${IN}\nEND_OF_CFG\ncat \"$(cat cfg)\"",
    "cat > cfg <<-END_OF_CFG\n\t${IN}\n\tEND_OF_CFG\ncat \"$(cat cfg)\"",
    'cat > cfg <<END_OF_CFG\nuser\'s config\nEND_OF_CFG\necho $((1 << 2)) > /dev/null; cat "${IN}"',
]
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))


def bash(cmd: str, cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, timeout=10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_a_path_is_one_word_to_bash_in_every_shape(name):
    with tempfile.TemporaryDirectory() as d:
        try:
            os.mkdir(os.path.join(d, name))
        except OSError:  # a name this filesystem refuses (too long in bytes)
            return
        path = os.path.join(d, name, "in.txt")
        with open(path, "w") as f:
            f.write("the input\n")
        for shape in SHAPES:
            cmd = substitute(shape, {}, {"IN": path})
            p = bash(cmd, d)
            assert p.returncode == 0 and p.stdout == b"the input\n", (shape, cmd, p.stderr)


def test_plain_paths_arguments_and_unknown_names_are_as_before():
    assert substitute('cat "${IN}" ${IN} \'${IN}\'', {}, {"IN": "/job/in_1a2b"}) == \
        'cat "/job/in_1a2b" /job/in_1a2b \'/job/in_1a2b\''
    # an argument goes in as it is (the cloud's textual substitution): a user may mean its spaces
    assert substitute("train ${ARGS} --out ${OUT}", {"ARGS": "--lr 0.1 --epochs 3"}, {"OUT": "/d/out x"}) == \
        "train --lr 0.1 --epochs 3 --out '/d/out x'"
    assert substitute("echo ${HOME} ${NOPE}", {}, {"IN": "/x"}) == "echo ${HOME} ${NOPE}"


def test_the_quoting_follows_nesting():
    path = "/d/a b'c\"d$e`f\\g"
    got = substitute('echo "$(echo "${IN}") ${IN}" \'${IN}\' ${IN}', {}, {"IN": path})
    with tempfile.TemporaryDirectory() as d:
        p = bash(got, d)
    assert p.returncode == 0, (got, p.stderr)
    assert p.stdout.decode() == f"{path} {path} {path} {path}\n", got
