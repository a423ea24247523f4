"""Templates, the library and the plugin's turn preparation, without a model."""

from __future__ import annotations

import pytest

from desktop_app.api import Turn
from desktop_app_prompt_templates.library import TemplateLibrary, builtin_templates
from desktop_app_prompt_templates.templates import (
    PromptTemplate,
    TemplateError,
    dump_template,
    load_template,
    normalise_answer,
)

REQUIRED_BUILTINS = {"Plain assistant", "Zero-shot task", "Few-shot classifier", "Chain-of-thought reasoner",
                     "Summariser", "Translator", "Code helper", "JSON extractor", "Role / persona"}


def test_the_built_in_library_is_complete_and_valid():
    templates, errors = builtin_templates()
    assert errors == []
    assert REQUIRED_BUILTINS <= {t.name for t in templates}
    assert all(t.origin == "built-in" and t.description for t in templates)


def test_rendering_variables_and_the_message():
    t = PromptTemplate("T", system="You speak {{ language }}.", user="Translate: {{ message }}",
                       variables={"language": "French"})
    assert t.variable_names == ["language"]
    out = t.render("hello")
    assert out == {"system": "You speak French.", "user": "Translate: hello", "examples": []}
    assert t.render("hello", {"language": "German"})["system"] == "You speak German."


def test_an_unknown_variable_is_an_error_that_names_it():
    t = PromptTemplate("T", user="{{ message }} in {{ colour }}")
    assert t.variable_names == ["colour"]
    with pytest.raises(TemplateError, match="colour"):
        t.render("x")


def test_few_shot_examples_render_as_pairs():
    t = PromptTemplate("T", examples=[("Q: {{ n }}", "A"), ("Q2", "A2")], variables={"n": "1"})
    assert t.render("m")["examples"] == [("Q: 1", "A"), ("Q2", "A2")]


@pytest.mark.parametrize("text", [
    "{{ message.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
])
def test_templates_cannot_reach_python_internals(text):
    t = PromptTemplate("Evil", user=text)
    with pytest.raises(TemplateError):
        t.render("hi")


