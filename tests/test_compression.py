"""Compression: densities, traced channel groups, width solving, spec emission and the two CLIs.

References: numpy counts for densities, the sqrt rule's formula, PyTorch itself (a rebuilt network
with widths that do not connect fails to run), and the published compressed AdaCoF layout and
parameter count (2,452,094 in the paper's table).
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import compress
import sparsity_report
from cdfi.compression.densities import conv_densities, model_density, sqrt_rule
from cdfi.compression.errors import CompressionError
from cdfi.compression.spec import arch_from_widths, compress_variant, published_densities
from cdfi.compression.tracing import trace_channel_graph
from cdfi.compression.widths import apply_widths, solve_widths, validate_widths
from cdfi.io.checkpoint import save_checkpoint
from models import load_arch, make_model
from models.arch import ARCH_DIR


class Tiny(nn.Module):
    """Skip addition, BatchNorm, per-channel PReLU, depthwise conv, and a channel concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.PReLU(8)
        self.c = nn.Conv2d(8, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.e = nn.Conv2d(16, 12, 1)
        self.f = nn.Conv2d(12, 4, 3, padding=1)
        self.g = nn.Conv2d(7, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        h = self.act(self.b(torch.relu(self.bn(a))) + a)
        h = torch.nn.functional.max_pool2d(h, 2)
        h = torch.relu(self.dw(torch.relu(self.c(h))))
        h = torch.nn.functional.interpolate(self.f(torch.relu(self.e(h))), scale_factor=2.0)
        return self.g(torch.cat([h, x], 1))


def _group(graph, name: str, side: str) -> int:
    conv = graph.convs[name]
    return conv.in_group if side == "in" else conv.out_group


def test_conv_densities_match_numpy_counts_and_sqrt_rule() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(10, 4, 3, 3, generator=gen)
    w[torch.rand(w.shape, generator=gen) < 0.6] = 0
    state = {"x.weight": w, "x.bias": torch.zeros(10), "fc.weight": torch.ones(3, 3)}
    (layer,) = conv_densities(state)
    assert layer.name == "x" and (layer.c_in, layer.c_out) == (4, 10)
    assert layer.nonzero == np.count_nonzero(w.numpy()) and layer.total == w.numel()
    assert layer.reduced_out == math.floor(math.sqrt(layer.density) * 10)
    assert [sqrt_rule(0.25, 64), sqrt_rule(0.5625, 32), sqrt_rule(0.0, 32), sqrt_rule(1.0, 7)] == [32, 24, 1, 7]
    (thresholded,) = conv_densities(state, threshold=1.0)
    assert thresholded.nonzero == int(np.sum(np.abs(w.numpy()) > 1.0))
    total = sum(t.numel() for t in state.values())
    assert model_density(state) == pytest.approx((np.count_nonzero(w.numpy()) + 9) / total)
    with pytest.raises(CompressionError, match="no convolution"):
        conv_densities({"fc.weight": torch.ones(3, 3)})


def test_traced_groups_of_a_small_network() -> None:
    model = Tiny()
    graph = trace_channel_graph(model, torch.rand(1, 3, 8, 8))
    shared = _group(graph, "a", "out")
    assert {_group(graph, "b", "in"), _group(graph, "b", "out"), _group(graph, "c", "in")} == {shared}
    assert not graph.groups[shared].fixed
    assert graph.followers == {"bn": shared, "act": shared}
    assert _group(graph, "dw", "in") == _group(graph, "dw", "out") == _group(graph, "c", "out")
    assert _group(graph, "e", "out") == _group(graph, "f", "in")
    assert graph.groups[_group(graph, "a", "in")].fixed  # network input
    assert graph.groups[_group(graph, "f", "out")].fixed  # concatenated along channels
    assert graph.groups[_group(graph, "g", "out")].fixed  # network output
    assert model.training, "tracing must restore the training flag"


def test_any_width_per_free_group_gives_a_network_that_runs() -> None:
    model = Tiny()
    x = torch.rand(2, 3, 8, 8)
    graph = trace_channel_graph(model, x)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        choice = {
            g.gid: g.width if g.fixed else int(torch.randint(1, g.width + 1, (1,), generator=gen))
            for g in graph.groups.values()
        }
        widths = {n: (choice[c.in_group], choice[c.out_group]) for n, c in graph.convs.items()}
        small = apply_widths(model, graph, widths).eval()
        assert small(x).shape == (2, 2, 8, 8)
        assert (
            small.b.out_channels
            == small.bn.num_features
            == small.act.num_parameters
            == choice[_group(graph, "a", "out")]
        )
    broken = {n: (c.c_in, c.c_out) for n, c in graph.convs.items()}
    broken["b"] = (8, 5)  # the skip addition needs b's output to match a's
    with pytest.raises(CompressionError, match="^b: output width 5"):
        validate_widths(graph, broken)
    rebuilt = Tiny()
    rebuilt.b = nn.Conv2d(8, 5, 3, padding=1)
    with pytest.raises(RuntimeError):  # PyTorch agrees that these widths do not connect
        rebuilt.eval()(x)
    fixed = {n: (c.c_in, c.c_out) for n, c in graph.convs.items()}
    fixed["g"] = (7, 1)
    with pytest.raises(CompressionError, match="^g: output width 1 must stay 2"):
        validate_widths(graph, fixed)


def test_sqrt_method_follows_the_rule_and_product_keeps_nonzero_counts() -> None:
    chain = nn.Sequential(
        nn.Conv2d(3, 64, 3),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3),
        nn.ReLU(),
        nn.Conv2d(128, 64, 3),
        nn.ReLU(),
        nn.Conv2d(64, 5, 3),
    )
    graph = trace_channel_graph(chain, torch.rand(1, 3, 12, 12))
    uniform = {name: 0.36 for name in graph.convs}
    widths = solve_widths(graph, uniform, method="sqrt")
    assert widths == {
        "0": (3, sqrt_rule(0.36, 64)),
        "2": (sqrt_rule(0.36, 64), sqrt_rule(0.36, 128)),
        "4": (sqrt_rule(0.36, 128), sqrt_rule(0.36, 64)),
        "6": (sqrt_rule(0.36, 64), 5),
    }
    # Densities made from a consistent width choice are reproduced exactly by the product method.
    target = {"0": (3, 40), "2": (40, 100), "4": (100, 30), "6": (30, 5)}
    full = {n: (c.c_in, c.c_out) for n, c in graph.convs.items()}
    densities = {n: (i * o) / (full[n][0] * full[n][1]) for n, (i, o) in target.items()}
    assert solve_widths(graph, densities, method="product") == target
    # balance=1 turns each layer's two equations into the sqrt rule for both of its sides.
    mixed = {"0": 0.5, "2": 0.2, "4": 0.7, "6": 0.9}
    assert solve_widths(graph, mixed, balance=1.0) == solve_widths(graph, mixed, method="sqrt")
    with pytest.raises(CompressionError, match="density"):
        solve_widths(graph, {"2": 1.5})
    with pytest.raises(CompressionError, match="not a traced convolution"):
        solve_widths(graph, {"nope": 0.5})


@pytest.fixture(scope="module")
def adacof_graph():
    model = make_model("adacof", 5, 1)
    frames = torch.rand(1, 3, 32, 32)
    return model, trace_channel_graph(model, frames, frames)


def test_published_densities_give_the_published_compressed_adacof(adacof_graph, capsys) -> None:
    full, graph = adacof_graph
    small = make_model("compressed_adacof", 5, 1)
    densities = published_densities(full, small)
    published = {n: (m.in_channels, m.out_channels) for n, m in small.named_modules() if isinstance(m, nn.Conv2d)}
    widths = solve_widths(graph, densities, method="product")
    sqrt_widths = solve_widths(graph, densities, method="sqrt")
    diffs = {n: max(abs(a - b) for a, b in zip(sqrt_widths[n], published[n], strict=True)) for n in published}
    with capsys.disabled():
        print(
            f"\nsqrt method vs published compressed AdaCoF F5/D1: {sum(v > 0 for v in diffs.values())} of "
            f"{len(diffs)} layers differ, max {max(diffs.values())} channels, mean "
            f"{sum(diffs.values()) / len(diffs):.1f}; product method: identical"
        )
    assert widths == published
    spec = arch_from_widths("compressed_adacof", 5, 1, small.arch, widths)
    assert spec == load_arch(ARCH_DIR / "compressed_adacof_F_5_D_1.json")
    n_params = sum(p.numel() for p in make_model("compressed_adacof", 5, 1, arch=spec).parameters())
    assert n_params == 2_452_094


def test_published_layout_file_agrees(adacof_graph, official_layout) -> None:
    _, graph = adacof_graph
    full = official_layout["adacof_F_5_D_1"]["state_dict"]
    comp = official_layout["compressed_adacof_F_5_D_1"]["state_dict"]
    densities = {}
    for name in graph.convs:
        (o, i, *_), (o2, i2, *_) = full[f"{name}.weight"], comp[f"{name}.weight"]
        densities[name] = (i2 * o2) / (i * o)
    widths = solve_widths(graph, densities)
    for name, (c_in, c_out) in widths.items():
        assert [c_out, c_in] == comp[f"{name}.weight"][:2], name


def test_compressed_model_from_a_spec_trains() -> None:
    full = make_model("adacof", 5, 1)
    densities = {n: 0.05 for n, m in full.named_modules() if isinstance(m, nn.Conv2d)}
    result = compress_variant("adacof", 5, 1, None, densities, balance=1.0)
    model = make_model(result.spec["model"], 5, 1, arch=result.spec).train()
    assert sum(p.numel() for p in model.parameters()) == result.compressed_params < result.full_params
    gen = torch.Generator().manual_seed(0)
    f0, f2 = torch.rand(1, 3, 32, 32, generator=gen), torch.rand(1, 3, 32, 32, generator=gen)
    gt = 0.5 * (f0 + f2)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = torch.sqrt((model(f0, f2)["frame1"] - gt) ** 2 + 1e-6).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_unpruned_densities_are_refused() -> None:
    with pytest.raises(CompressionError, match=r"density 1\.0"):
        compress_variant("compressed_adacof", 5, 1, None, {"get_kernel.moduleConv1.0": 1.0})


def test_arch_from_widths_names_a_layer_that_does_not_connect() -> None:
    small = make_model("compressed_adacof", 5, 1)
    widths = {n: (m.in_channels, m.out_channels) for n, m in small.named_modules() if isinstance(m, nn.Conv2d)}
    widths["get_kernel.moduleConv1.2"] = (20, 24)
    with pytest.raises(CompressionError, match=r"^get_kernel\.moduleConv1\.2: widths 20->24 do not connect"):
        arch_from_widths("compressed_adacof", 5, 1, small.arch, widths)


@pytest.fixture()
def pruned_checkpoint(tmp_path):
    model = make_model("compressed_adacof", 5, 1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight[torch.rand(m.weight.shape, generator=gen) < 0.5] = 0
    path = tmp_path / "pruned.pth"
    save_checkpoint(path, model, epoch=3)
    return path, model


def test_sparsity_report_cli_writes_table_csv_and_png(pruned_checkpoint, tmp_path, capsys) -> None:
    path, model = pruned_checkpoint
    out = tmp_path / "report"
    assert sparsity_report.main(["--checkpoint", str(path), "--out_dir", str(out)]) == 0
    assert "get_kernel.moduleConv1.0" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "pruned_sparsity.csv").read_text().splitlines()))
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert [r["layer"] for r in rows] == list(convs)
    for row in rows:
        w = convs[row["layer"]].weight.detach().numpy()
        assert int(row["nonzero"]) == np.count_nonzero(w)
        assert float(row["density"]) == pytest.approx(np.count_nonzero(w) / w.size, abs=1e-7)
        assert int(row["reduced_in"]) == math.floor(math.sqrt(np.count_nonzero(w) / w.size) * w.shape[1])
    with Image.open(out / "pruned_sparsity.png") as img:
        assert img.format == "PNG" and img.size[0] > 100
    before = (out / "pruned_sparsity.csv").read_bytes()
    assert sparsity_report.main(["--checkpoint", str(path), "--out_dir", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "pruned_sparsity.csv").read_bytes() == before


def test_compress_cli_from_report_and_refusals(pruned_checkpoint, tmp_path, capsys) -> None:
    path, _ = pruned_checkpoint
    report = tmp_path / "r.csv"
    assert (
        sparsity_report.main(["--checkpoint", str(path), "--csv", str(report), "--png", str(tmp_path / "r.png")]) == 0
    )
    spec_path = tmp_path / "spec.json"
    args = ["--report", str(report), "--model", "compressed_adacof", "--out", str(spec_path)]
    assert compress.main(args) == 0
    spec = json.loads(spec_path.read_text())
    model = make_model(spec["model"], 5, 1, arch=spec)
    assert sum(p.numel() for p in model.parameters()) < 2_452_094
    assert compress.main(args) == 2 and "--force" in capsys.readouterr().err
    dense = tmp_path / "dense.pth"
    save_checkpoint(dense, make_model("compressed_adacof", 5, 1), epoch=0)
    assert compress.main(["--checkpoint", str(dense), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "density 1.0" in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()


def _vimeo_folder(root, count: int = 3) -> None:
    """A tiny Vimeo-90K-layout folder: smooth random frames shifted by one pixel per frame."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(count):
        entry = f"00001/{i + 1:04d}"
        folder = root / "sequences" / entry
        folder.mkdir(parents=True)
        base = rng.random((40, 40, 3))
        for k, name in enumerate(("im1.png", "im2.png", "im3.png")):
            Image.fromarray((np.roll(base, k, axis=1) * 255).astype(np.uint8)).save(folder / name)
        entries.append(entry)
    (root / "tri_trainlist.txt").write_text("\n".join(entries) + "\n")


def test_prune_cli_sparsifies_reports_density_and_resumes(tmp_path, capsys) -> None:
    import prune
    from cdfi.io.checkpoint import load_checkpoint, load_model

    _vimeo_folder(tmp_path / "vimeo")
    start = tmp_path / "trained.pth"
    save_checkpoint(start, make_model("compressed_adacof", 5, 1), epoch=0)
    out = tmp_path / "pruned.pth"
    args = [
        "--checkpoint",
        str(start),
        "--train_dir",
        str(tmp_path / "vimeo"),
        "--num_training_samples",
        "2",
        "--batch_size",
        "1",
        "--crop",
        "32",
        "--epochs",
        "3",
        "--Np",
        "1",
        "--lr",
        "1e-2",
        "--lambda_",
        "1.0",
        "--out",
        str(out),
        "--no_progress",
    ]
    assert prune.main([*args, "--max_steps", "3"]) == 0  # one proximal epoch, then one orthant step
    partial = load_checkpoint(out).state_dict
    assert prune.main([*args, "--resume"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1", "2", "3"]
    densities = [float(ln.split("model density")[1].split()[0]) for ln in lines]
    assert densities[0] < 1.0 and densities == sorted(densities, reverse=True)
    final = load_checkpoint(out)
    assert final.meta["density"] == pytest.approx(densities[-1], abs=1e-4)
    for name, w in partial.items():  # orthant steps never revive a zero
        assert torch.all(final.state_dict[name][w == 0] == 0), name
    assert isinstance(load_model(out), nn.Module)
    assert prune.main(args) == 2 and "--force" in capsys.readouterr().err
    assert prune.main([*args, "--lambda_", "0", "--force"]) == 2
    assert "--lambda_" in capsys.readouterr().err
    assert prune.main([*args, "--max_steps", "0", "--force"]) == 2
    assert "--max_steps" in capsys.readouterr().err


def test_cdfi_model_compresses_to_a_buildable_spec() -> None:
    model = make_model("cdfi_adacof", 11, 2)
    densities = {n: 0.3 for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    result = compress_variant("cdfi_adacof", 11, 2, None, densities, balance=1.0)
    assert result.spec["features"] == model.arch["features"]  # warped and concatenated: kept
    small = make_model("cdfi_adacof", 11, 2, arch=result.spec)
    assert sum(p.numel() for p in small.parameters()) == result.compressed_params < result.full_params
    assert result.spec["encoder"][1] == [sqrt_rule(0.3, w) for w in model.arch["encoder"][1]]


def test_compress_refuses_a_report_or_options_of_another_network(pruned_checkpoint, tmp_path, capsys) -> None:
    path, _ = pruned_checkpoint  # a pruned compressed AdaCoF F5/D1
    report = tmp_path / "r.csv"
    assert (
        sparsity_report.main(["--checkpoint", str(path), "--csv", str(report), "--png", str(tmp_path / "r.png")]) == 0
    )
    capsys.readouterr()
    out = tmp_path / "spec.json"
    # Same layer names, other widths: the full AdaCoF's first conv has 32 outputs, not 24.
    assert compress.main(["--report", str(report), "--model", "adacof", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {report}: layer get_kernel.moduleConv1.0 is 6->24")
    assert "adacof F5/D1" in err and not out.exists()
    # A report missing a layer is not of this network either.
    lines = report.read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:-1]) + "\n")
    assert compress.main(["--report", str(short), "--model", "compressed_adacof", "--out", str(out)]) == 2
    last = lines[-1].split(",")[0]
    assert f"{short}: no row for layer {last}" in capsys.readouterr().err and not out.exists()
    # Options that contradict the checkpoint are refused, naming both variants.
    for extra, asked in (
        (["--model", "adacof"], "adacof F5/D1"),
        (["--kernel_size", "11"], "compressed_adacof F11/D1"),
    ):
        assert compress.main(["--checkpoint", str(path), *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "compressed_adacof F5/D1 weights" in err and f"{asked} was asked for" in err
        assert not out.exists()
    agreeing = ["--model", "compressed_adacof", "--kernel_size", "5", "--dilation", "1"]
    assert compress.main(["--checkpoint", str(path), *agreeing, "--out", str(out)]) == 0 and out.exists()


def test_prune_cli_exit_codes_follow_the_convention(tmp_path, monkeypatch, capsys) -> None:
    import prune

    start = tmp_path / "trained.pth"
    save_checkpoint(start, make_model("compressed_adacof", 5, 1), epoch=0)
    out = tmp_path / "p.pth"
    args = ["--checkpoint", str(start), "--train_dir", str(tmp_path / "none"), "--out", str(out)]
    assert prune.main(args) == 2  # bad input: the training folder is not there
    err = capsys.readouterr().err
    assert err == f"error: --train_dir: {tmp_path / 'none'}: triplet folder not found\n"
    assert not out.exists()

    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(prune, "prune", fail)
    assert prune.main(args) == 1  # a failure while working
    assert capsys.readouterr().err == "error: No space left on device\n"

    def interrupt(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prune, "prune", interrupt)
    assert prune.main(args) == 130
    err = capsys.readouterr().err
    assert str(tmp_path / "p.last.pth") in err and "--resume" in err
