"""Materialise a job's working directory: inputs placed, ZIPs unpacked safely, ``${VAR}`` substituted."""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from runners.fsops import clone_or_copy
from runners.safezip import UnsafeArchive, ZipLimits, extract, open_beneath
from runners.spec import AttemptSpec, OutputDecl

VAR_RE = re.compile(r"\$\{(.+?)}")
# What bash reads as part of a word, unquoted: shlex's safe set, and every character past ASCII (bash splits words
# on IFS and treats only ASCII characters specially).
_PLAIN = re.compile(r"[\w@%+=:,./-]+", re.ASCII)


def shell_word(path: str) -> str:
    """``path`` as it goes into a job's cmd unquoted: as it is when bash reads it as one word, else quoted.
    shlex.quote alone quoted any non-ASCII character, which is one word to bash anyway (/home/андрей)."""
    return path if path and _PLAIN.fullmatch(re.sub(r"[^\x00-\x7f]", "a", path)) else shlex.quote(path)


# How a path is written where bash reads it: unquoted (also inside $(...) and backquotes), between double quotes,
# between single quotes, between $'...', in a here-document's body.
_QUOTERS = {
    "u": shell_word,
    "d": lambda p: re.sub(r'([\\$`"])', r"\\\1", p),
    "s": lambda p: p.replace("'", "'\\''"),
    "a": lambda p: re.sub(r"([\\'])", r"\\\1", p),
    "h": lambda p: re.sub(r"([\\$`])", r"\\\1", p),  # a here-document's body (<<EOF)
    "q": lambda p: p,  # a quoted one's (<<'EOF'): read as it is
}
_WORD_END = " \t\n;&|()<>"


def _quoting(cmd: str, at: set) -> dict:
    """For each offset in ``at``, the frames bash is in there, outermost first: "u" the command, "d" "s" "a" quotes
    (see _QUOTERS), "c" a $( ), "b" backquotes. A reading of bash's quotes, command substitutions and backquotes;
    a comment (``#`` opening a word) to its line's end, and here-documents' bodies ("h", "q" for a quoted
    delimiter), which start at the next line."""
    out = {}
    pending: list = []  # here-documents whose bodies start at the next newline: (delimiter, quoted, tabs stripped)
    stack = ["u"]  # frames: "u" the command, "d" "s" "a" quotes, "c" $( ), "b" backquotes
    depth = [0]  # open parentheses in each "c" frame
    i, n = 0, len(cmd)
    while i < n:
        top = stack[-1]
        if i in at:
            out[i] = tuple(stack)
        c = cmd[i]
        two = cmd[i:i + 2]
        if top == "s":
            if c == "'":
                stack.pop()
        elif top == "a":
            if c == "\\":
                i += 1
            elif c == "'":
                stack.pop()
        elif top == "d":
            if c == "\\":
                i += 1
            elif c == '"':
                stack.pop()
            elif two == "$(":
                stack.append("c")
                depth.append(0)
                i += 1
            elif c == "`":
                stack.append("b")
        else:  # "u", "c", "b": the command's own words
            if c == "\\":
                i += 1
            elif c == "#" and (i == 0 or cmd[i - 1] in _WORD_END):
                j = cmd.find("\n", i)
                i = (n if j < 0 else j) - 1  # its newline is read next (a here-document's body may follow)
            elif two == "<<" and cmd[i + 2:i + 3] != "<" and not (top == "c" and depth[-1]):  # not $((1 << 2))
                k = i + 2
                strip = cmd[k:k + 1] == "-"
                k += strip
                while k < n and cmd[k] in " \t":
                    k += 1
                start = k
                while k < n and cmd[k] not in _WORD_END:
                    k += 1
                word = cmd[start:k]
                delim = re.sub(r"[\\'\"]", "", word)
                if delim:
                    pending.append((delim, delim != word, strip))
                i = k - 1
            elif c == "\n" and pending:
                pos = i + 1
                for delim, quoted, strip in pending:
                    while pos < n:
                        j = cmd.find("\n", pos)
                        end = n if j < 0 else j
                        line = cmd[pos:end]
                        if (line.lstrip("\t") if strip else line) == delim:
                            pos = end + 1
                            break
                        for o in at:
                            if pos <= o < end:
                                out[o] = tuple(stack) + ("q" if quoted else "h",)
                        pos = end + 1
                pending = []
                i = pos - 1
            elif two == "$'":
                stack.append("a")
                i += 1
            elif c == "'":
                stack.append("s")
            elif c == '"':
                stack.append("d")
            elif two == "$(":
                stack.append("c")
                depth.append(0)
                i += 1
            elif c == "`" and top == "b":
                stack.pop()
            elif c == "`":
                stack.append("b")
            elif top == "c" and c == "(":
                depth[-1] += 1
            elif top == "c" and c == ")":
                if depth[-1]:
                    depth[-1] -= 1
                else:
                    stack.pop()
                    depth.pop()
        i += 1
    return out


