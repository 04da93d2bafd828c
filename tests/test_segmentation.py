"""Segmentation: label mapping, GTA5/Cityscapes readers, the proxy generator, augmentation,
the FCN, the trainer, mIoU evaluation and a smoke run of the experiment (Tables 3 and 20)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from sncn.data import data_root
from sncn.data.segmentation import (
    GTA5,
    IGNORE_INDEX,
    NUM_CLASSES,
    CityscapesSegmentation,
    augment,
    gaussian_blur,
    gaussian_kernel1d,
    gta5_quarter,
    label_id_table,
    normalize_images,
    segmentation_batches,
    street_scenes,
    to_train_ids,
)
from sncn.layers import CrossNorm, SelfNorm, style_layers
from sncn.models import create_model, list_models
from sncn.models.fcn import dilated_resnet
from sncn.train.segmentation import (
    SegmentationTrainer,
    evaluate_miou,
    poly_schedule,
    segmentation_sgd,
    sliding_window_logits,
)

SAMPLE = data_root() / "cityscapes_sample"


# ---------------------------------------------------------------------------------------------
# label mapping and readers
# ---------------------------------------------------------------------------------------------


def test_label_table_matches_cityscapes_definition():
    from torchvision.datasets import Cityscapes

    table = label_id_table()
    for c in Cityscapes.classes:
        if 0 <= c.id < 256:
            expected = c.train_id if 0 <= c.train_id < NUM_CLASSES else IGNORE_INDEX
            assert table[c.id] == expected, c.name
    assert sorted(set(table[table != IGNORE_INDEX].tolist())) == list(range(19))


def test_to_train_ids_numpy_and_torch_agree_and_ignore_out_of_range():
    ids = np.array([[7, 8, 0, 33], [-1, 300, 26, 24]])
    expected = np.array([[0, 1, 255, 18], [255, 255, 13, 11]])
    assert (to_train_ids(ids) == expected).all()
    assert (to_train_ids(torch.from_numpy(ids)).numpy() == expected).all()
    with pytest.raises(ValueError, match="integers"):
        to_train_ids(np.zeros(3, dtype=np.float32))


@pytest.mark.skipif(not (SAMPLE / "gtFine").is_dir(), reason="no Cityscapes sample frame")
def test_cityscapes_sample_frame_maps_to_its_train_ids():
    data = CityscapesSegmentation("val", folder=SAMPLE)
    assert len(data) == 1
    image, labels = data[0]
    assert image.shape == (128, 256, 3) and image.dtype == np.uint8
    assert labels.shape == (128, 256)
    reference = next((SAMPLE / "gtFine" / "val").rglob("*_labelTrainIds.png"))
    official = np.asarray(Image.open(reference))
    # the sample's two maps were downsampled separately (MANIFEST): 99.77% agree
    assert (labels == official).mean() > 0.99
    assert set(np.unique(labels)) <= set(range(19)) | {255}
    assert {0, 2, 13} <= set(np.unique(labels))  # road, building, car in this frame


def test_cityscapes_missing_says_where_to_get_and_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cityscapes-dataset.com") as error:
        CityscapesSegmentation("val", root=tmp_path)
    assert str(tmp_path / "cityscapes") in str(error.value)


def _gta5_fixture(root, n=9, odd_size=3):
    """GTA5 layout: images/NNNNN.png (RGB) and labels/NNNNN.png (palette PNG of label ids)."""
    (root / "gta5" / "images").mkdir(parents=True)
    (root / "gta5" / "labels").mkdir()
    rng = np.random.default_rng(0)
    ids = {}
    for i in range(1, n + 1):
        Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)).save(
            root / "gta5" / "images" / f"{i:05d}.png"
        )
        size = (6, 10) if i == odd_size else (12, 20)
        label = rng.choice([0, 7, 8, 11, 23, 26, 34], size=size).astype(np.uint8)
        png = Image.fromarray(label, mode="P")
        png.putpalette(list(rng.integers(0, 255, 768, dtype=np.uint8)))
        png.save(root / "gta5" / "labels" / f"{i:05d}.png")
        ids[i] = label
    return ids


def test_gta5_reader_maps_palette_label_ids(tmp_path):
    ids = _gta5_fixture(tmp_path)
    data = GTA5("train", root=tmp_path)
    assert data.ids == list(range(1, 10))
    image, labels = data[0]
    assert image.shape == (12, 20, 3) and labels.shape == (12, 20)
    assert (labels == to_train_ids(ids[1])).all()  # palette indices are the ids, not colours
    assert set(np.unique(labels)) <= {0, 1, 2, 10, 13, 255}
    _, resized = data[2]  # its label map is half the frame's size: resized (nearest)
    assert resized.shape == (12, 20)
    assert (resized[::2, ::2] == to_train_ids(ids[3])).all()


def test_gta5_quarter_is_seeded_sorted_and_a_quarter(tmp_path):
    ids = list(range(1, 12404))  # the official training split's size
    quarter = gta5_quarter(ids, seed=0)
    assert len(quarter) == math.ceil(12403 / 4) == 3101
    assert quarter == sorted(quarter) and set(quarter) <= set(ids)
    assert quarter == gta5_quarter(list(reversed(ids)), seed=0)
    assert quarter != gta5_quarter(ids, seed=1)
    _gta5_fixture(tmp_path)
    assert len(GTA5("train", quarter=True, root=tmp_path)) == 3


def test_gta5_official_split_and_clear_errors(tmp_path):
    from scipy.io import savemat

    with pytest.raises(FileNotFoundError, match="download.visinf.tu-darmstadt.de") as error:
        GTA5(root=tmp_path)
    assert str(tmp_path / "gta5" / "images") in str(error.value)
    _gta5_fixture(tmp_path)
    with pytest.raises(ValueError, match="split.mat"):
        GTA5("val", root=tmp_path)
    savemat(tmp_path / "gta5" / "split.mat",
            {"trainIds": np.array([[1], [2], [4], [5], [6]]), "valIds": np.array([[7], [8]]),
             "testIds": np.array([[3], [9]])})  # fmt: skip
    assert GTA5("train", root=tmp_path).ids == [1, 2, 4, 5, 6]
    assert GTA5("val", root=tmp_path).ids == [7, 8]
    assert GTA5("test", root=tmp_path).ids == [3, 9]


# ---------------------------------------------------------------------------------------------
# the proxy generator
# ---------------------------------------------------------------------------------------------


def test_street_scenes_are_deterministic_and_continue_by_start():
    a_x, a_y = street_scenes(6, "realistic", seed=3, size=(32, 64))
    b_x, b_y = street_scenes(6, "realistic", seed=3, size=(32, 64))
    assert torch.equal(a_x, b_x) and torch.equal(a_y, b_y)
    c_x, c_y = street_scenes(2, "realistic", seed=3, size=(32, 64), start=4)
    assert torch.equal(c_x, a_x[4:]) and torch.equal(c_y, a_y[4:])
    d_x, d_y = street_scenes(6, "realistic", seed=4, size=(32, 64))
    assert not torch.equal(d_y, a_y)
    assert a_x.shape == (6, 3, 32, 64) and a_x.dtype == torch.float32
    assert a_y.dtype == torch.int64 and 0 <= a_x.min() and a_x.max() <= 1


def test_domains_share_labels_and_cover_the_19_classes():
    _, synthetic = street_scenes(64, "synthetic", seed=0, size=(64, 128))
    _, realistic = street_scenes(64, "realistic", seed=0, size=(64, 128))
    assert torch.equal(synthetic, realistic)
    assert set(synthetic.unique().tolist()) == set(range(19))


def test_domains_differ_in_style_statistics():
    sx, y = street_scenes(32, "synthetic", seed=1, size=(64, 128))
    rx, _ = street_scenes(32, "realistic", seed=1, size=(64, 128))
    # synthetic: flat colours, so every class region of an image is one colour
    within_s, within_r = [], []
    for i in range(8):
        for c in y[i].unique():
            mask = y[i] == c
            if mask.sum() > 30:
                within_s.append(sx[i][:, mask].std(1).max())
                within_r.append(rx[i][:, mask].std(1).mean())
    assert max(within_s) < 1e-6 and float(torch.stack(within_r).mean()) > 0.03
    # per-image channel statistics (what CrossNorm exchanges) spread far more in the target
    mean_s, mean_r = sx.mean((2, 3)), rx.mean((2, 3))  # (N, 3)
    assert float(mean_r.std(0).mean()) > 1.5 * float(mean_s.std(0).mean())
    assert float((mean_s - mean_r).abs().mean()) > 0.05


def test_street_scenes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="domain"):
        street_scenes(2, "cartoon")
    with pytest.raises(ValueError, match="size"):
        street_scenes(2, size=(8, 64))


# ---------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------


def test_augment_without_scale_rotation_or_crop_is_identity_or_mirror():
    x, y = street_scenes(4, "realistic", seed=0, size=(32, 48))
    x = normalize_images(x)
    g = torch.Generator().manual_seed(0)
    out, lab = augment(x, y, (32, 48), scale=(1, 1), rotate=(0, 0), generator=g, blur_prob=0)
    for i in range(4):
        same = torch.equal(lab[i], y[i]) and torch.allclose(out[i], x[i], atol=1e-5)
        mirrored = torch.equal(lab[i], y[i].flip(-1)) and torch.allclose(
            out[i], x[i].flip(-1), atol=1e-5
        )
        assert same or mirrored


def test_augment_pads_with_ignore_and_keeps_labels_valid():
    x, y = street_scenes(8, "synthetic", seed=0, size=(32, 64))
    g = torch.Generator().manual_seed(1)
    out, lab = augment(normalize_images(x), y, (48, 48), scale=(0.5, 0.6), rotate=(-10, 10),
                       generator=g)  # fmt: skip
    assert out.shape == (8, 3, 48, 48) and lab.shape == (8, 48, 48)
    assert (lab == IGNORE_INDEX).any()  # a scaled-down frame leaves padding
    assert set(lab.unique().tolist()) <= set(range(19)) | {IGNORE_INDEX}
    padded = out.permute(0, 2, 3, 1)[lab == IGNORE_INDEX]  # (M, 3): outside the frame
    assert (padded.abs().amax(1) < 1e-6).float().mean() > 0.9  # zero = the mean (bar edges)
    again = augment(normalize_images(x), y, (48, 48), scale=(0.5, 0.6), rotate=(-10, 10),
                    generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(again[1], lab)


def test_blur_kernel_is_opencvs_for_sigma_zero():
    # cv2.GaussianBlur(image, (5, 5), 0) (released RandomGaussianBlur): OpenCV's fixed table
    assert gaussian_kernel1d(5).tolist() == [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16]
    assert gaussian_kernel1d(3).tolist() == [0.25, 0.5, 0.25]
    # not the sampled Gaussian of OpenCV's sigma formula 0.3 * ((5 - 1) / 2 - 1) + 0.8 = 1.1
    assert not torch.allclose(gaussian_kernel1d(5), gaussian_kernel1d(5, sigma=1.1), atol=1e-3)
    # beyond the table (k = 9): that formula's sigma, 0.3 * 3 + 0.8 = 1.7, as torchvision blurs
    from torchvision.transforms.functional import gaussian_blur as tv_gaussian_blur

    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(gaussian_blur(x, 9), tv_gaussian_blur(x, [9, 9], [1.7, 1.7]), atol=1e-6)
    assert torch.allclose(gaussian_blur(x, 5, 1.1), tv_gaussian_blur(x, [5, 5], [1.1, 1.1]),
                          atol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel1d(4)


def test_gaussian_blur_by_hand_with_mirrored_borders():
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 1  # an impulse in the middle: the 2-D kernel (1 4 6 4 1)^T (1 4 6 4 1) / 256
    x[0, 0, 0, 0] = 1  # one in the corner, mirrored about the edge pixel (BORDER_REFLECT_101)
    out = gaussian_blur(x) * 256
    outer = torch.tensor([1.0, 4, 6, 4, 1]).outer(torch.tensor([1.0, 4, 6, 4, 1]))
    assert torch.equal(out[0, 0, 3:6, 1:6], outer[2:])  # rows 3-5 only reach the middle impulse
    assert torch.equal(out[0, 0, 6], torch.zeros(7))  # 3 rows away from it
    assert torch.equal(out[0, 0, :2, :2], torch.tensor([[36.0, 24], [24, 16 + 1]]))


def test_augment_blurs_half_of_the_samples_before_the_crop():
    x, y = street_scenes(6, "realistic", seed=0, size=(24, 32))
    x = normalize_images(x)
    plain = augment(x, y, (24, 32), scale=(1, 1), rotate=(0, 0), flip=False, blur_prob=0,
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    blurred = augment(x, y, (24, 32), scale=(1, 1), rotate=(0, 0), flip=False, blur_prob=1,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.allclose(plain[0], x, atol=1e-5) and torch.equal(blurred[1], plain[1])
    # a frame-sized crop: the margin outside the frame reads 0 (the mean), then a valid 5 x 5 blur
    kernel = gaussian_kernel1d(5).float()
    zero_padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    by_hand = torch.nn.functional.conv2d(zero_padded, kernel.outer(kernel).expand(3, 1, 5, 5),
                                         groups=3)  # fmt: skip
    assert torch.allclose(blurred[0], by_hand, atol=1e-5)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # away from the frame's edge
    assert torch.allclose(blurred[0][inner], gaussian_blur(x)[inner], atol=1e-5)
    # a crop inside the frame is blurred with its neighbours outside the crop, not mirrored ones
    args = dict(crop=(12, 16), scale=(1, 1), rotate=(0, 0), flip=False)
    sharp = augment(x, y, **args, blur_prob=0, generator=torch.Generator().manual_seed(1))[0]
    soft = augment(x, y, **args, blur_prob=1, generator=torch.Generator().manual_seed(1))[0]
    mirrored = gaussian_blur(sharp)
    assert torch.allclose(soft[inner], mirrored[inner], atol=1e-5)
    assert not torch.allclose(soft[..., 0], mirrored[..., 0], atol=1e-3)
    # per sample, probability 1/2 (released RandomGaussianBlur)
    n = 4000
    tiny = torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    labels = torch.zeros(n, 6, 6, dtype=torch.int64)
    args = dict(crop=(6, 6), scale=(1, 1), rotate=(0, 0), flip=False)
    on = augment(tiny, labels, **args, generator=torch.Generator().manual_seed(3))[0]
    off = augment(tiny, labels, **args, blur_prob=0, generator=torch.Generator().manual_seed(3))[0]
    share = float((on - off).abs().amax((1, 2, 3)).gt(1e-4).float().mean())
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / n)


def test_segmentation_batches_drop_last_and_check_size():
    x, y = street_scenes(10, "synthetic", seed=0, size=(32, 64))
    batches = list(segmentation_batches(x, y, 4, (32, 32), torch.Generator().manual_seed(0)))
    assert len(batches) == 2 and batches[0][0].shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="batch size"):
        list(segmentation_batches(x, y, 16, (32, 32), torch.Generator()))


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------


def test_fcn_is_registered_and_the_paper_default_is_torchvision_fcn_resnet50():
    from torchvision.models.segmentation import fcn_resnet50

    assert "fcn_resnet" in list_models()
    ours = create_model("fcn_resnet")
    reference = fcn_resnet50(weights=None, weights_backbone=None, num_classes=19, aux_loss=True)
    ours_shapes = {k: v.shape for k, v in ours.net.state_dict().items()}
    assert ours_shapes == {k: v.shape for k, v in reference.state_dict().items()}


def test_dilated_resnet_builder_matches_torchvision_resnet50():
    from torchvision.models import resnet50

    ours = dilated_resnet(50, 64).state_dict()
    theirs = {k: v.shape for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == theirs


def test_fcn_units_output_stride_and_eval_identity():
    model = create_model("fcn_resnet", depth=14, width=8, cnsn_type="cnsn")
    sn = [m for m in model.modules() if isinstance(m, SelfNorm)]
    cn = [m for m in model.modules() if isinstance(m, CrossNorm)]
    assert len(sn) == 4 and len(cn) == 4  # one bottleneck per stage
    assert all(m.crop == "style" and m.instances == 2 for m in cn)
    assert len(style_layers(model)) == 4
    x = torch.randn(2, 3, 40, 48)
    features = model.net.backbone(x)
    assert features["out"].shape[-2:] == (5, 6)  # output stride 8
    model.eval()
    out = model(x)
    assert out["out"].shape == (2, 19, 40, 48) and out["aux"].shape == (2, 19, 40, 48)
    big = create_model("fcn_resnet", cnsn_type="cnsn", image_cn=False)
    assert sum(isinstance(m, SelfNorm) for m in big.modules()) == 16
    assert sum(isinstance(m, CrossNorm) for m in big.modules()) == 16
    with pytest.raises(ValueError, match="cnsn_type"):
        create_model("fcn_resnet", cnsn_type="se")


def test_fcn_default_has_no_image_level_crossnorm_and_the_option_adds_it():
    # released gtav_fcn50_cnsn.yaml: block_idxs 1_2_3_4, CN after the blocks, none on the image
    released = create_model("fcn_resnet", depth=14, width=8, cnsn_type="cn")
    assert released.image_cn is None
    assert all(name.startswith("net.backbone.layer") for name, _ in style_layers(released))
    figure14 = create_model("fcn_resnet", depth=14, width=8, cnsn_type="cn", image_cn=True)
    assert isinstance(figure14.image_cn, CrossNorm) and figure14.image_cn.crop == "style"
    assert [name for name, _ in style_layers(figure14)][0] == "image_cn"
    assert len(style_layers(figure14)) == 5
    sn_only = create_model("fcn_resnet", depth=14, width=8, cnsn_type="sn", image_cn=True)
    assert sn_only.image_cn is None  # no CrossNorm at all without "cn"
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    figure14.train()
    figure14.image_cn.active = True
    assert not torch.equal(figure14.image_cn(x), x)  # the unit re-styles the input images


def test_backbone_weights_load_from_a_local_file(tmp_path):
    source = dilated_resnet(14, 8)
    path = tmp_path / "backbone.pth"
    torch.save({**source.state_dict(), "fc.weight": torch.zeros(3, 3)}, path)
    model = create_model("fcn_resnet", depth=14, width=8, cnsn_type="sn", backbone_weights=path)
    assert torch.equal(model.net.backbone.conv1.weight, source.conv1.weight)
    with pytest.raises(ValueError, match="does not fit"):
        create_model("fcn_resnet", depth=14, width=16, backbone_weights=path)


# ---------------------------------------------------------------------------------------------
# trainer and evaluation
# ---------------------------------------------------------------------------------------------


def test_poly_schedule_and_head_learning_rate():
    model = create_model("fcn_resnet", depth=14, width=8)
    optimizer = segmentation_sgd(model, lr=0.01)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.1]
    heads = {id(p) for p in optimizer.param_groups[1]["params"]}
    assert heads == {id(p) for n, p in model.named_parameters() if "classifier" in n}
    schedule = poly_schedule(optimizer, total_steps=10, power=0.9)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.01)
    assert lrs == pytest.approx([0.01 * (1 - k / 10) ** 0.9 for k in range(10)], rel=1e-9)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0]
    optimizer.step()
    schedule.step()  # past the end: stays at 0
    assert optimizer.param_groups[1]["lr"] == 0.0


class _FixedPredictor:
    """A 'trainer' whose logits are one-hot maps given up front."""

    def __init__(self, predicted: torch.Tensor, num_classes: int) -> None:
        self.predicted = predicted
        self.k = num_classes
        self.calls = 0

    def predict(self, x):
        n = x.shape[0]
        out = torch.nn.functional.one_hot(self.predicted[self.calls : self.calls + n], self.k)
        self.calls += n
        return out.permute(0, 3, 1, 2).float()


def test_evaluate_miou_by_hand():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])  # (1, 2, 4)
    predicted = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 2]]])
    # class 0: I=1, U=3 (target 2 + predicted 2 - 1); class 1: I=2, U=3; class 2: I=1, U=2
    scores = evaluate_miou(_FixedPredictor(predicted, 3), torch.zeros(1, 3, 2, 4), target, 3)
    assert scores["iou"] == pytest.approx([100 / 3, 200 / 3, 50.0])
    assert scores["miou"] == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    assert scores["pixel_acc"] == pytest.approx(400 / 6)


def test_evaluate_miou_counts_an_absent_class_as_zero_or_skips_it():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    predicted = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 2]]])
    # 4 classes, class 3 in neither labels nor predictions: IoU 1/3, 2/3, 1/2 and absent
    released = evaluate_miou(_FixedPredictor(predicted, 4), torch.zeros(1, 3, 2, 4), target, 4)
    assert released["miou"] == pytest.approx((100 / 3 + 200 / 3 + 50 + 0) / 4)
    assert released["iou"][:3] == pytest.approx([100 / 3, 200 / 3, 50.0])
    assert released["iou"][3] is None  # absent, whichever definition the mean used
    present = evaluate_miou(_FixedPredictor(predicted, 4), torch.zeros(1, 3, 2, 4), target, 4,
                            absent="skip")  # fmt: skip
    assert present["miou"] == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    with pytest.raises(ValueError, match="absent"):
        evaluate_miou(_FixedPredictor(predicted, 4), torch.zeros(1, 3, 2, 4), target, 4,
                      absent="present")  # fmt: skip


def test_sliding_window_matches_whole_image_for_a_pixelwise_model():
    conv = torch.nn.Conv2d(3, 5, 1)
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        whole = conv(x)
        windowed = sliding_window_logits(conv, x, 16, 5)
        small = sliding_window_logits(conv, x[:, :, :10, :12], 16, 5)
    assert torch.allclose(windowed, whole, atol=1e-5)
    assert torch.allclose(small, whole[:, :, :10, :12], atol=1e-5)


def test_trainer_update_learns_and_predict_returns_main_logits():
    torch.manual_seed(0)
    x, y = street_scenes(8, "synthetic", seed=0, size=(32, 32))
    x = normalize_images(x)
    model = create_model("fcn_resnet", depth=14, width=8, cnsn_type="cnsn")
    optimizer = segmentation_sgd(model, lr=0.01)
    trainer = SegmentationTrainer(model, optimizer, cn_prob=0.5, active_num=1)
    first = trainer.update((x, y))
    assert {"loss", "lr", "main_loss", "aux_loss", "cn_on"} <= set(first)
    assert first["loss"] == pytest.approx(first["main_loss"] + 0.4 * first["aux_loss"], rel=1e-5)
    for _ in range(15):
        last = trainer.update((x, y))
    assert last["main_loss"] < first["main_loss"]
    assert not any(layer.active for _, layer in style_layers(model))
    assert trainer.predict(x).shape == (8, 19, 32, 32)


# ---------------------------------------------------------------------------------------------
# the experiment: a smoke run
# ---------------------------------------------------------------------------------------------


def test_smoke_run_writes_metrics_reads_back_and_tables(tmp_path):
    from sncn.experiments import segmentation as seg
    from sncn.results import is_done

    data = seg.prepare("proxy", train_images=8, test_images=4, image_size=(32, 64), seed=0)
    overrides = {"epochs": 1, "batch_size": 4, "crop_size": 32, "depth": 14, "width": 8,
                 "eval_window": 0}  # fmt: skip
    runs = seg.run_grid(["baseline", "sncn_crop"], [0], tmp_path, data, overrides=overrides,
                        progress=False)  # fmt: skip
    for _, (metrics,) in runs:
        assert 0 <= metrics["source_miou"] <= 100 and 0 <= metrics["target_miou"] <= 100
        assert len(metrics["target_iou"]) == 19 and len(metrics["history"]) == 1
        assert is_done(tmp_path / "runs" / metrics["run"])
    again = seg.run("baseline", tmp_path, data, overrides=overrides, progress=False)
    assert again == runs[0][1][0]
    rows = seg.table_rows(runs, seg.PAPER_TABLE3)
    assert [r["method"] for r in rows] == ["Baseline", "IBN", "DR", "SN", "CN+Crop", "SNCN+Crop"]
    assert rows[0]["paper target"] == 21.4 and rows[1]["target mIoU"] is None
    assert rows[5]["target mIoU"] == runs[1][1][0]["target_miou"]
    table20 = seg.table_rows(runs, seg.PAPER_TABLE20)
    assert table20[2]["paper target"] is None  # unreadable in the paper's text: not guessed
    fig = seg.prediction_figure(runs, tmp_path, data, images=2)
    assert len(fig.axes) == 2 * 4
    with pytest.raises(ValueError, match="unknown setting"):
        seg.run("baseline", tmp_path, data, overrides={"epoch": 1})


def test_segmentation_defaults_follow_the_released_recipe_and_notes_say_so():
    from sncn.experiments import segmentation as seg
    from sncn.hparams import SEGMENTATION

    assert SEGMENTATION["image_cn"] is False and SEGMENTATION["miou_absent"] == "zero"
    assert (SEGMENTATION["blur_prob"], SEGMENTATION["blur_kernel"]) == (0.5, 5)
    notes = seg.setting_notes()
    assert notes[0] == "CrossNorm after blocks 1-4 (released config); no image-level unit."
    assert "Gaussian blur (5 x 5, probability 0.5)" in notes[1]
    assert "all 19 classes" in notes[2] and "counting 0" in notes[2]
    other = seg.setting_notes({"image_cn": True, "blur_prob": 0.0, "miou_absent": "skip"})
    assert "on the input images" in other[0] and "Figure 14" in other[0]
    assert "no blur" in other[1] and "present" in other[2]


def test_frames_decode_on_demand_and_evaluate_like_arrays(tmp_path):
    from sncn.data.segmentation import Frames, load_arrays

    _gta5_fixture(tmp_path)
    frames = Frames(GTA5("train", root=tmp_path), size=(12, 20), limit=5)
    assert len(frames) == 5
    x, y = frames.take([4, 0])
    assert x.shape == (2, 3, 12, 20) and x.dtype == torch.uint8 and y.shape == (2, 12, 20)
    arrays = load_arrays(GTA5("train", root=tmp_path), limit=5, size=(12, 20))
    assert torch.equal(arrays[0][[4, 0]], x) and torch.equal(arrays[1][[4, 0]], y)
    with pytest.raises(IndexError):
        frames.take([5])
    model = create_model("fcn_resnet", depth=14, width=8).eval()
    trainer = SegmentationTrainer(model, segmentation_sgd(model))
    lazy = evaluate_miou(trainer, frames, None, batch_size=2)
    eager = evaluate_miou(trainer, normalize_images(arrays[0]), arrays[1], batch_size=2)
    assert lazy["miou"] == pytest.approx(eager["miou"])


@pytest.mark.skipif(not (SAMPLE / "gtFine").is_dir(), reason="no Cityscapes sample frame")
def test_gta5_to_cityscapes_run_on_fixtures(tmp_path):
    import shutil

    from scipy.io import savemat

    from sncn.experiments import segmentation as seg

    _gta5_fixture(tmp_path, n=12)
    savemat(tmp_path / "gta5" / "split.mat",
            {"trainIds": np.arange(1, 9)[:, None], "valIds": np.array([[9], [10]]),
             "testIds": np.array([[11], [12]])})  # fmt: skip
    shutil.copytree(SAMPLE, tmp_path / "cityscapes")
    data = seg.prepare("gta5", image_size=(12, 20), root=tmp_path)
    assert data.info["train_items"] == 2 and data.info["source_items"] == 2  # quarter of 8
    assert data.info["target_items"] == 1
    overrides = {"epochs": 1, "batch_size": 2, "crop_size": 16, "depth": 14, "width": 8,
                 "eval_window": 64}  # fmt: skip
    metrics = seg.run("cn_crop", tmp_path / "results", data, overrides=overrides, progress=False)
    assert 0 <= metrics["target_miou"] <= 100 and len(metrics["source_iou"]) == 19
    predicted = torch.load(tmp_path / "results" / "runs" / metrics["run"] / "target_predictions.pt")
    assert predicted.shape == (1, 128, 256)  # Cityscapes at its own size, sliding window
