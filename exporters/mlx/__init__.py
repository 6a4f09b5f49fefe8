"""MLX artifacts for Apple GPUs (`--target mlx`): `exporter` writes the folder (safetensors,
config.json, graph.json), `runtime` rebuilds and runs it with MLX."""
