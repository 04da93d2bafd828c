"""Settings of the authors' released run scripts for "CrossNorm and SelfNorm" (ICCV 2021).

Plain reference data, transcribed by hand from the official repository
https://github.com/amazon-science/crossnorm-selfnorm
(commit d0f56950f72bf7ae2a13e08521bd71722754cdd7):

* ``cifar10-scripts/{allconv,densenet,resnext,wideresnet}/run-{M}.sh`` with M in
  ``cn, sn, cnsn, cnsn-consist, cnsn-augmix``
* ``cifar100-scripts/{allconv,densenet,resnext,wideresnet}/run-{M}.sh`` (same five M)
* ``imagenet-scripts/run-{M}.sh`` (same five M)
* argparse defaults and argument use: ``cifar.py``, ``imagenet.py``
* meaning of ``pos``/``crop``/``active_num``: ``models/cnsn.py``, ``models/cifar/*_cnsn.py``,
  ``models/imagenet/resnet_cnsn.py``, ``models/imagenet/resnet_ibn_cnsn.py``

Keys of :data:`RELEASED_SCRIPTS` are ``(dataset, backbone, method)`` with dataset in
``{"cifar10", "cifar100", "imagenet"}``, backbone in ``{"allconv", "densenet", "resnext", "wrn",
"resnet50"}`` (``wrn`` = the scripts' ``wideresnet`` folder/model) and method in ``{"cn", "sn",
"cnsn", "cnsn_consist", "cnsn_augmix"}`` (script ``run-cnsn-consist.sh`` -> ``cnsn_consist``).
Values hold every ``--flag`` the script passes to ``cifar.py``/``imagenet.py``, keyed by the flag
name (= argparse dest; the scripts' shell variables ``wd``/``epoch`` feed ``--weight_decay`` /
``--epochs``), with ``${rootdir}`` = ``/home/ubuntu`` substituted, typed as argparse types them
(``pos`` is ``type=str``, so AllConvNet's ``pos`` is ``"1"``; the model does ``int(pos)``).
Flags not passed fall back to :data:`DEFAULTS`. ``CUDA_VISIBLE_DEVICES`` is in :data:`SCRIPT_GPUS`.

How the arguments act (from cifar.py / imagenet.py / models):

* The training mode is chosen from ``exp_id`` substrings, not from a flag. CIFAR: ``"augmix" in
  exp_id`` -> AugMix data (width 3, depth -1, severity 3) + ``train_cn_augmix``; ``"consist" in
  exp_id`` -> ``train_cn_consistency``; else ``"cn" in cnsn_type`` -> ``train_cn``; else plain
  ``train``. ImageNet: ``"augmix"`` -> ``train_cn_image_augmix`` (AugMix severity 1); ``"consist"``
  -> ``train_cn_image_consist``; ``"cn" in exp_id`` -> ``train_cn_image``; else ``train``.
* ``cn_prob``: per mini-batch probability. ``train_cn``: forward with ``aug=True`` (CN on) instead
  of clean. ``train_cn_consistency``: clean CE + ``consist_wt`` * JSD(clean, CN1, CN2) (3 forward
  passes), else clean CE only. ``train_cn_augmix``: AugMix CE + 12 * JSD(clean, aug1, aug2) on
  every batch (12 hard-coded), plus with prob ``cn_prob``
  ``consist_wt`` * JSD(clean, CN(clean), CN(clean)).
* ``active_num``: per ``aug=True`` forward, that many CrossNorm units are drawn without replacement
  from all units in the network (AllConvNet 9, WRN-40-2 18, ResNeXt-29 9, DenseNet-40-12 36).
* ``crop`` (2-instance CN, ``models/cnsn.py``): ``neither`` = whole-map stats of a randomly permuted
  partner; ``style`` = partner stats from a random box; ``content`` = only a random box of the
  target is re-styled; ``both`` = both. ``beta``: box area ratio ~ Beta(beta, beta), resampled
  until > 0.1 (``bbx_thres``).
* ``cnsn_type``: ``sn``/``cn``/``cnsn`` = which of SelfNorm / CrossNorm the model's CNSN units hold.
  ImageNet scripts never put CN in the network: CN there is applied to the input images
  (``cn_op_2ins_space_chan`` in image space), so ``cnsn_type="sn"`` appears in the ``cnsn`` runs.
* ``pos``: where the one CNSN unit per block sits, see :data:`POS_MEANING`.
* Optimiser/schedule: CIFAR SGD nesterov, cosine per step from ``lr`` to 1e-6 over ``epochs``.
  ImageNet SGD (no nesterov), lr = ``lr * batch_size/256``, x0.1 at ``epochs//3`` and
  ``2*epochs//3`` (bs 128 -> peak 0.05; bs 256 -> 0.1).
"""

