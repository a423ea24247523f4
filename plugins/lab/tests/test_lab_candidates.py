"""Candidates: their written form, and the conversation setup each one becomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop_app_lab.candidates import (
    build_setup,
    default_candidates,
    expected_text,
    few_shot_examples,
    final_answer_text,
    parse_candidate,
    parse_candidates,
)
from desktop_app_lab.tasks import TaskSetError, load_task_set

SETS = Path(__file__).resolve().parents[1] / "desktop_app_lab" / "sets"


def test_the_written_forms_of_candidates():
    c = parse_candidate("few:3+chain+docs+lora:Pirate@0.5+lora:Terse+tools:calculator+model:Other+tokens:64")
    assert (c.shots, c.strategy, c.documents, c.model, c.max_tokens) == (3, "chain", True, "Other", 64)
    assert c.adapters == [{"name": "Pirate", "scale": 0.5}, {"name": "Terse", "scale": 1.0}]
    assert c.tools == ["calculator"]
    assert c.name == "chain-of-thought + examples k=3 + docs + LoRA Pirate×0.5 + LoRA Terse + tool calculator " \
                     "(64 tokens) on Other"
    assert parse_candidate("self").samples == 5 and parse_candidate("sc:7").samples == 7
    assert parse_candidate("few").shots == 4
    names = [c.name for c in parse_candidates("zero, few:4, chain, self:5, zero")]
    assert names == ["zero-shot", "few-shot k=4", "chain-of-thought", "self-consistency N=5", "zero-shot (2)"]
    assert "votes over 5" in parse_candidate("self:5").describe()


@pytest.mark.parametrize("spec, message", [
    ("few:x", "must be a number"), ("self:1", "at least 2"), ("lora:", "needs an adapter name"),
    ("lora:A@-1", "at least 0"), ("telepathy", "is not a candidate part"), ("model:", "needs a name"),
])
def test_a_mistyped_candidate_says_what_is_wrong(spec, message):
    with pytest.raises(TaskSetError, match=message):
        parse_candidate(spec)
    with pytest.raises(TaskSetError, match="No candidates"):
        parse_candidates(" , ")


def test_few_shot_examples_come_from_the_train_split_and_are_the_same_every_time():
    arithmetic = load_task_set(SETS / "arithmetic.json")
    four = few_shot_examples(arithmetic, 4)
    assert len(four) == 4 and all(arithmetic.split_of(i) == "train" for i in four)
    assert few_shot_examples(arithmetic, 4) == four and few_shot_examples(arithmetic, 2) == four[:2]


def test_a_candidate_becomes_a_setup_that_states_every_plugin_part():
    arithmetic = load_task_set(SETS / "arithmetic.json")
    setup, options = build_setup(parse_candidate("few:2"), arithmetic)
    plugins = setup["plugins"]
    inline = plugins["prompt_templates"]["inline"]
    assert inline["system"] == arithmetic.instruction and inline["preset"]["temperature"] == 0.0
    assert [e["user"] for e in inline["examples"]] == [i.input for i in few_shot_examples(arithmetic, 2)]
    # Nothing the user picked in the window leaks in: every plugin's part is stated, empty here.
    assert plugins["local_docs"] == {"collections": []} and plugins["lora"] == {"adapters": []}
    assert plugins["tools"] == {"tools": []} and options == {"seed": arithmetic.seed}

    setup, _ = build_setup(parse_candidate("self:3"), arithmetic, instruction="Say the number.")
    inline = setup["plugins"]["prompt_templates"]["inline"]
    assert inline["system"].startswith("Say the number. Think step by step")
    assert inline["strategy"] == {"name": "self-consistency", "samples": 3, "temperature": 0.5}
    assert inline["user"].startswith("{{ message }}") and inline["answer_pattern"]

    handbook = load_task_set(SETS / "handbook_qa.json")
    with pytest.raises(TaskSetError, match="no documents folder|answers from the set's documents"):
        build_setup(parse_candidate("zero+docs"), arithmetic)
    setup, _ = build_setup(parse_candidate("zero+docs+docs:Reports"), handbook, collection="lab-handbook")
    assert setup["plugins"]["local_docs"]["collections"] == ["lab-handbook", "Reports"]
    with pytest.raises(TaskSetError, match="trained first"):
        build_setup(parse_candidate("train-lora"), arithmetic)
    setup, _ = build_setup(parse_candidate("train-lora+tools"), arithmetic, trained_adapter="Lab A",
                           tool_names=["clock", "calculator"])
    assert setup["plugins"]["lora"]["adapters"] == [{"name": "Lab A", "scale": 1.0}]
    assert setup["plugins"]["tools"]["tools"] == ["calculator", "clock"]


def test_schema_candidates_need_a_json_check():
    extraction = load_task_set(SETS / "extraction.json")
    setup, _ = build_setup(parse_candidate("zero+schema"), extraction)
    assert setup["plugins"]["prompt_templates"]["inline"]["output"]["json_schema"] == extraction.check["schema"]
    with pytest.raises(TaskSetError, match="no JSON check"):
        build_setup(parse_candidate("zero+schema"), load_task_set(SETS / "arithmetic.json"))


def test_each_shipped_set_gets_a_ladder_that_suits_it():
    specs = {p.stem: [c.spec for c in default_candidates(load_task_set(p))] for p in SETS.glob("*.json")}
    assert specs["arithmetic"] == ["zero", "few:4", "chain", "self:5"]
    assert "zero+docs" in specs["handbook_qa"] and "zero+schema" in specs["extraction"]
    small = load_task_set(SETS / "arithmetic.json")
    small.items = small.train[:2] + small.test[:3]  # a small set of the user's: the examples fit its train split
    assert [c.spec for c in default_candidates(small)] == ["zero", "few:2", "chain", "self:5"]
    small.items = small.test
    assert [c.spec for c in default_candidates(small)] == ["zero", "chain", "self:5"]


def test_the_judged_part_of_an_answer():
    assert final_answer_text("3 + 4 is 7.\nFinal answer: 7", "chain") == "7"
    assert final_answer_text("First 7.\nFinal answer: 6\nFinal answer: 8", "self-consistency") == "8"
    assert final_answer_text("no marked line", "chain") == "no marked line"
    assert final_answer_text(" 42 \n", "direct") == "42"
    assert expected_text(["8:30", "half past eight"]) == "8:30"
    assert expected_text({"name": "Ann", "age": 3}) == '{"name": "Ann", "age": 3}'
    assert expected_text(12.0) == "12"
