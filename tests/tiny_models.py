"""Tiny random models of real architectures (Qwen2 decoder, BERT encoder) built from configs.

They exercise the same transformers code paths as the published models, in milliseconds.
The tokenizer is a real ``tokenizers`` word-level tokenizer over a small vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = """
the a an of to and in is was for on with as by at from it this that be are or not query
document package library tool file network server data text search index model python
linux debian fast small large open source command line user system kernel driver instruct
given retrieve documents answer semantically similar how what why install run embedding
vector retrieval language translation english german french chinese man page
""".split()


def build_word_tokenizer(folder: Path, *, bos: str | None, eos: str, pad: str, unk: str = "[UNK]") -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (pad, unk, bos, eos) if t]
    vocab = {tok: i for i, tok in enumerate([*specials, *WORDS, ":", "\n", ".", ","])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    if bos:  # BERT style: [CLS] text [SEP]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
        )
    else:  # decoder style: text <eos>
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", special_tokens=[(eos, vocab[eos])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, unk_token=unk, eos_token=eos, bos_token=bos, model_max_length=512
    )
    if bos:
        fast.cls_token, fast.sep_token = bos, eos
    fast.save_pretrained(folder)
    # name the generic class explicitly: transformers 5 otherwise rebuilds the tokenizer from the
    # model type's own class (Qwen2Tokenizer), which would ignore our word-level vocabulary
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config))


def build_byte_bpe_tokenizer(folder: Path, *, vocab_size: int = 300) -> None:
    """A byte-level BPE tokenizer like Qwen2's (no special tokens added to texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=512
    )
    fast.save_pretrained(folder)


def build_tiny_qwen2(folder: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2Model

    build_byte_bpe_tokenizer(folder)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )  # fmt: skip
    Qwen2Model(config).save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    build_word_tokenizer(folder, bos="[CLS]", eos="[SEP]", pad="[PAD]")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder
