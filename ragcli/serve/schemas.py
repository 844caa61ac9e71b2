"""Request bodies of the server's endpoints. Strict: a wrong type or an unknown field is a 422.

`POST /query` keeps the contract of the HTTP backend ragcli grew from:
`{"query": "What is a delta lake", "top_k": 1, "query_context": true}`, plus `mode` and `compare`.

`POST /v1/chat/completions` takes what the OpenAI client and chat UIs send. The question is the text
of the last message, which must be the user's; earlier messages and system prompts are accepted but
not given to the model (ragcli answers one question from the retrieved passages). Decoding is greedy:
`temperature`, `top_p` and `seed` are accepted and ignored, and the response's `ragcli.ignored` names
the ones that were sent. The extension object `ragcli` turns retrieval off (`"retrieval": false`),
asks for the sources (`"return_sources": true`) and sets `top_k` and `mode`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["dense", "bm25", "hybrid"]
MAX_QUESTION_CHARS = 16_000  # a first, cheap bound; the generator's token limit is checked next
MAX_MESSAGES = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class QueryRequest(_Strict):
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="The question.")]
    top_k: Annotated[int | None, Field(ge=1, description="Chunks to retrieve (default: the server's).")] = None
    query_context: Annotated[bool, Field(description="Answer from retrieved passages (true) or the bare question.")] = True
    mode: Annotated[Mode | None, Field(description="Retrieval: dense, bm25 or hybrid (default: the server's).")] = None
    compare: Annotated[bool, Field(description="Answer both with and without context.")] = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False


class RagcliOptions(_Strict):
    retrieval: Annotated[bool, Field(description="Retrieve passages and answer from them (default true).")] = True
    return_sources: Annotated[bool, Field(description="Return the retrieved sources in `ragcli.sources`.")] = False
    top_k: Annotated[int | None, Field(ge=1)] = None
    mode: Mode | None = None


class ChatRequest(_Strict):
    model: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1)] = None
    n: Annotated[int | None, Field(ge=1, le=1, description="Only one choice is generated.")] = None
    # Accepted and ignored: decoding is greedy (listed in the response's ragcli.ignored when sent).
    temperature: Annotated[float | None, Field(ge=0, le=2, allow_inf_nan=False)] = None
    top_p: Annotated[float | None, Field(ge=0, le=1, allow_inf_nan=False)] = None
    seed: int | None = None
    user: str | None = None
    ragcli: RagcliOptions | None = None

    IGNORED: ClassVar[tuple[str, ...]] = ("temperature", "top_p", "seed", "user")
