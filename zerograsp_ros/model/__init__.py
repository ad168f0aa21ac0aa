"""The ZeroGrasp network on ocnn: config, inputs, network, losses, checkpoints, inference."""
