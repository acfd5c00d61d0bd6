"""Hide paths from this process, its later threads and its children, for good (Linux Landlock).

Part of the fixed harness. Under bubblewrap the sandbox sees the host's /usr read-only, and
with it the fortune corpus whose held-out part the evaluator scores on; the Docker image has
no corpus at all. Landlock (Linux >= 5.13) lets an unprivileged process give up read access
irrevocably: `hide` keeps read access to everything except the hidden paths, and the harness
calls it before JAX starts a thread and before any candidate code is imported, so nothing the
candidate runs (threads, subprocesses, callbacks) can read the corpus.

Landlock rules only grant access, so "everything except X" is written as: at every level from
/ down to X, each sibling of the next step towards X (symbolic links are skipped: what they
point to is covered where it really is).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

# The system calls landlock_create_ruleset, landlock_add_rule and landlock_restrict_self (one
# numbering for every architecture), and the constants from <linux/landlock.h>.
CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446
RULE_PATH_BENEATH = 1
READ_FILE, READ_DIR = 1 << 2, 1 << 3
PR_SET_NO_NEW_PRIVS = 38


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def readable_roots(hidden: list[Path]) -> list[Path]:
    """Directories and files that together cover everything under / except the hidden paths."""
    hidden = [Path(os.path.realpath(h)) for h in hidden]  # a symbolic link is hidden where it points
    roots: list[Path] = []

    def walk(folder: Path) -> None:
        for child in sorted(folder.iterdir()):
            if child.is_symlink() or child in hidden:
                continue
            if any(child in h.parents for h in hidden):
                walk(child)  # on the way to a hidden path: keep its siblings only
            elif child.is_dir() or child.is_file():
                roots.append(child)

    walk(Path("/"))
    return roots


def hide(paths: list[str]) -> str | None:
    """Make `paths` unreadable for this process from now on; None when done, else why it could not be done.

    Paths that do not exist need no hiding: with none left, nothing is done.
    """
    hidden = [Path(p) for p in paths if os.path.lexists(p)]
    if not hidden:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def call(*args) -> int:
        result = libc.syscall(*args)
        if result < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        return result

    try:
        attr = _RulesetAttr(READ_FILE | READ_DIR)
        ruleset = call(CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
        for root in readable_roots(hidden):
            try:
                fd = os.open(root, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # gone or unreadable already
            try:
                rule = _PathBeneath(READ_FILE | READ_DIR if root.is_dir() else READ_FILE, fd)
                call(ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0)
            finally:
                os.close(fd)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        call(RESTRICT_SELF, ruleset, 0)
        os.close(ruleset)
    except OSError as e:
        return f"Landlock is unavailable here ({e.strerror or e})"
    for path in hidden:  # check, rather than trust, that it worked
        try:
            if path.is_dir():
                os.listdir(path)
            else:
                path.read_bytes()
        except PermissionError:
            continue
        return f"{path} is still readable after Landlock"
    return None
