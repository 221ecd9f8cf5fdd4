"""Model adapters: everything that teaches verl and vLLM about one model family lives in its own subpackage."""
