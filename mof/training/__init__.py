"""Training: the LightningModule, callbacks, optimizer, strategies (DeepSpeed on GPUs and CPU processes) and `train(cfg)`."""
