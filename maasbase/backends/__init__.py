"""Inference backend definitions (vLLM, SGLang, llama.cpp, ...) as data."""
