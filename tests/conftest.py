import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist (`-n 2`, pyproject's addopts) each worker gets its share of the cores, not all of them.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _workers)))


@pytest.fixture
def tiny_llava(tmp_path):
    """A tiny random transformers LLaVA saved to a temporary directory."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=600, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=550, image_seq_length=16)
    model = LlavaForConditionalGeneration(config).eval()
    path = tmp_path / "tiny-llava"
    model.save_pretrained(path)
    return model, str(path)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Small synthetic data shared by the training and evaluation tests (generated once)."""
    from mof.data.synthetic import generate
    from mof.evaluation.benchmarks.synthetic import synthetic_benchmark_root

    d = tmp_path_factory.mktemp("data")
    generate(d / "synthetic" / "train", pairs_per_pattern=4)
    synthetic_benchmark_root(d, pairs_per_pattern=2)
    return d