# fmt: off
RELEASED_SCRIPTS = {
    # ------------------------------------------------------------------ CIFAR-10
    ("cifar10", "allconv", "cn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_cn", "epochs": 100, "pos": "1", "cnsn_type": "cn",
        "cn_prob": 0.5, "active_num": 1, "crop": "neither", "beta": 1.0,
    },
    ("cifar10", "allconv", "sn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_sn", "epochs": 100, "pos": "1", "cnsn_type": "sn",
    },
    ("cifar10", "allconv", "cnsn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_cnsn", "epochs": 100, "pos": "1", "cnsn_type": "cnsn",
        "cn_prob": 0.5, "active_num": 2, "crop": "style", "beta": 1.0,
    },
    ("cifar10", "allconv", "cnsn_consist"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_cnsn_consist", "epochs": 100, "pos": "1",
        "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.75, "active_num": 2,
        "crop": "style", "beta": 1.0,
    },
    ("cifar10", "allconv", "cnsn_augmix"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_cnsn_augmix", "epochs": 100, "pos": "1",
        "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.25, "active_num": 1,
        "crop": "style", "beta": 1.0,
    },
    ("cifar10", "densenet", "cn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_cn", "epochs": 200,
        "pos": "conv1_pre", "cnsn_type": "cn", "cn_prob": 0.25, "active_num": 1,
        "crop": "neither", "beta": 1.0,
    },
    ("cifar10", "densenet", "sn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_sn", "epochs": 200,
        "pos": "conv1_post",  # every other DenseNet script (and CIFAR-100 SN) uses conv1_pre
        "cnsn_type": "sn",
    },
    ("cifar10", "densenet", "cnsn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_cnsn", "epochs": 200,
        "pos": "conv1_pre", "cnsn_type": "cnsn", "cn_prob": 0.5, "active_num": 1,
        "crop": "both", "beta": 1.0,
    },
    ("cifar10", "densenet", "cnsn_consist"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_cnsn_consist", "epochs": 200,
        "pos": "conv1_pre", "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.25,
        "active_num": 1,
        "crop": "content",  # the only script anywhere with crop=content
        "beta": 1.0,
    },
    ("cifar10", "densenet", "cnsn_augmix"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_cnsn_augmix", "epochs": 200,
        "pos": "conv1_pre", "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.5,
        "active_num": 2, "crop": "both", "beta": 1.0,
    },
    ("cifar10", "resnext", "cn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "resnext", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "resnext_cn", "epochs": 200, "pos": "post", "cnsn_type": "cn",
        "cn_prob": 0.5, "active_num": 1, "crop": "neither", "beta": 1.0,
    },
    ("cifar10", "resnext", "sn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "resnext", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "resnext_sn", "epochs": 200,
        "pos": "pre",  # CIFAR-100 ResNeXt SN uses "residual"
        "cnsn_type": "sn",
    },
    ("cifar10", "resnext", "cnsn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "resnext", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "resnext_cnsn", "epochs": 200, "pos": "post",
        "cnsn_type": "cnsn", "cn_prob": 0.25, "active_num": 1, "crop": "neither", "beta": 1.0,
    },
    ("cifar10", "resnext", "cnsn_consist"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "resnext", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "resnext_cnsn_consist", "epochs": 200, "pos": "post",
        "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.5, "active_num": 1,
        "crop": "neither", "beta": 1.0,
    },
    ("cifar10", "resnext", "cnsn_augmix"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "resnext", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "resnext_cnsn_augmix", "epochs": 200, "pos": "post",
        "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.25, "active_num": 1,
        "crop": "neither", "beta": 1.0,
    },
    ("cifar10", "wrn", "cn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_cn", "epochs": 100,
        "pos": "post", "cnsn_type": "cn", "cn_prob": 0.5, "active_num": 2, "crop": "neither",
        "beta": 1.0,
    },
    ("cifar10", "wrn", "sn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_sn", "epochs": 100,
        "pos": "pre",  # CIFAR-100 WRN SN uses "post"
        "cnsn_type": "sn",
    },
    ("cifar10", "wrn", "cnsn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_cnsn", "epochs": 100,
        "pos": "post", "cnsn_type": "cnsn", "cn_prob": 0.25, "active_num": 2, "crop": "both",
        "beta": 1.0,
    },
    ("cifar10", "wrn", "cnsn_consist"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_cnsn_consist", "epochs": 100,
        "pos": "post", "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.75,
        "active_num": 2, "crop": "both", "beta": 1.0,
    },
    ("cifar10", "wrn", "cnsn_augmix"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-10-C", "dataset": "CIFAR-10",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_cnsn_augmix", "epochs": 100,
        "pos": "post", "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.75,
        "active_num": 1, "crop": "style", "beta": 1.0,
    },
    # ------------------------------------------------------------------ CIFAR-100
    ("cifar100", "allconv", "cn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_cn", "epochs": 100, "pos": "1", "cnsn_type": "cn",
        "cn_prob": 0.5, "active_num": 1, "crop": "neither", "beta": 1.0,
    },
    ("cifar100", "allconv", "sn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_sn", "epochs": 100, "pos": "1", "cnsn_type": "sn",
    },
    ("cifar100", "allconv", "cnsn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_cnsn", "epochs": 100, "pos": "1", "cnsn_type": "cnsn",
        "cn_prob": 0.5, "active_num": 1, "crop": "style", "beta": 1.0,
    },
    ("cifar100", "allconv", "cnsn_consist"): {
        # identical to the cnsn_augmix script below except for exp_id (which selects the mode)
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_cnsn_consist", "epochs": 100, "pos": "1",
        "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.25, "active_num": 1,
        "crop": "style", "beta": 1.0,
    },
    ("cifar100", "allconv", "cnsn_augmix"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "allconv", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "allconv_cnsn_augmix", "epochs": 100, "pos": "1",
        "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.25, "active_num": 1,
        "crop": "style", "beta": 1.0,
    },
    ("cifar100", "densenet", "cn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_cn", "epochs": 200,
        "pos": "conv1_pre", "cnsn_type": "cn", "cn_prob": 0.25, "active_num": 1,
        "crop": "neither", "beta": 1.0,
    },
    ("cifar100", "densenet", "sn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_sn", "epochs": 200,
        "pos": "conv1_pre", "cnsn_type": "sn",
    },
    ("cifar100", "densenet", "cnsn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_cnsn", "epochs": 200,
        "pos": "conv1_pre", "cnsn_type": "cnsn", "cn_prob": 0.25, "active_num": 2,
        "crop": "both", "beta": 1.0,
    },
    ("cifar100", "densenet", "cnsn_consist"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        # script: "batch_size=64 # this was only to fit 1 K80 GPU"; lr NOT halved (cf. ResNeXt)
        "batch_size": 64, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_cnsn_consist", "epochs": 200,
        "pos": "conv1_pre", "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.25,
        "active_num": 2, "crop": "neither", "beta": 1.0,
    },
    ("cifar100", "densenet", "cnsn_augmix"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "densenet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 2, "exp_id": "densenet_cnsn_augmix", "epochs": 200,
        "pos": "conv1_pre", "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.5,
        "active_num": 1, "crop": "both", "beta": 1.0,
    },
    ("cifar100", "resnext", "cn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "resnext", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "resnext_cn", "epochs": 200, "pos": "post", "cnsn_type": "cn",
        "cn_prob": 0.25, "active_num": 1, "crop": "neither", "beta": 1.0,
    },
    ("cifar100", "resnext", "sn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "resnext", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "resnext_sn", "epochs": 200,
        "pos": "residual",  # CIFAR-10 ResNeXt SN uses "pre"
        "cnsn_type": "sn",
    },
    ("cifar100", "resnext", "cnsn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "resnext", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "resnext_cnsn", "epochs": 200, "pos": "post",
        "cnsn_type": "cnsn", "cn_prob": 0.5, "active_num": 1, "crop": "neither", "beta": 1.0,
    },
    ("cifar100", "resnext", "cnsn_consist"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        # script: "batch_size=64 # this was only to fit 1 K80 GPU" and
        # "lr=0.05 # remember to change it back to 0.1 if setting batch_size to 128"
        "batch_size": 64, "model": "resnext", "lr": 0.05, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "resnext_cnsn_consist", "epochs": 200,
        "pos": "post", "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.25,
        "active_num": 1, "crop": "neither", "beta": 1.0,
    },
    ("cifar100", "resnext", "cnsn_augmix"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "resnext", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "workers": 2, "exp_id": "resnext_cnsn_augmix", "epochs": 200, "pos": "post",
        "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.5, "active_num": 1,
        "crop": "neither", "beta": 1.0,
    },
    ("cifar100", "wrn", "cn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_cn", "epochs": 100,
        "pos": "post", "cnsn_type": "cn", "cn_prob": 0.5, "active_num": 2, "crop": "neither",
        "beta": 1.0,
    },
    ("cifar100", "wrn", "sn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_sn", "epochs": 100,
        "pos": "post",  # CIFAR-10 WRN SN uses "pre"
        "cnsn_type": "sn",
    },
    ("cifar100", "wrn", "cnsn"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_cnsn", "epochs": 100,
        "pos": "post", "cnsn_type": "cnsn", "cn_prob": 0.25, "active_num": 2, "crop": "both",
        "beta": 1.0,
    },
    ("cifar100", "wrn", "cnsn_consist"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_cnsn_consist", "epochs": 100,
        "pos": "post", "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.5,
        "active_num": 2, "crop": "both", "beta": 1.0,
    },
    ("cifar100", "wrn", "cnsn_augmix"): {
        "data_dir": "/home/ubuntu/data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/CIFAR-100-C", "dataset": "CIFAR-100",
        "batch_size": 128, "model": "wideresnet", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "workers": 2, "exp_id": "wideresnet_cnsn_augmix", "epochs": 100,
        "pos": "post", "cnsn_type": "cnsn", "consist_wt": 10.0, "cn_prob": 0.25,
        "active_num": 2, "crop": "both", "beta": 1.0,
    },
    # ------------------------------------------------------------------ ImageNet (imagenet.py)
    # CN is applied to the input images here (image space), never inside the network; actual
    # peak lr = lr * batch_size / 256.
    ("imagenet", "resnet50", "cn"): {
        # no --pos / --cnsn_type: a plain ResNet-50 (v1.5) + image-space CN ("cn" in exp_id)
        "data_dir": "/home/ubuntu/data/imagenet/raw-data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/ImageNet-C", "dataset": "imagenet",
        "batch_size": 128, "model": "resnet50", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4,
        "workers": 2,  # the other ImageNet scripts use 4
        "exp_id": "resnet50_cn",
        # torchvision's ImageNet-trained weights, loaded with strict=False: this run starts
        # from a trained ResNet-50, unlike every other ImageNet script (from scratch)
        "pretrained": "resnet50-19c8e357.pth",
        "epochs": 90, "cn_prob": 0.5, "crop": "both", "beta": 1.0,
    },
    ("imagenet", "resnet50", "sn"): {
        "data_dir": "/home/ubuntu/data/imagenet/raw-data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/ImageNet-C", "dataset": "imagenet",
        "batch_size": 128, "model": "resnet50", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 4, "exp_id": "resnet50_sn", "epochs": 90,
        "pos": "post", "cnsn_type": "sn",
    },
    ("imagenet", "resnet50", "cnsn"): {
        "data_dir": "/home/ubuntu/data/imagenet/raw-data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/ImageNet-C", "dataset": "imagenet",
        "batch_size": 128, "model": "resnet50", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 4, "exp_id": "resnet50_cnsn", "epochs": 90,
        "cnsn_type": "sn",  # SN in the net; CN on the input images ("cn" in exp_id)
        "pos": "post", "cn_prob": 0.5, "crop": "neither", "beta": 1.0,
    },
    ("imagenet", "resnet50", "cnsn_consist"): {
        "data_dir": "/home/ubuntu/data/imagenet/raw-data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/ImageNet-C", "dataset": "imagenet",
        "batch_size": 128, "model": "resnet50", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "workers": 4, "exp_id": "resnet50_cnsn_consist", "epochs": 90,
        "pos": "post",
        "cnsn_type": "sn",  # SN in the net; CN on the input images
        "consist_wt": 10.0, "cn_prob": 0.5,
        "crop": "both",  # train_cn_image_consist asserts crop != "neither"
        "beta": 1.0,
    },
    ("imagenet", "resnet50", "cnsn_augmix"): {
        # the released "augmix" run is a ResNet-50-IBN-b, not a plain ResNet-50
        "data_dir": "/home/ubuntu/data/imagenet/raw-data", "exp_dir": "/home/ubuntu/exp",
        "corrupt_data_dir": "/home/ubuntu/data/ImageNet-C", "dataset": "imagenet",
        "batch_size": 256,  # 8 GPUs; peak lr 0.1 after the /256 scaling
        "model": "resnet50_ibn_b", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
        "workers": 4, "exp_id": "resnet50_ibn_b_cnsn_augmix", "epochs": 90,
        "pos": "residual",  # the other ImageNet SN scripts use "post"
        "cnsn_type": "sn",  # SN in the net; CN on the (clean + 2 AugMix) input batch
        # no --consist_wt: the AugMix JSD weight is hard-coded to 12 in imagenet.py
        "cn_prob": 0.5, "crop": "neither", "beta": 1.0,
    },
}
# fmt: on

