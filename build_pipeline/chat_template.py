"""Derive MLC's `conv_template` from a model's Jinja chat template, and prove the two agree.

web-llm does not run Jinja: it assembles prompts from a system template, role prefixes and
separators. We render the Jinja template around sentinel strings, read those pieces off the
result, then rebuild the sentinel conversation the way web-llm will and require an exact match.
"""

from __future__ import annotations

import os

import jinja2
import jinja2.sandbox

from build_pipeline.errors import BuildError

_S, _U1, _A1, _U2 = "\x01SYS\x01", "\x01U1\x01", "\x01A1\x01", "\x01U2\x01"
_BOS = "\x01BOS\x01"  # stands in for `bos_token`, so we know whether the template itself emits it


def render(template: str, messages: list[dict], special: dict, add_generation_prompt=True) -> str:
    def raise_exception(msg):
        raise jinja2.TemplateError(msg)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **special)


def _common_prefix(a: str, b: str) -> str:
    return a[: len(os.path.commonprefix([a, b]))]


def _cut_before_last_special(s: str, specials: list[str]) -> str:
    """'<|im_end|>\\n<|im_start|>' -> '<|im_end|>\\n': the separator ends where the next role marker starts."""
    best = -1
    for tok in specials:
        i = s.rfind(tok)
        if i > 0:
            best = max(best, i)
    return s[:best] if best > 0 else s


def derive_conv_template(
    template: str, special_tokens: dict, special_strings: list[str], token_id, system_message=None
) -> dict:
    """Build MLC's ConvTemplateConfig from `template`. `token_id(str)` maps a special token to its id."""

    def fail(why: str) -> BuildError:
        return BuildError(
            f"cannot turn the model's chat template into a web-llm conversation template: {why}",
            "set [chat] template in the model config to a simpler ChatML/Llama-style template",
        )

    bos = special_tokens.get("bos_token")
    special_tokens = {**special_tokens, "bos_token": _BOS}
    try:
        full = render(
            template,
            [
                {"role": "system", "content": _S},
                {"role": "user", "content": _U1},
                {"role": "assistant", "content": _A1},
                {"role": "user", "content": _U2},
            ],
            special_tokens,
        )
        user_only = render(template, [{"role": "user", "content": _U1}], special_tokens)
    except jinja2.TemplateError as exc:
        raise fail(f"rendering failed ({exc})") from None
    pieces = []
    rest = full
    for marker in (_S, _U1, _A1, _U2):
        if marker not in rest:
            raise fail(f"the template drops the {marker.strip(chr(1))} message")
        head, rest = rest.split(marker, 1)
        pieces.append(head)
    p0, p1, p2, p3 = pieces
    p4 = rest
    sep = _cut_before_last_special(_common_prefix(p2, p3), special_strings)
    if not sep:
        raise fail("no separator between turns")
    user_prefix, asst_prefix = p3[len(sep) :], p2[len(sep) :]
    if not p1.endswith(user_prefix):
        raise fail("the first user turn is introduced differently from later ones")
    sys_close = p1[: len(p1) - len(user_prefix)]

    prefix_ids = []
    if p0.startswith(_BOS):
        if not bos or token_id(bos) is None:
            raise fail("it starts with bos_token but the tokenizer has none")
        full, user_only, p0 = (x.removeprefix(_BOS) for x in (full, user_only, p0))
        prefix_ids = [token_id(bos)]
    if _BOS in full:
        raise fail("bos_token appears in the middle of the prompt")

    default_system = ""
    if user_only.startswith(p0) and _U1 in user_only:
        body = user_only.split(_U1, 1)[0][len(p0) :]
        if body.endswith(sys_close + user_prefix):
            default_system = body[: len(body) - len(sys_close + user_prefix)]
    stop = sep.strip()
    conv = {
        "name": "lantern",
        "system_template": f"{p0}{{system_message}}{sys_close}",
        "system_message": system_message if system_message is not None else default_system,
        "system_prefix_token_ids": prefix_ids or None,
        "add_role_after_system_message": True,
        "roles": {"user": user_prefix, "assistant": asst_prefix, "tool": user_prefix},
        "role_templates": {
            "user": "{user_message}",
            "assistant": "{assistant_message}",
            "tool": "{tool_message}",
        },
        "messages": [],
        "seps": [sep],
        "role_content_sep": "",
        "role_empty_sep": "",
        "stop_str": [stop] if stop else [],
        "stop_token_ids": sorted({i for i in [token_id(stop)] if i is not None}),
        "function_string": "",
        "use_function_calling": False,
    }
    rebuilt = format_prompt(conv, [("system", _S), ("user", _U1), ("assistant", _A1), ("user", _U2)])
    if rebuilt != full or p4 != p2:
        raise fail("the derived template does not reproduce the original prompt exactly")
    return conv


def _sep(value) -> str:
    """web-llm's default for a missing role separator (`x || x == "" ? x : ": "`)."""
    return value if value or value == "" else ": "


def prompt_pieces(conv: dict, messages: list[tuple[str, str]], add_generation_prompt: bool = True) -> list[str]:
    """The prompt as web-llm 0.2.86 builds it (getPromptArrayInternal, first round): the pieces it
    tokenizes one by one. A leading ("system", text) message overrides the template's system message."""
    system = conv["system_message"]
    turns = []
    for role, content in messages:
        if role == "system":
            system = content
        else:
            turns.append((role, content))
    sys_prompt = conv["system_template"].replace("{system_message}", system)
    if system == "" and conv.get("render_empty_system_message") is False:
        sys_prompt = ""
    templates = conv.get("role_templates") or {}
    pieces = [sys_prompt] if sys_prompt else []
    for i, (role, content) in enumerate(turns):
        text = templates.get(role, f"{{{role}_message}}").replace(f"{{{role}_message}}", content)
        text = text.replace("{function_string}", "")
        bare = conv.get("add_role_after_system_message") is False and sys_prompt and i == 0
        prefix = "" if bare else conv["roles"][role] + _sep(conv.get("role_content_sep"))
        pieces.append(prefix + text + conv["seps"][i % len(conv["seps"])])
    if add_generation_prompt:
        pieces.append(conv["roles"]["assistant"] + _sep(conv.get("role_empty_sep")))
    return pieces


def format_prompt(conv: dict, messages: list[tuple[str, str]], add_generation_prompt: bool = True) -> str:
    """The prompt text web-llm feeds the model (without the system prefix token ids)."""
    return "".join(prompt_pieces(conv, messages, add_generation_prompt))


def prompt_token_ids(conv: dict, tokenizer, messages: list[tuple[str, str]]) -> list[int]:
    """Token ids exactly as web-llm builds them: prefix ids, then each piece tokenized on its own."""
    ids = list(conv.get("system_prefix_token_ids") or [])
    for piece in prompt_pieces(conv, messages):
        ids += tokenizer.encode(piece, add_special_tokens=False).ids
    return ids
