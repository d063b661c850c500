"""Real HuggingFace transformers code on a GPU, in labelled phases (a workload for record.py --workload).

usage: python3 hf_workload.py TOKENIZER_DIR LABELS_FILE [--seconds 15]

Random-weight Llamas built on the GPU (no download); the tokenizer is a local directory
(shared/tools/vllm/mkmodel.py writes one). Phases, each written to LABELS_FILE as
``{"phase", "t0", "t1"}`` (the first covers imports and model construction):

- ``starting``: imports, tokenizer load, two models built;
- ``idle``: nothing;
- ``batch1_decode``: greedy ``generate`` of one sequence on an 8-layer 1024-wide model
  (eager PyTorch: many tiny kernels, the CPU launches them);
- ``chat_tokenize``: every step renders 8 chat conversations with ``apply_chat_template`` and
  tokenizes them before one small forward (the tokenizer starves the GPU);
- ``batch64_decode``: ``generate`` of 64 sequences on a 16-layer 4096-wide model (GPU busy;
  transformers' own stopping check syncs with the GPU every step);
- ``prefill``: forward passes of 4 x 2048 tokens on the large model (compute);
- ``idle`` again.
"""
import json
import sys
import time

T_START = time.time()

import torch  # noqa: E402
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

tok_dir, labels_path = sys.argv[1], sys.argv[2]
SECONDS = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 15.0
labels = open(labels_path, "a")


def label(phase: str, t0: float) -> None:
    labels.write(json.dumps({"phase": phase, "t0": t0, "t1": time.time()}) + "\n")
    labels.flush()
    print(f"{phase} {time.time() - t0:.1f}s", flush=True)


tok = AutoTokenizer.from_pretrained(tok_dir)
if tok.pad_token is None:       # a batch of chats is padded (mkmodel's tokenizer has no pad token)
    tok.pad_token = tok.eos_token
tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
                     "{% if add_generation_prompt %}<|assistant|> {% endif %}")
torch.set_default_dtype(torch.bfloat16)


def build(hidden: int, layers: int, inter: int, heads: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads // 4, vocab_size=len(tok),
                      max_position_embeddings=8192)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    return model.eval()


small = build(1024, 8, 2816, 16)
large = build(4096, 16, 11008, 32)
torch.cuda.synchronize()
label("starting", T_START)


def run_for(phase: str, step) -> None:
    t0 = time.time()
    with torch.inference_mode():
        while time.time() - t0 < SECONDS:
            step()
    torch.cuda.synchronize()
    label(phase, t0)


t0 = time.time()
time.sleep(SECONDS / 2)
label("idle", t0)
ids1 = torch.randint(10, len(tok) - 1, (1, 32), device="cuda")
run_for("batch1_decode", lambda: small.generate(ids1, max_new_tokens=64, do_sample=False, min_new_tokens=64,
                                                pad_token_id=0))
chats = [[{"role": "system", "content": "you are terse " * 20},
          {"role": "user", "content": " ".join(["abc def ghij"] * 60) + f" question {i}"}] for i in range(8)]


def chat_step() -> None:
    enc = tok.apply_chat_template(chats, add_generation_prompt=True, tokenize=True, padding=True,
                                  return_tensors="pt", return_dict=True)
    small(input_ids=enc["input_ids"][:, -64:].to("cuda"))


run_for("chat_tokenize", chat_step)
ids64 = torch.randint(10, len(tok) - 1, (64, 32), device="cuda")
run_for("batch64_decode", lambda: large.generate(ids64, max_new_tokens=64, do_sample=False, min_new_tokens=64,
                                                 pad_token_id=0))
ids_pf = torch.randint(10, len(tok) - 1, (4, 2048), device="cuda")
run_for("prefill", lambda: large(input_ids=ids_pf))
t0 = time.time()
time.sleep(SECONDS / 2)
label("idle", t0)
