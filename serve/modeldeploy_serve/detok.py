"""Token ids -> text, incrementally, with stop strings.

Decoding a growing id list token by token must not cut a multi-byte character in half, nor show
the start of a stop string before it is known not to be one; ``TextCollector`` holds such text back
until it is safe.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    """Decodes a window of recent ids and emits only the new, complete characters."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens))

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return full[len(prefix):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        if self.read_offset >= len(self.ids):
            return ""
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix):] if len(full) > len(prefix) else ""


class TextCollector:
    """Collects the text of one choice; finds stop strings; says what may be sent so far."""

    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.tokens = 0
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Add a token; return the text now safe to send. Sets ``stopped`` on a stop string."""
        if self.stopped:
            return ""
        self.tokens += 1
        return self._extend(self.detok.add(token_id))

    def _extend(self, delta: str) -> str:
        if not delta:
            return ""
        start = max(0, len(self.text) - self.hold)
        self.text += delta
        if self.stops:
            hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                self.stopped = True
                return self._take(len(self.text))
        return self._take(len(self.text) - self.hold)

    def _take(self, end: int) -> str:
        if end <= self.sent:
            return ""
        out = self.text[self.sent:end]
        self.sent = end
        return out

    def finish(self) -> str:
        """The rest of the text, at the end of generation."""
        out = "" if self.stopped else self._extend(self.detok.flush())
        return out + self._take(len(self.text))