def test_syntax_errors_name_the_file_field_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "Bad"\nsystem = "fine"\nuser = """line one\n{% if %}"""\n')
    with pytest.raises(TemplateError, match=r"bad\.toml: user, line 2"):
        load_template(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "Broken"\nsystem = "unterminated\n')
    with pytest.raises(TemplateError, match=r"broken\.toml: not valid TOML .*line 2"):
        load_template(broken)


@pytest.mark.parametrize("content,match", [
    ('description = "no name"', "no name"),
    ('name = "P"\n[preset]\ntemprature = 1.0', "unknown preset option 'temprature'"),
    ('name = "P"\n[preset]\nmax_tokens = "lots"', "max_tokens must be a int"),
    ('name = "P"\n[[examples]]\nuser = "only a question"', "every example needs"),
    ('name = "P"\nanswer_pattern = "("', "not a valid pattern"),
])
def test_malformed_files_are_reported(tmp_path, content, match):
    path = tmp_path / "t.toml"
    path.write_text(content)
    with pytest.raises(TemplateError, match=match):
        load_template(path)


def test_import_export_round_trip_keeps_everything(tmp_path):
    library = TemplateLibrary(tmp_path / "user").load(builtin_templates()[0])
    for name in ("Few-shot classifier", "JSON extractor", "Chain-of-thought reasoner"):
        out = tmp_path / f"{name}.toml"
        library.export(name, out)
        original = library.get(name)
        again = load_template(out)
        for field in ("system", "user", "examples", "preset", "variables", "json_schema", "answer_pattern",
                      "strategy", "description"):
            assert getattr(again, field) == getattr(original, field), field
    imported = library.import_file(tmp_path / "JSON extractor.toml")
    assert imported.name == "JSON extractor (imported)" and imported.origin == "user"
    assert imported.json_schema == library.get("JSON extractor").json_schema


def test_create_edit_duplicate_delete_user_templates(tmp_path):
    library = TemplateLibrary(tmp_path / "user").load(builtin_templates()[0])
    mine = library.save(PromptTemplate("Mine", system="Be {{ mood }}.", variables={"mood": "kind"}))
    assert mine.origin == "user" and mine.path.exists()
    edited = PromptTemplate("Mine renamed", system="Be {{ mood }} and brief.", variables={"mood": "kind"})
    library.save(edited, replacing="Mine")
    assert "Mine" not in library.templates and library.get("Mine renamed").system.endswith("brief.")
    assert len(list((tmp_path / "user").glob("*.toml"))) == 1
    copy = library.duplicate("Translator")
    assert copy.name == "Translator copy" and copy.origin == "user"
    with pytest.raises(TemplateError, match="built-in"):
        library.delete("Translator")
    with pytest.raises(TemplateError, match="built-in"):
        library.save(PromptTemplate("Translator", system="x"), replacing="Translator")
    with pytest.raises(TemplateError, match="already exists"):
        library.save(PromptTemplate("Translator copy", system="x"))
    library.delete("Translator copy")
    assert "Translator copy" not in library.templates


def test_name_clashes_keep_both_and_show_the_origin(tmp_path):
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    (user_dir / "t.toml").write_text('name = "Translator"\nsystem = "my own"\n')
    plugin_template = PromptTemplate("Translator", system="from a plugin", origin="plugin")
    library = TemplateLibrary(user_dir).load(builtin_templates()[0] + [plugin_template])
    assert library.get("Translator").origin == "built-in"
    assert library.get("Translator (plugin)").system == "from a plugin"
    assert library.get("Translator (user)").system == "my own"


def test_a_broken_user_file_is_skipped_and_the_rest_load(tmp_path):
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    (user_dir / "good.toml").write_text('name = "Good"\nsystem = "ok"\n')
    (user_dir / "bad.toml").write_text('name = "Bad"\nsystem = "{{ unclosed"\n')
    library = TemplateLibrary(user_dir).load(builtin_templates()[0])
    assert "Good" in library.templates and "Bad" not in library.templates
    assert len(library.errors) == 1 and "bad.toml" in library.errors[0]


def test_answer_extraction_and_normalisation():
    t = builtin_templates()[0]
    cot = [x for x in t if x.name == "Chain-of-thought reasoner"][0]
    assert cot.extract_answer("Step 1...\nFinal answer: 1,000.\n") == "1000"
    assert cot.extract_answer("final answer: A\nwait\nFinal Answer:  **B** ") == "b"
    assert cot.extract_answer("no marked line, just Forty-two!") == "no marked line, just forty-two"
    assert normalise_answer("  Paris. ") == "paris"


def test_dump_is_valid_toml_with_multiline_texts():
    t = PromptTemplate("M", system="line 1\nline 2", examples=[("q", "a")])
    text = dump_template(t)
    assert '"""' in text
    import tomllib

    assert tomllib.loads(text)["system"] == "line 1\nline 2"


def test_prepare_turn_applies_the_conversation_template(paths):
    from desktop_app.context import build_context

    import desktop_app_prompt_templates as plugin

    context = build_context(paths)
    try:
        conv = context.store.create_conversation()
        turn = Turn(conv.id, "I adore this!", plugin_options={
            "prompt_templates": {"template": "Few-shot classifier", "variables": {}}})
        context.plugins.hook.prepare_turn(turn=turn)
        assert turn.user_message == "Text: I adore this!\nSentiment:"
        assert len(turn.examples) == 6 and turn.options.max_tokens == 8 and turn.options.temperature == 0.0
        assert {e.plugin for e in turn.trace} == {"prompt_templates"}
        kinds = [e.kind for e in turn.trace]
        assert kinds[0] == "system_replaced" and "example" in kinds and "user_message" in kinds
        # The choice is remembered: the next turn of this conversation uses it without asking.
        assert context.store.get_conversation(conv.id).meta["prompt_templates"]["template"] == "Few-shot classifier"
        follow = Turn(conv.id, "Meh.")
        context.plugins.hook.prepare_turn(turn=follow)
        assert follow.user_message == "Text: Meh.\nSentiment:"
        # A missing template is noted in the trace and the message goes out as typed.
        other = Turn(None, "hello", plugin_options={"prompt_templates": {"template": "Nope"}})
        context.plugins.hook.prepare_turn(turn=other)
        assert other.user_message == "hello" and other.trace[-1].kind == "note"
        assert context.plugins.records["prompt_templates"].status == "enabled"
        assert plugin.state.library is not None
    finally:
        context.close()


def test_templates_from_other_plugins_are_registered(paths):
    from desktop_app.api import hookimpl
    from desktop_app.context import build_context
    from desktop_app.plugins import PluginHost

    class Extra:
        @hookimpl
        def register_prompt_templates(self, register):
            register({"name": "Pirate", "system": "Arr."})
            register({"name": "Broken", "system": "{{ oops"})

    host = PluginHost().load_all()
    host.register(Extra(), name="extra")
    context = build_context(paths, host=host)
    try:
        import desktop_app_prompt_templates as plugin

        library = plugin.state.library
        assert library.get("Pirate").origin == "plugin"
        assert any("Broken" in e or "oops" in e for e in library.errors)
    finally:
        context.close()


@pytest.mark.parametrize("content", ['name = "S"\nstrategy = "self-consistency"', 'name = "S"\npreset = 3',
                                     'name = "S"\nvariables = ["a"]', 'name = "S"\nexamples = "none"'])
def test_fields_of_the_wrong_kind_are_reported_not_crashing(tmp_path, content):
    path = tmp_path / "t.toml"
    path.write_text(content)
    with pytest.raises(TemplateError, match="must be a"):
        load_template(path)


def test_templates_cannot_build_huge_texts():
    with pytest.raises(TemplateError):
        PromptTemplate("Big", user="{{ 'x' * 10**10 }}").render("m")
    with pytest.raises(TemplateError):
        PromptTemplate("Loop", user="{% for i in range(10**7) %}x{% endfor %}").render("m")


def test_a_choice_can_carry_its_own_template_without_saving_it(paths):
    from desktop_app.context import build_context

    import desktop_app_prompt_templates as plugin

    context = build_context(paths)
    try:
        inline = {"system": "Answer with the number only.", "user": "Q: {{ message }}\nA:",
                  "examples": [{"user": "1+1?", "assistant": "2"}], "preset": {"max_tokens": 12}}
        turn = Turn(None, "2+3?", plugin_options={"prompt_templates": {"template": "Lab try", "inline": inline}})
        context.plugins.hook.prepare_turn(turn=turn)
        assert turn.system_prompt == "Answer with the number only." and turn.user_message == "Q: 2+3?\nA:"
        assert [m.content for m in turn.examples] == ["1+1?", "2"] and turn.options.max_tokens == 12
        assert turn.plugin_options["prompt_templates"]["inline"] == inline
        # Nothing was added to the user's library.
        assert "Lab try" not in plugin.state.library.templates
        # An inline template that is not a table is a note in the trace; the message goes out as typed.
        bad = Turn(None, "hi", plugin_options={"prompt_templates": {"template": "X", "inline": ["nope"]}})
        context.plugins.hook.prepare_turn(turn=bad)
        assert bad.user_message == "hi" and bad.trace[-1].kind == "note"
    finally:
        context.close()
