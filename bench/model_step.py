"""Model step (forward, backward, AdamW step), fp32 on CPU.

1. `mof=none` against transformers' `LlavaForConditionalGeneration` on the same small configuration
   (6-layer ViT, 6-layer Llama), the same weights (imported with `from_llava`) and the same batch.
2. `additive`, `interleaved`, `concat` against `none`, beside the ratio predicted from FLOPs.

    python bench/model_step.py [--repeats 20] [--batch 4]
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import alternate, median, record, table
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from mof import MofForConditionalGeneration

VIT = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=7, num_attention_heads=8, image_size=224,
           patch_size=16, projection_dim=256)  # feature layer -2: 6 layers run
LLM = dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=6,
           vocab_size=4000, tie_word_embeddings=False)
IMAGE_TOKEN = 3999
TEXT_LEN = 64


def step_fn(model, batch):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def make_batch(n_visual: int, batch: int, pixels):
    g = torch.Generator().manual_seed(0)
    text = torch.randint(10, 3000, (batch, TEXT_LEN), generator=g)
    ids = torch.cat([text[:, :1], torch.full((batch, n_visual), IMAGE_TOKEN), text[:, 1:]], dim=1)
    labels = ids.masked_fill(ids == IMAGE_TOKEN, -100)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "pixel_values": pixels}


def flops_per_token_llm(cfg) -> float:
    h, i, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    return 2 * L * (4 * h * h + 3 * h * i)  # weights only; attention scores are small at these lengths


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args()
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(LlavaConfig(vision_config=CLIPVisionConfig(**VIT), text_config=LlamaConfig(**LLM),
                                                      image_token_id=IMAGE_TOKEN)).train()
    llava.model.vision_tower.requires_grad_(False)
    ours = MofForConditionalGeneration.from_llava(copy.deepcopy(llava)).train()
    n = ours.num_visual_tokens
    pixels = torch.randn(a.batch, 3, 224, 224)
    b = make_batch(n, a.batch, pixels)
    assert torch.allclose(llava(**b).loss, ours(**b).loss, atol=1e-5)
    times = alternate({"llava": step_fn(llava, b), "mof_none": step_fn(ours, b)}, a.repeats)
    t_llava, t_none = median(times["llava"]), median(times["mof_none"])
    rows = [["transformers LLaVA", f"{t_llava * 1000:.1f}", "1.000"],
            ["mof none (same weights)", f"{t_none * 1000:.1f}", f"{t_none / t_llava:.3f}"]]
    body1 = table(["model", "median step (ms)", "ratio to LLaVA"], rows)

    dino = {"type": "dinov2", "config": {k: VIT[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                            "patch_size", "image_size")} | {"mlp_ratio": 4},
            "feature_layer": -2}
    models = {"none": ours}
    for fusion in ("additive", "interleaved"):
        torch.manual_seed(0)
        models[fusion] = MofForConditionalGeneration.from_llava(copy.deepcopy(llava), extra_encoders=[dino],
                                                                fusion=fusion).train()
    concat_config = copy.deepcopy(models["interleaved"].config)
    concat_config.fusion = {"type": "concat"}  # a new projector (wider input); towers and LLM as the others
    models["concat"] = MofForConditionalGeneration(concat_config).train()
    shared = {k: v for k, v in models["interleaved"].state_dict().items() if not k.startswith("fusion.")}
    models["concat"].load_state_dict(shared, strict=False)
    steps, predicted = {}, {}
    llm_flops = flops_per_token_llm(LLM)
    vit_tokens = (224 // 16) ** 2
    vit_flops = 2 * 6 * (4 * VIT["hidden_size"] ** 2 + 2 * VIT["hidden_size"] * VIT["intermediate_size"]) * (vit_tokens + 1)
    for fusion, model in models.items():
        nv = model.num_visual_tokens
        steps[fusion] = step_fn(model, make_batch(nv, a.batch, pixels))  # one tensor: the same pixels for every encoder
        encoders = len(model.vision_encoders)
        # training: 3x forward FLOPs for the trained LLM and projectors, 1x for the frozen towers
        predicted[fusion] = 3 * llm_flops * (nv + TEXT_LEN) + encoders * vit_flops
    times = alternate(steps, a.repeats)
    base = median(times["none"])
    rows = [[f, model.num_visual_tokens, f"{median(times[f]) * 1000:.1f}", f"{median(times[f]) / base:.2f}",
             f"{predicted[f] / predicted['none']:.2f}"] for f, model in models.items()]
    body2 = table(["fusion", "visual tokens", "median step (ms)", "measured ratio", "FLOPs ratio"], rows)
    record("Model step: mof vs transformers LLaVA, and fusion modes",
           f"batch {a.batch}, {TEXT_LEN} text tokens, fp32, {a.repeats} alternating repeats\n\n{body1}\n\n{body2}",
           "Target: mof none / LLaVA <= 1.05.")


if __name__ == "__main__":
    main()
