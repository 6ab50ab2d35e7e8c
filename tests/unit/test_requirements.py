"""dsjobs/requirements.py against the real thing: packaging 23.2 and the official client's `_parse_requirements`.

One interpreter of the official client's environment (.venv-datasphere, or $DSJOBS_DATASPHERE_PYTHON) answers for
the whole module over a pipe, one JSON request per line. Every line is judged twice on each side:

- as ``Requirement(line)`` alone (dsjobs: ``check_requirement``), the line as it is, unstripped;
- as the whole text of a requirements file handed to the official ``datasphere.pyenv._parse_requirements``
  (dsjobs: ``check_text``), which adds the client's stripping, its pass-through flags and its marker/URL refusals.

Verdicts, the exception's kind and the message must be identical (the errors that come from Python itself,
``ast.literal_eval`` and ``int()``, only when both interpreters are the same Python version: the official client
words them as its interpreter does, and dsjobs as its own).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dsjobs.requirements import RequirementError, check_requirement, check_text

ROOT = Path(__file__).resolve().parents[2]

ORACLE = r'''
import json, sys
from packaging import __version__ as packaging_version
from packaging.requirements import Requirement
from datasphere.pyenv import _parse_requirements

class Text:  # what _parse_requirements reads: f.read_text()
    def __init__(self, text):
        self.text = text
    def read_text(self):
        return self.text

def verdict(fn, arg):
    try:
        out = fn(arg)
    except Exception as e:
        return [type(e).__name__, str(e)]
    return None if out is None else ["ok", out]

print(json.dumps({"packaging": packaging_version, "python": list(sys.version_info[:2])}), flush=True)
for request in sys.stdin:
    q = json.loads(request)
    lines = [verdict(lambda l: (Requirement(l), None)[1], line) for line in q["lines"]]
    texts = [verdict(lambda t: _parse_requirements(Text(t)), text) for text in q["texts"]]
    print(json.dumps({"lines": lines, "texts": texts}), flush=True)
'''

PYTHON_OWN = {"SyntaxError", "UnicodeEncodeError", "ValueError"}  # wording may change with the Python version


@pytest.fixture(scope="module")
def oracle():
    py = os.environ.get("DSJOBS_DATASPHERE_PYTHON") or str(ROOT / ".venv-datasphere" / "bin" / "python")
    assert os.path.exists(py), "the official CLI is not installed: `make test` installs it into .venv-datasphere"
    proc = subprocess.Popen([py, "-c", ORACLE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            encoding="ascii", cwd=str(ROOT))
    hello = json.loads(proc.stdout.readline())
    assert hello["packaging"] == "23.2", hello
    same_python = tuple(hello["python"]) == sys.version_info[:2]

    def ask(lines: list[str], texts: list[str]) -> dict:
        proc.stdin.write(json.dumps({"lines": lines, "texts": texts}) + "\n")  # ensure_ascii: surrogates travel
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    ask.same_python = same_python
    yield ask
    proc.stdin.close()
    proc.wait(10)


def _mine(fn, arg):
    try:
        out = fn(arg)
    except RequirementError as e:
        return [e.kind, str(e)]
    return None if out is None else ["ok", out]


def _same(theirs, mine, same_python: bool) -> bool:
    if theirs == mine:
        return True
    if same_python or theirs is None or mine is None or theirs[0] == "ok" or mine[0] == "ok":
        return False
    return theirs[0] in PYTHON_OWN and mine[0] in PYTHON_OWN  # 3.10's literal_eval: ValueError for a NUL


def compare(oracle, lines: list[str], texts: list[str]) -> list[str]:
    """Every divergence between the official side and dsjobs's, as readable strings."""
    answer = oracle(lines, texts)
    bad = []
    for line, theirs in zip(lines, answer["lines"]):
        mine = _mine(check_requirement, line)
        if not _same(theirs, mine, oracle.same_python):
            bad.append(f"Requirement({line!r}):\n  packaging 23.2: {theirs}\n  dsjobs:         {mine}")
    for text, theirs in zip(texts, answer["texts"]):
        mine = _mine(check_text, text)
        if not _same(theirs, mine, oracle.same_python):
            bad.append(f"_parse_requirements({text!r}):\n  official: {theirs}\n  dsjobs:   {mine}")
    return bad


