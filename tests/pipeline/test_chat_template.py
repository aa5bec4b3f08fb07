"""Jinja chat templates -> web-llm conversation templates, checked against the Jinja rendering itself."""

import pytest

from build_pipeline.chat_template import derive_conv_template, format_prompt, render
from build_pipeline.errors import BuildError
from testing.tiny_model import CHAT_TEMPLATE

QWEN_LIKE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}{%- if m.role != 'system' %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3_LIKE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
    " + m['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
IDS = {"<|im_end|>": 2, "<|im_start|>": 1, "<|eot_id|>": 9, "<|begin_of_text|>": 8}
CONVERSATION = [("system", "S"), ("user", "Hi there"), ("assistant", "Hello"), ("user", "Bye")]


@pytest.mark.parametrize(
    "template,special,specials",
    [
        (CHAT_TEMPLATE, {"bos_token": "<|im_start|>"}, ["<|im_start|>", "<|im_end|>"]),
        (QWEN_LIKE, {"bos_token": None}, ["<|im_start|>", "<|im_end|>"]),
        (
            LLAMA3_LIKE,
            {"bos_token": "<|begin_of_text|>"},
            ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        ),
    ],
)
def test_derived_template_matches_jinja(template, special, specials):
    conv = derive_conv_template(template, special, specials, IDS.get)
    for msgs in (CONVERSATION, CONVERSATION[1:2], CONVERSATION[:2]):
        jinja = render(template, [{"role": r, "content": c} for r, c in msgs], special)
        prefix = special["bos_token"] if conv["system_prefix_token_ids"] else ""
        if msgs[0][0] != "system" and not conv["system_message"]:
            continue  # templates without a default system prompt render no system block at all
        assert prefix + format_prompt(conv, msgs) == jinja
    assert conv["stop_str"] and conv["stop_token_ids"]
    assert isinstance(conv["role_templates"], dict)  # web-llm crashes on null role_templates


def test_llama3_bos_becomes_prefix_token():
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    conv = derive_conv_template(LLAMA3_LIKE, {"bos_token": "<|begin_of_text|>"}, specials, IDS.get)
    assert conv["system_prefix_token_ids"] == [8] and conv["stop_token_ids"] == [9]


def test_default_system_prompt_is_extracted():
    conv = derive_conv_template(QWEN_LIKE, {}, ["<|im_start|>", "<|im_end|>"], IDS.get)
    assert conv["system_message"] == "You are Qwen."
    override = derive_conv_template(QWEN_LIKE, {}, ["<|im_start|>", "<|im_end|>"], IDS.get, "Be terse.")
    assert override["system_message"] == "Be terse."


def test_template_that_drops_messages_is_rejected():
    broken = "{% for m in messages %}{{ m['role'] }}{% endfor %}"
    with pytest.raises(BuildError, match="drops the"):
        derive_conv_template(broken, {}, [], IDS.get)
