"""Generated mutation check: mutations chosen by a generator, not by the people who wrote the tests.

scripts/mutations.py replays a curated list (a fast smoke: every entry must be caught). This script
measures the suite: it walks the AST of the core modules of tap_jobresults/ and writes one-line
mutants of every kind an auditor would try:

    compare     <  <=  >  >=  ==  !=  in  not in  is  is not   swapped for its boundary / negation
    constant    an int n -> n + 1 (0 <-> 1), True <-> False, a float f -> f + 1
    boolean     and <-> or; `not x` -> `x`; an if / while / ternary condition negated
    arith       + <-> -, * <-> /, // -> /
    drop        a statement that calls something (an expression statement), an assignment of an
                attribute or item, an augmented assignment, a raise, a continue / break -> `pass`
    swap        the first two positional arguments of a call swapped
    minmax      min <-> max
    return      `return x` -> `return None`; return True <-> False

Coverage decides which tests can catch what: the fast suite (-m "not slow") runs once under
coverage with one context per test (the tap binary and every other subprocess the tests start
record into the same context, through a sitecustomize on PYTHONPATH); each mutant then runs only
the tests that executed its line, fastest first, with -x and a timeout. A mutant no test executes
survives.

Sampling: a run takes a deterministic sample, stratified by module (every core module gets its
share every run), seeded by the ISO week and the commit: reruns of a commit are identical, and
different commits and weeks draw different mutants. `--all` runs every mutant (the measurement).

The budget: the run fails when more than --budget (10 %) of the sampled mutants survive. Survivors
are written to the report with their diff; those already examined are listed, each with its reason
(an equivalent mutant, or the test that was added), in scripts/mutation_survivors.toml and are
printed as such; any other survivor is printed as UNEXPLAINED (and fails the run with --strict).

    python scripts/mutations_generated.py                      # CI: the sample (make mutations-generated)
    python scripts/mutations_generated.py --all --jobs 2       # every mutant of the core modules
    python scripts/mutations_generated.py --list               # the mutants, without running them
    python scripts/mutations_generated.py --module records.py --all
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutations import _copy, _files  # the scratch copy of the project, made as the curated check makes it

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "tap_jobresults"
CORE = (
    "lifecycle.py",
    "records.py",
    "sources/base.py",
    "sources/clavata.py",
    "sources/cognite.py",
    "sources/talonic.py",
    "streams.py",
    "report.py",
    "state.py",
    "settings.py",
    # The HTTP side and the engine, where the audit of issue 22 found most survivors:
    "client.py",
    "auth.py",
    "transport.py",
    "scrub.py",
    "guard.py",
    "engine.py",
    "sdk_hooks.py",
    "writer.py",
    "tap.py",
)
SURVIVORS = ROOT / "scripts" / "mutation_survivors.toml"
FAST_SUITE = ("-m", "not slow")
# Tests that cannot run in a scratch copy or under coverage's tracer in reasonable time are left out
# of the map (they still run in `make test`): the end-to-end ones are marked slow already.
IGNORED_TESTS = ("tests/test_release.py", "tests/test_plugin_definition.py")

COMPARE_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
BINOP_SWAPS: dict[type, type] = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.FloorDiv: ast.Div}
QUIET_LOGGERS = {"debug"}  # dropping a debug log line changes nothing a user relies on
# Calls whose two arguments are of different kinds (swapping them is a TypeError, not a bug), or
# whose result does not depend on their order (min, max: swapping them is an equivalent mutant).
NO_SWAP = {
    "min",
    "max",
    "isinstance",
    "issubclass",
    "getattr",
    "hasattr",
    "setattr",
    "get",
    "setdefault",
    "pop",
    "partition",
}


@dataclasses.dataclass(frozen=True)
class Mutant:
    file: str  # under tap_jobresults/
    line: int  # first line of the mutated node (for coverage)
    lines: tuple[int, ...]  # every line the mutated node spans
    kind: str
    original: str  # the source segment replaced
    replacement: str
    start: int  # byte offsets of the segment in the file
    end: int
    ident: str = ""  # stable across unrelated edits: file, kind, enclosing def, segment, rank
    import_time: bool = False  # runs when the module is imported (module or class body)
    names: tuple[str, ...] = ()  # import time: the names its statement defines (their uses pick the tests)

    def describe(self) -> str:
        before = " ".join(self.original.split())
        after = " ".join(self.replacement.split())
        return f"{self.file}:{self.line} [{self.kind}] {before[:90]!s} -> {after[:90]!s}"


def _offsets(source: bytes) -> list[int]:
    starts = [0]
    for index, byte in enumerate(source):
        if byte == 10:
            starts.append(index + 1)
    return starts


class _Generator(ast.NodeVisitor):
    def __init__(self, file: str, source: bytes) -> None:
        self.file = file
        self.source = source
        self.line_starts = _offsets(source)
        self.scope: list[str] = []
        self.functions = 0  # depth of function bodies
        self.defining: tuple[str, ...] = ()  # names the current import-time statement defines
        self.found: list[tuple[str, Mutant]] = []  # (scope, mutant)
        self.skip_lines = {
            number for number, text in enumerate(source.decode().splitlines(), start=1) if "pragma: no mutate" in text
        }

    # -- plumbing ---------------------------------------------------------------------------------
    def _span(self, node: ast.AST) -> tuple[int, int]:
        start = self.line_starts[node.lineno - 1] + node.col_offset  # type: ignore[attr-defined]
        end = self.line_starts[node.end_lineno - 1] + node.end_col_offset  # type: ignore[attr-defined]
        return start, end

    def _add(self, node: ast.AST, kind: str, replacement: str) -> None:
        if node.lineno in self.skip_lines:  # type: ignore[attr-defined]
            return
        start, end = self._span(node)
        original = self.source[start:end].decode()
        if original == replacement:
            return
        lines = tuple(range(node.lineno, node.end_lineno + 1))  # type: ignore[attr-defined]
        mutant = Mutant(
            self.file,
            node.lineno,
            lines,
            kind,
            original,
            replacement,
            start,
            end,  # type: ignore[attr-defined]
            import_time=self.functions == 0,
            names=self.defining if self.functions == 0 else (),
        )
        self.found.append((".".join(self.scope), mutant))

    def _expr(self, node: ast.expr) -> str:
        return f"({ast.unparse(node)})"

    # -- scopes, and what is never mutated ---------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        # Annotations are never evaluated (`from __future__ import annotations`); decorators and
        # defaults are mutated with the body.
        for decorator in node.decorator_list:
            self.visit(decorator)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        self.functions += 1
        self._body(node.body)
        self.functions -= 1
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self._body(node.body)
        self.scope.pop()

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Module(self, node: ast.Module) -> None:
        self._body(node.body)

    def _body(self, body: list[ast.stmt]) -> None:
        for index, stmt in enumerate(body):
            if index == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue  # docstring
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                continue
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                continue
            outer = self.defining
            if self.functions == 0:
                self.defining = _defined(stmt)
            self._drop(stmt, only=len(body) > 1)
            self.visit(stmt)
            self.defining = outer

    def generic_visit(self, node: ast.AST) -> None:
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns", "type_comment"):
                continue
            if isinstance(value, list):
                if value and isinstance(value[0], ast.stmt):
                    self._body(value)  # type: ignore[arg-type]
                else:
                    for item in value:
                        if isinstance(item, ast.AST):
                            self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)

    # -- statements -------------------------------------------------------------------------------
    def _drop(self, stmt: ast.stmt, *, only: bool) -> None:
        """Drop a statement that does something on its own (not the only one of its block: `pass`
        would keep the block but the surrounding code rarely means anything then)."""
        droppable = False
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call | ast.Await | ast.Yield | ast.YieldFrom):
            func = stmt.value.func if isinstance(stmt.value, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr in QUIET_LOGGERS:
                return
            droppable = True
        elif isinstance(stmt, ast.Assign):
            droppable = any(isinstance(target, ast.Attribute | ast.Subscript) for target in stmt.targets)
        elif isinstance(stmt, ast.AugAssign | ast.Raise | ast.Continue | ast.Break | ast.Delete):
            droppable = True
        if droppable:
            self._add(stmt, "drop", "pass")

    def _negate(self, test: ast.expr) -> None:
        # `not x` is mutated to `x` where it stands (visit_UnaryOp); a constant is mutated as one.
        if not isinstance(test, ast.Constant) and not (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)):
            self._add(test, "boolean", f"not {self._expr(test)}")

    def visit_If(self, node: ast.If) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        value = node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, bool):
            self._add(node, "return", f"return {not value.value}")
        elif value is not None and not (isinstance(value, ast.Constant) and value.value is None):
            self._add(node, "return", "return None")
            if value is not None:
                self.visit(value)
            return
        self.generic_visit(node)

    # -- expressions ------------------------------------------------------------------------------
    def visit_Compare(self, node: ast.Compare) -> None:
        for index, op in enumerate(node.ops):
            swap = COMPARE_SWAPS.get(type(op))
            if swap is None:
                continue
            mutated = ast.Compare(node.left, list(node.ops), list(node.comparators))
            mutated.ops[index] = swap()
            self._add(node, "compare", self._expr(mutated))
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._add(node, "boolean", self._expr(ast.BoolOp(other, node.values)))
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self._add(node, "boolean", self._expr(node.operand))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        swap = BINOP_SWAPS.get(type(node.op))
        # A string + string or a %-format is not arithmetic.
        if swap is not None and not any(
            isinstance(side, ast.Constant | ast.JoinedStr) and isinstance(getattr(side, "value", ""), str)
            for side in (node.left, node.right)
        ):
            self._add(node, "arith", self._expr(ast.BinOp(node.left, swap(), node.right)))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self._add(node, "constant", repr(not value))
        elif isinstance(value, int):
            self._add(node, "constant", repr(1 if value == 0 else value + 1))
            if value not in (0, 1):
                self._add(node, "constant", repr(value - 1))
        elif isinstance(value, float):
            self._add(node, "constant", repr(value + 1))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("min", "max"):
            other = "max" if func.id == "min" else "min"
            self._add(func, "minmax", other)
        positional = [arg for arg in node.args if not isinstance(arg, ast.Starred)]
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if len(positional) == len(node.args) >= 2 and name not in NO_SWAP:
            first, second = node.args[0], node.args[1]
            constants = [isinstance(arg, ast.Constant) for arg in (first, second)]
            # Two values of one kind (two names, two strings) can be confused; a key and a default cannot.
            alike = constants[0] == constants[1] and (
                not constants[0] or type(first.value) is type(second.value)  # type: ignore[attr-defined]
            )
            if alike and ast.dump(first) != ast.dump(second):
                swapped = ast.Call(func, [second, first, *node.args[2:]], node.keywords)
                self._add(node, "swap", self._expr(swapped))
        if isinstance(func, ast.Attribute) and func.attr in QUIET_LOGGERS:
            return  # the arguments of a debug log line
        self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # message text: not behaviour this check measures


def _defined(stmt: ast.stmt) -> tuple[str, ...]:
    """The names an import-time statement binds (module constants, class attributes, functions)."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return (stmt.name,)
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        targets = [stmt.target]
    names = []
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.append(node.id)
            elif isinstance(node, ast.Attribute):
                names.append(node.attr)
    return tuple(names)


