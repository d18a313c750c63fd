"""Pre-training the tiny encoders `mof` ships: a CLIP (contrastive, on captions that name only some properties)
and a DINO (self-distillation, no text) on synthetic images. `python pretrain.py encoder=clip|dino`."""