#: ``CUDA_VISIBLE_DEVICES`` of each script (single GPU everywhere except two ImageNet runs).
SCRIPT_GPUS = {
    **{
        (d, b, m): g
        for d in ("cifar10", "cifar100")
        for b in ("allconv", "densenet", "resnext", "wrn")
        for m, g in (
            ("cn", "0"),
            ("sn", "1"),
            ("cnsn", "2"),
            ("cnsn_consist", "3"),
            ("cnsn_augmix", "3"),
        )
    },
    ("imagenet", "resnet50", "cn"): "0",
    ("imagenet", "resnet50", "sn"): "1",
    ("imagenet", "resnet50", "cnsn"): "2",
    ("imagenet", "resnet50", "cnsn_consist"): "0,1,2,3",
    ("imagenet", "resnet50", "cnsn_augmix"): "0,1,2,3,4,5,6,7",
}

#: argparse defaults (used for any flag a script does not pass).
DEFAULTS = {
    "cifar": {  # cifar.py
        "model": None,
        "workers": 4,
        "epochs": 100,
        "batch_size": 128,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,  # help text says "(default: 1e-4)"
        "print_freq": 10,
        # the code compares dataset.lower() with "cifar-10"/"cifar-100", so this default raises
        "dataset": "cifar10",
        "verbose": True,
        "exp_dir": "./exp",
        "data_dir": "./data",
        "corrupt_data_dir": None,  # asserted to be a directory, so effectively required
        "exp_id": "cnsn-wrn-cifar",
        "resume": None,
        "evaluate": False,
        "cn_prob": None,
        "active_num": None,
        "pos": None,
        "beta": None,
        "crop": None,
        "cnsn_type": None,  # `"cn" in None` raises in the epoch loop, so effectively required
        "consist_wt": None,
    },
    "imagenet": {  # imagenet.py (same parser plus --pretrained)
        "model": None,
        "workers": 4,
        "epochs": 100,
        "batch_size": 128,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "print_freq": 10,
        "dataset": "cifar10",  # unused by imagenet.py
        "verbose": True,
        "exp_dir": "./exp",
        "data_dir": "./data",
        "corrupt_data_dir": None,
        "exp_id": "cnsn-wrn-cifar",
        "resume": None,
        "evaluate": False,
        "cn_prob": None,
        "active_num": None,
        "pos": None,
        "beta": None,
        "crop": None,
        "cnsn_type": None,
        "pretrained": None,
        "consist_wt": None,
    },
}

