"""`parley lab …` end to end on the built-in model: sets, import, run, report, apply, and bad input."""

from __future__ import annotations

from desktop_app.cli import main

from test_lab_runner import small_arithmetic


def test_import_run_report_and_apply_from_the_command_line(paths, tmp_path, capsys):
    small = small_arithmetic(tmp_path)
    csv = tmp_path / "sums.csv"
    csv.write_text("question,answer\n" + "".join(f"{i.input},{i.expected}\n" for i in small.items), encoding="utf-8")
    assert main(["lab", "import", str(csv), "--check", "number"]) == 0
    assert "Imported 7 items as 'sums'" in capsys.readouterr().out
    assert main(["lab", "sets"]) == 0
    listed = capsys.readouterr().out
    assert "arithmetic\tArithmetic word problems" in listed and "sums\tsums\t7 items" in listed

    report = tmp_path / "out" / "report.html"
    assert main(["lab", "run", str(small.path), "-c", "zero, few:2", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "zero-shot" in out and "/3" in out and "Report:" in out and report.exists()
    assert main(["lab", "runs"]) == 0 and "finished" in capsys.readouterr().out
    assert main(["lab", "report", "latest"]) == 0 and "★" in capsys.readouterr().out
    assert main(["lab", "apply", "latest", "zero", "--name", "Sums, plainly"]) == 0
    assert "Saved the template 'Sums, plainly', now the default" in capsys.readouterr().out
    from desktop_app_lab import state

    assert state.runs.get("latest").batched  # answers written together by default
    assert main(["lab", "run", str(small.path), "-c", "zero", "--one-at-a-time"]) == 0
    assert "zero-shot" in capsys.readouterr().out and state.runs.get("latest").batched is False


def test_bad_input_gets_a_message_a_person_can_act_on(paths, tmp_path, capsys):
    assert main(["lab", "run", "no-such-set"]) != 0
    assert "no task set 'no-such-set'" in capsys.readouterr().err
    assert main(["lab", "run", "arithmetic", "-c", "zero+sideways"]) != 0
    assert "sideways" in capsys.readouterr().err
    assert main(["lab", "import", str(tmp_path / "missing.csv")]) != 0
    assert "Cannot read" in capsys.readouterr().err
    assert main(["lab", "report", "latest"]) != 0
    assert capsys.readouterr().err.startswith("parley: ")