DS_PROJECT_HOME = "DS_PROJECT_HOME"


@dataclass
class Layout:
    """Where everything of one job is, on the host, and how paths look from inside the job."""

    work: Path
    vars: dict[str, str] = field(default_factory=dict)  # ${NAME} -> text to substitute as it is (arguments)
    paths: dict[str, str] = field(default_factory=dict)  # ${NAME} -> a path, quoted where it stands (substitute)
    outputs: list[tuple[OutputDecl, str]] = field(default_factory=list)  # (declared output, path relative to work)
    output_datasets: dict[str, str] = field(default_factory=dict)  # var -> path relative to work
    # Host path -> path seen by the job (identity for process jobs; /job/... in a container).
    to_job_path: Callable[[str], str] = staticmethod(lambda p: p)

    def save(self, path: Path) -> None:
        """What a restarted engine needs to collect the outputs (the run dir's ``layout``, as older engines wrote
        it: they are read back the same way)."""
        text = json.dumps({"work": str(self.work), "outputs": [[d.path, d.var, rel] for d, rel in self.outputs],
                           "output_datasets": self.output_datasets})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    @classmethod
    def load(cls, path: Path) -> "Optional[Layout]":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        return cls(work=Path(d["work"]), outputs=[(OutputDecl(p, v), rel) for p, v, rel in d["outputs"]],
                   output_datasets=d.get("output_datasets", {}))


def _var_dir_name(var: str) -> str:
    # The cloud places a var's file at a generated name like /job/weights_<random> for var WEIGHTS.
    return f"{var.lower()}_{secrets.token_hex(4)}"


def _write(path: str, frames: tuple) -> str:
    """``path`` written for the frames it stands in (_quoting): quoted for the innermost, then escaped for each
    backquote around it, whose text bash reads once more (``\\``, ``\\` ``, and ``\\"`` between double quotes)."""
    top = frames[-1]
    word = _QUOTERS["u" if top in ("c", "b") else top](path)
    for k in range(len(frames) - 1, 0, -1):
        if frames[k] == "b":
            word = word.replace("\\", "\\\\").replace("`", "\\`")
            if frames[k - 1] == "d":
                word = word.replace('"', '\\"')
    return word


def substitute(cmd: str, mapping: dict[str, str], paths: dict[str, str] = None) -> str:
    """``${NAME}`` replaced: by ``mapping[NAME]`` as it is (arguments: what the cloud does), or by the path
    ``paths[NAME]`` written for where it stands, so that it is that one path to bash whatever it holds (a space, a
    quote, a ``$``): ${VAR}, "${VAR}", '${VAR}' and "$(cat ${VAR})" all name the file. In the cloud the path is a
    plain /job/... one, the same in every one of these; here it is under the data dir, wherever that is."""
    paths = paths or {}
    found = [m for m in VAR_RE.finditer(cmd) if m.group(1) in paths]
    quoting = _quoting(cmd, {m.start() for m in found}) if found else {}

    def one(m):
        name = m.group(1)
        if name in paths and m.start() in quoting:
            return _write(paths[name], quoting[m.start()])
        return mapping.get(name, m.group(0))
    return VAR_RE.sub(one, cmd)


def place_file(src: str, work: Path, rel: str) -> None:
    parent_fd, name = open_beneath(str(work), rel, create_dirs=True)
    try:
        try:
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755, dir_fd=parent_fd)
        except (IsADirectoryError, OSError) as e:
            if isinstance(e, IsADirectoryError) or e.errno == 40:  # ELOOP: a symlink there
                raise UnsafeArchive(f"{rel!r} is already a directory or a symlink (two inputs that conflict?)") \
                    from None
            raise
        try:
            # A reflink where the filesystem has them (the blob and the job's file share extents until the job
            # writes), else an in-kernel copy; never a hard link, or a job editing its input would edit the blob.
            s = os.open(src, os.O_RDONLY)
            try:
                clone_or_copy(s, out)
            finally:
                os.close(s)
        finally:
            os.close(out)
    finally:
        os.close(parent_fd)


