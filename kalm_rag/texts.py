"""Validation of user texts before they reach a tokenizer."""

from __future__ import annotations

from collections.abc import Sequence

from kalm_rag.errors import InvalidInputError


def validate_texts(texts: object, *, what: str = "texts") -> list[str]:
    """Return ``texts`` as a list of non-empty strings or raise an error naming the bad item."""
    if texts is None:
        raise InvalidInputError(f"{what} is None; pass a string or a list of strings")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or isinstance(texts, (bytes, bytearray)):
        raise InvalidInputError(
            f"{what} must be a string or a sequence of strings, got {type(texts).__name__}"
        )
    result: list[str] = []
    for i, text in enumerate(texts):
        if text is None:
            raise InvalidInputError(f"{what}[{i}] is None")
        if not isinstance(text, str):
            raise InvalidInputError(f"{what}[{i}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InvalidInputError(f"{what}[{i}] is empty or whitespace only")
        check_unicode(text, f"{what}[{i}]")
        result.append(text)
    return result


def check_unicode(text: str, what: str) -> str:
    """Reject strings with lone surrogates (``"a\\ud800"``): no tokenizer, file or socket takes them."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"{what} is not valid Unicode: a lone surrogate {text[exc.start]!r} at character "
                f"{exc.start} (decode the source with the right encoding, or drop it)"
            ) from None
    return text
