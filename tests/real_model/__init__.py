"""Real-model tests: the library against llama.cpp's llama-server running SmolLM2-135M."""
