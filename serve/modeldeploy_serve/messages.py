"""Chat messages in OpenAI's shape -> plain text turns and decoded images.

Content is a string or a list of parts: ``{"type": "text", "text": ...}`` and
``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`` (a bare base64 string
is accepted too). The server is offline, so http(s) image URLs are refused with a 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import bad_request
from .protocol import ChatMessage

if TYPE_CHECKING:
    from PIL.Image import Image

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?),(?P<data>.*)$",
                       re.DOTALL)


@dataclass(frozen=True)
class ImagePart:
    """An image of a user turn, as decoded bytes; ``index`` counts images over the conversation."""

    data: bytes
    index: int


@dataclass
class Turn:
    role: str  # system | user | assistant
    parts: list[str | ImagePart] = field(default_factory=list)

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.parts if isinstance(p, ImagePart)]

    def text(self, sep: str = "\n") -> str:
        return sep.join(p for p in self.parts if isinstance(p, str))


def decode_image_url(url: str, max_bytes: int, param: str) -> bytes:
    """The bytes of an image given as a data: URL or bare base64 (size-checked, not yet parsed)."""
    url = url.strip()
    if url.lower().startswith(("http://", "https://", "file:", "ftp://")):
        raise bad_request("Image URLs cannot be fetched: this server runs offline. Send the "
                          "image inline as a data: URL (data:image/png;base64,...).", param=param)
    m = _DATA_URL.match(url)
    if m is not None:
        if ";base64" not in (m.group("params") or ""):
            raise bad_request("Only base64 data: URLs are supported for images.", param=param)
        payload = m.group("data")
    else:
        payload = url
    # a cheap bound before decoding: base64 is 4 characters per 3 bytes
    if len(payload) > (max_bytes * 4) // 3 + 8:
        raise bad_request(f"Image larger than {max_bytes} bytes.", param=param)
    try:
        data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"Image is not valid base64: {exc}", param=param) from exc
    if not data:
        raise bad_request("Image is empty.", param=param)
    if len(data) > max_bytes:
        raise bad_request(f"Image larger than {max_bytes} bytes.", param=param)
    return data


def open_image(data: bytes, param: str = "messages") -> Image:
    """Decode image bytes to an RGB PIL image; a 400 when they are not an image PIL can read."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(io.BytesIO(data)) as probe:
            probe.verify()
        img = PILImage.open(io.BytesIO(data))
        img.load()
        return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise bad_request(f"Could not decode the image: {exc}", param=param) from exc


def _image_url_of(part: dict[str, Any], param: str) -> str:
    ref = part.get("image_url")
    if isinstance(ref, dict):
        ref = ref.get("url")
    if not isinstance(ref, str) or not ref:
        raise bad_request("image_url parts need image_url.url.", param=param)
    return ref


def to_turns(messages: list[ChatMessage], max_image_bytes: int) -> list[Turn]:
    """Validate and normalise the messages; images are decoded from base64 (not parsed yet)."""
    turns: list[Turn] = []
    n_images = 0
    for i, msg in enumerate(messages):
        role = "system" if msg.role == "developer" else msg.role
        turn = Turn(role=role)
        content = msg.content
        if content is None:
            if role != "assistant":
                raise bad_request(f"messages.{i}.content is required for role {msg.role}.",
                                  param=f"messages.{i}.content")
            content = ""
        if isinstance(content, str):
            turn.parts.append(content)
        else:
            for j, part in enumerate(content):
                param = f"messages.{i}.content.{j}"
                kind = part.get("type")
                if kind in ("text", "input_text"):
                    text = part.get("text")
                    if not isinstance(text, str):
                        raise bad_request("text parts need a string `text`.", param=param)
                    turn.parts.append(text)
                elif kind in ("image_url", "input_image"):
                    if role != "user":
                        raise bad_request("Images are only accepted in user messages.",
                                          param=param)
                    data = decode_image_url(_image_url_of(part, param), max_image_bytes, param)
                    turn.parts.append(ImagePart(data=data, index=n_images))
                    n_images += 1
                else:
                    raise bad_request(f"Unsupported content part type {kind!r}.", param=param)
        turns.append(turn)
    if turns[-1].role == "assistant" and len(turns) == 1:
        raise bad_request("The conversation needs a user message.", param="messages")
    return turns


def text_messages(turns: list[Turn], model_name: str) -> list[dict[str, str]]:
    """Turns for a text-only model's chat template; images are refused with a 400."""
    out: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        if turn.images:
            raise bad_request(f"The model {model_name!r} does not accept image input.",
                              param=f"messages.{i}.content")
        out.append({"role": turn.role, "content": turn.text()})
    return out
