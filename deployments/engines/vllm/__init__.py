"""The real engine: vLLM's AsyncLLM inside an LLMServer replica."""
