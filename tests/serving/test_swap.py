"""Swapping in a new bundle while serving: live items carried over, every worker follows, restarts too."""

import shutil
import time

import pytest
import torch
from fastapi.testclient import TestClient

from mmrec.serving.app import create_app
from mmrec.serving.bundle import Bundle
from mmrec.serving.recommender import Recommender, RequestError
from mmrec.serving.swap import Serving, latest

pytestmark = pytest.mark.integration  # loads a trained bundle: `pytest -m integration`

TOKEN = "swap-token-0123456789"


def test_a_switch_carries_the_live_items_and_every_worker_follows(bundle_dir, tmp_path):
    old, new, media = tmp_path / "old", tmp_path / "new", tmp_path / "media"
    shutil.copytree(bundle_dir, old)
    shutil.copytree(bundle_dir, new)  # the same model in another folder: carried items must embed the same
    media.mkdir()
    first = Serving(Recommender(Bundle.load(old), media_root=media))
    second = Serving(Recommender(Bundle.load(old), media_root=media))  # another worker on the same store
    base = first.current.items[0]["item_id"]
    with TestClient(create_app(first, api_token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for item_id in ("kept", "gone"):
            assert client.post("/v1/items", json={"item_id": item_id, "title": f"a song {item_id}"}).status_code == 201
        assert client.delete("/v1/items/gone").status_code == 200
        assert client.delete(f"/v1/items/{base}").status_code == 200
        legacy = first.current.live  # an add recorded without its request fields cannot be re-encoded
        position = first.current.positions["kept"]
        legacy.add(
            {"item_id": "legacy", "title": "old"},
            legacy.embeddings.view[position],
            {m: f.view[position] for m, f in legacy.features.items()},
            {m: p.view[position] for m, p in legacy.present.items()},
            source=None,
        )
        kept_embedding = first.current.live.embeddings.view[position].clone()

        anonymous = client.post("/v1/admin/bundle", json={"bundle": str(new)}, headers={"Authorization": ""})
        assert anonymous.status_code == 401
        refused = client.post("/v1/admin/bundle", json={"bundle": str(tmp_path / "nothing")})
        assert refused.status_code == 422 and str(tmp_path) not in refused.text
        assert client.post("/v1/admin/bundle", json={"bundle": str(old)}).status_code == 409
        switched = client.post("/v1/admin/bundle", json={"bundle": str(new)})
        assert switched.status_code == 200, switched.text
        report = switched.json()
        assert (report["carried"], report["deleted"]) == (1, 1)
        assert list(report["refused"]) == ["legacy"] and "add it again" in report["refused"]["legacy"]
        assert client.get("/v1/health").json()["items"] == 60 - 1 + 1  # the base item deleted, "kept" added

    now = first.current
    assert now.bundle.root == new and now.live.exists("kept") and not now.live.exists(base)
    assert not now.live.exists("gone") and not now.live.exists("legacy")
    torch.testing.assert_close(now.live.embeddings.view[now.positions["kept"]], kept_embedding)

    # the other worker: its writes to the old store are refused, and it switches at its next request
    with pytest.raises(RequestError) as err:
        second.current.add_item({"item_id": "late", "title": "too late"})
    assert err.value.status == 503 and "retry" in str(err.value)
    for _ in range(600):
        if second.current.bundle.root == new:
            break
        time.sleep(0.05)
    assert second.current.bundle.root == new and second.current.live.exists("kept")
    second.current.add_item({"item_id": "late", "title": "on the new bundle"})
    first.current.live.sync()
    assert first.current.live.exists("late")  # both workers write to the new store

    # a worker that restarts with the original settings serves the new bundle and its store
    bundle, store, sha256 = latest(str(old), None)
    assert (bundle, store, sha256) == (str(new), str(new / "live" / "store.sqlite"), now.bundle.identity)
