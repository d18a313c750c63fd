"""Train a MoF model: `python train.py [mof=interleaved] [stage=pretrain] [key=value ...]`; `-m` for sweeps."""
from mof.cli import train

if __name__ == "__main__":
    train()