# --- the hand-picked corpus ----------------------------------------------------------------------------------------

NAMES = ["a", "A", "numpy", "Django", "zope.interface", "ruamel.yaml.clib", "typing_extensions", "scikit-learn",
         "a-b_c.d", "1", "9x", "x9", "a..b", "a--b", "a__b", "_a", ".a", "-a", "a.", "a-", "a_", "a.-_b", "é",
         "aé", "né-x", "ab\u212a", "a+b", "a/b", "a*", "a!", "a'", "a#b"]

OPS = ["==", "===", "~=", "!=", "<=", ">=", "<", ">", "=", "=>", "=<", "!", "~", "=~", "<>", "==="]

VERSIONS = ["1", "1.0", "1.0.0", "2.3.4.5", "v1.0", "V1.0", "1!2.0", "1.0a1", "1.0A1", "1.0b2", "1.0rc1", "1.0c1",
            "1.0alpha", "1.0beta.3", "1.0preview4", "1.0pre", "1.0-1", "1.0.post1", "1.0post", "1.0rev2", "1.0r",
            "1.0-r3", "1.0.dev0", "1.0dev", "1.0_dev_1", "1.0a1.post2.dev3", "1.0+local", "1.0+Local.7",
            "1.0+a_b-c.1", "1.0+", "1.*", "1.0.*", "1.*.0", "1.0a1.*", "*", "", "x", "1.0x", "1..0", "1.", ".1",
            "1.0-", "1.0+local.*", "01.002", "1.0 ", " 1.0", "1.0\xa0", "\xa01.0", "1.0\x0c", "1.0 .* ", "1.0pos\u017ft1",
            "arbitrary", "1,2", "1,", ",", "1;x", "1)x", "(1)", "[1]", "1.0@x", "1.0+lo cal", "1" * 4301,
            "1." + "0" * 4301, "1.0+" + "7" * 4301, "1.0a" + "2" * 4301, "1" * 4300]

MARKERS = [
    "python_version < '3.8'", 'python_version >= "3"', "python_full_version == '3.11.0'", "os_name == 'nt'",
    "os.name == 'posix'", "sys_platform == 'linux'", "sys.platform != 'win32'", "platform_release >= '5'",
    "platform_system == 'Linux'", "platform_version == '1'", "platform.version == '1'", "platform_machine == 'x86_64'",
    "platform.machine == 'x86_64'", "platform_python_implementation == 'CPython'",
    "platform.python_implementation == 'PyPy'", "python_implementation == 'CPython'", "implementation_name == 'cpython'",
    "implementation_version > '3'", "extra == 'test'", "extra == 'Foo_Bar'", "'test' == extra",
    "'linux' in sys_platform", "'win' not in sys_platform", "'a' not  in 'b'", "'a' not\tin 'b'", "'a' notin 'b'",
    "'a' not", "'a' not 'b'", "'a'not in'b'", "'a' in'b'", "'a'in'b'", "'a' inx 'b'", "'a' === 'b'", "'a' ~= 'b'",
    "'a' = 'b'", "'a' 'b'", "'a'", "python_version", "python_version < ", "python_versionx < '3'",
    "Python_version < '3'", "EXTRA == 'x'", "unknown == 'x'", "'a' == 'b' and 'c' == 'd'", "'a' == 'b' or 'c' == 'd'",
    "'a' == 'b' and", "'a' == 'b' xor 'c' == 'd'", "('a' == 'b')", "( 'a' == 'b' )", "(('a' == 'b') or ('c' < 'd'))",
    "('a' == 'b'", "'a' == 'b')", "()", "(", "'a' == 'b' AND 'c' == 'd'", "'a'=='b'and'c'=='d'",
    "'a' == 'b' andx 'c' == 'd'", "'unterminated == 'x'", '"mixed\' == "x"', "'\\x' == 'a'", "'\\N{foo}' == 'a'",
    "'\\d' == 'a'", "'abc\\' == 'a'", "'\\u12' == 'a'", "'\x00' == 'a'", "'é' == 'a'", "'a' == 'b' ;", "",
    " ", "'a' == 'b' # c", "python_version < '3.8' and (os_name == 'nt' or extra == 'x')",
    "(" * 60 + "'a' == 'b'" + ")" * 60,
]

