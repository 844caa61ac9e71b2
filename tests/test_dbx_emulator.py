"""The Vector Search emulator, driven through the real databricks-ai-search 0.81 client (nothing mocked)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.databricks

pytest.importorskip("databricks.ai_search")

import requests  # noqa: E402
from databricks.ai_search.client import AISearchClient  # noqa: E402
from databricks.ai_search.exceptions import (  # noqa: E402
    AISearchException,
    BadRequest,
    NotFound,
    ResourceConflict,
    TooManyRequests,
)

try:  # tests/ is on sys.path when it has no __init__.py (pytest's default import mode)
    from dbx_emulator import Emulator
except ImportError:  # pragma: no cover - tests/ became a package
    from tests.dbx_emulator import Emulator

TOKEN = "dapi-test-0123456789abcdef"
EP = "ragcli-ep"
IDX = "main.ragcli.chunks"
DIM = 4
SCHEMA = {
    "id": "string",
    "text": "string",
    "embedding": "array<float>",
    "doc_id": "string",
    "page": "integer",
}
ROWS = [
    {"id": "a", "text": "apples and pears", "embedding": [1.0, 0.0, 0.0, 0.0], "doc_id": "d1", "page": 1},
    {"id": "b", "text": "bananas are yellow", "embedding": [0.9, 0.1, 0.0, 0.0], "doc_id": "d1", "page": 2},
    {"id": "c", "text": "cherries are red", "embedding": [0.0, 1.0, 0.0, 0.0], "doc_id": "d2", "page": 3},
    {"id": "d", "text": "dates are sweet", "embedding": [0.0, 0.0, 1.0, 0.0], "doc_id": "d2", "page": 4},
    {"id": "e", "text": "elderberry syrup", "embedding": [0.0, 0.0, 0.0, 1.0], "doc_id": "d3", "page": 5},
    {
        "id": "f",
        "text": "figs and more figs",
        "embedding": [0.5, 0.5, 0.5, 0.5],
        "doc_id": "d3",
        "page": None,
    },
]


def _score(q, v):
    return 1.0 / (1.0 + sum((a - b) ** 2 for a, b in zip(q, v, strict=True)))


@pytest.fixture(autouse=True)
def _databricks_env(tmp_path, monkeypatch):
    # conftest.py's _isolated also runs; this adds what the client needs on top.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def emu():
    with Emulator(tokens={TOKEN}) as e:
        yield e


@pytest.fixture
def client(emu):
    return AISearchClient(workspace_url=emu.url, personal_access_token=TOKEN, disable_notice=True)


@pytest.fixture
def index(emu, client):
    client.create_endpoint(EP)
    client.create_direct_access_index(
        endpoint_name=EP,
        index_name=IDX,
        primary_key="id",
        embedding_dimension=DIM,
        embedding_vector_column="embedding",
        schema=SCHEMA,
    )
    idx = client.get_index(endpoint_name=EP, index_name=IDX)
    assert idx.upsert(ROWS)["status"] == "SUCCESS"
    emu.clear_log()
    return idx


def _search(idx, **kwargs):
    kwargs.setdefault("columns", ["id", "text"])
    return idx.similarity_search(disable_notice=True, **kwargs)


def _ids(resp):
    return [row[0] for row in resp["result"].get("data_array", [])]


# ---------------------------------------------------------------- lifecycle


def test_endpoint_and_index_lifecycle(emu, client):
    client.create_endpoint(EP)
    assert client.get_endpoint(EP)["endpoint_status"]["state"] == "ONLINE"
    with pytest.raises(ResourceConflict):
        client.create_endpoint(EP)

    client.create_direct_access_index(
        endpoint_name=EP,
        index_name=IDX,
        primary_key="id",
        embedding_dimension=DIM,
        embedding_vector_column="embedding",
        schema=SCHEMA,
    )
    with pytest.raises(ResourceConflict) as conflict:
        client.create_direct_access_index(
            endpoint_name=EP,
            index_name=IDX,
            primary_key="id",
            embedding_dimension=DIM,
            embedding_vector_column="embedding",
            schema=SCHEMA,
        )
    assert conflict.value.error_code == "RESOURCE_ALREADY_EXISTS"

    idx = client.get_index(endpoint_name=EP, index_name=IDX)
    info = idx.describe()
    assert info["endpoint_name"] == EP
    assert info["status"]["ready"] is True
    assert info["status"]["detailed_state"] == "ONLINE_DIRECT_ACCESS"
    spec = info["direct_access_index_spec"]
    assert json.loads(spec["schema_json"]) == SCHEMA
    assert spec["embedding_vector_columns"] == [{"name": "embedding", "embedding_dimension": DIM}]
    assert [i["name"] for i in client.list_indexes(EP)["vector_indexes"]] == [IDX]
    assert client.index_exists(index_name=IDX)  # index-scoped path, no endpoint

    with pytest.raises(NotFound) as missing:
        client.get_index(endpoint_name=EP, index_name="main.ragcli.nope")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(BadRequest):  # not a three-part name
        client.create_direct_access_index(
            endpoint_name=EP,
            index_name="nodots",
            primary_key="id",
            embedding_dimension=DIM,
            embedding_vector_column="embedding",
            schema=SCHEMA,
        )

    client.delete_index(endpoint_name=EP, index_name=IDX)
    assert not client.index_exists(endpoint_name=EP, index_name=IDX)

    paths = {(r.method, r.path) for r in emu.requests("get-index")}
    assert ("GET", f"/api/2.0/vector-search/endpoints/{EP}/indexes/{IDX}") in paths
    assert ("GET", f"/api/2.0/vector-search/indexes/{IDX}") in paths
    assert all(r.sdk_version for r in emu.requests())


# ---------------------------------------------------------------- upsert, delete, scan


def test_upsert_reports_failed_rows_and_log_elides_vectors(emu, index):
    good = {"id": "g", "text": "grapes", "embedding": [0.1, 0.2, 0.3, 0.4], "doc_id": "d4", "page": 7}
    resp = index.upsert(
        [
            good,
            {"id": "h", "text": "x", "embedding": [0.1, 0.2], "doc_id": "d4"},  # wrong dimension
            {"id": "i", "embedding": [0.0] * DIM, "colour": "red"},  # unknown column
            {"text": "no key", "embedding": [0.0] * DIM},  # missing primary key
            {"id": "j", "embedding": [0.0] * DIM, "page": "seven"},  # wrong type
        ]
    )
    assert resp["status"] == "PARTIAL_SUCCESS"
    assert resp["result"]["success_row_count"] == 1
    assert resp["result"]["failed_primary_keys"] == ["h", "i", None, "j"]

    resp = index.upsert([{"id": "k", "embedding": [1.0]}])
    assert resp["status"] == "FAILURE"
    assert resp["result"]["failed_primary_keys"] == ["k"]

    resp = index.upsert([dict(good, text="green grapes")])  # replaces the row
    assert resp == {"status": "SUCCESS", "result": {"success_row_count": 1}}
    stored = {r["id"]: r for r in emu.rows(IDX)}
    assert set(stored) == {"a", "b", "c", "d", "e", "f", "g"}
    assert stored["g"]["text"] == "green grapes"
    assert index.describe()["status"]["indexed_row_count"] == 7

    (first, *_rest) = emu.requests("upsert-data")
    assert first.method == "POST"
    assert first.path == f"/api/2.0/vector-search/indexes/{IDX}/upsert-data"
    assert first.body["inputs_json"][0]["embedding"] == "<vector dim=4>"
    assert first.body["inputs_json"][1]["embedding"] == "<vector dim=2>"


def test_delete_and_scan(emu, index):
    resp = index.delete(["a", "c", "not-there"])  # DELETE with a JSON body; unknown keys succeed
    assert resp["status"] == "SUCCESS"
    assert [r["id"] for r in emu.rows(IDX)] == ["b", "d", "e", "f"]
    (rec,) = emu.requests("delete-data")
    assert rec.method == "DELETE" and rec.body == {"primary_keys": ["a", "c", "not-there"]}

    seen, last = [], None
    while True:
        page = index.scan(num_results=3, last_primary_key=last)
        if not page["data"]:
            break
        for row in page["data"]:
            fields = {f["key"]: f["value"] for f in row["fields"]}
            seen.append(fields["id"]["string_value"])
        last = page["last_primary_key"]
    assert seen == ["b", "d", "e", "f"]
    scans = emu.requests("scan")
    assert scans[0].method == "GET" and scans[0].body == {"num_results": 3, "endpoint_name": EP}
    assert scans[1].body["last_primary_key"] == "e"

    first = index.scan(num_results=1)["data"][0]["fields"]
    assert {f["key"]: f["value"] for f in first} == {
        "id": {"string_value": "b"},
        "text": {"string_value": "bananas are yellow"},
        "embedding": {"list_value": {"values": [{"number_value": v} for v in (0.9, 0.1, 0.0, 0.0)]}},
        "doc_id": {"string_value": "d1"},
        "page": {"number_value": 2.0},
    }


# ---------------------------------------------------------------- query


def test_similarity_search_orders_by_l2_score(index):
    q = [0.8, 0.3, 0.1, 0.0]
    resp = _search(index, columns=["id", "doc_id"], query_vector=q, num_results=10)
    assert resp["manifest"]["columns"] == [{"name": "id"}, {"name": "doc_id"}, {"name": "score"}]
    assert resp["manifest"]["column_count"] == 3
    expected = sorted(((_score(q, r["embedding"]), r["id"]) for r in ROWS), key=lambda t: (-t[0], t[1]))
    assert _ids(resp) == [i for _, i in expected]
    for row, (score, _) in zip(resp["result"]["data_array"], expected, strict=True):
        assert row[-1] == pytest.approx(score, rel=1e-12)
    assert resp["result"]["row_count"] == len(ROWS)
    assert "next_page_token" not in resp

    identical = _search(index, query_vector=ROWS[3]["embedding"], num_results=1)
    assert identical["result"]["data_array"] == [["d", "dates are sweet", 1.0]]
    assert len(_ids(_search(index, query_vector=q))) == 5  # the client's default num_results

    with pytest.raises(BadRequest, match="dimension"):
        _search(index, query_vector=[1.0, 0.0])
    with pytest.raises(BadRequest):
        _search(index, columns=["id", "nope"], query_vector=q)
    with pytest.raises(BadRequest):  # no vector: the emulator never embeds
        _search(index, query_text="apples")


def test_filters(index):
    q = [1.0, 0.0, 0.0, 0.0]

    def ids(filters):
        return sorted(_ids(_search(index, query_vector=q, num_results=10, filters=filters)))

    assert ids({"doc_id": "d2"}) == ["c", "d"]
    assert ids({"doc_id": ["d1", "d3"]}) == ["a", "b", "e", "f"]
    assert ids({"doc_id NOT": "d1"}) == ["c", "d", "e", "f"]
    assert ids({"page <": 3}) == ["a", "b"]
    assert ids({"page >=": 2, "page <=": 4}) == ["b", "c", "d"]  # several keys: AND; null page never matches
    assert ids({"text LIKE": "are"}) == ["b", "c", "d"]
    assert ids({"text LIKE": "figs", "doc_id": "d3"}) == ["f"]
    with pytest.raises(BadRequest):
        ids({"colour": "red"})
    with pytest.raises(BadRequest):
        ids({"doc_id OR page": ["d1", 3]})


def test_hybrid_is_rrf_of_vector_and_bm25_ranks(emu, index):
    q = [1.0, 0.0, 0.0, 0.0]
    resp = _search(index, query_vector=q, query_text="elderberry", query_type="hybrid", num_results=10)
    (rec,) = emu.requests("query")
    assert rec.body["query_type"] == "hybrid"  # case kept by the client, accepted by the emulator
    vector_order = [
        i
        for _, i in sorted(((_score(q, r["embedding"]), r["id"]) for r in ROWS), key=lambda t: (-t[0], t[1]))
    ]
    vrank = {pk: n for n, pk in enumerate(vector_order, start=1)}
    expected = {pk: 1 / (60 + vrank[pk]) + (1 / 61 if pk == "e" else 0.0) for pk in vrank}
    got = {row[0]: row[-1] for row in resp["result"]["data_array"]}
    assert got == pytest.approx(expected)
    assert _ids(resp)[:3] == ["e", "a", "b"]  # e: last by vector but first by text; 1/66 + 1/61 > 1/61
    assert [row[-1] for row in resp["result"]["data_array"]] == sorted(got.values(), reverse=True)


def test_score_threshold(index):
    q = [1.0, 0.0, 0.0, 0.0]
    resp = _search(index, query_vector=q, num_results=10, score_threshold=0.5)
    scores = {row[0]: row[-1] for row in resp["result"]["data_array"]}
    assert set(scores) == {r["id"] for r in ROWS if _score(q, r["embedding"]) >= 0.5}
    assert all(s >= 0.5 for s in scores.values())


def test_paging_over_1000_rows(emu, client):
    client.create_endpoint(EP)
    client.create_direct_access_index(
        endpoint_name=EP,
        index_name=IDX,
        primary_key="id",
        embedding_dimension=DIM,
        embedding_vector_column="embedding",
        schema={"id": "string", "embedding": "array<float>"},
    )
    idx = client.get_index(endpoint_name=EP, index_name=IDX)
    rows = [{"id": f"r{i:05d}", "embedding": [i / 2500, 1 - i / 2500, (i % 7) / 7, 0.0]} for i in range(2500)]
    assert idx.upsert(rows)["result"]["success_row_count"] == 2500
    emu.clear_log()

    resp = _search(idx, columns=["id"], query_vector=[0.0, 1.0, 0.0, 0.0], num_results=2100)
    data = resp["result"]["data_array"]
    assert resp["result"]["row_count"] == len(data) == 2100
    assert len({row[0] for row in data}) == 2100
    scores = [row[-1] for row in data]
    assert scores == sorted(scores, reverse=True)
    assert [r.op for r in emu.requests()] == ["query", "query-next-page", "query-next-page"]
    assert all(r.method == "GET" and r.status == 200 for r in emu.requests())
    assert emu.requests("query-next-page")[0].body["endpoint_name"] == EP

    hybrid = _search(
        idx,
        columns=["id"],
        query_vector=[0.0, 1.0, 0.0, 0.0],
        query_text="r00001",
        query_type="HYBRID",
        num_results=1000,
    )
    assert hybrid["result"]["row_count"] == 200
    with pytest.raises(BadRequest):
        _search(idx, columns=["id"], query_vector=[0.0, 1.0, 0.0, 0.0], num_results=10_001)


# ---------------------------------------------------------------- auth and faults


def test_wrong_token_is_401_and_never_echoed(emu, index):
    wrong = "dapi-wrong-SECRET-4242"
    bad = AISearchClient(workspace_url=emu.url, personal_access_token=wrong, disable_notice=True)
    with pytest.raises(AISearchException) as err:
        bad.get_index(endpoint_name=EP, index_name=IDX)
    assert err.value.status_code == 401
    assert err.value.error_code == "UNAUTHENTICATED"
    for text in (str(err.value), repr(err.value), err.value.response_content.decode()):
        assert wrong not in text and TOKEN not in text
    (rec,) = emu.requests("get-index")
    assert rec.auth == "bearer" and rec.authorized is False and rec.status == 401
    log_dump = repr(emu.requests())
    assert wrong not in log_dump and TOKEN not in log_dump

    no_auth = requests.get(f"{emu.url}/api/2.0/vector-search/endpoints", timeout=5)
    assert no_auth.status_code == 401 and no_auth.json()["error_code"] == "UNAUTHENTICATED"


def test_429_on_get_is_retried_by_the_client(emu, index):
    emu.fail("get-index", 429, times=1, retry_after=0)
    t0 = time.monotonic()
    idx = AISearchClient(workspace_url=emu.url, personal_access_token=TOKEN, disable_notice=True).get_index(
        endpoint_name=EP, index_name=IDX
    )
    assert idx.name == IDX
    assert time.monotonic() - t0 < 2  # urllib3's first retry waits 0 s
    assert [r.status for r in emu.requests("get-index")] == [429, 200]
    assert emu.requests("get-index")[0].fault == "status:429"
    assert emu.faults_pending() == 0


def test_429_on_post_upsert_raises_at_once(emu, index):
    emu.fail("upsert-data", 429, retry_after=1)
    with pytest.raises(TooManyRequests) as err:
        index.upsert([{"id": "z", "embedding": [0.0] * DIM}])
    assert err.value.status_code == 429 and err.value.error_code == "REQUEST_LIMIT_EXCEEDED"
    assert len(emu.requests("upsert-data")) == 1  # urllib3 never retries POST
    assert "z" not in {r["id"] for r in emu.rows(IDX)}


def test_503_on_query_exhausts_client_retries(emu, index):
    emu.fail("query", 503, times=None)
    with pytest.raises(requests.exceptions.RetryError):
        _search(index, query_vector=[1.0, 0.0, 0.0, 0.0], backoff_factor=0.05)
    assert [r.status for r in emu.requests("query")] == [503] * 4  # 1 try + 3 retries
    emu.clear_faults()
    assert _ids(_search(index, query_vector=[1.0, 0.0, 0.0, 0.0], num_results=1)) == ["a"]


def test_unparseable_500_reset_and_delay(emu, index):
    emu.fail_unparseable("query")
    with pytest.raises(AISearchException) as err:  # 500 is not in the client's retry list
        _search(index, query_vector=[1.0, 0.0, 0.0, 0.0])
    assert err.value.status_code == 500 and err.value.error_code is None
    assert "<html>" in str(err.value)

    emu.reset_connection("get-index")  # GET is retried after a dropped connection
    AISearchClient(workspace_url=emu.url, personal_access_token=TOKEN, disable_notice=True).get_index(
        endpoint_name=EP, index_name=IDX
    )
    assert [r.fault for r in emu.requests("get-index")] == ["reset", None]

    emu.delay("query", 5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            f"{emu.url}/api/2.0/vector-search/indexes/{IDX}/query",
            timeout=0.3,
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"columns": ["id"], "query_vector": [1.0, 0.0, 0.0, 0.0]},
        )


def test_limits(emu, client, index):
    emu.max_upsert_rows = 2
    with pytest.raises(BadRequest, match="Too many rows"):
        index.upsert([{"id": f"x{i}", "embedding": [0.0] * DIM} for i in range(3)])
    emu.max_upsert_rows = None

    emu.max_request_bytes = 300
    with pytest.raises(AISearchException) as err:
        index.upsert([{"id": f"x{i}", "text": "y" * 50, "embedding": [0.0] * DIM} for i in range(5)])
    assert err.value.status_code == 413
    emu.max_request_bytes = None
    assert "x0" not in {r["id"] for r in emu.rows(IDX)}

    emu.max_dimension = 8
    with pytest.raises(BadRequest, match="exceeds"):
        client.create_direct_access_index(
            endpoint_name=EP,
            index_name="main.ragcli.big",
            primary_key="id",
            embedding_dimension=16,
            embedding_vector_column="embedding",
            schema={"id": "string", "embedding": "array<float>"},
        )


# ---------------------------------------------------------------- raw REST forms the client does not use


def test_rest_forms_outside_the_client(emu, index):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {TOKEN}"
    base = f"{emu.url}//api/2.0/vector-search"  # '//' is tolerated

    resp = s.post(
        f"{base}/endpoints/{EP}/indexes/{IDX}/query",
        timeout=5,
        json={"columns": ["id"], "query_vector": [0.0, 0.0, 0.0, 1.0]},
    )
    assert resp.status_code == 200
    assert resp.json()["result"]["row_count"] == len(ROWS)  # REST default num_results is 10

    resp = s.delete(f"{base}/indexes/{IDX}/delete-data", params={"primary_keys": ["a", "b"]}, timeout=5)
    assert resp.json()["status"] == "SUCCESS"
    assert "a" not in {r["id"] for r in emu.rows(IDX)}

    assert s.post(f"{base}/indexes/{IDX}/sync", timeout=5).json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert s.get(f"{base}/endpoints/other-ep/indexes/{IDX}", timeout=5).status_code == 404
    assert s.get(f"{emu.url}/.well-known/databricks-config", timeout=5).status_code == 404
    serving = s.get(f"{emu.url}/api/2.0/serving-endpoints/my-embedder", timeout=5).json()
    assert serving["name"] == "my-embedder" and serving["route_optimized"] is False
    resp = s.get(f"{base}/indexes/{IDX}/query", data=b"{not json", timeout=5)
    assert resp.status_code == 400 and "not json" not in resp.text


def test_service_principal_tokens(monkeypatch):
    with Emulator(
        service_principals={"sp-id": "sp-secret-xyz"},
        endpoints=[EP],
        index_url_host="localhost",
        refused_scopes={"all-apis"},
        enforce_authorization_details=True,
    ) as emu:
        emu.create_direct_access_index(
            EP,
            IDX,
            primary_key="id",
            embedding_dimension=DIM,
            embedding_vector_column="embedding",
            schema=SCHEMA,
        )
        sp = AISearchClient(
            workspace_url=emu.url,
            service_principal_client_id="sp-id",
            service_principal_client_secret="sp-secret-xyz",
            disable_notice=True,
        )
        idx = sp.get_index(endpoint_name=EP, index_name=IDX)
        assert idx.upsert(ROWS)["status"] == "SUCCESS"
        assert _ids(_search(idx, query_vector=[1.0, 0.0, 0.0, 0.0], num_results=1)) == ["a"]

        tokens = emu.requests("oidc-token")
        assert all(r.auth == "basic" and r.oauth_client_id == "sp-id" for r in tokens)
        assert [r.status for r in tokens[:2]] == [403, 200]  # all-apis refused, then the client falls back
        granted = [r.body for r in tokens if r.status == 200]
        assert granted[0]["authorization_details"] is None  # control plane
        ops = {d["authorization_details"][0]["operation"] for d in granted[1:]}
        assert ops == {"WriteVectorIndex", "ReadVectorIndex"}
        data_calls = emu.requests("upsert-data") + emu.requests("query")
        assert all(r.path.startswith(f"/api/2.0/vector-search/endpoints/{EP}/indexes/") for r in data_calls)
        assert "sp-secret-xyz" not in repr(emu.requests())


def test_command_line_entry_point():
    script = Path(__file__).with_name("dbx_emulator.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--token", "dapi-demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        resp = requests.get(
            f"{url}/api/2.0/vector-search/endpoints", timeout=5, headers={"Authorization": "Bearer dapi-demo"}
        )
        assert resp.status_code == 200 and resp.json() == {"endpoints": []}
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
