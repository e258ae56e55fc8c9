"""Regenerate examples/tiny-gpt2: a 2-layer GPT-2 with every parameter random (needs torch + transformers).

    python examples/make_tiny_gpt2.py examples/tiny-gpt2
"""

import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

config = GPT2Config(vocab_size=256, n_positions=128, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
torch.manual_seed(0)
model = GPT2LMHeadModel(config)
with torch.no_grad():
    # Random biases and norm weights too: default init (zeros/ones) would hide swapped tensors.
    for param in model.parameters():
        param.normal_(0.0, 0.05)
model.tie_weights()
model.save_pretrained(sys.argv[1] if len(sys.argv) > 1 else "examples/tiny-gpt2")
