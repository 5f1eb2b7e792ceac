"""End-to-end smoke run of the transfer experiment, its config checks and the baselines factory."""

import json

import pytest
import torch
from torch import nn

from reprozoo.core.experiment import ConfigError
from reprozoo.multianda import BASELINES, make_baseline
from reprozoo.multianda.experiment import ATTACKS, Config, eps_label, run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    mp.setenv("REPROZOO_CACHE", str(cache))
    try:
        cfg = Config.from_preset("smoke")
        result = run(cfg, out)
    finally:
        mp.undo()
    return cfg, result, out, cache


def test_smoke_run_is_real(smoke):
    cfg, result, out, _ = smoke
    recs = [r for r in result.records if r.metric == "ASR"]
    methods = {r.method for r in recs}
    assert methods == set(ATTACKS)
    assert {r.role for r in recs if r.method in ("ANDA", "MultiANDA")} == {"method"}
    assert {r.role for r in recs if r.method in BASELINES} == {"baseline"}
    assert all(0.0 <= r.value <= 100.0 for r in recs)
    # every (attack, target) pair is recorded with the setting format of the issue
    s = cfg.surrogates[0]
    for target in cfg.zoo:
        kind = "whitebox" if target == s else "blackbox"
        setting = f"eps=16/255,surrogate={s},target={target},{kind}"
        assert {r.method for r in recs if r.setting == setting} == set(ATTACKS)
    # white-box iterative attacks on the surrogate succeed far more often than chance (0 %)
    wb = {r.method: r.value for r in recs if r.setting.endswith("whitebox")}
    assert wb["I-FGSM"] > 50.0 and wb["PGD"] > 50.0 and wb["ANDA"] > 30.0
    # clean accuracies of the zoo are recorded and above chance (10 %)
    top1 = [r.value for r in result.records if r.metric == "top1"]
    assert len(top1) == len(cfg.zoo) and min(top1) > 12.0
    # ASR vs number of samples is monotone in n (any-of-n success)
    curve = sorted((int(r.setting.rsplit("n=", 1)[1]), r.value) for r in result.records
                   if r.metric == "ASR_any_of_n" and r.method == "ANDA" and r.seed == cfg.seeds[0])
    assert [n for n, _ in curve] == list(cfg.sample_counts)
    assert all(a[1] <= b[1] for a, b in zip(curve, curve[1:], strict=False))
    for fig in result.figures:
        assert (out / fig).is_file()
    assert any("heatmap" in f for f in result.figures) and any("samples" in f for f in result.figures)
    json.dumps(result.to_dict(), allow_nan=False)


#: The paper's claim (Sec. 4, transfer tables): ANDA's black-box ASR beats MI-FGSM's and I-FGSM's. Measured on
#: the smoke preset (seeds 0, 1, 2; VGG surrogate, eps = 16/255, mean over the black-box targets ResNet-8 and CNN):
#: ANDA - MI-FGSM = +8.3 points (per seed +2.1, +12.5, +10.4), ANDA - I-FGSM = +13.2 (+8.3, +12.5, +18.8).
#: The bars sit about half-way to the measured margins (room for seed noise: 24 images, one image = 2.1 points)
#: and above 0, so an ANDA no better than the baseline fails.
CLAIM_MARGINS = {"MI-FGSM": 4.0, "I-FGSM": 6.0}


def _blackbox_mean(result, method):
    vals = [r.value for r in result.records if r.method == method and r.metric == "ASR"
            and r.setting.endswith("target=mean-of-blackbox,blackbox")]
    assert vals, method
    return sum(vals) / len(vals)


@pytest.mark.parametrize("baseline", sorted(CLAIM_MARGINS))
def test_claim_anda_transfers_better_than_the_baseline(smoke, baseline):
    cfg, result, _, _ = smoke
    assert tuple(cfg.seeds) == (0, 1, 2)
    margin = _blackbox_mean(result, "ANDA") - _blackbox_mean(result, baseline)
    assert margin >= CLAIM_MARGINS[baseline], f"ANDA - {baseline} = {margin:+.1f} points"


