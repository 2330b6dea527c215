"""One writer per training output directory."""

from __future__ import annotations

import os
from pathlib import Path

# Held (flock) by the one process writing a run directory, and removed by it when it ends. A
# holder killed outright leaves the file, unlocked: the next taker locks it again (stale-lock
# recovery). Its text names the holder for the message a second writer gets.
LOCK_NAME = ".train.lock"


class RunLock:
    """One writer per training output directory: an exclusive `flock` on `output_dir/.train.lock`.

    The kernel releases the lock when its holder exits, however it exits (kill -9 included), so a
    lock file left by a dead process is simply taken again; its text (pid, host, start time) only
    names the holder in the refusal. The holder removes the file while still holding it, so a
    taker that locked the file just as it was removed finds its path gone (or another inode
    there) and tries again: two takers never hold two different files. Directories the lock
    created are removed again when the run leaves them empty (a run refused before its first save).

    Raises (on entering):
        ValueError: another process holds the lock (the message names it), or the directory or
            the lock file cannot be created (the message gives the system's reason).
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_NAME
        self._handle = None
        self._created: list[Path] = []

    def __enter__(self) -> "RunLock":
        import socket
        import time

        self._make_directory()
        handle = self._take()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        handle.flush()
        self._handle = handle
        return self

    def _make_directory(self) -> None:
        directory = self.path.parent.absolute()
        missing = [directory, *directory.parents]
        missing = [path for path in missing if not path.exists()]
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"--output {self.path.parent}: cannot create it ({error.strerror or error})") from None
        self._created = missing  # deepest first: the order to remove them in

    def _take(self):
        import fcntl

        while True:
            try:
                handle = open(self.path, "a+", encoding="utf-8")
            except OSError as error:
                self._remove_created()
                raise ValueError(f"--output {self.path.parent}: cannot create files in it "
                                 f"({error.strerror or error})") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "a process that has not written its name yet"
                handle.close()
                raise ValueError(f"--output {self.path.parent} is in use by another training run ({holder}); "
                                 "wait for it to end, or train into another directory") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                handle.seek(0)
                handle.truncate()
                return handle
            handle.close()  # the holder removed this file as it ended: lock the one now there

    def _remove_created(self) -> None:
        for directory in self._created:
            try:
                directory.rmdir()
            except OSError:  # not empty: the run wrote there, or someone else did
                return

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self.path.unlink(missing_ok=True)  # while still held: see the class docstring
            self._handle.close()  # closing releases the flock
            self._handle = None
            self._remove_created()