URLS = ["https://example.com/a-1.0.tar.gz", "http://x/y.whl#sha256=00", "file:///tmp/a.whl", "git+https://h/r.git@v1",
        "./local", "/abs/path", "x", "https://h/a;b", "https://h/a(b)"]

CORPUS = [
    # the defect's own examples
    "# comment", "numpy==1.0  # comment", "numpy==1.0 # comment", "numpy  # comment", "numpy#comment", "#",
    "numpy; python_version < '3.8'", "numpy @ https://example.com/numpy.whl",
    # flags and options pip knows, which packaging does not
    "--no-deps", "--no-deps ", " --no-deps", "--no-deps x", "--NO-DEPS", "--extra-index-url https://x/simple",
    "--extra-index-url=https://x", "--extra-index-urlfoo", "--trusted-host x.org", "--trusted-hostx",
    "--index-url https://x/simple", "-i https://x", "-r other.txt", "-c constraints.txt", "-e .", "-e git+https://h/r",
    "--pre", "--find-links x", "-f x", "--require-hashes", "--hash=sha256:00", "numpy --hash=sha256:00", "-", "--",
    ".", "./pkg", "/abs/pkg.whl", "https://example.com/x.whl", "pkg.whl", "pkg-1.0-py3-none-any.whl",
    # names
    *NAMES,
    # extras
    "x[]", "x[ ]", "x[\t]", "x[a]", "x[a,b]", "x[a, b]", "x[ a ,b ]", "x [a]", "x[a,]", "x[,a]", "x[a b]", "x[a,,b]",
    "x[a.b-c_d]", "x[a-]", "x[-a]", "x[a", "x[", "x]", "x[[a]]", "x[a]]", "x[a][b]", "x[a]==1.0", "x[a] == 1.0",
    "x[a](>=1)", "x[a]@ https://h/x", "x[é]", "x[a;b]", "x[a]; python_version>'3'",
    # version lists: spaces, parentheses, commas
    "a>=1,<2", "a >= 1, < 2", "a>=1 ,<2", "a>=1, <2 ", "a (>=1,<2)", "a(>=1,<2)", "a ( >=1 , <2 )", "a (>=1", "a >=1)",
    "a ()", "a( )", "a (", "a )", "a ((>=1))", "a (>=1),(<2)", "a>=1,", "a>=1, ", "a>=1,,<2", "a,", "a, >=1",
    "a==1.0,", "a==1.0 ,", "a===1,2", "a===1, 2", "a===1,==2", "a===,", "a===", "a=== ", "a===\xa01", "a===1,x",
    "a===1,,", "a=====", "a===(1)", "a (===1)", "a===1;x", "a===1 ;python_version>'3'", "a===a b", "a== 1.0",
    "a ==\t1.0", "a==\x0c1.0", "a~=1", "a~=1.0", "a~=1.0.*", "a~=1.0+local", "a~= 1.0", "a~=", "a==", "a>=", "a<",
    "a>=1.*", "a<=1.0.*", "a!=1.*", "a==1.*", "a==1.0+local", "a!=1.0+local", "a>=1.0+local", "a<1+x.y", "a>1+X",
    "a==1.*+local", "a==1.0a1.*", "a>1a1.*", "a>=1.0.post1.dev2", "a<1!2", "a>=1,>=1.0", "a==1,==1.0.0",
    "a>=1 <2", "a>=1;", "a>=1 ;", "a >=1 ; ", "a=>1", "a=<1", "a=1", "a = 1", "a!1", "a<>1", "a>>1", "a<<1",
    "a=~1", "a>= 1.0a", "a>=1.0.", "a>=1.0x", "a!=1.0.*.*",
    # URLs and the `@` forms
    "a@https://h/x", "a @https://h/x", "a@ https://h/x", "a @ https://h/x ", "a @", "a @ ", "a@", "@ https://h/x",
    "a @ https://h/x ; python_version > '3'", "a @ https://h/x; python_version > '3'",
    "a @ https://h/x ;python_version>'3'", "a @ https://h/x python_version", "a @ https://h/x  ", "a @ x\ty",
    "a>=1 @ https://h/x", "a[b] @ file:///x", "a@b@c", "a @ @",
    # unicode and odd characters
    "numpy\xa0", "\xa0numpy", "num\xa0py", "numpy\u2028", "numpy\x85", "numpy\x0b==1", "ñ", "数据", "a\u0301",
    "a==1.0\u00a0", "a ==\u20001", "\ufeffnumpy", "a\x00", "a\r", "a\rb", "a\n", "a\nb", "\n", "", " ", "\t",
    "\tnumpy", "numpy\t", "numpy \t ==1", "a\ud800", "a; 'x\ud800' == 'y'",
]
CORPUS += [f"{n}{op}{v}" for n in ("a", "n-1") for op in OPS for v in VERSIONS[:40]]
CORPUS += [f"x {op} {v}" for op in OPS[:8] for v in VERSIONS[40:]]
CORPUS += [f"x(=={v})" for v in VERSIONS] + [f"x==1.0,{op}{v}" for op in OPS[:8] for v in VERSIONS[::4]]
CORPUS += [f"pkg; {m}" for m in MARKERS] + [f"pkg>=1.0 ;{m}" for m in MARKERS]
CORPUS += [f"pkg (>=1.0); {m}" for m in MARKERS[::3]] + [f"pkg[x]@ {u} ; {m}" for u in URLS for m in MARKERS[:3]]
CORPUS += [f"pkg @ {u}" for u in URLS] + [f"pkg @ {u} ; {m}" for u in URLS for m in MARKERS[::7]]
CORPUS += [f"{n}[{n}]" for n in NAMES] + [f"{n} @ {u}" for n in NAMES[:8] for u in URLS[:2]]

