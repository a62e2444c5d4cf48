"""The ``raymaker io`` command line: demo, inspect and convert, run as a user would."""

import subprocess
import sys

import numpy as np

from raymaker.cli import main
from raymaker.io import recordio


def test_demo_runs_every_format(tmp_path, capsys):
    assert main(["io", "demo", "--dir", str(tmp_path), "--rows", "2000", "--no-ray"]) == 0
    out = capsys.readouterr().out
    assert out.count("matches") == 4 and "MISMATCH" not in out
    assert "worker 0: ['part-0.rec', 'part-2.rec']" in out


def test_convert_csv_to_recordio_and_inspect(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("1,0.5,2\n0,1.5,-3\n1,2.5,4\n")
    assert main(["io", "convert", str(tmp_path / "train.csv"), str(tmp_path / "train.rec")]) == 0
    features, labels = recordio.decode((tmp_path / "train.rec").read_bytes())
    np.testing.assert_array_equal(features, [[0.5, 2], [1.5, -3], [2.5, 4]])
    np.testing.assert_array_equal(labels, [1, 0, 1])
    assert main(["io", "inspect", str(tmp_path / "train.rec")]) == 0
    out = capsys.readouterr().out
    assert "rows: 3" in out and "labels: float32, 2 distinct: 0, 1" in out


def test_malformed_input_is_a_clear_error(tmp_path):
    (tmp_path / "bad.csv").write_text("1,2,3\n1,x,3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "raymaker.cli", "io", "inspect", str(tmp_path / "bad.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "bad.csv" in proc.stderr and "line 2" in proc.stderr


def test_unknown_extension_asks_for_content_type(tmp_path, capsys):
    (tmp_path / "data.bin").write_bytes(b"")
    try:
        main(["io", "inspect", str(tmp_path / "data.bin")])
    except SystemExit as e:
        assert "--content-type" in str(e)
    else:
        raise AssertionError("expected an error")
