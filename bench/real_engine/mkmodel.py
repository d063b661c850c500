"""Make a model directory (Llama or Qwen2 architecture) for `vllm serve ... --load-format dummy`
without downloading anything.

A copy of shared/tools/vllm/mkmodel.py with ``--arch``. Writes config.json (a LlamaConfig or
Qwen2Config; no weights: vLLM fills random dummy weights) and a byte-level BPE
tokenizer trained here on random words (tokenizer.json + tokenizer_config.json, via
PreTrainedTokenizerFast.save_pretrained). Needs `transformers` and `tokenizers` (the GPU host has them).

usage: python3 mkmodel.py OUTDIR [--arch llama|qwen2] [--hidden-size 2048] [--intermediate-size 5632] [--layers 16]
                                  [--heads 16] [--kv-heads 8] [--vocab-size 8192] [--max-pos 8192]
                                  [--dtype bfloat16] [--seed 1]
Defaults reproduce the model used for the first vLLM 0.24.0 runs on the H200 (vocab 7397 after BPE
training, about 0.8 B parameters, random weights).
"""
import argparse
import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("outdir")
ap.add_argument("--arch", choices=("llama", "qwen2"), default="llama")
ap.add_argument("--hidden-size", type=int, default=2048)
ap.add_argument("--intermediate-size", type=int, default=5632)
ap.add_argument("--layers", type=int, default=16, help="num_hidden_layers")
ap.add_argument("--heads", type=int, default=16, help="num_attention_heads")
ap.add_argument("--kv-heads", type=int, default=8, help="num_key_value_heads")
ap.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size to train")
ap.add_argument("--max-pos", type=int, default=8192, help="max_position_embeddings")
ap.add_argument("--dtype", default="bfloat16")
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
if a.hidden_size % a.heads or a.heads % a.kv_heads:
    ap.error("hidden-size must be a multiple of heads, and heads a multiple of kv-heads")

random.seed(a.seed)
W = ["".join(random.choice("abcdefghij") for _ in range(random.randint(2, 8))) for _ in range(3000)]
t = Tokenizer(models.BPE(unk_token="<unk>"))
t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
t.decoder = decoders.ByteLevel()
t.train_from_iterator(
    (" ".join(random.choices(W, k=40)) for _ in range(10000)),
    trainers.BpeTrainer(vocab_size=a.vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
h = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
h.save_pretrained(a.outdir)
CONFIG = {"llama": LlamaConfig, "qwen2": Qwen2Config}[a.arch]
CONFIG(hidden_size=a.hidden_size, intermediate_size=a.intermediate_size, num_hidden_layers=a.layers,
            num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=len(h),
            max_position_embeddings=a.max_pos, torch_dtype=a.dtype).save_pretrained(a.outdir)
print(f"wrote {a.outdir}: {a.arch}, vocab {len(h)}, {a.layers} layers, hidden {a.hidden_size}")
