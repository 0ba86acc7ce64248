"""Turn the sandbox child's authenticated records and exit into the fields of a verdict.

Records are MAC'd lines (see ``_sandbox_harness.py``); anything whose MAC does not verify is ignored.
Each test is judged in order of its plan's steps (``_sandbox_plan.py``): a statement the child reports as
raised fails it, each assert is evaluated by the parent on the values the child sent
(``_sandbox_judge.py``), and a test passes only if the child also reported that it finished.
"""

from __future__ import annotations

import hashlib
import hmac
import signal
from dataclasses import dataclass, field

from ebft_repro.evaluation import _sandbox_judge as judge
from ebft_repro.evaluation._sandbox_launch import ChildResult
from ebft_repro.evaluation._sandbox_plan import TestPlan
from ebft_repro.evaluation._sandbox_values import DecodeBudget, Undecodable

STATUS_OK = "ok"
STATUS_FAIL = "fail"
STATUS_UNSUPPORTED = "unsupported_type"
STATUS_TIMEOUT = "timeout"
STATUS_ERROR = "error"
DIGEST_BYTES = 16
_DETAIL_CHARS = 600


def mac(key: bytes, body: bytes) -> bytes:
    """The hex MAC the harness puts in front of each record."""
    return hashlib.blake2b(body, key=key, digest_size=DIGEST_BYTES).hexdigest().encode()


@dataclass
class _Records:
    """The authenticated records of one run, indexed for judging."""

    code_ok: bool = False
    code_err: bool = False
    done: bool = False
    holes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    raised: set[tuple[int, int]] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    conflicts: set[int] = field(default_factory=set)


def _parse_records(channel: bytes, key: bytes, plans: list[TestPlan]) -> _Records:
    records = _Records()
    for line in channel.split(b"\n"):
        tag, _, body = line.partition(b" ")
        if not body or not hmac.compare_digest(tag, mac(key, body)):
            continue  # unauthenticated: printed/forged by the program, or truncated
        fields = body.split(b" ", 3)
        if fields in ([b"code", b"ok"], [b"code", b"err"]):
            records.code_ok |= fields[1] == b"ok"
            records.code_err |= fields[1] == b"err"
        elif fields == [b"done"]:
            records.done = True
        elif len(fields) >= 2 and fields[1].isdigit() and int(fields[1]) < len(plans):
            _add_test_record(records, fields, plans[int(fields[1])], int(fields[1]))
    return records


def _add_test_record(records: _Records, fields: list[bytes], plan: TestPlan, index: int) -> None:
    kind = fields[0]
    if kind == b"t" and len(fields) == 2:
        records.finished.add(index)
        return
    if len(fields) < 3 or not fields[2].isdigit() or int(fields[2]) >= len(plan.steps):
        return
    step = (index, int(fields[2]))
    step_kind = plan.steps[step[1]][0]
    if kind == b"x" and len(fields) == 3 and step_kind == "x":
        records.raised.add(step)
    elif kind == b"h" and len(fields) == 4 and step_kind == "h":
        if step in records.holes:
            records.conflicts.add(index)  # two answers for one assert count as a failure
        records.holes[step] = fields[3]


def verdict_fields(
    child: ChildResult, key: bytes, plans: list[TestPlan], timeout_s: float, bwrap: bool
) -> dict:
    """The TestVerdict fields that follow from the child's records and exit."""
    n_total = len(plans)
    decided_in = tuple(plan.decided_in for plan in plans)

    def verdict(status: str, n_passed: int, reason: str, statuses: tuple[str, ...] = ()) -> dict:
        detail = reason if not child.stderr_tail else f"{reason}; stderr: {child.stderr_tail}"
        return {
            "passed": status == STATUS_OK and n_total > 0,
            "n_passed": n_passed,
            "n_total": n_total,
            "status": status,
            "detail": detail[:_DETAIL_CHARS],
            "test_statuses": statuses,
            "decided_in": decided_in,
        }

    signal_number = _signal_of(child.returncode, bwrap)
    if child.timed_out:
        return verdict(STATUS_TIMEOUT, 0, f"wall-clock timeout after {timeout_s:g}s")
    if child.overflow:
        return verdict(STATUS_ERROR, 0, "result channel flooded")
    if signal_number == signal.SIGXCPU:
        return verdict(STATUS_TIMEOUT, 0, "CPU time limit")
    records = _parse_records(child.channel, key, plans)
    if not records.code_ok:
        reason = "solution code raised" if records.code_err else f"no report: {_describe_exit(child, bwrap)}"
        return verdict(STATUS_ERROR, 0, reason, ("missing",) * n_total)
    budget = DecodeBudget()
    judged = [_judge(plan, index, records, budget) for index, plan in enumerate(plans)]
    statuses = tuple(status for status, _ in judged)
    n_passed = statuses.count(judge.PASS)
    reasons = "; ".join(f"test {i}: {s} ({r})" for i, (s, r) in enumerate(judged) if s != judge.PASS)
    summary = f"{n_passed}/{n_total} passed" + (f"; {reasons}" if reasons else "")
    if not records.done:
        return verdict(STATUS_ERROR, n_passed, f"{_describe_exit(child, bwrap)}; {summary}", statuses)
    if n_passed == n_total:
        status = STATUS_OK
    elif all(s in (judge.PASS, judge.UNSUPPORTED) for s in statuses):
        status = STATUS_UNSUPPORTED
    else:
        status = STATUS_FAIL
    return verdict(status, n_passed, summary, statuses)


def _judge(plan: TestPlan, index: int, records: _Records, budget: DecodeBudget) -> tuple[str, str]:
    """(status, reason) of one test from its records; see ``_sandbox_judge.py`` for the statuses."""
    if index in records.conflicts:
        return judge.FAIL, "conflicting records"
    for position, (kind, item) in enumerate(plan.steps):
        if kind == "x":
            if (index, position) in records.raised:
                return judge.RAISED, f"statement {position} raised"
            continue
        body = records.holes.get((index, position))
        if body is None:
            return judge.MISSING, f"no values for assert {position}"
        try:
            holes = judge.Holes(body, len(item), budget)
            if not judge.evaluate(plan.checks[position], holes):
                return judge.FAIL, f"assert {position} is false"
        except judge.Outcome as outcome:
            return outcome.status, outcome.reason
        except Undecodable as err:
            return judge.UNDECODABLE, str(err)
        except Exception as err:  # noqa: BLE001 - the comparison raised, as it would have in the test
            return judge.RAISED, f"assert {position} raised {type(err).__name__}"
    if index not in records.finished:
        return judge.MISSING, "the test did not finish"
    return judge.PASS, ""


def _signal_of(returncode: int | None, bwrap: bool) -> int | None:
    """The signal that ended the child (bwrap reports a child's death by signal N as exit 128+N)."""
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    return returncode - 128 if bwrap and returncode > 128 else None


def _describe_exit(child: ChildResult, bwrap: bool) -> str:
    number = _signal_of(child.returncode, bwrap)
    if child.returncode is None:
        return "still running"
    if number is not None:
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exited with status {child.returncode}"
