"""Pre-train a tiny encoder on synthetic images: `python pretrain.py encoder=clip|dino [out=DIR]`."""
from mof.cli import pretrain

if __name__ == "__main__":
    pretrain()
