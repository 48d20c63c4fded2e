"""The server's parts that need no running server and no torch: flags, schemas, messages, VL2
conversations, incremental detokenizing, per-row stopping."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path

import pytest

from modeldeploy_serve import config as cfgmod
from modeldeploy_serve import engine as eng
from modeldeploy_serve.detok import IncrementalDetokenizer, TextCollector
from modeldeploy_serve.errors import APIError
from modeldeploy_serve.messages import decode_image_url, open_image, text_messages, to_turns
from modeldeploy_serve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    Sampling,
    parse_json_body,
    refuse_unsupported,
    stop_list,
    validate,
)
from modeldeploy_serve.vl2 import ASSISTANT_ROLE, IMAGE_TOKEN, USER_ROLE, to_conversation

RENDERED = ["--model", "/models/x", "--served-model-name", "deepseek-v2-chat", "--host",
            "0.0.0.0", "--port", "8000"]


def png_bytes(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (8, 6)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


# -- command line ---------------------------------------------------------------------------
def test_rendered_command_line_parses_with_defaults() -> None:
    cfg = cfgmod.parse_args(RENDERED)
    assert cfg.model == "/models/x"
    assert cfg.served_model_names == ("deepseek-v2-chat",)
    assert (cfg.host, cfg.port) == ("0.0.0.0", 8000)
    assert cfg.quantization == "none" and cfg.dtype == "auto"
    assert cfg.trust_remote_code is False and cfg.max_model_len is None


def test_rendered_optional_flags_and_tuning_flags() -> None:
    cfg = cfgmod.parse_args([*RENDERED, "--quantization", "4-bit", "--trust-remote-code",
                             "--max-model-len", "8192", "--dtype", "bfloat16",
                             "--max-batch-size", "4", "--bnb-skip-modules", "lm_head, kv_b_proj"])
    assert cfg.quantization == "4-bit" and cfg.trust_remote_code
    assert cfg.max_model_len == 8192 and cfg.dtype == "bfloat16"
    assert cfg.max_batch_size == 4
    assert cfg.bnb_skip_modules == ("lm_head", "kv_b_proj")


@pytest.mark.parametrize("bad", [["--quantization", "3-bit"], ["--dtype", "int8"],
                                 ["--max-model-len", "0"], ["--max-batch-size", "-1"]])
def test_bad_flags_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cfgmod.parse_args([*RENDERED, *bad])
    assert exc.value.code == 2


def test_served_name_defaults_to_the_folder_name() -> None:
    cfg = cfgmod.parse_args(["--model", "/models/snapshots/abc123/"])
    assert cfg.served_model_names == ("abc123",)


def test_model_folder_checks(tmp_path: Path) -> None:
    with pytest.raises(cfgmod.ConfigError, match="not a folder"):
        cfgmod.read_model_config(str(tmp_path / "missing"))
    with pytest.raises(cfgmod.ConfigError, match=r"config\.json is missing"):
        cfgmod.read_model_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(cfgmod.ConfigError, match="not valid JSON"):
        cfgmod.read_model_config(str(tmp_path))


def test_vl2_detection_and_context_length() -> None:
    # the shape of deepseek-ai/deepseek-vl2-tiny's config.json
    vl2 = {"model_type": "deepseek_vl_v2", "architectures": ["DeepseekVLV2ForCausalLM"],
           "language_config": {"model_type": "deepseek_v2", "max_position_embeddings": 4096}}
    assert cfgmod.is_vl2(vl2)
    assert cfgmod.context_length(vl2) == 4096
    v2 = {"model_type": "deepseek_v2", "max_position_embeddings": 163840}
    assert not cfgmod.is_vl2(v2)
    assert cfgmod.context_length(v2) == 163840


# -- request schemas ------------------------------------------------------------------------
def test_request_body_must_be_a_json_object() -> None:
    for raw in (b"", b"{bad", b"[1, 2]", b'"text"'):
        with pytest.raises(APIError) as exc:
            parse_json_body(raw)
        assert exc.value.status == 400
    assert parse_json_body(b'{"a": 1}') == {"a": 1}


def test_validation_errors_name_the_field() -> None:
    with pytest.raises(APIError) as exc:
        validate(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user",
                                                                     "content": "x"}],
                                         "temperature": 3})
    assert exc.value.status == 400 and exc.value.param == "temperature"
    body = exc.value.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"


def test_unsupported_options_are_refused_not_ignored() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for extra, param in (({"presence_penalty": 0.5}, "presence_penalty"),
                         ({"logprobs": True}, "logprobs"),
                         ({"n": 99}, "n"),
                         ({"logit_bias": {"1": 5}}, "logit_bias"),
                         ({"response_format": {"type": "json_object"}}, "response_format")):
        req = validate(ChatCompletionRequest, {**base, **extra})
        with pytest.raises(APIError) as exc:
            refuse_unsupported(req, max_n=8)
        assert exc.value.param == param
    ok = validate(ChatCompletionRequest, {**base, "presence_penalty": 0, "n": 2})
    refuse_unsupported(ok, max_n=8)
    creq = validate(CompletionRequest, {"model": "m", "prompt": "x", "suffix": "y"})
    with pytest.raises(APIError):
        refuse_unsupported(creq, max_n=8)


def test_stop_sequences() -> None:
    assert stop_list(None) == []
    assert stop_list("\n") == ["\n"]
    assert stop_list(["a", "", "b"]) == ["a", "b"]
    with pytest.raises(APIError):
        stop_list(["1", "2", "3", "4", "5"])


def test_sampling_groups() -> None:
    def sampling(**kw: object) -> Sampling:
        return Sampling.from_request(validate(CompletionRequest,
                                              {"model": "m", "prompt": "x", **kw}))

    greedy = sampling(temperature=0, top_p=0.5, seed=3)
    assert greedy == Sampling(False, 0.0, 1.0, 0, 1.0, None)
    assert sampling(temperature=0) == greedy  # greedy requests share batches
    default = sampling()
    assert default.do_sample and default.temperature == 1.0 and default.top_k == 0
    assert sampling(top_k=-1) == default
    assert sampling(temperature=0.7, seed=1) != sampling(temperature=0.7, seed=2)


# -- messages and images --------------------------------------------------------------------
def chat(messages: list[dict[str, object]]) -> ChatCompletionRequest:
    req: ChatCompletionRequest = validate(ChatCompletionRequest,
                                          {"model": "m", "messages": messages})
    return req


def test_text_messages_join_parts_and_map_developer_to_system() -> None:
    req = chat([{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                             {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": None},
                {"role": "user", "content": "again"}])
    turns = to_turns(req.messages, max_image_bytes=1 << 20)
    assert text_messages(turns, "m") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello\nthere"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "again"},
    ]


def test_images_decode_from_data_urls_and_bare_base64() -> None:
    raw = png_bytes((0, 128, 255), (7, 5))
    assert decode_image_url(data_url(raw), 1 << 20, "p") == raw
    assert decode_image_url(base64.b64encode(raw).decode(), 1 << 20, "p") == raw
    img = open_image(raw)
    assert img.size == (7, 5) and img.mode == "RGB"
    assert img.getpixel((3, 2)) == (0, 128, 255)
    # JPEG with alpha-less grayscale also comes out RGB
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4), 200).save(buf, format="JPEG")
    assert open_image(buf.getvalue()).mode == "RGB"


@pytest.mark.parametrize(("url", "fragment"), [
    ("https://example.com/cat.png", "offline"),
    ("file:///etc/passwd", "offline"),
    ("data:image/png,notbase64", "base64"),
    ("data:image/png;base64,!!!!", "base64"),
    ("data:image/png;base64,", "empty"),
])
def test_bad_image_urls_are_400(url: str, fragment: str) -> None:
    with pytest.raises(APIError) as exc:
        decode_image_url(url, 1 << 20, "messages.0.content.0")
    assert exc.value.status == 400 and fragment in exc.value.message
    assert exc.value.param == "messages.0.content.0"


def test_image_size_limit_and_garbage_bytes() -> None:
    raw = png_bytes(size=(64, 64))
    with pytest.raises(APIError, match="larger than"):
        decode_image_url(data_url(raw), 16, "p")
    with pytest.raises(APIError, match="Could not decode"):
        open_image(b"this is not an image at all")


def test_images_only_in_user_messages_and_not_for_text_models() -> None:
    img = {"type": "image_url", "image_url": {"url": data_url(png_bytes())}}
    with pytest.raises(APIError, match="only accepted in user"):
        to_turns(chat([{"role": "system", "content": [img]},
                       {"role": "user", "content": "x"}]).messages, 1 << 20)
    turns = to_turns(chat([{"role": "user", "content": [img, {"type": "text",
                                                               "text": "what?"}]}]).messages,
                     1 << 20)
    with pytest.raises(APIError, match="does not accept image input"):
        text_messages(turns, "deepseek-v2-chat")
    with pytest.raises(APIError, match="Unsupported content part"):
        to_turns(chat([{"role": "user", "content": [{"type": "audio", "x": 1}]}]).messages,
                 1 << 20)


# -- DeepSeek-VL2 conversation format -------------------------------------------------------
def test_vl2_conversation_places_one_image_token_per_image_in_order() -> None:
    red, blue = png_bytes((255, 0, 0)), png_bytes((0, 0, 255))
    req = chat([
        {"role": "system", "content": "You are a careful observer."},
        {"role": "user", "content": [
            {"type": "text", "text": "This is image_1:"},
            {"type": "image_url", "image_url": {"url": data_url(red)}},
            {"type": "text", "text": "This is image_2:"},
            {"type": "image_url", "image_url": data_url(blue)},
            {"type": "text", "text": "What differs?"},
        ]},
        {"role": "assistant", "content": "The colour."},
        {"role": "user", "content": "Which is warmer?"},
    ])
    conversation, images, system = to_conversation(to_turns(req.messages, 1 << 20))
    assert system == "You are a careful observer."
    # the processor tokenizes only the conversation: the system prompt must be its first turn
    assert conversation[0] == {"role": "system", "content": "You are a careful observer."}
    conversation = conversation[1:]
    assert [m["role"] for m in conversation] == [USER_ROLE, ASSISTANT_ROLE, USER_ROLE,
                                                 ASSISTANT_ROLE]
    first = conversation[0]
    assert first["content"] == (f"This is image_1:\n{IMAGE_TOKEN}\nThis is image_2:\n"
                                f"{IMAGE_TOKEN}\nWhat differs?")
    assert first["content"].count(IMAGE_TOKEN) == len(first["images"]) == 2
    assert conversation[1] == {"role": ASSISTANT_ROLE, "content": "The colour."}
    assert conversation[2]["images"] == []
    assert conversation[-1] == {"role": ASSISTANT_ROLE, "content": ""}
    # images in conversation order, decodable to the colours that were sent
    assert [p.data for p in images] == [red, blue]
    assert [open_image(p.data).getpixel((0, 0)) for p in images] == [(255, 0, 0), (0, 0, 255)]


def test_vl2_conversation_joins_consecutive_turns_of_one_role() -> None:
    red, blue = png_bytes((255, 0, 0)), png_bytes((0, 0, 255))
    req = chat([
        {"role": "user", "content": [{"type": "image_url", "image_url": data_url(red)}]},
        {"role": "user", "content": [{"type": "text", "text": "and"},
                                     {"type": "image_url", "image_url": data_url(blue)}]},
        {"role": "assistant", "content": "Two squares."},
        {"role": "assistant", "content": "Red and blue."},
        {"role": "user", "content": "Sure?"},
    ])
    conversation, images, system = to_conversation(to_turns(req.messages, 1 << 20))
    assert system == ""
    assert [m["role"] for m in conversation] == [USER_ROLE, ASSISTANT_ROLE, USER_ROLE,
                                                 ASSISTANT_ROLE]
    assert conversation[0]["content"] == f"{IMAGE_TOKEN}\nand\n{IMAGE_TOKEN}"
    assert [p.data for p in conversation[0]["images"]] == [red, blue]
    assert conversation[1]["content"] == "Two squares.\nRed and blue."
    assert [p.data for p in images] == [red, blue]


def test_vl2_conversation_refusals() -> None:
    with pytest.raises(APIError, match="placeholder"):
        to_conversation(to_turns(chat([{"role": "user",
                                        "content": "<image> sneaky"}]).messages, 1 << 20))
    with pytest.raises(APIError, match="last message"):
        to_conversation(to_turns(chat([{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "yo"}]).messages,
                                 1 << 20))


# -- detokenizing ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer() -> object:
    from modeldeploy_serve.tiny import train_tokenizer

    return train_tokenizer()


def test_incremental_detokenizer_reassembles_multibyte_text(tokenizer: object) -> None:
    text = "你好\uff0c世界。The quick brown fox! 今天天气很好。"
    ids = tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.add(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_text_collector_stops_at_stop_string_and_never_leaks_it(tokenizer: object) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    ids = tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    col = TextCollector(tokenizer, ["over the"])
    sent = ""
    for i in ids:
        sent += col.add(i)
        if col.stopped:
            break
    sent += col.finish()
    assert col.stopped
    assert sent == "The quick brown fox jumps "
    plain = TextCollector(tokenizer, [])
    out = "".join(plain.add(i) for i in ids) + plain.finish()
    assert out == text and plain.tokens == len(ids)


# -- per-row stopping -----------------------------------------------------------------------
def test_batch_control_stops_rows_independently() -> None:
    loop = asyncio.new_event_loop()
    try:
        def seq(max_new: int, ignore_eos: bool = False) -> eng.Sequence:
            return eng.Sequence(payload=[1], prompt_len=1, max_new_tokens=max_new,
                                sampling=Sampling(False, 0.0, 1.0, 0, 1.0, None, ignore_eos),
                                stream=eng.TokenStream(loop))

        seqs = [seq(3), seq(10), seq(10), seq(2, ignore_eos=True)]
        delivered: list[tuple[int, str, object]] = []
        control = eng.BatchControl(seqs, {0}, lambda evs: delivered.extend(
            (seqs.index(s), k, v) for s, k, v in evs))
        assert control.on_step([5, 5, 0, 0]) == [False, False, True, False]
        seqs[1].stream.cancel()
        assert control.on_step([6, 6, 7, 0]) == [False, True, True, True]
        assert control.on_step([7, 8, 9, 9]) == [True, True, True, True]
        assert (0, eng.END, "length") in delivered
        assert (1, eng.END, "stop") in delivered
        assert (2, eng.END, "stop") in delivered
        assert (3, eng.END, "length") in delivered
        assert [v for r, k, v in delivered if r == 0 and k == eng.TOKEN] == [5, 6, 7]
        # ignore_eos: the eos id (0) is a token like any other
        assert [v for r, k, v in delivered if r == 3 and k == eng.TOKEN] == [0, 0]
        assert control.all_done()
    finally:
        loop.close()


def test_error_body_shape_is_json_serialisable() -> None:
    err = APIError(404, "nope", param="model", code="model_not_found")
    assert json.loads(json.dumps(err.body())) == {
        "error": {"message": "nope", "type": "not_found_error", "param": "model",
                  "code": "model_not_found"}}