def uses() -> dict[str, set[tuple[str, int]]]:
    """Where each name is read in the package: {name: {(module, line)}} (names and attributes)."""
    found: dict[str, set[tuple[str, int]]] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        name = path.relative_to(ROOT / PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                found.setdefault(node.id, set()).add((name, node.lineno))
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                found.setdefault(node.attr, set()).add((name, node.lineno))
    return found


def generate(files: tuple[str, ...] = CORE) -> list[Mutant]:
    mutants: list[Mutant] = []
    for name in files:
        source = (ROOT / PACKAGE / name).read_bytes()
        generator = _Generator(name, source)
        generator.visit(ast.parse(source))
        ranks: dict[tuple, int] = {}
        for scope, mutant in generator.found:
            key = (scope, mutant.kind, mutant.original, mutant.replacement)
            rank = ranks[key] = ranks.get(key, -1) + 1
            digest = hashlib.sha256(repr((name, *key, rank)).encode()).hexdigest()[:10]
            mutants.append(dataclasses.replace(mutant, ident=f"{name}:{scope or '<module>'}:{mutant.kind}:{digest}"))
    return mutants


def apply(mutant: Mutant, source: bytes) -> bytes:
    mutated = source[: mutant.start] + mutant.replacement.encode() + source[mutant.end :]
    return mutated


def compiles(mutant: Mutant) -> bool:
    source = (ROOT / PACKAGE / mutant.file).read_bytes()
    try:
        compile(apply(mutant, source), mutant.file, "exec")
    except SyntaxError:
        return False
    return True


# -- sampling -------------------------------------------------------------------------------------
def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no-git"


def default_seed() -> str:
    year, week, _ = datetime.date.today().isocalendar()
    return f"{year}-W{week:02d}/{commit()}"


def sample(mutants: list[Mutant], size: int, seed: str) -> list[Mutant]:
    """`size` mutants, stratified by module: each module's share in proportion to its mutants, at
    least one each, drawn with a generator seeded by `seed`."""
    by_file: dict[str, list[Mutant]] = {}
    for mutant in mutants:
        by_file.setdefault(mutant.file, []).append(mutant)
    total = len(mutants)
    chosen: list[Mutant] = []
    for name in sorted(by_file):
        group = sorted(by_file[name], key=lambda mu: mu.ident)
        share = max(min(len(group), 1), round(size * len(group) / total))
        rng = random.Random(f"{seed}/{name}")
        chosen.extend(rng.sample(group, min(share, len(group))))
    return chosen


# -- scratch copies and pytest --------------------------------------------------------------------
SITECUSTOMIZE = """
import os
if os.environ.get("MUTATION_COVERAGE_DIR"):
    import coverage
    _cov = coverage.Coverage(
        data_file=os.path.join(os.environ["MUTATION_COVERAGE_DIR"], ".coverage"),
        data_suffix=True,
        auto_data=True,
        config_file=False,
        include=[os.environ["MUTATION_COVERAGE_INCLUDE"]],
        context=os.environ.get("MUTATION_TEST_ID") or None,
    )
    _cov.set_option("run:sigterm", True)
    _cov.start()
"""

PLUGIN = '''
"""Per-test coverage contexts, durations and outcomes (the mutation check's map)."""
import json, os, time
import pytest

_results = {}

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import coverage
    cov = coverage.Coverage.current()
    os.environ["MUTATION_TEST_ID"] = item.nodeid
    if cov is not None:
        cov.switch_context(item.nodeid)
    started = time.monotonic()
    yield
    _results.setdefault(item.nodeid, {})["seconds"] = time.monotonic() - started
    os.environ.pop("MUTATION_TEST_ID", None)
    if cov is not None:
        cov.switch_context("")

def pytest_runtest_logreport(report):
    entry = _results.setdefault(report.nodeid, {})
    if report.failed or (report.when == "call" and not report.passed and not report.skipped):
        entry["failed"] = True
    if report.when == "call" and report.skipped:
        entry["skipped"] = True

def pytest_sessionfinish(session):
    out = os.path.join(os.environ["MUTATION_COVERAGE_DIR"], f"tests-{os.getpid()}.json")
    with open(out, "w") as handle:
        json.dump(_results, handle)
'''


def _env(scratch: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_ADDOPTS", "PYTHONPATH") and not k.startswith(("MUTATION_", "COVERAGE_"))
    }
    env["PYTHONPATH"] = str(scratch)  # ahead of the editable install's path entry
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["CI"] = env.get("CI", "1")  # hypothesis replays the same examples
    env.update(extra or {})
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass


def _pytest(scratch: Path, args: list[str], timeout: float, extra_env: dict[str, str] | None = None):
    """(exit code or None on timeout, output tail, seconds). The run is a process group of its own:
    a timeout ends the tap and the servers it started too."""
    started = time.monotonic()
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            argv,
            cwd=scratch,
            env=_env(scratch, extra_env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        _kill_group(proc)
        proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    return code, text, time.monotonic() - started


def coverage_map(
    files: list[str], jobs: int, timeout: float
) -> tuple[dict[str, dict[int, set[str]]], dict[str, float]]:
    """{file: {line: tests}} over the core modules, and the seconds each passing test took."""
    import coverage  # the test extra has it

    with tempfile.TemporaryDirectory(prefix="tap-mutation-cov-") as tmp:
        scratch = Path(tmp) / "tree"
        data = Path(tmp) / "data"
        data.mkdir()
        _copy(files, scratch)
        (scratch / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (scratch / "mutation_coverage_plugin.py").write_text(PLUGIN)
        include = str(scratch / PACKAGE / "*")
        args = [*FAST_SUITE, "-p", "mutation_coverage_plugin", "-n", str(jobs), "tests"]
        args += [f"--ignore={name}" for name in IGNORED_TESTS]
        code, output, seconds = _pytest(
            scratch,
            args,
            timeout,
            {"MUTATION_COVERAGE_DIR": str(data), "MUTATION_COVERAGE_INCLUDE": include},
        )
        print(f"coverage map: the fast suite under coverage, {seconds:.0f} s: {_tail(output)}", flush=True)
        if code is None:
            sys.exit(f"coverage map: the fast suite did not finish in {timeout:.0f} s")
        outcomes: dict[str, dict] = {}
        for path in data.glob("tests-*.json"):
            for nodeid, entry in json.loads(path.read_text()).items():
                outcomes.setdefault(nodeid, {}).update(entry)
        failed = sorted(nodeid for nodeid, entry in outcomes.items() if entry.get("failed"))
        if failed:
            print(f"coverage map: {len(failed)} tests fail unmutated and are left out: {failed[:10]}")
        passing = {
            nodeid: entry.get("seconds", 1.0)
            for nodeid, entry in outcomes.items()
            if not entry.get("failed") and not entry.get("skipped")
        }
        combined = coverage.Coverage(data_file=str(data / ".coverage"), config_file=False)
        combined.combine([str(data)], keep=True)
        measured = combined.get_data()
        lines: dict[str, dict[int, set[str]]] = {}
        prefix = str(scratch / PACKAGE) + os.sep
        for path in measured.measured_files():
            if not path.startswith(prefix):
                continue
            name = path[len(prefix) :]
            by_line = measured.contexts_by_lineno(path)
            lines[name] = {
                number: {context for context in contexts if context in passing} for number, contexts in by_line.items()
            }
    return lines, passing


def cached_map(
    files: list[str], jobs: int, cache: str | None
) -> tuple[dict[str, dict[int, set[str]]], dict[str, float]]:
    digest = hashlib.sha256()
    for name in sorted(files):
        if name.startswith((f"{PACKAGE}/", "tests/")):
            digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes())
    key = digest.hexdigest()
    if cache and Path(cache).is_file():
        saved = json.loads(Path(cache).read_text())
        if saved.get("key") == key:
            print(f"coverage map: reused from {cache}", flush=True)
            lines = {f: {int(n): set(tests) for n, tests in by_line.items()} for f, by_line in saved["lines"].items()}
            return lines, saved["durations"]
    lines, durations = coverage_map(files, jobs, timeout=3600)
    if cache:
        plain = {f: {str(n): sorted(tests) for n, tests in by_line.items()} for f, by_line in lines.items()}
        Path(cache).write_text(json.dumps({"key": key, "lines": plain, "durations": durations}))
    return lines, durations


def _tail(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


_USES: dict[str, set[tuple[str, int]]] | None = None


def tests_for(mutant: Mutant, lines: dict[str, dict[int, set[str]]]) -> set[str]:
    global _USES
    covered = lines.get(mutant.file, {})
    found: set[str] = set()
    if mutant.import_time:
        # Executed once per process, at import, so its own line's contexts say little: the tests that
        # execute a line reading what the statement defines (a constant, a class attribute, a
        # function); failing that, every test that runs code of the module.
        if _USES is None:
            _USES = uses()
        places = {place for name in mutant.names for place in _USES.get(name, ())}
        for module, number in places:
            found |= lines.get(module, {}).get(number, set())
        if found:
            return found
        return found.union(*covered.values())
    for number in mutant.lines:
        found |= covered.get(number, set())
    return found


def run_mutant(
    mutant: Mutant, files: list[str], tests: list[str], durations: dict[str, float], cap: float
) -> tuple[str, float, str]:
    """('killed' | 'timeout' | 'SURVIVED' | 'uncovered' | 'undecided' | 'ERROR', seconds, detail)."""
    if not tests:
        return "uncovered", 0.0, "no test of the fast suite executes this line"
    expected = sum(durations.get(test, 1.0) for test in tests)
    timeout = min(cap, 30 + 3 * expected)
    with tempfile.TemporaryDirectory(prefix="tap-mutation-") as tmp:
        scratch = Path(tmp)
        _copy(files, scratch)
        target = scratch / PACKAGE / mutant.file
        target.write_bytes(apply(mutant, target.read_bytes()))
        code, output, seconds = _pytest(scratch, ["-x", *tests], timeout)
        if code is None and timeout < 30 + 3 * expected:
            # Cut short by --cap: either slow tests or a hang (a deadlock hangs every test). The
            # fastest test alone, with time to spare for itself, tells which.
            first = durations.get(tests[0], 1.0)
            alone = min(cap, 30 + 3 * first)
            code, output, more = _pytest(scratch, ["-x", tests[0]], alone)
            seconds += more
            if code is None:
                return "timeout", seconds, f"{tests[0]} alone hangs ({alone:.0f} s; {first:.1f} s unmutated)"
            if code in (1, 2):
                return "killed", seconds, _tail(output)
            code = None
    if code is None:
        detail = f"timed out after {timeout:.0f} s (the tests take {expected:.0f} s unmutated)"
        if timeout < 30 + 3 * expected:
            # Cut short by --cap, not hung: not known to be caught, so it counts as a survivor.
            return "undecided", seconds, detail
        return "timeout", seconds, detail  # the mutant hangs the tests: caught
    if code in (1, 2):  # 2: the mutated package breaks collection (an import fails)
        return "killed", seconds, _tail(output)
    if code == 4 and "found no collectors" in output:  # a test module failed to import the mutant
        return "killed", seconds, _tail(output)
    if code == 0:
        return "SURVIVED", seconds, _tail(output)
    return "ERROR", seconds, f"pytest exit code {code}: {_tail(output)}\n{output[-2000:]}"


def wilson_low(successes: int, trials: int, z: float = 1.96) -> float:
    """The lower bound of the 95% Wilson interval of a proportion."""
    if trials == 0:
        return 0.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * ((p * (1 - p) + z * z / (4 * trials)) / trials) ** 0.5
    return max(0.0, (centre - spread) / (1 + z * z / trials))


def explained() -> dict[str, dict]:
    """{mutant id: {"verdict": "equivalent" | "test" | "open", "reason": ...}} from the survivors file."""
    if not SURVIVORS.is_file():
        return {}
    with SURVIVORS.open("rb") as handle:
        data = tomllib.load(handle)
    return data.get("survivor", {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once, and xdist workers for the map")
    parser.add_argument("--sample", type=int, default=40, help="mutants per run (default 40), stratified by module")
    parser.add_argument("--all", action="store_true", help="every mutant of the selected modules (no sampling)")
    parser.add_argument("--seed", default=None, help="sampling seed (default: ISO week / commit)")
    parser.add_argument("--module", action="append", help="only these modules (e.g. records.py); repeatable")
    parser.add_argument("--budget", type=float, default=0.10, help="largest share of survivors allowed (0.10)")
    parser.add_argument("--cap", type=float, default=150.0, help="longest a mutant may run, seconds (150)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--strict", action="store_true", help="fail on any survivor not in the survivors file")
    parser.add_argument("--report", default="mutation-report.json", help="where to write the results (JSON)")
    parser.add_argument(
        "--map-cache",
        help="keep the coverage map in this file and reuse it while tap_jobresults/ and tests/ are unchanged",
    )
    args = parser.parse_args()

    modules = tuple(args.module) if args.module else CORE
    unknown = [name for name in modules if not (ROOT / PACKAGE / name).is_file()]
    if unknown:
        sys.exit(f"no such module under {PACKAGE}/: {unknown}")
    mutants = [mu for mu in generate(modules) if compiles(mu)]
    seed = args.seed or default_seed()
    chosen = mutants if args.all else sample(mutants, args.sample, seed)
    if args.list:
        for mu in chosen:
            print(f"{mu.ident}\n    {mu.describe()}")
        print(f"{len(chosen)} of {len(mutants)} mutants" + ("" if args.all else f" (seed {seed})"))
        return 0

    started = time.monotonic()
    print(f"{len(chosen)} of {len(mutants)} generated mutants" + ("" if args.all else f" (seed {seed})"), flush=True)
    files = _files()
    lines, durations = cached_map(files, args.jobs, args.map_cache)
    reasons = explained()
    results: dict[str, list[tuple[Mutant, str]]] = {}
    order = sorted(chosen, key=lambda mu: -sum(durations.get(t, 1) for t in tests_for(mu, lines)))
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {}
        for mu in order:
            tests = sorted(tests_for(mu, lines), key=lambda test: (durations.get(test, 1.0), test))
            futures[pool.submit(run_mutant, mu, files, tests, durations, args.cap)] = mu
        for future in concurrent.futures.as_completed(futures):
            mu = futures[future]
            outcome, seconds, detail = future.result()
            results.setdefault(outcome, []).append((mu, detail))
            if outcome in ("SURVIVED", "uncovered", "undecided"):
                verdict = reasons.get(mu.ident, {}).get("verdict")
                label = f"listed: {verdict}" if verdict else "UNEXPLAINED"
                print(f"{outcome:<9} {seconds:5.1f}s  {mu.describe()}\n    {mu.ident}: {label}", flush=True)
            elif outcome == "ERROR":
                print(f"ERROR     {seconds:5.1f}s  {mu.describe()}\n    {detail}", flush=True)
            else:
                print(f"{outcome:<9} {seconds:5.1f}s  {mu.describe()}", flush=True)

    survivors = [mu for outcome in ("SURVIVED", "uncovered", "undecided") for mu, _ in results.get(outcome, [])]
    errors = results.get("ERROR", [])
    unexplained = [mu for mu in survivors if mu.ident not in reasons]
    # An equivalent mutant is no bug: it counts neither as a survivor nor as a mutant.
    equivalent = [mu for mu in survivors if reasons.get(mu.ident, {}).get("verdict") == "equivalent"]
    counted = [mu for mu in survivors if mu not in equivalent]
    measured = len(chosen) - len(errors) - len(equivalent)
    rate = len(counted) / measured if measured else 0.0
    elapsed = time.monotonic() - started
    # Every mutant measured: the rate itself. A sample: fail when it shows the rate is over budget
    # (the 95% Wilson lower bound above it), so that a sample's luck does not turn CI red.
    low = rate if args.all else wilson_low(len(counted), measured)
    report = {
        "seed": None if args.all else seed,
        "modules": list(modules),
        "mutants_generated": len(mutants),
        "mutants_run": len(chosen),
        "counts": {outcome: len(items) for outcome, items in results.items()},
        "survivor_rate": rate,
        "survivor_rate_low": low,
        "seconds": round(elapsed),
        "survivors": [
            {
                "id": mu.ident,
                "where": f"{PACKAGE}/{mu.file}:{mu.line}",
                "mutation": mu.describe(),
                "verdict": reasons.get(mu.ident, {}).get("verdict"),
                "reason": reasons.get(mu.ident, {}).get("reason"),
            }
            for mu in survivors
        ],
        "errors": [{"id": mu.ident, "mutation": mu.describe(), "detail": detail} for mu, detail in errors],
    }
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    counts = ", ".join(f"{len(items)} {outcome.lower()}" for outcome, items in sorted(results.items()))
    print(
        f"{counts}: {len(counted)} of {measured} survive ({rate:.1%}; budget {args.budget:.0%}; "
        f"{len(equivalent)} equivalent not counted), {len(unexplained)} unexplained; {elapsed:.0f} s; "
        f"report in {args.report}"
    )
    over = low > args.budget
    failed = over or bool(errors) or (args.strict and bool(unexplained))
    if over:
        print(f"FAILED: {rate:.1%} of the mutants survive (at least {low:.1%}), over the budget of {args.budget:.0%}")
    elif rate > args.budget:
        print(
            f"warning: {rate:.1%} of this sample survive, over the budget of {args.budget:.0%} (not proven: {low:.1%})"
        )
    if errors:
        print(f"FAILED: {len(errors)} mutants could not be run (see above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