#: Values fixed in code rather than passed as arguments.
HARDCODED = {
    "cifar": {
        "wrn": "WideResNet(depth=40, widen_factor=2, drop_rate=0)",
        "allconv": "AllConvNet: 96,96,96,M,192,192,192,M,3x3-nopad,NIN,NIN,avgpool (9 conv units)",
        "resnext": "resnext29(cardinality=4, base_width=32): 3 stages x 3 bottlenecks",
        "densenet": "DenseNet(growth_rate=12, depth=40, reduction=1.0, bottleneck=False): "
        "3 blocks x 12 single 3x3 layers",
        "optimizer": "SGD(momentum, weight_decay, nesterov=True)",
        "schedule": "LambdaLR cosine per step, lr -> 1e-6 over epochs * len(train_loader)",
        "augmix": "AugMixDataset(all_ops=False, mixture_width=3, mixture_depth=-1, aug_severity=3)",
        "augmix_jsd_weight": 12,
        "crop_min_area_ratio": 0.1,
        "seed": 1,
        "normalize": "mean=std=0.5",
    },
    "imagenet": {
        "optimizer": "SGD(momentum, weight_decay), no nesterov",
        "schedule": "lr * batch_size/256, x0.1 at epochs//3 and 2*epochs//3",
        "augmix": "AugMixDataset(all_ops=False, mixture_width=3, mixture_depth=-1, aug_severity=1)",
        "augmix_jsd_weight": 12,
        "crop_min_area_ratio": 0.1,
        "seed": 1,
    },
}

