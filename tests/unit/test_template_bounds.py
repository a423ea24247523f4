"""Templates come from model files and shared template files: one render's total work is bounded."""

import pytest
from jinja2.sandbox import SecurityError

from desktop_app.core.chat_template import CHATML_TEMPLATE, ChatTemplate
from desktop_app.core.template_sandbox import MAX_TEMPLATE_STEPS, bounded_sandbox

HOSTILE = {
    "nested loops": "{% for i in range(9999) %}{% for j in range(9999) %}x{% endfor %}{% endfor %}",
    "silent nested loops": "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}",
    "loops over a filter": "{% for i in range(9999) %}{% for j in range(9999)|select('odd') %}{% endfor %}{% endfor %}",
    "recursive macro": "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "doubling with ~": "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "doubling with +": "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "a huge output": "{% for i in range(9999) %}{{ 'x' * 999999 }}{% endfor %}",
    "recursive loop()": "{% for x in range(3000) recursive %}{% if loop.depth < 2 %}{{ loop(range(3000)) }}"
                        "{% endif %}{% endfor %}",
    "squaring a number": "{% set ns = namespace(x=10) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}"
                         "{% endfor %}{{ ns.x > 1 }}",
    "a tower of powers": "{{ ((((10**64)**64)**64)**64)**64 > 1 }}",
    "str.center": "{{ 'x'.center(2000000000) }}",
    "% with a width": "{{ '%500000000s' % 'x' }}",
    "% with a * width": "{{ '%*s' % (500000000, 'x') }}",
    "str.format with a width": "{{ '{:>500000000}'.format('x') }}",
    "the center filter": "{{ 'x'|center(500000000) }}",
    "the format filter": "{{ '%500000000s'|format('x') }}",
    "the indent filter": "{{ 'a\nb'|indent(500000000) }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(1000000) }}",
    "join of a repeated list": "{% set s = 'x' * 999999 %}{{ ([s] * 500)|join }}",
    "tojson of a repeated list": "{% set s = 'x' * 999999 %}{{ ([s] * 1000)|tojson }}",
    "batch": "{{ [1]|batch(300000000, 0)|list }}",
    "slice": "{{ [1]|slice(50000000)|list }}",
    "replace, doubling": "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s.replace('a', 'aa') %}"
                         "{% endfor %}{{ ns.s|length }}",
    "upper on a big text, many times": "{% set s = 'x' * 999999 %}{% for i in range(9999) %}{% set t = s|upper %}"
                                       "{% endfor %}",
    "a long ~ chain": "{% set s = 'x' * 999999 %}{{ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s }}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_template_is_stopped(source):
    with pytest.raises((SecurityError, NameError)):
        bounded_sandbox().from_string(source).render()


def test_lipsum_is_not_offered():
    with pytest.raises(Exception, match="lipsum"):
        bounded_sandbox().from_string("{{ lipsum(200000) }}").render()


def test_a_long_conversation_is_not_a_hostile_template():
    # Long messages are the input, not something the template built: they render whole (the
    # engine fits the prompt to the context afterwards).
    long = [{"role": "user", "content": "x" * 2_000_000} for _ in range(4)]
    assert len(ChatTemplate(None).render(long)) > 8_000_000
    assert len(bounded_sandbox().from_string("{% for m in messages %}{{ m }}{% endfor %}").render(
        messages=["y" * 3_000_000] * 3)) == 9_000_000


def test_generate_is_bounded_too():
    with pytest.raises(SecurityError):
        "".join(bounded_sandbox().from_string(HOSTILE["nested loops"]).generate())


def test_a_model_template_that_is_stopped_is_not_run_again(caplog):
    template = ChatTemplate(HOSTILE["nested loops"] + "{% for m in messages %}{{ m.content }}{% endfor %}")
    template.render([{"role": "user", "content": "hi"}])
    assert template.is_fallback and template.source == CHATML_TEMPLATE


def test_the_budget_counts_steps_not_time():
    env = bounded_sandbox()
    # A loop step, or a call, costs one: just inside the budget renders, just past it does
    # not, however fast or slow the machine.
    inner = 9997  # with its range() call and its check, each inner loop costs 10,000
    source = "{{% for i in range({}) %}}{{% for j in range({}) %}}{{% endfor %}}{{% endfor %}}"
    assert env.from_string(source.format(MAX_TEMPLATE_STEPS // 10_000 - 1, inner)).render() == ""
    with pytest.raises(SecurityError, match="too much work"):
        env.from_string(source.format(MAX_TEMPLATE_STEPS // 10_000 + 1, inner)).render()


def test_each_render_has_its_own_budget():
    template = bounded_sandbox().from_string("{% for i in range(9000) %}{% endfor %}ok")
    for _ in range(3 * MAX_TEMPLATE_STEPS // 9000):
        assert template.render() == "ok"


def test_ordinary_loops_still_work():
    source = ("{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ m }}{% if not loop.last %},{% endif %}"
              "{% endfor %}|{% for x in [1, 2, 3]|select('odd') %}{{ x }}{% endfor %}|{{ 'a' ~ 'b' }}"
              "|{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}")
    assert bounded_sandbox().from_string(source).render(messages=["x", "y"]) == "1/2:x,2/2:y|13|ab|a=1"


def test_a_model_template_that_loops_for_ever_falls_back_to_chatml():
    template = ChatTemplate(HOSTILE["nested loops"] + "{% for m in messages %}{{ m.content }}{% endfor %}")
    assert template.render([{"role": "user", "content": "hi"}]) == \
        ChatTemplate(CHATML_TEMPLATE).render([{"role": "user", "content": "hi"}])
