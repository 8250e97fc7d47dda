"""Summarise a pytest-xdist run for scripts/gpu_check.sh's report, as Markdown.

    python scripts/summarize_pytest.py --log tests.log [--junit tests.xml]

Outcomes: passed, failed, crashed (the xdist worker process died while running the
test), error, skipped, and, when the run was cut short, tests that had started but not
finished. Crashes are listed apart from failures: on some images any C++ exception
thrown by a torch extension kills the process, so a test that expects an error crashes
its worker instead of passing. Each crashed test is marked by whether its source calls
``raises(`` (it expects an error, so the crash is probably that) or not (a real crash).

The JUnit XML is used when the run got far enough to write it (it has the messages);
otherwise the verbose (``-v``) log, which pytest writes as it goes and so survives a
timeout. Reads what it can and never fails on odd input.
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import re
import xml.etree.ElementTree as ET

CRASH = re.compile(r"worker '(gw\d+)' crashed while running '(.+?)'")
# xdist -v lines: "[gw3] [ 42%] PASSED tests/x.py::test_y[cuda]", "[gw3] node down: ...",
# and a test's start, printed as its bare node id and a space. A worker's stderr (the
# fatal-signal dump) can land on the same line after it, so a node id ends at the space
# after its function name or its closing bracket (parameter ids may hold spaces).
NODEID = r"([^\[\s]\S*\.py::[^\s\[]+(?:\[.*?\])?)(?= |$)"
RESULT = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) " + NODEID)
NODE_DOWN = re.compile(r"^\[(gw\d+)\] node down")
STARTED = re.compile(r"^" + NODEID)
SEED = re.compile(r"PYATTN_TEST_SEED=(\d+)")
COLLECTED = re.compile(r"^\d+ workers \[(\d+) items?\]", re.M)

# A test reported twice (a teardown error after a pass) keeps its worst outcome.
RANK = {"skipped": 0, "xfailed": 1, "passed": 2, "xpassed": 3, "error": 4, "failed": 5, "crashed": 6}
LOG_STATUS = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped",
              "XFAIL": "xfailed", "XPASS": "xpassed"}
MAX_LISTED = 60  # per list; the logs have the rest


def _record(outcomes: dict, nodeid: str, outcome: str, message: str = "") -> None:
    old = outcomes.get(nodeid)
    if old is None or RANK[outcome] >= RANK[old[0]]:
        outcomes[nodeid] = (outcome, message)


def from_log(text: str) -> tuple[dict, list[str]]:
    """(outcomes by node id, node ids started but never reported) from a -v log."""
    outcomes: dict = {}
    started: dict = {}  # insertion-ordered set
    down: set = set()  # workers that went down; their next report is the crashed test
    crashed = {m.group(2) for m in CRASH.finditer(text)}
    for line in text.splitlines():
        m = RESULT.match(line)
        if m:
            gw, status, nodeid = m.groups()
            outcome = LOG_STATUS[status]
            if outcome in ("failed", "error") and (gw in down or nodeid in crashed):
                outcome = "crashed"
            down.discard(gw)
            _record(outcomes, nodeid, outcome)
            started.pop(nodeid, None)
            continue
        m = NODE_DOWN.match(line)
        if m:
            down.add(m.group(1))
            continue
        m = STARTED.match(line)
        if m and m.group(1) not in outcomes:
            started[m.group(1)] = None
    return outcomes, list(started)


def from_junit(path: str) -> dict | None:
    """Outcomes by node id from a JUnit XML file, or None when it cannot be read."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    outcomes: dict = {}
    for case in root.iter("testcase"):
        # Node ids from classname "tests.test_x" and name "test_y[p]" (no test classes here).
        nodeid = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                message = child.get("message") or (child.text or "")
                crash = CRASH.search(message) or CRASH.search(child.text or "")
                if crash:
                    nodeid, outcome = crash.group(2), "crashed"
                else:
                    outcome = "failed" if child.tag == "failure" else "error"
            elif child.tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        _record(outcomes, nodeid, outcome, message.strip().splitlines()[0] if message.strip() else "")
    return outcomes