def test_smoke_run_is_deterministic(smoke, tmp_path, monkeypatch):
    cfg, result, _, cache = smoke
    monkeypatch.setenv("REPROZOO_CACHE", str(cache))  # the models cached by the first run
    again = run(cfg.replace(attacks=("I-FGSM", "MultiANDA"), seeds=(1,)), tmp_path)
    assert sum("loaded from" in n for n in again.notes) == len(cfg.zoo)
    first = {(r.method, r.setting, r.metric, r.seed): r.value for r in result.records if r.metric.startswith("ASR")}
    checked = 0
    for r in again.records:
        if r.metric.startswith("ASR"):
            assert r.value == first[(r.method, r.setting, r.metric, r.seed)], (r.method, r.setting)
            checked += 1
    assert checked >= 2 * len(cfg.zoo)


@pytest.mark.parametrize("changes,match", [
    ({"zoo": ("VGG", "Foo")}, r"zoo='Foo' is not valid; choose one of \['ResNet-8'"),
    ({"surrogates": ("ViT",), "zoo": ("VGG",)}, "not in zoo"),
    ({"attacks": ("FGSM",)}, r"attacks='FGSM' is not valid; choose one of \["),
    ({"n_ens": 8}, "perfect square"),
    ({"epsilons": (-0.1,)}, r"epsilons\[0\]=-0.1 should be > 0"),
    ({"steps": 0}, "steps=0 should be >= 1"),
    ({"max_rank": 1}, "max_rank"),
    ({"sample_counts": (0,)}, r"sample_counts\[0\]=0 should be >= 1"),
    ({"sample_counts": (1, 437)}, r"with n_images=200 each entry should be <= 436"),  # quick: 200 images
])
def test_bad_config(changes, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_preset("quick", **changes)


def test_set_strings_parse_fractions():
    cfg = Config.from_preset("quick").with_strings({"epsilons": "4/255,16/255", "n_ens": "16"})
    assert cfg.epsilons == pytest.approx((4 / 255, 16 / 255)) and cfg.n_ens == 16
    assert eps_label(16 / 255) == "16/255" and eps_label(0.05) == "0.05"


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_keep_the_budget(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    atk = make_baseline(name, net, 8 / 255, 3)
    assert atk.eps == pytest.approx(8 / 255) and atk.alpha == pytest.approx(8 / 255 / 3) and atk.steps == 3
    adv = atk(x, y)
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6


def test_bad_baseline():
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("FGSM", net, 0.1, 2)
    with pytest.raises(ValueError, match="ti_kernel"):
        make_baseline("TI-MI-FGSM", net, 0.1, 2, ti_kernel=4)
    with pytest.raises(ValueError, match="eps"):
        make_baseline("PGD", net, -0.1, 2)


@pytest.mark.parametrize("key,text,match", [
    ("aug_max", "-1", r"aug_max=-1.0 should be >= 0"),
    ("aug_max", "2", r"aug_max=2.0 should be < 2"),
    ("ti_kernel", "4", "ti_kernel=4 should be an odd int"),
    ("train_shards", "9", r"train_shards=9 is not valid; choose one of \[0, 1\]"),
    ("train_shards", "0,0", "train_shards=.* repeats"),
    ("attacks", "", "attacks is empty"),
    ("attacks", "ANDA,ANDA", "attacks=.* repeats"),
    ("zoo", "", "zoo is empty"),
    ("surrogates", "", "surrogates is empty"),
    ("epsilons", "", "epsilons is empty"),
    ("epsilons", "0", r"epsilons\[0\]=0.0 should be > 0"),
    ("epsilons", "0.1,2", r"epsilons\[1\]=2.0 should be <= 1"),
    ("sample_counts", "", "sample_counts is empty"),
    ("sample_counts", "100000", r"n=100000 draws per image is too many; with n_images=24 each entry should be <= 1000"),
    ("sample_counts", "1,1001", r"sample_counts=\(1, 1001\).*<= 1000.*GiB"),
    ("n_images", "6000", r"n_images=6000 should be <= 5000"),
    ("train_limit", "6000", r"train_limit=6000 should be an int in \[0, 5000\]"),
    ("chain_noise", "-0.1", r"chain_noise=-0.1 should be >= 0"),
    ("epoch_scale", "0", r"epoch_scale=0.0 should be > 0"),
    ("zoo_seed", "-1", "zoo_seed=-1 should be >= 0"),
    ("vmi_n", "0", "vmi_n=0 should be >= 1"),
    ("attack_batch", "0", "attack_batch=0 should be >= 1"),
    ("surrogates", "VGG,VGG", "surrogates=.* repeats VGG"),
    ("use_cache", "maybe", "expected a bool"),
])
def test_every_field_is_checked_up_front(key, text, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_preset("smoke").with_strings({key: text})


def test_presets_are_valid_and_python_lists_are_accepted():
    for preset in Config.PRESETS:
        Config.from_preset(preset)
    cfg = Config.from_preset("smoke", zoo=["VGG", "CNN"], surrogates=["VGG"])
    assert list(cfg.zoo) == ["VGG", "CNN"]
    with pytest.raises(ConfigError, match=r"steps should be an int, got float \(2.5\)"):
        Config.from_preset("smoke", steps=2.5)


def test_a_variant_alone_runs_its_parent_attack(smoke, tmp_path, monkeypatch):
    cfg, result, _, cache = smoke
    monkeypatch.setenv("REPROZOO_CACHE", str(cache))
    again = run(cfg.replace(attacks=("ANDA-sample",), seeds=(2,)), tmp_path)
    methods = {r.method for r in again.records if r.metric == "ASR"}
    assert methods == {"ANDA-sample"}
    first = {(r.setting, r.metric, r.seed): r.value for r in result.records if r.method == "ANDA-sample"}
    got = {(r.setting, r.metric, r.seed): r.value for r in again.records
           if r.method == "ANDA-sample" and r.metric == "ASR"}
    assert got and all(first[k] == v for k, v in got.items())


def test_sample_counts_cap_follows_n_images():
    from reprozoo.multianda.experiment import SAMPLE_BYTES_LIMIT, max_sample_count

    smoke = Config.from_preset("smoke")  # 24 images: the 1000-draw cap binds
    assert max_sample_count(24) == 1000 and smoke.with_strings({"sample_counts": "1,1000"}).sample_counts[-1] == 1000
    with pytest.raises(ConfigError, match="<= 1000"):
        smoke.with_strings({"sample_counts": "1001"})
    # the memory cap binds for many images; the bound is exact: the kept draws fit in SAMPLE_BYTES_LIMIT
    cap = max_sample_count(1000)
    assert cap * 1000 * 3 * 32 * 32 * 4 <= SAMPLE_BYTES_LIMIT < (cap + 1) * 1000 * 3 * 32 * 32 * 4
    assert Config.from_preset("full").sample_counts[-1] <= cap  # the shipped presets stay allowed
    with pytest.raises(ConfigError, match=f"<= {cap}"):
        Config.from_preset("full", sample_counts=(cap + 1,))


def test_di_and_ti_run_with_momentum_and_mi_fgsm_k_at_andas_budget():
    """DI and TI as transfer papers run them (momentum, decay 1.0; TI without DI); MI-FGSM-K uses
    ANDA's K translated copies, so ANDA's gradient budget."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    di = make_baseline("DI-MI-FGSM", net, 8 / 255, 3)
    ti = make_baseline("TI-MI-FGSM", net, 8 / 255, 3, ti_kernel=5)
    assert di.decay == 1.0 and di.diversity_prob == 0.5
    assert ti.decay == 1.0 and ti.diversity_prob == 0.0 and ti.len_kernel == 5
    k = make_baseline("MI-FGSM-K", net, 8 / 255, 3, n_ens=9, aug_max=0.3)
    assert (k.n_ens, k.aug_max, k.decay) == (9, 0.3, 1.0)
    cfg = Config.from_preset("smoke")
    assert {"DI-MI-FGSM", "TI-MI-FGSM", "MI-FGSM-K"} <= set(cfg.attacks)


def test_mi_fgsm_k_with_one_untranslated_copy_is_mi_fgsm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    one = make_baseline("MI-FGSM-K", net, 8 / 255, 4, n_ens=1, aug_max=0.0)(x, y)
    ref = make_baseline("MI-FGSM", net, 8 / 255, 4)(x, y)
    assert float((one - ref).abs().max()) < 1e-5
    many = make_baseline("MI-FGSM-K", net, 8 / 255, 4, n_ens=9, aug_max=0.3)(x, y)
    assert float((many - x).abs().max()) <= 8 / 255 + 1e-6 and not torch.equal(many, ref)
