"""`parity.portability.run_settings` without running a setting: which settings run, how many at
once, and in what order their results come back (the settings themselves: tests/legacy/test_portability.py)."""

import threading

from parity import portability
from parity.portability import AS_IS, PortabilityResult


def _fake_pass(monkeypatch, readbacks, barrier=None, readback_barrier=None):
    ran = []

    def readback(env=None):
        if readback_barrier is not None:
            readback_barrier.wait()
        return readbacks[next((name for name, setting_env in portability.SETTINGS.items() if setting_env == env), AS_IS)]

    monkeypatch.setattr(portability, "readback", readback)

    def run_setting(setting, bundle_dir, out, timeout, known_readback):
        ran.append(setting)
        if barrier is not None:
            barrier.wait()  # returns only once `barrier.parties` settings run at the same time
        return PortabilityResult(setting, portability.SETTINGS[setting], known_readback)

    monkeypatch.setattr(portability, "run_setting", run_setting)
    return ran


def test_two_read_backs_and_two_settings_run_at_once_and_come_back_in_order(monkeypatch, tmp_path):
    settings = ["one-thread", "onednn-sse41", "torch-scalar"]
    # torch-scalar reads back as the machine as it is: not run.
    readbacks = {AS_IS: {"isa": "AVX2"}, "one-thread": {"setting": "one-thread"},
                 "onednn-sse41": {"setting": "onednn-sse41"}, "torch-scalar": {"isa": "AVX2"}}
    # Each barrier returns only to two callers at once: the two settings that run wait for each
    # other, and the four read-backs (the machine as it is and three settings) pass two at a time.
    ran = _fake_pass(monkeypatch, readbacks, threading.Barrier(2, timeout=20), threading.Barrier(2, timeout=20))
    result = portability.run_settings(settings, tmp_path, tmp_path, jobs=2)
    assert list(result.results) == settings
    assert sorted(ran) == ["one-thread", "onednn-sse41"]
    assert result.results["torch-scalar"].same_as == AS_IS
    assert [result.results[name].readback for name in settings[:2]] == [{"setting": name} for name in settings[:2]]
    assert (tmp_path / "torch-scalar.json").is_file()


def test_one_job_runs_the_settings_one_after_another(monkeypatch, tmp_path):
    settings = ["one-thread", "onednn-sse41"]
    readbacks = {AS_IS: {"isa": "AVX2"}, **{name: {"setting": name} for name in settings}}
    ran = _fake_pass(monkeypatch, readbacks)
    result = portability.run_settings(settings, tmp_path, tmp_path, jobs=1)
    assert ran == settings and list(result.results) == settings
