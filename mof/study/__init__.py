"""The paper in miniature, one command (`python reproduce.py`): the tiny CLIP on MMVP-VLM, mining CLIP-blind pairs
with the tiny CLIP and DINO, a benchmark from the mined pairs, MLLMs on the frozen encoders with each fusion over
seeds, and the paper's analyses. Each step is cached in its folder; a rerun continues where it stopped."""
