"""Weights: the registry, download into torch's hub cache (from a file:// URL: the published files
cannot be downloaded here), legacy key names, local files, and re-initialised predictors."""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision.models.detection as tv_detection

from model.builders import config_for
from model.weights.architecture import infer_config
from model.weights.download import DownloadCancelled, WeightsHashError, WeightsUnavailableError, fetch
from model.weights.formats import read_weights, save_weights
from model.weights.legacy import upgrade_legacy_keys
from model.weights.registry import REGISTRY, WeightsInfo
from model.weights.resolve import build_model, load_model, resolve_weights
from tests.files import few_megabytes_published, published_like, unreachable_url


@pytest.fixture(scope="module")
def torchvision_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return tv_detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()


def assert_same_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for key, value in upgrade_legacy_keys(state_dict).items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(own[key], value), key


def test_registry_names_torchvision_files_with_their_hashes_and_categories() -> None:
    expected = {
        "maskrcnn_resnet50_fpn.COCO_V1": "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
        "maskrcnn_resnet50_fpn_v2.COCO_V1": "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        "keypointrcnn_resnet50_fpn.COCO_V1": "https://download.pytorch.org/models/keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
    }
    assert {name: info.url for name, info in REGISTRY.items()} == expected
    for info in REGISTRY.values():
        assert info.filename.endswith(f"-{info.sha256_prefix}.pth")
    assert len(REGISTRY["maskrcnn_resnet50_fpn.COCO_V1"].categories) == 91
    assert REGISTRY["maskrcnn_resnet50_fpn.COCO_V1"].categories[1] == "person"
    assert REGISTRY["maskrcnn_resnet50_fpn.COCO_V1"].metrics == {"box_map": 37.9, "mask_map": 34.6}
    assert REGISTRY["maskrcnn_resnet50_fpn_v2.COCO_V1"].metrics == {"box_map": 47.4, "mask_map": 41.8}
    keypoints = REGISTRY["keypointrcnn_resnet50_fpn.COCO_V1"]
    assert keypoints.metrics == {"box_map": 54.6, "kp_map": 65.0}
    assert len(keypoints.keypoint_names) == 17 and keypoints.categories == ("no person", "person")


def test_download_lands_in_hub_cache_once_and_loads(torchvision_state_dict, hub: Path, tmp_path: Path) -> None:
    source, digest = published_like(torchvision_state_dict, tmp_path / "server", "maskrcnn_resnet50_fpn_coco")
    info = WeightsInfo(
        name="maskrcnn_resnet50_fpn.TEST",
        architecture="maskrcnn_resnet50_fpn",
        url=source.as_uri(),
        sha256_prefix=digest[:8],
        categories=REGISTRY["maskrcnn_resnet50_fpn.COCO_V1"].categories,
    )

    file = fetch(info, progress=False)

    assert file.path == hub / source.name
    assert file.sha256 == digest
    assert file.version == f"maskrcnn_resnet50_fpn.TEST@{digest[:8]}"
    assert sorted(p.name for p in hub.iterdir()) == [source.name]  # no partial file left
    source.unlink()  # the second time comes from the cache
    model = load_model(info, progress=False)
    assert_same_weights(model, torchvision_state_dict)
    assert model.weights_version == file.version
    assert not model.training


def test_download_with_wrong_hash_leaves_nothing_in_cache(torchvision_state_dict, hub: Path, tmp_path: Path) -> None:
    source, digest = published_like(torchvision_state_dict, tmp_path / "server", "maskrcnn_resnet50_fpn_coco")
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    info = WeightsInfo(
        name="x",
        architecture="maskrcnn_resnet50_fpn",
        url=source.as_uri(),
        sha256_prefix=wrong,
        categories=("__background__", "thing"),
    )
    with pytest.raises(WeightsHashError):
        fetch(info, progress=False)
    assert not hub.exists() or list(hub.iterdir()) == []


