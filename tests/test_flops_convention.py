"""Model FLOPs per token, counted as MaxText does (causal attention halved), on a hand-computed example."""
from mellama_jax.config import ModelConfig
from mellama_jax.model import params as P


def test_flops_per_token_counts_causal_attention_half():
    cfg = ModelConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=2, num_heads=2,
                      num_kv_heads=1, head_dim=4)
    # Per layer: q 8x8=64, k 8x4=32, v 32, o 64, gate/up/down 3 x 8x16=384, two norms 16 -> 592; x2 layers = 1184.
    # Embedding 80 + LM head 80 + final norm 8 -> 1352 parameters; without the embedding lookup 1272.
    assert P.count_params(cfg) == 1352
    # 6 x 1272 = 7632 for the parameter matmuls; attention at T=16 with causal halving:
    # forward QK^T + AV = 2 x 2 x T x H x D per token per layer, halved = 2 x 16 x 2 x 4 = 256, x3 (fwd+bwd)
    # = 768 per layer, x2 layers = 1536.  (The full-matrix PaLM count would be 3072.)
    assert P.flops_per_token(cfg, 16) == 7632 + 1536
