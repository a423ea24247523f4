"""The lab window: a run in the background with progress, stopped and resumed, its scorecard and
chart, an answer opened as a conversation, the report exported and the winner applied."""

from __future__ import annotations

from PySide6.QtCore import Qt

from desktop_app_lab import state
from desktop_app_lab.ui import open_lab

from test_lab_runner import small_arithmetic


def test_a_run_from_the_window_is_stopped_resumed_scored_opened_and_applied(qtbot, open_window, tmp_path):
    window = open_window()
    lab = open_lab(window.api)
    qtbot.addWidget(lab)
    made = state.library.import_file(small_arithmetic(tmp_path).path, name="Small sums")
    lab.refresh_sets(made)
    assert "Small sums" in lab.sets.currentText() and lab.candidates.count() == 4
    for row in range(2, lab.candidates.count()):  # keep zero-shot and few-shot: quick to answer
        lab.candidates.item(row).setCheckState(Qt.Unchecked)
    lab.candidate_spec.setText("nonsense:3")
    lab.add_candidate()
    assert "nonsense" in lab.status.text() and lab.candidate_spec.text() == "nonsense:3"  # explained, kept

    answered = []

    def stop_after_two(progress):  # runs on the run's own thread, so the stop comes before a third answer
        if progress.result is not None:
            answered.append(progress)
            if len(answered) == 2:
                lab.stop.set()

    lab.relay.progress.connect(stop_after_two, Qt.DirectConnection)
    lab.start_run()
    assert not lab.run_button.isEnabled() and lab.stop_button.isEnabled() and lab.progress.isVisible()
    qtbot.waitUntil(lambda: lab.job is None, timeout=900_000)
    assert lab.run.status == "stopped" and lab.resume_button.isEnabled() and len(lab.run.results) == 2
    lab.resume_run()
    qtbot.waitUntil(lambda: lab.job is None, timeout=900_000)
    assert lab.run.status == "finished" and len(lab.run.results) == 6
    assert lab.scorecard.rowCount() == 2 and "/3" in lab.scorecard.item(0, 1).text()
    assert not lab.chart.pixmap().isNull() and lab.answers.rowCount() == 6

    conversation_id = lab.open_answer(0)
    assert window.current_conversation == conversation_id
    assert [w.message.role for w in window.chat_view.widgets] == ["user", "assistant"]

    report = lab.export_report(str(tmp_path / "report.html"))
    assert report.exists() and "data:image/png;base64" in report.read_text(encoding="utf-8")
    applied = lab.apply_winner()
    assert applied is not None and applied.template in lab.status.text()
    lab.grab().save(str(tmp_path / "lab.png"))


def test_prompt_sensitivity_and_prompt_optimisation_from_the_window(qtbot, open_window, tmp_path):
    window = open_window()
    lab = open_lab(window.api)
    qtbot.addWidget(lab)
    small = small_arithmetic(tmp_path, test=2, train=6)
    lab.refresh_sets(state.library.import_file(small.path, name="Sums to word"))
    for row in range(1, lab.candidates.count()):  # zero-shot only
        lab.candidates.item(row).setCheckState(Qt.Unchecked)
    lab.paraphrases.setChecked(True)
    lab.start_run()
    qtbot.waitUntil(lambda: lab.job is None, timeout=900_000)
    wordings = 1 + len(small.paraphrases)
    assert lab.run.status == "finished" and len(lab.run.results) == 2 * wordings
    assert lab.scorecard.rowCount() == 1 and lab.scorecard.item(0, 1).text().endswith("/2")  # paraphrases not scored
    assert lab.sensitivity.rowCount() == 1 and lab.sensitivity.item(0, 0).text() == "zero-shot"
    assert lab.sensitivity.item(0, 4).text().startswith("main ") and f"#{wordings - 1} " in lab.sensitivity.item(0, 4).text()
    assert f"over {wordings} instructions" in lab.verdict.text()

    lab.optimise_prompt(calls=10)
    assert not lab.optimise_button.isEnabled() and lab.stop_button.isVisible()
    qtbot.waitUntil(lambda: lab.job is None, timeout=900_000)
    found = lab.optimised
    assert found is not None and found.calls <= 10 and lab.optimise_button.isEnabled()
    assert lab.verdict.text().startswith(f"Tried {len(found.trials)} instructions with {found.calls} model calls")
    if found.run is not None:  # a proposal beat the original on the train split: measured and listed
        assert lab.run_list.currentData() == found.run.id and lab.scorecard.rowCount() == 2


def test_sets_imported_and_proposed_from_documents_in_the_window(qtbot, open_window, tmp_path):
    import shutil

    from test_lab_from_documents import HANDBOOK

    window = open_window()
    lab = open_lab(window.api)
    qtbot.addWidget(lab)
    assert lab.import_dialog(str(tmp_path / "missing.csv")) is None
    assert "Cannot read" in lab.status.text()
    csv = tmp_path / "capitals.csv"
    csv.write_text("question,answer\nCapital of France?,Paris\nCapital of Italy?,Rome\nCapital of Spain?,Madrid\n",
                   encoding="utf-8")
    made = lab.import_dialog(str(csv))
    assert made is not None and lab.sets.currentData() == str(made) and "3 items" in lab.set_info.text()

    folder = tmp_path / "Handbook"
    shutil.copytree(HANDBOOK, folder)
    lab.documents_dialog(str(folder), "Handbook questions", count=2)
    assert lab.stop_button.isVisible() and not lab.run_button.isEnabled()
    qtbot.waitUntil(lambda: lab.job is None, timeout=900_000)
    assert "Review them in that file" in lab.status.text(), lab.status.text()
    assert "Handbook questions" in lab.sets.currentText() and "2 items" in lab.set_info.text()
    assert "documents: Handbook" in lab.set_info.text() and lab.run_button.isEnabled()

    lab.documents_dialog(str(folder), "Handbook questions", count=2)  # the name is taken: said, nothing lost
    qtbot.waitUntil(lambda: lab.job is None, timeout=900_000)
    assert "Handbook questions" in lab.status.text() and "2 items" in lab.set_info.text()
