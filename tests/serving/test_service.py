"""The export bundle and the HTTP service, on a tiny trained model: results, cold-start adds,
explanations, bad requests, persistence."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from mmrec.serving.app import create_app
from mmrec.serving.bundle import Bundle
from mmrec.serving.index import INDEX_TYPES, build_index, recall_against_exact
from mmrec.serving.recommender import Recommender

pytestmark = pytest.mark.integration  # full train / export / serve runs: `pytest -m integration`

TOKEN = "test-token-0123456789"


@pytest.fixture
def client(bundle_dir, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)  # each test mutates its own copy
    recommender = Recommender(Bundle.load(bundle), media_root=tmp_path / "media")
    (tmp_path / "media").mkdir()
    app = create_app(recommender, max_upload_bytes=200_000, api_token=TOKEN)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        c.recommender = recommender
        yield c


def test_bundle_has_no_pickle_and_names_its_versions(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert {"torch", "faiss-cpu", "transformers", "mmrec"} <= set(manifest["versions"])
    assert manifest["sizes"]["num_items"] == 60 and manifest["dim"] == 32 and "test/recall@20" in manifest["metrics"]
    import yaml
    from safetensors import safe_open

    from mmrec.serving.index import read_index

    readers = {
        ".safetensors": lambda p: safe_open(str(p), "pt").keys(),
        ".json": lambda p: json.loads(p.read_text()),
        ".yaml": lambda p: yaml.safe_load(p.read_text()),
        ".faiss": lambda p: read_index(str(p)),
        ".txt": lambda p: p.read_text(),
        ".md": lambda p: p.read_text(),
    }
    for path in bundle_dir.rglob("*"):
        if path.is_file():
            assert path.suffix in readers, f"{path.name}: not a known pickle-free format"
            readers[path.suffix](path)  # each parses with a reader that cannot run code
    card = (bundle_dir / "README.md").read_text()
    assert "60 items" in card and "| test/recall@20 |" in card and "**Limits**" in card


def test_recommend_matches_the_model_and_excludes_history(client):
    rec = client.recommender
    history = ["i00001", "i00002", "i00003"]
    body = client.post("/recommend", json={"history": history, "k": 5}).json()["items"]
    assert len(body) == 5 and not {i["item_id"] for i in body} & set(history)
    scores = [i["score"] for i in body]
    assert scores == sorted(scores, reverse=True)
    user = rec.embed_user([rec.positions[h] for h in history])
    all_scores = rec.bundle.catalogue["embeddings"] @ user
    for h in history:
        all_scores[rec.positions[h]] = -1e9
    expected = [rec.items[p]["item_id"] for p in torch.topk(all_scores, 5).indices.tolist()]
    assert [i["item_id"] for i in body] == expected
    with_seen = client.post("/recommend", json={"history": history, "k": 60, "exclude_seen": False}).json()["items"]
    assert len(with_seen) == 60


def test_search_embeds_a_query_as_a_text_only_item(client, tiny_dataset):
    """A query goes through the text encoder and the item tower with only text present, so an item's
    own text embeds exactly as that item would with its other modalities missing; topic words find
    that topic above chance (1/8). Search quality on the full embedded dataset: experiments/search_eval.py."""
    from mmrec.data.synthetic import TOPICS

    rec = client.recommender
    items = pd.read_csv(tiny_dataset / "items.csv", keep_default_na=False)
    for _, row in items[items["description"] != ""].head(5).iterrows():
        position = rec.positions[row["item_id"]]
        cat = rec.bundle.catalogue
        features = {m: f[position : position + 1] for m, f in cat["features"].items()}
        present = {m: torch.tensor([m == "text"]) for m in cat["present"]}
        as_item = rec.model.embed_items(features, present, torch.tensor([position]), use_ids=False).embedding[0]
        query = rec.embed_queries([f"{row['title']}. {row['description']}"])[0]
        assert float(query @ as_item) > 0.999
    attributes = pd.read_csv(tiny_dataset / "attributes.csv").set_index("item_id")
    hits = []
    for topic, words in TOPICS.items():
        found = client.post("/search", json={"query": " ".join(words[:4]), "k": 3}).json()["items"]
        hits += [attributes.loc[i["item_id"], "topic"] == topic for i in found]
    assert np.mean(hits) >= 2 / 8, hits


def test_a_new_item_is_recommendable_at_once_and_persisted(client, tmp_path, tiny_dataset, bundle_dir):
    rec = client.recommender
    items = pd.read_csv(tiny_dataset / "items.csv", keep_default_na=False)
    row = items[(items["image"] != "") & (items["audio"] != "") & (items["description"] != "")].iloc[0]
    media = tmp_path / "media"
    images = []
    for k, path in enumerate(row["image"].split("|")):
        shutil.copy(tiny_dataset / path, media / f"copy{k}.png")
        images.append(f"copy{k}.png")
    shutil.copy(tiny_dataset / row["audio"], media / "copy.wav")
    new = {
        "item_id": "new-1",
        "title": row["title"],
        "description": row["description"],
        "image": images,
        "audio": "copy.wav",
    }
    refused = client.post("/items", json={**new, "tags": row["tags"]})  # this model has no tags modality
    assert refused.status_code == 422 and "unknown item field(s) ['tags']" in refused.json()["detail"]
    assert client.post("/items", json=new).status_code == 201
    similar = client.get(f"/items/{row['item_id']}/similar", params={"k": 3}).json()["items"]
    assert (
        similar[0]["item_id"] == "new-1" and similar[0]["score"] > 0.95
    )  # its near-duplicate (the original also has an ID vector)
    found = client.post("/search", json={"query": row["title"], "k": 61}).json()["items"]
    assert len(found) == 61 and "new-1" in [i["item_id"] for i in found]  # searchable at once
    assert client.post("/recommend", json={"history": ["new-1"], "k": 3}).status_code == 200  # usable as history
    reloaded = Recommender(Bundle.load(rec.bundle.root))
    assert "new-1" in reloaded.positions and reloaded.live.index.ntotal == 61
    torch.testing.assert_close(reloaded.live.embeddings.view, rec.live.embeddings.view)
    assert client.post("/items", json=new).status_code == 409
    assert client.delete("/items/new-1").status_code == 200
    assert "new-1" not in [
        i["item_id"] for i in client.get(f"/items/{row['item_id']}/similar", params={"k": 3}).json()["items"]
    ]


def test_explanations_are_consistent(client):
    rec = client.recommender
    history = ["i00004", "i00005", "i00006"]
    body = client.post("/recommend", json={"history": history, "k": 3, "explain": True}).json()["items"]
    user = rec.embed_user([rec.positions[h] for h in history])
    for item in body:
        e, position = item["explanation"], rec.positions[item["item_id"]]
        assert e["score"] == pytest.approx(item["score"], abs=1e-5)
        for modality, delta in e["modalities"].items():
            if modality == "item_id":
                masked = rec._item_embedding(position, use_ids=False)
            else:
                masked = rec._item_embedding(position, drop=modality)
            assert e["score"] - delta == pytest.approx(float(user @ masked), abs=1e-5), modality
        for h in e["history"]:
            rest = [rec.positions[x] for x in history if x != h["item_id"]]
            without = float(rec.embed_user(rest) @ rec.bundle.catalogue["embeddings"][position])
            assert e["score"] - h["contribution"] == pytest.approx(without, abs=1e-5)


@pytest.mark.parametrize(
    "method, path, payload, status",
    [
        ("post", "/recommend", {"history": ["nope"]}, 404),
        ("post", "/recommend", {"history": [], "k": 0}, 422),
        ("post", "/recommend", {"history": [], "k": 100000}, 422),
        ("post", "/search", {"query": ""}, 422),
        ("post", "/search", {"query": "   "}, 400),
        ("get", "/items/nope/similar", None, 404),
        ("get", "/items/i00001/similar?k=0", None, 422),
        ("post", "/items", {"item_id": "x", "image": ["../../etc/passwd"]}, 422),
        ("post", "/items", {"item_id": "y", "image": ["missing.png"]}, 422),
        ("post", "/items", {"item_id": "z"}, 422),
        ("delete", "/items/nope", None, 404),
    ],
)
def test_bad_requests_get_4xx(client, method, path, payload, status):
    response = getattr(client, method)(path, json=payload) if payload is not None else getattr(client, method)(path)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_malformed_json_oversize_upload_and_undecodable_media(client, tmp_path):
    assert (
        client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    )
    big = client.post(
        "/items/upload", data={"item_id": "big", "title": "t"}, files={"image": ("x.png", b"0" * 300_000)}
    )
    assert big.status_code == 413
    bad = client.post(
        "/items/upload", data={"item_id": "bad", "title": "t"}, files={"image": ("x.png", b"not an image")}
    )
    assert bad.status_code == 422 and "cannot decode image" in bad.json()["detail"]
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(tmp_path / "ok.png")
    good = client.post(
        "/items/upload",
        data={"item_id": "up-1", "title": "cooking pasta"},
        files={"image": ("a.png", (tmp_path / "ok.png").read_bytes())},
    )
    assert good.status_code == 201 and client.get("/health").json()["items"] == 61


def test_health_and_metrics(client):
    client.post("/recommend", json={"history": ["i00001"], "k": 2})
    assert client.get("/health").json()["status"] == "ok"
    text = client.get("/metrics").text
    assert 'mmrec_requests_total{endpoint="/recommend",status="200"} 1.0' in text
    assert "mmrec_request_seconds_bucket" in text


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_every_index_type_finds_the_exact_neighbours(kind):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    recall = recall_against_exact(build_index(vectors, kind), vectors, vectors[:50], 10)
    assert recall >= {"flat": 1.0, "flat_fp16": 0.99, "hnsw": 0.95, "ivfpq": 0.3}[kind], recall


def test_writes_need_the_token_and_reads_do_not(client):
    new = {"item_id": "auth-1", "title": "x"}
    anonymous = client.post("/v1/items", json=new, headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/v1/items", json=new, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert client.delete("/v1/items/i00001", headers={"Authorization": ""}).status_code == 401
    assert client.post("/v1/recommend", json={"history": ["i00001"]}, headers={"Authorization": ""}).status_code == 200
    assert client.get("/v1/live").json() == {"status": "alive"} and client.get("/v1/ready").status_code == 200
    health = client.get("/v1/health").json()
    assert health["bundle"]["manifest_sha256"] == client.recommender.bundle.identity and health["items"] == 60
    with pytest.raises(ValueError, match="serve.allow_anonymous_writes=true"):
        create_app(client.recommender)


def test_malformed_requests_get_4xx_naming_the_field_not_a_path(client):
    nul = client.post("/v1/items", json={"item_id": "n1", "image": ["a\u0000.png"]})
    assert nul.status_code == 422 and "item field 'image'" in nul.json()["detail"]
    up = client.post("/v1/items", json={"item_id": "n2", "audio": "../../etc/passwd"})
    assert up.status_code == 422 and "without '..'" in up.json()["detail"]
    for bad in ("..", "a/b", "", "x" * 200):
        assert client.post("/v1/items", json={"item_id": bad, "title": "t"}).status_code == 422
    missing = client.post("/v1/items", json={"item_id": "n3", "audio": "absent.wav"})
    assert missing.status_code == 422 and str(client.recommender.media_root) not in missing.json()["detail"]
    explain = client.post("/v1/recommend", json={"history": ["i00001"], "k": 500, "explain": True})
    assert explain.status_code == 422 and "at most 50" in explain.json()["detail"]
    typed = client.post("/v1/recommend", json={"history": "i00001", "k": "many"})
    assert typed.status_code == 422 and {d["field"] for d in typed.json()["detail"]} == {"body.history", "body.k"}


def test_two_worker_processes_share_the_catalogue(bundle_dir, tmp_path):
    """python -m mmrec.serve workers=2: adds through either worker are served by both, none lost."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**__import__("os").environ, "MMREC_API_TOKEN": TOKEN}
    server = subprocess.Popen(
        [sys.executable, "-m", "mmrec.serve", f"bundle={bundle}", f"port={port}", "workers=2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url, auth = f"http://127.0.0.1:{port}/v1", {"Authorization": f"Bearer {TOKEN}"}
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        added, pids = [], set()
        for i in range(16):  # a new connection each time: the kernel spreads them over both workers
            with httpx.Client(timeout=30) as c:
                r = c.post(f"{url}/items", json={"item_id": f"w-{i}", "title": f"added {i}"}, headers=auth)
                assert r.status_code == 201, r.text
                added.append(f"w-{i}")
        for item in added:  # every add is visible through whichever worker answers
            with httpx.Client(timeout=30) as c:
                assert c.get(f"{url}/items/{item}/similar", params={"k": 1}).status_code == 200
                pids.add(c.get(f"{url}/health").json()["items"])
        assert pids == {60 + len(added)}  # both workers count every item
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        posts = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("mmrec_requests_total") and 'endpoint="/items"' in line and 'status="201"' in line
        )
        assert posts == len(added)  # counted across both workers
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_recommend_command_reads_a_bundle_without_writing_to_it(bundle_dir, tmp_path):
    import subprocess
    import sys

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle, ignore=shutil.ignore_patterns("live", "uploads"))
    before = sorted(p.name for p in bundle.rglob("*"))
    out = subprocess.run(
        [sys.executable, "-m", "mmrec.recommend", f"bundle={bundle}", "history=[i00001,i00007]", "k=3"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert len([line for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]) == 3
    assert sorted(p.name for p in bundle.rglob("*")) == before  # no store created in a read-only use


def test_a_dot_product_model_is_served_by_its_own_score(tmp_path, tiny_dataset):
    """model.normalize=false (SASRec's scoring): the bundle keeps the norms and the service ranks by
    the plain dot product, the stored catalogue equal to the item tower's output."""
    from tests.conftest import train_and_export

    bundle = train_and_export(tmp_path, tiny_dataset, "model.normalize=false", "model.temperature=1.0")
    rec = Recommender(Bundle.load(bundle))
    assert rec.model.item_tower.normalize is False and rec.model.user_tower.normalize is False
    embeddings = rec.bundle.catalogue["embeddings"]
    assert embeddings.norm(dim=1).std() > 1e-3  # not unit vectors
    torch.testing.assert_close(rec._item_embedding(7), embeddings[7], atol=1e-5, rtol=1e-5)
    history = ["i00001", "i00002", "i00003"]
    positions = [rec.positions[h] for h in history]
    user = rec.embed_user(positions)
    scores = embeddings @ user
    scores[positions] = -1e9
    top = torch.topk(scores, 5)
    served = rec.recommend(history, k=5, explain=True)
    assert [r.item_id for r in served] == [rec.items[p]["item_id"] for p in top.indices.tolist()]
    assert [r.score for r in served] == pytest.approx(top.values.tolist(), abs=1e-4)
    assert served[0].explanation["score"] == pytest.approx(served[0].score, abs=1e-5)


def test_a_whitened_model_serves_with_the_catalogue_statistics_it_was_trained_with(tmp_path, tiny_dataset):
    """model.whiten: the bundle carries the fitted whitening, so an item recomputed from its stored
    encoder outputs at serving time lands where the exported catalogue has it."""
    from tests.conftest import train_and_export

    frozen = ["encoder.image.mode=frozen", "encoder.audio.mode=frozen", "model.whiten=0.5"]
    rec = Recommender(Bundle.load(train_and_export(tmp_path, tiny_dataset, *frozen)))
    for m, projection in rec.model.item_tower.projections.items():
        assert bool(projection.whitening.fitted), m
        assert not torch.allclose(projection.whitening.matrix, torch.eye(len(projection.whitening.matrix))), m
    embeddings = rec.bundle.catalogue["embeddings"]
    for position in (0, 7):
        torch.testing.assert_close(rec._item_embedding(position), embeddings[position], atol=1e-5, rtol=1e-5)