#: What ``pos`` means in each backbone (one CNSN unit per block / conv layer).
POS_MEANING = {
    "allconv": {
        # AllConvNet.make_layers_custom: unit inserted at index int(pos) of [conv, BN, GELU]
        "1": "after the conv, before BN",
        "2": "after BN, before GELU",
        "3": "after GELU",
    },
    "wrn": {  # pre-activation BasicBlock, 3 x 6 blocks
        "pre": "start of the residual branch only (equal-width blocks: on raw x before bn1; "
        "widening blocks: after bn1+ReLU); the shortcut sees the un-normalised input",
        "residual": "end of the residual branch (after conv2), before the addition",
        "identity": "on the shortcut (after the 1x1 shortcut conv if any), before the addition",
        "post": "after the addition (block output; no ReLU follows in a pre-act WRN)",
    },
    "resnext": {  # post-activation bottleneck, 3 x 3 blocks
        "pre": "on the block input before conv_reduce; in downsampling blocks the 1x1 "
        "downsample also gets the CNSN output",
        "residual": "after bn_expand, before the addition",
        "identity": "on the shortcut; discarded in downsampling blocks (overwritten by "
        "downsample(x))",
        "post": "after addition and the final ReLU",
    },
    "densenet": {  # SingleLayer (bottleneck=False) allows only these two
        "conv1_pre": "on the layer input, which is also what gets concatenated onward",
        "conv1_post": "on the 12 new channels after conv1, before concatenation",
        "conv2_post": "Bottleneck layers only (not built by cifar.py)",
    },
    "resnet50": {  # torchvision-style Bottleneck (v1.5); the IBN variants differ at "pre"
        "pre": "on the block input; the residual branch only in resnet_cnsn.py (downsample reads "
        "the raw input), also feeding downsample in resnet_ibn_cnsn.py",
        "residual": "after bn3, before the addition",
        "identity": "on the shortcut (after downsample if any), before the addition",
        "post": "after the addition, before the final ReLU (IBN-b blocks with IN: no unit)",
    },
}
