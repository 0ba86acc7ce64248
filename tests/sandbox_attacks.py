"""Hostile programs for the sandbox regression suite (``tests/sandbox_cases.py`` turns them into cases).

Each attacks the machine, the caller or the driver from inside the candidate process; a good sandbox
gives each the listed verdict and leaves nothing behind. The code and tests are ``str.format`` templates
(so literal braces are doubled) with the fields ``{tag}`` (unique per run), ``{parent}`` (the runner's
pid), ``{victim}`` (a process of the runner's user), ``{home}``/``{work}`` (directories the runner's user
can write, standing in for ``$HOME`` and the checkout), ``{repo}`` and ``{port}`` (a localhost port the
runner listens on).
"""

OK, FAIL, UNSUPPORTED, ERROR, TIMEOUT = "ok", "fail", "unsupported_type", "error", "timeout"
NOT_PASSED = "not_passed"  # any verdict with n_passed == 0 and passed False


def hostile(name: str, code: str, tests: list[str], expect: tuple[str, int], **extra) -> tuple:
    """``(name, code, tests, expect, extra)``: the arguments of ``sandbox_cases.hostile``."""
    return name, code, tests, expect, extra


# fmt: off
HOSTILE_PROGRAMS = [
    hostile("reads_other_processes", """
        import os
        def leaked():
            found = []
            pids = {{int(p) for p in os.listdir('/proc') if p.isdigit()}} | {{{parent}, os.getppid(), 1}}
            for pid in pids - {{os.getpid()}}:
                for name in ('environ', 'cmdline', 'maps', 'mem'):
                    try:
                        with open(f'/proc/{{pid}}/{{name}}', 'rb') as fh:
                            data = fh.read(1 << 20)
                    except OSError:
                        continue
                    if b'EBFT_SECRET' in data or b'sandbox_cases' in data or b'ebftmarker_' in data:
                        found.append((pid, name))
            return found
        """, ["assert leaked() == []"], (OK, 1)),
    # The tests (and the task's setup) stay in the driver: the candidate finds them nowhere.
    hostile("tests_are_invisible_to_the_candidate", """
        import gc, os, sys
        PREFIX = 'ebft' + 'marker_'
        def _files():
            for root in (os.getcwd(), '/tmp', '/dev/shm', '/var/tmp'):
                for dirpath, dirnames, filenames in os.walk(root):
                    yield from (os.path.join(dirpath, name) for name in filenames[:500])
            for pid in (p for p in os.listdir('/proc') if p.isdigit()):
                yield from (f'/proc/{{pid}}/cmdline', f'/proc/{{pid}}/environ')
        def _found():
            seen = [o for o in gc.get_objects() if type(o) in (list, tuple, dict)]
            strings = [v for o in seen for v in (o.values() if type(o) is dict else o) if type(v) is str]
            frame = sys._getframe()
            while frame is not None:
                strings += [c for c in frame.f_code.co_consts if type(c) is str]
                frame = frame.f_back
            hits = [s for s in strings if s.startswith(PREFIX) and len(s) > len(PREFIX)]
            for path in _files():
                try:
                    with open(path, 'rb') as fh:
                        data = fh.read(1 << 20)
                except OSError:
                    continue
                at = data.find(PREFIX.encode())
                if at >= 0:
                    hits.append(data[at:at + 30].split(bytes(1))[0].decode(errors='replace'))
            return hits
        def leaks():
            return len(_found())
        def secret():
            hits = _found()
            return hits[0] if hits else None
        """, ["assert leaks() == 0", "expected = 'ebftmarker_4c1d9e'\nassert secret() == expected"],
            (FAIL, 1), setup="TASK_SECRET = 'ebftmarker_setup_77ab'\n"),
    # The candidate attacks whatever it can reach; the driver still judges: a plain "fail", in time.
    hostile("attacks_the_driver", """
        import ctypes, os, posix
        def attack():
            try:
                posix.kill(-1, 9)
            except OSError:
                pass
            libc = ctypes.CDLL(None, use_errno=True)
            for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()] + [{parent}, os.getppid()]:
                if pid in (os.getpid(), 1):
                    continue
                for sig in (19, 9):
                    try:
                        posix.kill(pid, sig)
                    except OSError:
                        pass
                libc.ptrace(16, pid, 0, 0)  # PTRACE_ATTACH
                try:
                    with open(f'/proc/{{pid}}/maps') as fh:
                        start = int(fh.readline().split('-')[0], 16)
                    with open(f'/proc/{{pid}}/mem', 'rb') as fh:
                        fh.seek(start)
                        fh.read(4096)
                except (OSError, ValueError, IndexError):
                    pass
        attack()
        def add(a, b):
            attack()
            return a - b
        """, ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], (FAIL, 1), bounded=True),
    hostile("writes_everywhere", """
        TARGETS = ['{home}', '{work}', '{repo}', '{repo}/results', '/tmp', '/dev/shm', '/var/tmp']
        def escaped():
            done = []
            for directory in TARGETS:
                try:
                    with open(directory + '/escape_{tag}', 'w') as fh:
                        fh.write('escaped')
                    done.append(directory)
                except OSError:
                    pass
            return [d for d in done if d not in ('/tmp', '/dev/shm')]  # private to the sandbox
        """, ["assert escaped() == []"], (OK, 1)),
    hostile("connects_to_localhost", """
        import socket
        def connected():
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
                return True
            except OSError:
                return False
        """, ["assert connected() is False"], (OK, 1)),
    hostile("fills_tmp_and_shm", """
        def fill(directory):
            written = 0
            for i in range(64):
                try:
                    with open(f'{{directory}}/fill_{tag}_{{i}}', 'wb') as fh:
                        fh.write(b'x' * (1 << 20))
                    written += 1
                except OSError:
                    break
            return written
        """, ["assert fill('/tmp') <= 33", "assert fill('/dev/shm') <= 9"], (OK, 2)),
    hostile("kills_every_process", """
        import posix, signal
        for pid, sig in ((-1, 9), ({parent}, 9), ({parent}, signal.SIGSTOP), (0, signal.SIGCONT)):
            try:
                posix.kill(pid, sig)
            except OSError:
                pass
        def add(a, b):
            return a + b
        """, ["assert add(1, 2) == 3"], (OK, 1)),
    hostile("kills_the_victim",
            "import posix\ntry:\n    posix.kill({victim}, 9)\nexcept OSError:\n    pass\n"
            "def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3"], (OK, 1)),
    hostile("fork_bomb",
            "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass\n",
            ["assert True"], (TIMEOUT, 0), timeout_s=1.0, bounded=True),
    hostile("memory_bomb", "hog = bytearray(10 * 1024 ** 3)\ndef add(a, b):\n    return a + b\n",
            ["assert add(1, 2) == 3"], (ERROR, 0)),
    hostile("infinite_loop", "while True:\n    pass\n", ["assert True"], (TIMEOUT, 0), timeout_s=1.0,
            bounded=True),
    # 30,000 distinct ints with one hash value: the driver's set() is quadratic, so it runs out of time.
    hostile("hash_flood_value", "def f():\n    return [i * ((1 << 61) - 1) for i in range(1, 30001)]\n",
            ["assert set(f() + [0]) == {{0}}"], (NOT_PASSED, 0), bounded=True),
    # 40 MiB is over the 16 MiB message limit: that test is undecodable, the next one still runs.
    hostile("huge_reply", "def f():\n    return ['x' * (1 << 20)] * 40\ndef g():\n    return 1\n",
            ["assert len(f()) == 40", "assert g() == 1"], (FAIL, 1), bounded=True),
]
# fmt: on
