"""The LangChain retriever and embeddings, tested with langchain-core itself, in-process and over HTTP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda
from serving import Server
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app
from mmsearch.errors import MmsearchError
from mmsearch.integrations.langchain import MmsearchEmbeddings, MmsearchRetriever

runner = CliRunner()


@pytest.fixture
def index(photos: Path, tmp_path: Path) -> Path:
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(photos), "--model", "fake", "--index", str(idx), "-q"]).exit_code == 0
    return idx


def test_the_retriever_returns_the_engine_s_ranking_as_documents(index: Path) -> None:
    with Engine.open(index) as eng:
        want = eng.search("a red car", target="any", k=3)
        retriever = MmsearchRetriever(engine=eng, k=3, target="any")
        docs = retriever.invoke("a red car")
        assert all(isinstance(d, Document) for d in docs)
        assert [(d.metadata["path"], d.metadata["score"]) for d in docs] == [(h.path, round(h.score, 6)) for h in want]
        note = next(d for d in docs if d.metadata["modality"] == "text")
        assert "red car" in note.page_content  # a note's words, for the LLM to read
        picture = next(d for d in docs if d.metadata["modality"] == "image")
        assert picture.page_content == Path(picture.metadata["path"]).name and "width" in picture.metadata
        # it composes like any runnable
        chain = retriever | RunnableLambda(lambda ds: [Path(d.metadata["path"]).name for d in ds])
        assert chain.invoke("a red car") == [Path(h.path).name for h in want]
        vecs = MmsearchEmbeddings(engine=eng).embed_documents(["red", "blue"])
        np.testing.assert_allclose(vecs, eng.embed("text", ["red", "blue"]), atol=1e-6)


def test_the_retriever_and_embeddings_work_against_a_server_with_a_token(index: Path) -> None:
    from mmsearch.server import create_app

    with Engine.open(index) as eng:
        want = [h.path for h in eng.search("blue", k=2)]
        want_vec = eng.embed("text", ["blue"])[0]
    server = Server(create_app(index, token="s3cret"))
    try:
        docs = MmsearchRetriever(url=server.url, token="s3cret", k=2).invoke("blue")
        assert [d.metadata["path"] for d in docs] == want
        np.testing.assert_allclose(
            MmsearchEmbeddings(url=server.url, token="s3cret").embed_query("blue"), want_vec, atol=1e-6
        )
        with pytest.raises(MmsearchError, match="401"):
            MmsearchRetriever(url=server.url, k=2).invoke("blue")
    finally:
        server.stop()
    with pytest.raises(MmsearchError, match="cannot reach mmsearch"):
        MmsearchRetriever(url=server.url, k=1).invoke("blue")
