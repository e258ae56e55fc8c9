import torch, sys
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
m = LlamaForCausalLM(cfg).eval()
g = torch.Generator().manual_seed(3)
with torch.no_grad():
    for n, p in m.named_parameters():
        p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.5) + (1.0 if p.ndim == 1 else 0.0))
m.save_pretrained(sys.argv[1])
