import json

import pytest

from scoresde import cli


def test_demo_quick_writes_table_json_and_plot(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--num-samples", "64", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Euler-Maruyama" in out and "sliced W2" in out
    report = json.loads((tmp_path / "demo.json").read_text())
    assert len(report["rows"]) == 4
    for row in report["rows"]:
        assert row["nfe"] > 0 and row["run_s"] >= 0 and row["sliced_w2"] >= 0
    assert (tmp_path / "demo.png").stat().st_size > 1000


def test_bad_flags_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--num-samples", "many"])
    assert e.value.code != 0
    with pytest.raises(SystemExit) as e:
        cli.main(["nonsense"])
    assert e.value.code != 0
    assert cli.main(["demo", "--num-samples", "1"]) == 2
    assert "num-samples" in capsys.readouterr().err
