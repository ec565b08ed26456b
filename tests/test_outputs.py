"""Output folders (the --out policy, locks, stale temporary folders, umask) and crash safety: a run killed
mid-GPTQ leaves nothing at --out and its rerun writes the same bytes as an uninterrupted one."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest
from test_bad_inputs import M, build_bad_inputs, one_line

from compress.cli import main


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    return build_bad_inputs(tmp_path_factory.mktemp("bad"))


# 4. folders: one --out policy, locks, stale temporary folders


@pytest.mark.parametrize("argv", [
    ["score", "--model", M, "--scorers", "zd", "--out", "{out}"],
    ["run", "--model", M, "--bits", "16", "--out", "{out}"],
    ["finetune", "--model", M, "--out", "{out}"],
], ids=["score", "run", "finetune"])
def test_a_non_empty_out_is_refused_without_overwrite(bad, tmp_path, capfd, data_dir, argv):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = [a.format(out=out, root=bad) for a in argv] + ["--data-dir", str(data_dir)]
    assert "already exists and is not empty: pass --overwrite" in one_line(capfd, argv)
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


@pytest.mark.parametrize("argv,existing", [
    (["bench", M, "--input-len", "8", "--output-len", "8", "--out", "{out}"], "bench.json"),
    (["report", "{root}/eval-shape", "--out", "{out}"], "report.md"),
    (["eval", M, "--tasks", "arc_easy", "--out", "{out}"], "eval.json"),
], ids=["bench", "report", "eval"])
def test_records_are_not_replaced_without_overwrite(bad, tmp_path, capfd, data_dir, argv, existing):
    out = tmp_path / "out"
    out.mkdir()
    (out / existing).write_text(json.dumps({"tasks": {"piqa": {}}, "settings": {}}))
    argv = [a.format(out=out, root=bad) for a in argv] + ["--data-dir", str(data_dir)] * (argv[0] != "report")
    line = one_line(capfd, argv)
    assert existing in line and "--overwrite" in line


def test_ppl_out_file_is_not_replaced(bad, tmp_path, capfd, data_dir):
    target = tmp_path / "p.json"
    target.write_text("{}")
    line = one_line(capfd, ["ppl", "--model", str(bad / "tiny"), "--out", str(target), "--data-dir", str(data_dir)])
    assert "already exists: pass --overwrite" in line and target.read_text() == "{}"


def test_a_second_writer_of_the_same_out_fails_at_once(bad, tmp_path, capfd, data_dir):
    out = tmp_path / "out"
    lock = os.open(tmp_path / ".out.lock", os.O_RDWR | os.O_CREAT)  # as a running compress process holds it
    os.write(lock, b"4242")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        line = one_line(capfd, ["score", "--model", str(bad / "tiny"), "--scorers", "zd", "--out", str(out)])
    finally:
        os.close(lock)
    assert "being written by another compress process (pid 4242)" in line and not out.exists()


def test_overwrite_replaces_the_whole_folder_and_stale_temps_go(bad, tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    stale = tmp_path / ".out.tmp-killed"  # what a SIGKILLed run leaves beside --out
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    old_mask = os.umask(0o022)
    try:
        code = main(["score", "--model", str(bad / "tiny"), "--scorers", "zd", "--out", str(out), "--overwrite"])
    finally:
        os.umask(old_mask)
    err = capfd.readouterr().err
    assert code == 0 and "removed 1 temporary folder(s) left by an interrupted run: .out.tmp-killed" in err
    assert not stale.exists() and not (out / "old.txt").exists() and (out / "scores.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock file, no temporary folder
    # the user's umask (022), not mkdtemp's 0700 / a writer's 0600
    assert out.stat().st_mode & 0o777 == 0o755 and (out / "scores.json").stat().st_mode & 0o777 == 0o644


def test_overwrite_never_replaces_the_model_being_read(bad, tmp_path, capfd):
    model = tmp_path / "model"
    shutil.copytree(bad / "tiny", model)
    line = one_line(capfd, ["score", "--model", str(model), "--scorers", "zd", "--out", str(model), "--overwrite"])
    assert "is the model folder being read" in line and (model / "model.safetensors").is_file()


def test_no_library_noise_before_the_line_of_a_model_with_missing_keys(bad, capfd, data_dir):
    line = one_line(capfd, ["ppl", "--model", str(bad / "missing-key"), "--data-dir", str(data_dir)])
    assert "model.layers.1.mlp.down_proj.weight" in line  # and one_line saw no LOAD REPORT before it


# Crash safety and determinism: a run killed mid-GPTQ leaves nothing at --out; the rerun cleans up what it left
# and writes the same bytes as an uninterrupted run with the same seed.


def _run_argv(model: Path, out: Path, data_dir: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "compress", "run", "--model", str(model), "--bits", "4", "--calib-samples", "4",
            "--calib-seq-len", "32", "--max-windows", "0", "--rounding", "gptq", "--data-dir", str(data_dir),
            "--out", str(out)]


def test_sigkill_mid_gptq_then_rerun_gives_identical_bytes(gptqmodel, tiny5, tmp_path, data_dir):
    import signal
    import subprocess
    import time

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(_run_argv(tiny5, clean, data_dir), check=True, capture_output=True)
    proc = subprocess.Popen(_run_argv(tiny5, killed, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(tmp_path.glob(".killed.tmp-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # the staged folder exists: GPTQ is writing into it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not killed.exists() and list(tmp_path.glob(".killed.tmp-*")), "killed before the staged folder"
    rerun = subprocess.run(_run_argv(tiny5, killed, data_dir), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "left by an interrupted run" in rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "killed", "tiny5"]  # nothing else left
    names = sorted(p.name for p in clean.iterdir())
    assert names == sorted(p.name for p in killed.iterdir())
    for name in names:
        if name.endswith((".safetensors", "plan.json")) or name == "config.json":
            assert (clean / name).read_bytes() == (killed / name).read_bytes(), name


def test_the_gguf_cache_lock_waits_for_the_converter_and_makes_its_folder(tmp_path, capsys):
    import threading

    from compress import outputs

    target = tmp_path / "cache" / "models" / "model-abc"  # the cache folder does not exist yet
    fd, lock = outputs._lock(target)  # held, as by a process converting the same file

    def finish():  # the converter ends: its lock file goes, then its descriptor
        lock.unlink()
        os.close(fd)

    threading.Timer(0.3, finish).start()
    with outputs.file_lock(target, "waiting for another process converting model.gguf"):
        assert (tmp_path / "cache" / "models" / ".model-abc.lock").is_file()
    assert "compress: waiting for another process converting model.gguf" in capsys.readouterr().err
    assert not list((tmp_path / "cache" / "models").iterdir())


def test_the_final_rename_never_lands_on_a_folder_another_process_wrote(tmp_path):
    from compress.errors import CompressError
    from compress.outputs import claim_output, staged_folder

    out = tmp_path / "out"
    claim_output(out)
    with pytest.raises(CompressError, match="was written by another process while this run worked"):
        with staged_folder(out) as tmp:
            (tmp / "mine.txt").write_text("mine")
            out.mkdir()  # a writer that ignores the lock finishes first
            (out / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder, no lock left


def test_dry_run_prints_plan_bytes_and_engines_and_writes_nothing(bad, tmp_path, capfd, data_dir):
    out = tmp_path / "out"
    code = main(["run", "--model", str(bad / "tiny"), "--bits", "mixed", "--avg-bits", "5", "--dry-run",
                 "--calib-samples", "4", "--calib-seq-len", "32", "--data-dir", str(data_dir), "--out", str(out)])
    captured = capfd.readouterr()
    assert code == 0 and "compress: preflight: run needs about" in captured.err
    assert "MiB     qkv       o  gate_up    down  bits" in captured.out and "stored bits per weight" in captured.out
    assert "loads in: gptqmodel (verified by loading)" in captured.out and "nothing quantized or written" in captured.out
    assert not out.exists() and not list(tmp_path.iterdir())