@functools.lru_cache(maxsize=None)
def _functions_calling_raises(path: str) -> frozenset:
    """Names of the test functions in a file whose source calls ``raises(``."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    return frozenset(node.name for node in ast.walk(tree)
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and "raises(" in (ast.get_source_segment(source, node) or ""))


def expects_error(nodeid: str, root: str) -> bool:
    path, _, rest = nodeid.partition("::")
    return rest.split("::")[-1].split("[")[0] in _functions_calling_raises(os.path.join(root, path))


def _grouped(nodeids: list[str]) -> list[str]:
    """One line per test function: its node id and the parameter ids that were hit."""
    groups: dict = {}
    for nodeid in nodeids:
        base, bracket, params = nodeid.partition("[")
        groups.setdefault(base, []).append(params[:-1] if bracket else "")
    lines = []
    for base, params in groups.items():
        named = [p for p in params if p]
        if not named:
            lines.append(f"- `{base}`")
        else:
            shown = ", ".join(named[:8]) + (f", ... ({len(named) - 8} more)" if len(named) > 8 else "")
            lines.append(f"- `{base}` ({len(named)}): {shown}")
    return lines


def _listing(title: str, lines: list[str], out: list[str]) -> None:
    if not lines:
        return
    out += ["", title, ""] + lines[:MAX_LISTED]
    if len(lines) > MAX_LISTED:
        out.append(f"- ... and {len(lines) - MAX_LISTED} more (see the log)")


def summarize(log_text: str, junit: dict | None, root: str) -> str:
    log_outcomes, unfinished = from_log(log_text)
    outcomes = junit if junit else log_outcomes
    if junit:
        unfinished = [n for n in unfinished if n not in junit]
    out = []
    seed = SEED.search(log_text)
    source = "JUnit XML" if junit else "the -v log (no JUnit XML: the run was cut short)"
    out.append(f"Outcomes from {source}" + (f"; PYATTN_TEST_SEED={seed.group(1)}." if seed else "."))
    counts = {k: 0 for k in RANK}
    for outcome, _ in outcomes.values():
        counts[outcome] += 1
    out += ["", "| outcome | tests |", "| --- | ---: |"]
    for key, label in (("passed", "passed"), ("failed", "failed"), ("crashed", "crashed (worker died)"),
                       ("error", "error"), ("skipped", "skipped"), ("xfailed", "xfailed"),
                       ("xpassed", "xpassed")):
        if counts[key] or key in ("passed", "failed", "crashed"):
            out.append(f"| {label} | {counts[key]} |")
    if unfinished:
        out.append(f"| started, not finished (run cut short) | {len(unfinished)} |")
    collected = COLLECTED.search(log_text)
    if collected and int(collected.group(1)) > len(outcomes) + len(unfinished):
        out.append(f"| not started (run cut short) | {int(collected.group(1)) - len(outcomes) - len(unfinished)} |")
    if collected:
        out.append(f"| selected, in all | {collected.group(1)} |")
    if not outcomes:
        out += ["", "No test results could be read: see the log."]
    elif counts["passed"] + counts["failed"] + counts["crashed"] + counts["error"] == 0 and junit:
        out += ["", "Every test was skipped: no CUDA case ran (does torch see the GPU, has pyattn CUDA?)."]

    crashed = sorted(n for n, (o, _) in outcomes.items() if o == "crashed")
    expecting = [n for n in crashed if expects_error(n, root)]
    real = [n for n in crashed if n not in set(expecting)]
    if crashed:
        out += ["", f"**Crashed: {len(crashed)}.** The worker process died while running these; xdist "
                "restarted it and the run went on. Where a C++ exception thrown by the extension kills "
                "the process, a test that expects an error crashes instead of passing: those are "
                "listed first. A crash in a test that expects no error is a real crash (see the log "
                "for the fatal signal and the Python stack)."]
    _listing(f"Crashed, source calls `raises(` (expects an error): {len(expecting)}", _grouped(expecting), out)
    _listing(f"Crashed, source does not call `raises(`: {len(real)}", _grouped(real), out)
    for outcome, title in (("failed", "Failed"), ("error", "Errors")):
        items = sorted((n, m) for n, (o, m) in outcomes.items() if o == outcome)
        _listing(f"{title}: {len(items)}", [f"- `{n}`" + (f": {m[:300]}" if m else "") for n, m in items], out)
    _listing(f"Started, not finished when the run stopped: {len(unfinished)}",
             [f"- `{n}`" for n in unfinished], out)
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log", required=True, help="pytest's -v output (with xdist)")
    p.add_argument("--junit", help="pytest's --junitxml file, if written")
    p.add_argument("--root", default=".", help="where the node ids' paths start (for the raises( check)")
    args = p.parse_args()
    try:
        with open(args.log, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        text = ""
        print(f"(cannot read {args.log}: {e})")
    junit = from_junit(args.junit) if args.junit else None
    print(summarize(text, junit, args.root), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
