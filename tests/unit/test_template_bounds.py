"""Templates come from model files and shared template files: one render's total work is bounded."""

import pytest
from jinja2.sandbox import SecurityError

from desktop_app.core.chat_template import CHATML_TEMPLATE, MAX_TEMPLATE_STEPS, ChatTemplate, bounded_sandbox

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
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_template_is_stopped(source):
    with pytest.raises(SecurityError):
        bounded_sandbox().from_string(source).render()


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
