"""JSON-schema constrained decoding for the transformers backend (lm-format-enforcer).

At every step only the tokens that keep the reply a valid prefix of a JSON document of the
schema may be sampled, so small models (SmolLM2-135M) stop writing prose, unclosed strings or
wrong keys. lm-format-enforcer's own transformers integration imports modules that
transformers 5 no longer has, so its core (``TokenEnforcer``) is wired in here, through
``generate(prefix_allowed_tokens_fn=...)``: that mask is applied before temperature and top-p.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kalm_rag.errors import MissingDependencyError

__all__ = ["SchemaConstraint", "TokenizerIndex"]

_INSTALL = "constrained generation with transformers needs `pip install lm-format-enforcer`"


def _require() -> None:
    import importlib.util

    if importlib.util.find_spec("lmformatenforcer") is None:
        raise MissingDependencyError(_INSTALL)


class TokenizerIndex:
    """The per-tokenizer prefix tree lm-format-enforcer walks (built once per model: a few
    seconds for a 50k vocabulary, ~15 s for Qwen's 151k)."""

    def __init__(self, tokenizer: Any, eos_token_ids: Sequence[int]) -> None:
        _require()
        from lmformatenforcer import TokenEnforcerTokenizerData  # type: ignore[import-untyped,unused-ignore]

        vocab_size = len(tokenizer)
        special = set(tokenizer.all_special_ids)
        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        regular: list[tuple[int, str, bool]] = []
        for token in range(vocab_size):
            if token in special:
                continue
            # decoded after "0", minus that "0": keeps a leading space that decode() alone drops
            after_zero = tokenizer.decode([zero, token])[1:]
            alone = tokenizer.decode([token])
            regular.append((token, after_zero, len(after_zero) > len(alone)))

        def decode(tokens: list[int]) -> str:
            return str(tokenizer.decode(tokens)).rstrip("\ufffd")

        self.eos_token_ids = sorted(set(eos_token_ids))
        self.data = TokenEnforcerTokenizerData(regular, decode, self.eos_token_ids, False, vocab_size)


class SchemaConstraint:
    """``prefix_allowed_tokens_fn`` for one ``generate`` call whose prompts all end at
    ``prompt_length`` (left padding) and whose replies follow ``schema``.

    One enforcer serves the whole batch: its states are keyed by the generated tokens, so
    rows with the same prefix share work. Finished rows (an end token generated) may only
    continue with end tokens (transformers pads them anyway).
    """

    def __init__(self, index: TokenizerIndex, schema: dict[str, Any], prompt_length: int) -> None:
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer  # type: ignore[import-untyped,unused-ignore]

        parser = JsonSchemaParser(schema)
        self.enforcer = TokenEnforcer(index.data, parser)
        # TokenEnforcer installs a default config; ours keeps fields in the schema's order and
        # stops whitespace runs early (small models loop on newlines otherwise)
        parser.config = CharacterLevelParserConfig(
            alphabet=parser.config.alphabet, max_consecutive_whitespaces=2, force_json_field_order=True
        )
        self.prompt_length = prompt_length
        self.eos = index.eos_token_ids
        self.eos_set = set(self.eos)
        self.dead_ends = 0  # rows forced to stop because no token fitted (counted, not raised)

    def __call__(self, batch_id: int, input_ids: Any) -> list[int]:
        generated: list[int] = input_ids[self.prompt_length :].tolist()
        if self.eos_set.intersection(generated):
            return self.eos
        try:
            allowed = self.enforcer.get_allowed_tokens(generated).allowed_tokens
        except Exception:  # the enforcer could not continue: end the reply, parse() will count it
            self.dead_ends += 1
            return self.eos
        return list(allowed) if allowed else self.eos
