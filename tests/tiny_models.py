"""Tiny randomly initialised models of the real classes, saved to a folder and loaded by path as a real run loads
the paper's models: a Qwen3 causal LM with a chat template, and a VITS (MMS-TTS) voice."""

from __future__ import annotations

import json
from pathlib import Path


# A chat template in Qwen3's style: it knows the enable_thinking switch and writes an empty think block.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


CORPUS = [
    "The ground truth emotion is neutral, happy, sad, anger, surprise, disgust or fear.",
    "neutral: 0.1, happy: 0.2, sad: 0.3, anger: 0.1, surprise: 0.1, disgust: 0.1, fear: 0.1",
    "I am so glad to see you again! What a wonderful day.",
    "Why would you do that? I can't believe it.",
    "Я очень рад этой новости, спасибо большое.",
    "Мне страшно, что-то шумит за дверью.",
    "Эмоция: нейтральная, радость, грусть, злость, удивление, отвращение, страх.",
    "Reply with a single JSON object { \"a\": 1 } and nothing else.",
]


def build_tiny_causal_lm(folder: Path, seed: int = 0, hidden: int = 32, layers: int = 2, vocab_size: int = 600,
                         extra_text: tuple[str, ...] = ()) -> Path:
    """A random Qwen3 (default: 2 layers, hidden 32) and a BPE tokenizer trained on a few EN+RU sentences, saved
    to ``folder`` with a chat template. ``extra_text`` joins the tokenizer's training text (a benchmark trains it
    on its prompts, so that they tokenise to a realistic length). Shared with tests/augment/test_ls_llm.py and
    benchmarks/ls_llm.py."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((CORPUS + list(extra_text)) * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                      max_position_embeddings=2048,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    Qwen3ForCausalLM(cfg).save_pretrained(folder)
    return folder


def tiny_vits(folder):
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    torch.manual_seed(0)  # the random weights, so that the test is the same every run
    chars = list(" abcdefghijklmnopqrstuvwxyz',.!?-") + list("абвгдеёжзийклмнопрстуфхцчшщъыьэюя")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(["<pad>"] + chars)},
                                                  ensure_ascii=False), encoding="utf-8")
    tok = VitsTokenizer(str(folder / "vocab.json"), add_blank=True, normalize=True, phonemize=False)
    cfg = VitsConfig(vocab_size=len(chars) + 1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     ffn_dim=64, flow_size=32, spectrogram_bins=65, upsample_initial_channel=32,
                     upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8], resblock_kernel_sizes=[3],
                     resblock_dilation_sizes=[[1, 3]], posterior_encoder_num_wavenet_layers=2,
                     prior_encoder_num_flows=2, prior_encoder_num_wavenet_layers=2, duration_predictor_num_flows=2,
                     duration_predictor_filter_channels=32, depth_separable_num_layers=2, sampling_rate=16000)
    VitsModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
