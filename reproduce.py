"""The paper in miniature on a laptop: `python reproduce.py [seeds=[0,1,2]] [train_overrides=[...]]`."""
from mof.cli import reproduce

if __name__ == "__main__":
    reproduce()
