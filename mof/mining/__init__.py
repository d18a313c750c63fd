"""Mining CLIP-blind pairs: images -> two embeddings each -> CLIP-near, DINO-far pairs -> a benchmark to fill in."""