def materialise(spec: AttemptSpec, work: Path, blob_path: Callable[[str], str], *,
                zip_limits: ZipLimits = ZipLimits(), to_job_path: Callable[[str], str] = lambda p: p) -> Layout:
    """Lay out the working directory and compute the substitutions. Raises UnsafeArchive naming a bad input."""
    work.mkdir(parents=True, exist_ok=True)
    layout = Layout(work=work, to_job_path=to_job_path)
    q = lambda host_path: to_job_path(str(host_path))  # noqa: E731

    for module in spec.python.local_modules if spec.python else []:
        try:
            extract(blob_path(module.sha256), str(work), zip_limits)
        except UnsafeArchive as e:
            raise UnsafeArchive(f"local module {module.var}: {e}") from None

    for f in spec.inputs:
        src = blob_path(f.sha256)
        try:
            if not f.var:
                if f.zipped:
                    parent = os.path.dirname(os.path.normpath(f.path))
                    extract(src, str(work / parent) if parent else str(work), zip_limits)
                else:
                    place_file(src, work, f.path)
                continue
            name = _var_dir_name(f.var)
            if f.zipped:
                tmp = work / f".unpack_{name}"
                top = extract(src, str(tmp), zip_limits)
                only = tmp / top[0] if len(top) == 1 else None
                if only is not None and only.is_dir() and not only.is_symlink():
                    only.rename(work / name)
                    tmp.rmdir()
                else:
                    tmp.rename(work / name)
            else:
                place_file(src, work, name)
            layout.paths[f.var] = q(work / name)
        except UnsafeArchive as e:
            raise UnsafeArchive(f"input {f.path!r}: {e}") from None

    for decl in spec.outputs:
        if decl.var:
            rel = _var_dir_name(decl.var)
            layout.paths[decl.var] = q(work / rel)
        else:
            rel = os.path.normpath(decl.path)
            parent_fd, _ = open_beneath(str(work), rel, create_dirs=True)  # the job can write `> out/res`
            os.close(parent_fd)
        layout.outputs.append((decl, rel))

    for var in spec.output_datasets:
        rel = _var_dir_name(var)
        (work / rel).mkdir()
        layout.output_datasets[var] = rel
        layout.paths[var] = q(work / rel)

    for m in spec.mounts:
        layout.paths[m.rid] = q(m.host_dir)
    for name in spec.arguments:  # an argument named as a var wins, as it always did
        layout.paths.pop(name, None)
    layout.vars.update(spec.arguments)
    if spec.project_home:
        layout.paths[DS_PROJECT_HOME] = q(spec.project_home)
    return layout


def job_env(variables: dict[str, str], progress_file: str, job_id: str, *, path: str = "", venv: str = "",
            home: str = "") -> dict[str, str]:
    """A job's environment, on a host or in a container: what it is given beyond the job's own variables.
    Project secrets are not in it: executors hand them over apart (a process job's supervisor gets them on its
    stdin, a container on its stdin), so that no file of the run dir holds them."""
    env = {"PYTHONUNBUFFERED": "1"}  # logs stream live, as in the cloud
    if path:
        env["PATH"] = path
    if home:
        env.update(HOME=home, LANG=os.environ.get("LANG", "C.UTF-8"))
    if venv:
        env["VIRTUAL_ENV"] = venv
    env.update(variables)
    env["JOB_PROGRESS_FILENAME"] = progress_file
    env["DSJOBS_JOB_ID"] = job_id  # the marker every process of the job carries
    return env


def process_env(work: Path, venv_bin: list[str], variables: dict[str, str], progress_file: str, job_id: str,
                venv: str = "", home: str = "") -> dict[str, str]:
    """The environment of a job run as a process on the host (the engine's or a node's); ``home`` is a private
    HOME when the job is sandboxed."""
    path = ":".join(venv_bin + [os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
    env = job_env(variables, progress_file, job_id, path=path, venv=venv,
                  home=home or os.environ.get("HOME", str(work)))
    if home:
        env["TMPDIR"] = "/tmp"  # the sandbox's own /tmp, whatever the engine's TMPDIR is
    return env
