"""`batchfleet debug`: one mini-batch through init() and run() in the CLI's own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli_helpers import Result, batchfleet, make_component

ENTRY = """\
import argparse, os
from azureml_user.parallel_run import EntryScript

def init():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--output")
    parser.add_argument("--mini_batch_size")
    args, _ = parser.parse_known_args()
    print("init sees --output", args.output, "and --mini_batch_size", args.mini_batch_size)

def run(mini_batch, mini_batch_context):
    print("run sees pid", os.getpid(), "batch", mini_batch_context.minibatch_index)
    with open(os.path.join(EntryScript().output_dir, "side.txt"), "w") as handle:
        handle.write("x")
    return [os.path.basename(p) for p in mini_batch]
"""


def debug(root: Path, *flags: str, entry: str = ENTRY, files: int = 5) -> Result:
    spec = make_component(root / "comp", entry=entry, files=files)
    temp = root / "tmp"  # folders debug keeps (files the entry script wrote) stay in the test's tmp_path
    temp.mkdir(exist_ok=True)
    return batchfleet(
        "debug", spec, "--input", f"data={root / 'comp' / 'data'}", "--output", f"scored={root / 'out'}",
        "--mini_batch_size", "2", *flags, cwd=root, env={"BATCHFLEET_STORE": "", "TMPDIR": str(temp)},
    )  # fmt: skip


def test_default_batch_runs_in_this_process(tmp_path: Path) -> None:
    result = debug(tmp_path)
    assert result.code == 0, result.stderr
    out = result.stdout
    assert "mini-batch 0 of input data: 2 items" in out
    assert "run() returned list with 2 rows" in out
    assert "'item000.txt'" in out and "'item001.txt'" in out and "item002" not in out
    assert "2 succeeded, 0 failed of 2 items" in out
    assert f"init sees --output {tmp_path / 'out'} and --mini_batch_size 2" in out  # args and predefined args
    assert "run sees pid" in out and "timing: import" in out and "init " in out and "run " in out
    assert f"would be merged into {tmp_path / 'out' / 'parallel_run_step.txt'}" in out
    assert "side.txt (1 bytes)" in out  # the EntryScript output file, listed where it went
    [kept] = (tmp_path / "tmp").glob("bf-debug-*")
    assert (kept / "output" / "side.txt").read_text() == "x" and "kept files" in out
    # Nothing written to the job's output or a store.
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".batchfleet").exists()


def test_user_code_runs_in_the_cli_process(tmp_path: Path) -> None:
    entry = "import os\ndef run(mini_batch):\n    return [os.getppid()]\n"
    result = debug(tmp_path, entry=entry)
    assert result.code == 0, result.stderr
    # run() ran in the python the test started: its parent is the test process itself.
    assert f"  {os.getpid()}\n" in result.stdout, result.stdout


def test_batch_n(tmp_path: Path) -> None:
    result = debug(tmp_path, "--batch", "2")
    assert result.code == 0, result.stderr
    assert "mini-batch 2 of input data: 1 items" in result.stdout
    assert "'item004.txt'" in result.stdout and "item000" not in result.stdout
    assert "run sees pid" in result.stdout and "batch 2" in result.stdout


def test_batch_out_of_range(tmp_path: Path) -> None:
    result = debug(tmp_path, "--batch", "9")
    assert result.code == 2 and len(result.error_lines) == 1, result.stderr
    assert "3 mini-batches" in result.error_lines[0]


def test_items(tmp_path: Path) -> None:
    data = tmp_path / "comp" / "data"
    make_component(tmp_path / "comp", entry=ENTRY)
    result = debug(tmp_path, "--items", str(data / "item003.txt"), str(data / "item001.txt"))
    assert result.code == 0, result.stderr
    out = result.stdout
    assert "mini-batch 0 of input data: 2 items" in out
    assert out.index("'item003.txt'") < out.index("'item001.txt'")
    assert "2 succeeded, 0 failed of 2 items" in out


def test_run_raises_prints_the_traceback(tmp_path: Path) -> None:
    entry = "def helper(x):\n    raise ValueError('boom ' + x)\n\ndef run(mini_batch):\n    return helper('now')\n"
    result = debug(tmp_path, entry=entry)
    assert result.code == 1, result.stdout + result.stderr
    err = result.stderr
    assert "run() raised ValueError: boom now" in err
    assert "Traceback (most recent call last)" in err
    assert 'entry.py", line 5, in run' in err and 'entry.py", line 2, in helper' in err
    assert "coordinator" not in err.split("Traceback", 1)[1]  # starts at the user's frame


def test_init_raises_prints_the_traceback(tmp_path: Path) -> None:
    entry = "def init():\n    raise RuntimeError('no model')\n\ndef run(mini_batch):\n    return mini_batch\n"
    result = debug(tmp_path, entry=entry)
    assert result.code == 1
    assert "init() raised RuntimeError: no model" in result.stderr and "Traceback" in result.stderr
    assert "calling run()" not in result.stdout


def test_short_result_counts_as_the_worker_would(tmp_path: Path) -> None:
    result = debug(tmp_path, entry="def run(mini_batch):\n    return mini_batch[:1]\n")
    assert result.code == 0, result.stderr
    assert "1 succeeded, 1 failed of 2 items" in result.stdout
    none = debug(tmp_path / "none", entry="def run(mini_batch):\n    pass\n")
    assert none.code == 1 and "returned None" in none.stdout


def test_user_modules_named_like_ours(tmp_path: Path) -> None:
    entry = "import common, worker\n\ndef run(mini_batch):\n    return [common.VALUE + worker.VALUE]\n"
    make_component(tmp_path / "comp", entry=entry)
    (tmp_path / "comp" / "common.py").write_text("VALUE = 'mine-'\n")
    (tmp_path / "comp" / "worker.py").write_text("VALUE = 'too'\n")
    result = debug(tmp_path, entry=entry)
    assert result.code == 0, result.stderr
    assert "'mine-too'" in result.stdout and "1 succeeded, 1 failed" in result.stdout


def test_breakpoint_opens_pdb(tmp_path: Path) -> None:
    entry = "def run(mini_batch):\n    rows = [len(mini_batch)]\n    breakpoint()\n    return rows\n"
    spec = make_component(tmp_path / "comp", entry=entry)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONBREAKPOINT", "BATCHFLEET_BROKER")}
    proc = subprocess.run(
        [sys.executable, "-m", "batchfleet", "debug", str(spec),
         "--input", f"data={tmp_path / 'comp' / 'data'}", "--output", f"scored={tmp_path / 'out'}",
         "--mini_batch_size", "2"],
        input="p rows\nc\n", capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(Pdb)" in proc.stdout
    assert "[2]" in proc.stdout  # `p rows` answered inside run()
    assert "run() returned list with 1 row:" in proc.stdout
    assert "1 succeeded, 1 failed of 2 items" in proc.stdout


def test_outputs_not_given_are_bound_to_a_temp_folder(tmp_path: Path) -> None:
    spec = make_component(tmp_path / "comp", entry=ENTRY)
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = batchfleet(
        "debug", spec, "--input", f"data={tmp_path / 'comp' / 'data'}", "--mini_batch_size", "2",
        cwd=tmp_path, env={"BATCHFLEET_STORE": "", "TMPDIR": str(temp)},
    )  # fmt: skip
    assert result.code == 0, result.stderr
    [kept] = temp.glob("bf-debug-*")  # the entry script wrote a file: the folder is kept
    bound = kept / "outputs" / "scored"
    assert f"output scored bound to {bound} (temp" in result.stdout
    assert f"init sees --output {bound} and" in result.stdout
    assert f"would be merged into {bound / 'parallel_run_step.txt'}" in result.stdout
    assert not (tmp_path / ".batchfleet").exists()


def test_a_bad_spec_leaves_no_temp_folder(tmp_path: Path) -> None:
    spec = make_component(tmp_path / "comp", entry=ENTRY)
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = batchfleet("debug", spec, "--input", "nope=/x", cwd=tmp_path, env={"TMPDIR": str(temp)})
    assert result.code == 2 and len(result.error_lines) == 1, result.stderr
    assert list(temp.iterdir()) == []
