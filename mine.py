"""Find CLIP-blind pairs: `python mine.py images=DIR encoders.clip=openai/clip-vit-large-patch14 encoders.dino=facebook/dinov2-large`."""
from mof.cli import mine

if __name__ == "__main__":
    mine()
