#!/usr/bin/env python3
"""Writes the 512-token tokenizer.json of the tiny test checkpoints (gemma4-tiny-dense/-moe).

Same machinery as the real Gemma 4 tokenizer.json (BPE, byte fallback, Replace " " -> "▁",
Split MergedWithPrevious, Replace/ByteFallback/Fuse decoder, <bos> template), with the special
tokens at the ids the chat format uses (GEMMA4.md §4) and the multimodal ids of the tiny
configs (505-511). The rest holds single characters and merges learned deterministically from
a small built-in English text. Python 3 standard library only; the output is byte-identical on
every run.

    tools/make_tiny_tokenizer.py tests/data/gemma4-tiny-dense/tokenizer.json \
        tests/data/gemma4-tiny-moe/tokenizer.json
"""
import collections
import json
import sys

VOCAB_SIZE = 512
MARK = "\u2581"

SPECIAL = {
    0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>",
    46: "<|tool>", 47: "<tool|>", 48: "<|tool_call>", 49: "<tool_call|>",
    50: "<|tool_response>", 51: "<tool_response|>", 52: '<|"|>',
    98: "<|think|>", 100: "<|channel>", 101: "<channel|>", 105: "<|turn>", 106: "<turn|>",
    505: "<|image>", 506: "<image|>", 507: "<|image|>", 508: "<|video|>",
    509: "<|audio>", 510: "<audio|>", 511: "<|audio|>",
}
NEWLINE_ID = 107  # "\n", an added token that is not special, as in Gemma
FIRST_BYTE_ID = 108  # <0x00>..<0xFF> are 108..363

CORPUS = """
The quick brown fox jumps over the lazy dog. This is a small model for testing the server.
The user asks a question and the model gives an answer. What is the capital of France?
The capital of France is Paris. Hello, how are you today? I am fine, thank you for asking.
It was the best of times, it was the worst of times, it was the age of wisdom, it was the
age of foolishness. In the beginning there was nothing, and then there was something.
Please write a short story about a cat who lives in a house with a garden and a tree.
The weather is nice and the sun is shining. We are going to the park with our friends.
Tokens, models, layers, attention, and experts are the words of this world.
"""


def learn_merges(num_merges, known):
    """Classic BPE on the corpus words (with their leading "▁"); ties go to the smaller pair."""
    words = collections.Counter(MARK + w for w in CORPUS.split())
    splits = {w: list(w) for w in words}
    merges = []
    while len(merges) < num_merges:
        pairs = collections.Counter()
        for word, count in words.items():
            pieces = splits[word]
            for a, b in zip(pieces, pieces[1:]):
                pairs[(a, b)] += count
        candidates = [p for p in pairs if p[0] + p[1] not in known]
        if not candidates:
            break
        best = min(candidates, key=lambda p: (-pairs[p], p))
        merges.append(best)
        known.add(best[0] + best[1])
        for word in words:
            pieces, merged, i = splits[word], [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                    merged.append(pieces[i] + pieces[i + 1])
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            splits[word] = merged
    return merges


def build():
    vocab = {content: token_id for token_id, content in SPECIAL.items()}
    vocab["\n"] = NEWLINE_ID
    for byte in range(256):
        vocab["<0x%02X>" % byte] = FIRST_BYTE_ID + byte
    free = [i for i in range(VOCAB_SIZE) if i not in vocab.values()]
    chars = [MARK] + [chr(c) for c in range(0x21, 0x7F)]
    merges = learn_merges(len(free) - len(chars), set(chars))
    pieces = chars + [a + b for a, b in merges]
    assert len(pieces) == len(free), (len(pieces), len(free))
    for token_id, piece in zip(free, pieces):
        vocab[piece] = token_id
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))

    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in sorted(SPECIAL.items())]
    added.append({"id": NEWLINE_ID, "content": "\n", "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": False, "special": False})
    added.sort(key=lambda token: token["id"])
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": MARK},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "},
                          "behavior": "MergedWithPrevious", "invert": False},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<bos>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": MARK}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": dict(sorted(vocab.items(), key=lambda item: item[1])),
                  "merges": [list(m) for m in merges]},
    }


def main(paths):
    if not paths:
        sys.exit("usage: make_tiny_tokenizer.py OUT.json [OUT.json ...]")
    text = json.dumps(build(), ensure_ascii=False, indent=1) + "\n"
    for path in paths:
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