TEXTS = [
    "numpy==1.0\n# comment\nscipy\n", "numpy\nscipy; python_version < '3.8'\n", "a\n\n\n  b  \n",
    "--no-deps\n--extra-index-url https://x\n--trusted-host x\nnumpy\n", "", "\n\n", "numpy\n-r other.txt\n",
    "x\ny @ https://h/y.whl\nz; os_name == 'nt'\n", "x\r\ny\r\n", "x\ry", "  numpy==1.0  \n\tscipy>=1\t\n",
    "ok\n--index-url https://x\n", "good==1\nbad==\n", "a===1,2\nb; '\\x' == 'y'\n",
]


def test_corpus_matches_packaging_23_2_and_the_official_client(oracle):
    assert len(CORPUS) > 1500
    bad = compare(oracle, CORPUS, CORPUS + TEXTS)
    assert not bad, f"{len(bad)} divergences:\n" + "\n".join(bad[:30])


def test_the_corpus_is_not_all_one_verdict():
    """The corpus exercises every way a line is refused, and plenty of valid ones."""
    kinds = {}
    for line in CORPUS:
        k = _mine(check_text, line)
        kinds.setdefault("ok" if k is None or k[0] == "ok" else k[0], []).append(line)
    assert {"ok", "InvalidRequirement", "InvalidSpecifier", "ValueError", "SyntaxError"} <= set(kinds)
    assert len(kinds["ok"]) > 150 and len(kinds["InvalidRequirement"]) > 500
    messages = {str(_exc(line)).split("\n")[0] for line in kinds["InvalidRequirement"]}
    after = "Expected end or semicolon (after "
    assert messages == {  # every syntax error packaging 23.2 can give ("whitespace after URL" it cannot)
        "Expected package name at the start of dependency specifier", "Expected end of dependency specifier",
        "Expected URL after @", after + "URL and whitespace)", after + "version specifier)",
        after + "name and no valid version specifier)", "Expected comma between extra names",
        "Expected extra name after comma", "Expected matching RIGHT_BRACKET for LEFT_BRACKET, after extras",
        "Expected matching RIGHT_PARENTHESIS for LEFT_PARENTHESIS, after version specifier",
        "Expected matching RIGHT_PARENTHESIS for LEFT_PARENTHESIS, after marker expression",
        ".* suffix can only be used with `==` or `!=` operators",
        "Local version label can only be used with `==` or `!=` operators",
        "Expected a marker variable or quoted string", "Expected whitespace after 'not'", "Expected 'in' after 'not'",
        "Expected marker operator, one of <=, <, !=, ==, >=, >, ~=, ===, in, not in",
    }


