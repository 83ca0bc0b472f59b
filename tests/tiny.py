"""The tiny MicarVLMoE size the model tests share (CPU, milliseconds per forward)."""

TINY_MODEL = {
    "d_v": 16,
    "num_heads": 2,
    "num_layers": 2,
    "d_model": 16,
    "d_latent": 24,
    "qk_nope_dim": 4,
    "qk_rope_dim": 8,
    "d_ff": 32,
    "text_seq_len": 12,
    "vocab_size": 11,
    "vision": {"backbone": "test_resnet", "grid": 2},
    "moe": {"num_experts": 4, "k": 2},
}
