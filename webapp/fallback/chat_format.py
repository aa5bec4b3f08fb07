"""Prompt text, token ids, stop rules and sampling defaults, all taken from the model's mlc-chat-config.json.

The conversation template is the one the pipeline derived and proved against the model's Jinja template
(`format_prompt`); it is cut into the pieces web-llm tokenizes one by one and tokenized with the same
tokenizer.json the browser uses, so a conversation reaches llama.cpp as exactly the token ids web-llm
would feed the WebGPU model.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from build_pipeline.chat_template import prompt_pieces, prompt_token_ids
from webapp.fallback.prompt_bound import max_bytes_per_token, min_tokens


class ChatFormat:
    def __init__(self, chat_config: dict, tokenizer_json: bytes):
        self.conv = chat_config["conv_template"]
        self.context_window = int(chat_config["context_window_size"])
        self.stop_strings = [s for s in self.conv.get("stop_str") or [] if s]
        eos = chat_config.get("eos_token_id")
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.stop_token_ids = frozenset(int(i) for i in [*(self.conv.get("stop_token_ids") or []), *eos])
        self.temperature = float(chat_config.get("temperature", 0.7))
        self.top_p = float(chat_config.get("top_p", 0.95))
        self.repetition_penalty = float(chat_config.get("repetition_penalty", 1.0))
        text = tokenizer_json.decode("utf-8")
        self.tokenizer = Tokenizer.from_str(text)
        self.bytes_per_token = max_bytes_per_token(text)  # None: no safe size bound for this tokenizer

    def encode(self, messages: list[tuple[str, str]]) -> list[int]:
        """Token ids as web-llm builds them: prefix ids, then each prompt piece tokenized on its own."""
        return prompt_token_ids(self.conv, _GilFree(self.tokenizer), messages)

    def min_prompt_tokens(self, messages: list[tuple[str, str]]) -> int:
        """A lower bound on len(encode(messages)) from the prompt's size alone (no tokenizer pass):
        the rule and why it is safe are in webapp/fallback/prompt_bound.py."""
        prefix = len(self.conv.get("system_prefix_token_ids") or [])
        return min_tokens(prompt_pieces(self.conv, messages), prefix, self.bytes_per_token)


class _GilFree:
    """The tokenizer, called through `encode_batch`, which releases the GIL while it works (`encode` holds
    it, so one long prompt would stall every other thread of the site, /healthz included); same ids."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer

    def encode(self, text: str, add_special_tokens: bool = False):
        return self._tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0]


class StopScanner:
    """Cuts streamed text at the first stop string, holding back only a tail that could still become one."""

    def __init__(self, stops):
        self.stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self.stops), default=0)
        self._buf = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string was reached)."""
        if not self.stops:
            return text, False
        buf = self._buf + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._buf = ""
            return buf[: min(hits)], True
        hold = 0
        for k in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-k:]
            if any(s.startswith(tail) for s in self.stops):
                hold = k
                break
        self._buf = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self._buf = self._buf, ""
        return out