def _exc(line):
    try:
        check_text(line)
    except RequirementError as e:
        return e


def test_official_wording_examples():
    assert str(_exc("# comment")) == ("Expected package name at the start of dependency specifier\n"
                                      "    # comment\n    ^")
    assert str(_exc("numpy==1.0  # comment")) == ("Expected end or semicolon (after version specifier)\n"
                                                  "    numpy==1.0  # comment\n         ~~~~~~~^")
    assert str(_exc("numpy; python_version < '3.8'")) == (
        "requirement markers are not supported (numpy; python_version < '3.8')")
    assert str(_exc("numpy @ https://h/n.whl")) == "requirement url is not supported (numpy @ https://h/n.whl)"
    assert str(_exc("a>=1.*")) == ".* suffix can only be used with `==` or `!=` operators\n    a>=1.*\n     ~~~~^"
    assert str(_exc("a===1,2")) == "Invalid specifier: '2'"
    assert check_text("--no-deps\nx[]\n  a (>=1, <2) \n") == ["--no-deps", "x[]", "a (>=1, <2)"]


# --- generated lines -----------------------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from([
    "a", "pkg", "Zope.Interface", "x_y-z", "1", "0", "2.3", "1.0", ".", "-", "_", " ", "  ", "\t", "[", "]", ",",
    "(", ")", ";", "@", "==", "===", "~=", "!=", "<=", ">=", "<", ">", "=", "!", "~", "*", ".*", "+", "+loc", "+L",
    "a1", "rc", "post", "dev", "v", "!", "-1", "python_version", "os.name", "sys_platform", "extra", "'3.8'", '"x"',
    "'", '"', "'\\x'", "and", "or", "in", "not", "not in", "#", "# c", "https://h/x.whl", "file:///a", "-e", "-r",
    "--no-deps", "--extra-index-url", "--trusted-host", "--index-url", "é", "\xa0", "\u212a", "\x0c", "\n",
])
STRUCTURED = st.builds(
    lambda ws, name, extras, spec, marker, tail: "".join((ws, name, extras, spec, marker, tail)),
    st.sampled_from(["", " ", "\t"]),
    st.sampled_from(["a", "pkg", "a.b", "a-", "1x", "é", ""]),
    st.sampled_from(["", "[]", "[x]", "[x,y]", "[x,]", "[ x ]", "[x"]),
    st.lists(st.tuples(st.sampled_from(["==", "===", "~=", "!=", "<=", ">=", "<", ">", "=>", ""]),
                       st.sampled_from(["1", "1.0", "1.*", "1.0+l", "1a", "1.0.post1", "v2!1", "x", "", " 1"]))
             , max_size=3)
    .map(lambda cs: ",".join(o + v for o, v in cs))
    .flatmap(lambda s: st.sampled_from([s, f"({s})", f" {s}", f"({s}", f"{s})"])),
    st.sampled_from(["", ";python_version<'3'", "; extra == 'x' and os_name != 'nt'", ";", "; (", " @ https://h/x",
                     " @ https://h/x ; extra=='y'", "; 'a' not in 'b'", "; 'a'"]),
    st.sampled_from(["", " ", "  # c", ",", ")", "]", "x"]),
)
LINES = st.one_of(
    st.lists(FRAGMENTS, max_size=10).map("".join),
    STRUCTURED,
    st.text(alphabet=st.characters(codec="utf-8"), max_size=16),
)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES, min_size=1, max_size=40))
def test_generated_lines_match_packaging_23_2_and_the_official_client(oracle, lines):
    bad = compare(oracle, lines, lines + ["\n".join(lines)])
    assert not bad, "\n".join(bad)