def test_offline_download_names_the_url_and_where_to_put_the_file(hub: Path) -> None:
    url = unreachable_url("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth")
    info = WeightsInfo(
        name="x",
        architecture="maskrcnn_resnet50_fpn",
        url=url,
        sha256_prefix="bf2d0c1e",
        categories=("__background__", "thing"),
    )
    with pytest.raises(WeightsUnavailableError) as error:
        fetch(info, progress=False)
    assert url in str(error.value)
    assert str(hub / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth") in str(error.value)
    assert not hub.exists() or list(hub.iterdir()) == []


def test_download_reports_growing_byte_counts_up_to_the_file_size_beside_the_bar(
    hub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info, source = few_megabytes_published(tmp_path / "server")
    size = source.stat().st_size
    reports: list[tuple[int, int | None]] = []

    fetch(info, progress=True, on_progress=lambda done, total: reports.append((done, total)))

    done = [d for d, _ in reports]
    assert done[0] == 0 and done[-1] == size and len(done) > 3
    assert all(a < b for a, b in zip(done, done[1:]))
    assert {total for _, total in reports} == {size}
    assert (hub / source.name).read_bytes() == source.read_bytes()
    assert source.name in capsys.readouterr().err  # the command line's bar, fed by the same loop


def test_cancelled_download_leaves_neither_the_file_nor_a_partial_one(hub: Path, tmp_path: Path) -> None:
    info, source = few_megabytes_published(tmp_path / "server")
    reports: list[int] = []

    def cancel_after_a_megabyte(done: int, total: int | None) -> None:
        reports.append(done)
        if done >= 1 << 20:
            raise DownloadCancelled(info.url)

    with pytest.raises(DownloadCancelled):
        fetch(info, progress=False, on_progress=cancel_after_a_megabyte)
    assert 0 < reports[-1] < source.stat().st_size  # stopped mid-way
    assert list(hub.iterdir()) == []


def test_download_that_breaks_off_says_so_and_leaves_nothing(hub: Path) -> None:
    class BreaksOff(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # announces 2 MB, sends 1 MB, closes the connection
            self.send_response(200)
            self.send_header("Content-Length", str(2 << 20))
            self.end_headers()
            self.wfile.write(b"\0" * (1 << 20))

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), BreaksOff)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    info = WeightsInfo(
        name="x",
        architecture="maskrcnn_resnet50_fpn",
        url=url,
        sha256_prefix="bf2d0c1e",
        categories=("__background__", "thing"),
    )
    try:
        with pytest.raises(WeightsUnavailableError) as error:
            fetch(info, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert "broke off after 1.0 MB" in str(error.value) and url in str(error.value)
    assert str(hub / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth") in str(error.value)
    assert list(hub.iterdir()) == []


def test_file_placed_by_hand_in_the_cache_is_used_offline(torchvision_state_dict, hub: Path, tmp_path: Path) -> None:
    source, digest = published_like(torchvision_state_dict, hub, "maskrcnn_resnet50_fpn_coco")
    categories = REGISTRY["maskrcnn_resnet50_fpn.COCO_V1"].categories
    info = WeightsInfo(
        name="x",
        architecture="maskrcnn_resnet50_fpn",
        url="http://127.0.0.1:9/" + source.name,
        sha256_prefix=digest[:8],
        categories=categories,
    )
    assert fetch(info, progress=False).path == source


def legacy_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The key names of torchvision's older files (what its load hooks rename)."""
    legacy = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue  # FrozenBatchNorm files have none
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for block in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                key = key.replace(f"backbone.fpn.{block}.{i}.0.", f"backbone.fpn.{block}.{i}.")
        for i in range(4):
            key = key.replace(f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.")
        legacy[key] = value
    return legacy


def test_legacy_key_names_load_from_file_and_into_the_module(torchvision_state_dict, tmp_path: Path) -> None:
    legacy = legacy_layout(torchvision_state_dict)
    assert "rpn.head.conv.weight" in legacy and "roi_heads.mask_head.mask_fcn1.weight" in legacy
    assert "backbone.fpn.inner_blocks.0.weight" in legacy
    path = tmp_path / "legacy.pth"
    torch.save(legacy, path)

    assert_same_weights(load_model(path, progress=False), torchvision_state_dict)
    model = build_model("maskrcnn_resnet50_fpn")
    model.load_state_dict(legacy, strict=True)
    assert_same_weights(model, torchvision_state_dict)


class _RunsCode:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("touch should-not-exist",))


def test_pth_that_would_run_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"model": {"x": _RunsCode()}}, f, protocol=2)
    with pytest.raises(ValueError, match="without running code"):
        read_weights(path)
    assert not (tmp_path / "should-not-exist").exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_own_checkpoint_round_trips_with_its_config(tmp_path: Path, suffix: str) -> None:
    model = build_model(
        "maskrcnn_resnet50_fpn", backbone_depth=18, class_names=("__background__", "cat", "dog"), box_score_thresh=0.3
    )
    path = save_weights(model, tmp_path / f"run{suffix}")
    loaded = load_model(path, progress=False)
    assert loaded.config == model.config
    assert_same_weights(loaded, model.state_dict())
    assert loaded.weights_version.startswith(f"run@{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}")


def test_saved_weights_get_the_permissions_of_any_new_file_and_the_umask_is_read_not_changed(tmp_path: Path) -> None:
    from model.files import current_umask

    model = build_model("maskrcnn_resnet50_fpn", backbone_depth=18, num_classes=2)
    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027 and current_umask() == 0o027
        path = save_weights(model, tmp_path / "run.safetensors")  # safetensors writes it 0600
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_saved_weights_are_on_the_disk_before_they_appear_under_their_name(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the project records a round's model once the file is there; a rename before the fsync could
    # leave the record pointing at a file a power loss emptied, and the app's next commit would wait
    # for the file's bytes in the UI thread (a 170 ms stall of the learning test)
    model = build_model("maskrcnn_resnet50_fpn", backbone_depth=18, num_classes=2)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: str | Path, target: str | Path) -> None:
        events.append(("replace", str(source)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_weights(model, tmp_path / f"run{suffix}")
    partial = str(tmp_path / f".run{suffix}.partial")
    assert events == [("fsync", partial), ("replace", partial)]


def test_a_body_trained_with_batch_norm_is_used_frozen_with_the_same_outputs_and_torchvisions_keys() -> None:
    from model.weights.transfer import freeze_batch_norm

    torch.manual_seed(0)
    model = build_model("maskrcnn_resnet50_fpn", backbone_depth=18, num_classes=2, backbone_norm="bn")
    model.train()
    for _ in range(3):  # running statistics of a few batches, as training leaves them
        model.backbone.body(torch.randn(2, 3, 64, 64) * 3 + 1)
    model.eval()
    frozen = freeze_batch_norm(model)
    assert frozen.config.backbone_norm == "frozen_bn"
    layout = build_model("maskrcnn_resnet50_fpn", backbone_depth=18, num_classes=2).state_dict()
    assert set(frozen.state_dict()) == set(layout)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(frozen.backbone(image), model.backbone(image), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not trained batch norm"):
        freeze_batch_norm(frozen)


def test_fewer_classes_reinitialise_only_the_predictors(torchvision_state_dict, tmp_path: Path) -> None:
    path = tmp_path / "coco.pth"
    torch.save(torchvision_state_dict, path)
    model = load_model(path, num_classes=3, progress=False)

    assert model.config.num_classes == 3
    own = model.state_dict()
    state = {k: v for k, v in torchvision_state_dict.items() if not k.endswith("num_batches_tracked")}
    reinitialised = {k for k, v in state.items() if own[k].shape != v.shape}
    assert reinitialised == {
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.box_predictor.bbox_pred.bias",
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias",
    }
    for key, value in state.items():
        if key not in reinitialised:
            assert torch.equal(own[key], value), key  # conv5_mask (class-agnostic) included
    assert own["roi_heads.box_predictor.cls_score.weight"].std() > 0


def test_other_keypoint_count_reinitialises_only_the_keypoint_predictor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = tv_detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    path = tmp_path / "keypoints.pth"
    torch.save(state, path)
    model = load_model(path, num_keypoints=5, progress=False)
    own = model.state_dict()
    assert own["roi_heads.keypoint_predictor.kps_score_lowres.weight"].shape == (512, 5, 4, 4)
    changed = {k for k in state if not k.endswith("num_batches_tracked") and not torch.equal(own[k], state[k])}
    assert changed == {
        "roi_heads.keypoint_predictor.kps_score_lowres.weight",
        "roi_heads.keypoint_predictor.kps_score_lowres.bias",
    }


def test_own_checkpoint_resolves_to_its_state_dict_config_and_version(tmp_path: Path) -> None:
    model = build_model("maskrcnn_resnet50_fpn", backbone_depth=18, class_names=("__background__", "cat"))
    path = save_weights(model, tmp_path / "run.safetensors")

    resolved = resolve_weights(path, progress=False)

    assert resolved.config == model.config
    assert resolved.file.path == path and resolved.info is None
    assert resolved.version == f"run@{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}"
    assert resolved.state_dict.keys() == model.state_dict().keys()


def test_an_unknown_architecture_is_one_error_naming_the_known_ones_before_any_download(hub: Path) -> None:
    url = unreachable_url("x-bf2d0c1e.pth")
    info = WeightsInfo("x", "maskrcnn_resnet50_fpn", url, sha256_prefix="bf2d0c1e", categories=("__background__", "x"))
    messages = []
    for attempt in (
        lambda: config_for("maskrcnn_resnet9000"),
        lambda: build_model("maskrcnn_resnet9000"),
        lambda: resolve_weights(info, "maskrcnn_resnet9000", progress=False),
        lambda: load_model(info, architecture="maskrcnn_resnet9000", progress=False),
    ):
        with pytest.raises(ValueError) as error:
            attempt()
        messages.append(str(error.value))
    assert set(messages) == {
        "unknown architecture 'maskrcnn_resnet9000'; known: keypointrcnn_resnet50_fpn, maskrcnn_resnet18_fpn_small, "
        "maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2"
    }
    assert not hub.exists()  # refused before the (unreachable) download was tried


def test_weights_of_another_architecture_are_refused(hub: Path, tmp_path: Path) -> None:
    small = save_weights(build_model("maskrcnn_resnet50_fpn", backbone_depth=18, num_classes=2), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="does not hold weights of maskrcnn_resnet50_fpn_v2"):
        build_model("maskrcnn_resnet50_fpn_v2", weights=small)
    with pytest.raises(ValueError, match="does not hold weights of maskrcnn_resnet50_fpn$"):
        load_model(small, architecture="maskrcnn_resnet50_fpn", progress=False)

    info, _ = few_megabytes_published(tmp_path / "server")  # a maskrcnn_resnet50_fpn entry
    with pytest.raises(ValueError, match="few_megabytes.TEST are weights of maskrcnn_resnet50_fpn, not keypointrcnn"):
        resolve_weights(info, "keypointrcnn_resnet50_fpn", progress=False)


@pytest.mark.parametrize("name", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "keypointrcnn_resnet50_fpn"])
def test_architecture_is_inferred_from_a_bare_state_dict(name: str) -> None:
    reference = getattr(tv_detection, name)(weights=None, weights_backbone=None, num_classes=4)
    config = infer_config(reference.state_dict())
    assert config == build_model(name, num_classes=4).config


def test_registry_weights_config_uses_the_files_label_space_and_eps() -> None:
    info = REGISTRY["keypointrcnn_resnet50_fpn.COCO_V1"]
    config = info.config()
    assert config.class_names == ("no person", "person")
    assert config.keypoint_names[0] == "nose" and config.keypoint_on and not config.mask_on
    assert config.frozen_bn_eps == 0.0  # torchvision's v1 files were trained so
    assert REGISTRY["maskrcnn_resnet50_fpn_v2.COCO_V1"].config().frozen_bn_eps == 1e-5
    assert info.config(num_classes=3).num_classes == 3
