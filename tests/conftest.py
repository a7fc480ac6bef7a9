"""Tiny offline models and tokenizers: nothing downloads, every test runs in seconds."""

from __future__ import annotations

import string

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_char_tokenizer(chat: bool = True):
    """A character-level fast tokenizer with BOS/EOS/PAD and (optionally) a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "<|end|>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
    chars = list(string.ascii_letters + string.digits + string.punctuation + " \n")
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.add_special_tokens({"additional_special_tokens": specials[4:]})
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_llama(
    vocab_size: int,
    *,
    seed: int = 0,
    dtype=torch.float32,
    layers: int = 2,
    init_range: float = 0.02,
):
    """A random 2-layer Llama; a larger ``init_range`` lets a frozen head express sharp outputs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
        initializer_range=init_range,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return model.eval()


@pytest.fixture(scope="session")
def char_tokenizer():
    return make_char_tokenizer()


@pytest.fixture
def tiny_llama(char_tokenizer):
    return make_tiny_llama(len(char_tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_tokenizer):
    """A saved tiny model folder, loadable by path like any local model."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_llama(len(char_tokenizer)).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    # Two torch threads contend badly on a shared 2-core machine.
    torch.set_num_threads(1)


def run_torchrun(args: list[str], cwd, nproc: int = 2):
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m dataplan <args>``: N
    CPU processes on gloo, one torch thread each, offline; the completed process."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "dataplan",
        *args,
    ]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
