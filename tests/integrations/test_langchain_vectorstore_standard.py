"""KaLMVectorStore against LangChain's standard vector-store suite, on every kalm_rag backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_kalm import KaLMVectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests


class _Standard(VectorStoreIntegrationTests):
    backend = "brute"

    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorStore]:
        store = KaLMVectorStore(self.get_embeddings(), index=self.backend)
        try:
            yield store
        finally:
            store.close()


class TestBruteForceStandard(_Standard):
    backend = "brute"


class TestHnswStandard(_Standard):
    backend = "hnsw"


class TestQdrantStandard(_Standard):
    backend = "qdrant"
