"""Adapters for the libraries LLM applications use: :mod:`mmsearch.integrations.langchain`."""
