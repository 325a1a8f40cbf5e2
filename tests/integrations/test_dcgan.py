"""DCGAN adapter: the stand-in of pytorch/examples dcgan/main.py trains with one replaced line, and the adapter's
three calls give exactly the gradients of the margin loss (RankGAN Eq. 3), the WGAN generator loss and RankGAN's
stage losses (Eq. 4 + 6), written out by hand."""

from __future__ import annotations

import copy
import difflib
import doctest
import math
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import rankplug
import rankplug.integrations.dcgan as dcgan
from rankplug.functional import (
    gogan_rank_loss,
    hinge_margin_loss,
    stage_rank_generator_loss,
    wgan_generator_loss,
)

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standins" / "dcgan_main.py"
EXAMPLES = ROOT / "examples"
CRITERION_LINE = "criterion = nn.BCELoss()\n"  # upstream's line, exactly once in the stand-in
# What docs/integrations_dcgan.md tells users to put in place of upstream's `criterion = nn.BCELoss()`.
REPLACEMENT = (
    "import rankplug.integrations.dcgan\ncriterion = rankplug.integrations.dcgan.margin_criterion(netD, margin=1.0)\n"
)
TINY = ["--dataset", "fake", "--ngf", "8", "--ndf", "8", "--imageSize", "64", "--manualSeed", "1"]
LINE = re.compile(
    r"^\[(\d+)/\d+\]\[(\d+)/\d+\] Loss_D: (\S+) Loss_G: (\S+) D\(x\): (\S+) D\(G\(z\)\): (\S+) / (\S+)$", re.M
)

# The state_dict keys of upstream's networks (layer order of dcgan/main.py).
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
D_KEYS = [
    "main.0.weight",
    "main.2.weight",
    *(f"main.3.{k}" for k in _BN),
    "main.5.weight",
    *(f"main.6.{k}" for k in _BN),
    "main.8.weight",
    *(f"main.9.{k}" for k in _BN),
    "main.11.weight",
]
G_KEYS = [key for i in (0, 3, 6, 9) for key in (f"main.{i}.weight", *(f"main.{i + 1}.{k}" for k in _BN))]
G_KEYS.append("main.12.weight")


def patched_source() -> str:
    lines = STANDIN.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line == CRITERION_LINE]
    assert len(hits) == 1, hits
    lines[hits[0]] = REPLACEMENT
    return "".join(lines)


def build_standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> dict:
    """Run the unmodified stand-in with --niter 0: it builds netG / netD and trains nothing."""
    monkeypatch.setattr(sys, "argv", [str(STANDIN), *TINY, "--niter", "0", "--outf", str(tmp_path)])
    namespace = runpy.run_path(str(STANDIN), run_name="__main__")
    capsys.readouterr()
    return namespace


def run_script(path: Path, *args: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a script as ``__main__`` in this process (one torch import for the whole file) and return its stdout."""
    monkeypatch.setattr(sys, "argv", [str(path), *args])
    capsys.readouterr()
    runpy.run_path(str(path), run_name="__main__")
    return capsys.readouterr().out


def parse(stdout: str) -> list[tuple[int, float, float, float, float]]:
    """(epoch, Loss_D, Loss_G, D(x), D(G(z)) before the critic step) per printed batch."""
    rows = [(int(m[1]), float(m[3]), float(m[4]), float(m[5]), float(m[6])) for m in LINE.finditer(stdout)]
    assert rows, stdout[-2000:]
    return rows


# ------------------------------------------------------------------------------------------------ (a) structure
def test_standin_has_upstreams_structure_and_the_swap_keeps_the_keys(tmp_path, monkeypatch, capsys):
    ns = build_standin(tmp_path, monkeypatch, capsys)
    netD, netG = ns["netD"], ns["netG"]
    assert len(netD.main) == 13 and isinstance(netD.main[12], nn.Sigmoid)
    assert isinstance(netG.main[13], nn.Tanh)
    assert list(netD.state_dict()) == D_KEYS
    assert list(netG.state_dict()) == G_KEYS

    netD.double()
    x = torch.rand(4, 3, 64, 64, dtype=torch.float64)
    probabilities = netD(x)
    assert probabilities.shape == (4,)
    criterion = dcgan.margin_criterion(netD, margin=1.0)
    assert isinstance(criterion, dcgan.DCGANCriterion)
    assert isinstance(netD.main[12], nn.Identity) and len(netD.main) == 13
    assert list(netD.state_dict()) == D_KEYS
    scores = netD(x)  # train mode: batch statistics, so the same batch gives the same pre-activation
    assert scores.shape == (4,)
    torch.testing.assert_close(scores, torch.logit(probabilities))
    dcgan.strip_sigmoid(netD)  # a second swap is harmless
    assert isinstance(netD.main[12], nn.Identity)


# ------------------------------------------------------------------------------------------- (b) one-line swap
def test_standin_with_only_the_criterion_line_replaced_trains_a_critic(tmp_path, capsys, monkeypatch):
    script = tmp_path / "main.py"
    script.write_text(patched_source())
    out = tmp_path / "out"
    args = [*TINY, "--batchSize", "8", "--fakeSize", "320", "--niter", "1", "--max-iters", "40", "--outf", str(out)]
    rows = parse(run_script(script, *args, capsys=capsys, monkeypatch=monkeypatch))
    assert len(rows) == 40
    assert all(math.isfinite(v) for row in rows for v in row[1:])
    gaps = [d_x - d_g for _, _, _, d_x, d_g in rows]
    first, last = sum(gaps[:5]) / 5, sum(gaps[-5:]) / 5
    assert last > 0.3, gaps
    assert last > first, gaps
    # The checkpoint written with the Identity loads into upstream's netD (with its Sigmoid) unchanged.
    assert list(torch.load(out / "netD_epoch_0.pth", weights_only=True)) == D_KEYS


# -------------------------------------------------------------------------------- (c), (d) exact gradients
def _float64_nets(tmp_path, monkeypatch, capsys) -> tuple[nn.Module, nn.Module]:
    ns = build_standin(tmp_path, monkeypatch, capsys)
    netD, netG = ns["netD"].double(), ns["netG"].double()
    torch.manual_seed(3)
    for module in netD.modules():  # spread the scores so that the margin splits the batch
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.1)
    return netD, netG


def test_adapter_gradients_equal_a_hand_written_margin_step(tmp_path, monkeypatch, capsys):
    netD, netG = _float64_nets(tmp_path, monkeypatch, capsys)
    torch.manual_seed(0)
    x = torch.rand(8, 3, 64, 64, dtype=torch.float64)
    z = torch.randn(8, 100, 1, 1, dtype=torch.float64)

    D_ref, G_ref = copy.deepcopy(netD), copy.deepcopy(netG)
    D_ref.main[12] = nn.Identity()
    with torch.no_grad():  # pick the margin so that some hinges are active and some are not
        probe_d, probe_g = copy.deepcopy(D_ref), copy.deepcopy(G_ref)
        gaps = probe_d(x) - probe_d(probe_g(z))
    margin = max(float(gaps.median()), 0.0)
    active = int((gaps < margin).sum())
    assert 0 < active < 8, gaps

    # The adapter, driven exactly as dcgan/main.py drives nn.BCELoss().
    criterion = dcgan.margin_criterion(netD, margin=margin)
    netD.zero_grad()
    label = torch.full((8,), 1, dtype=torch.float64)
    output = netD(x)
    errD_real = criterion(output, label)
    errD_real.backward()
    fake = netG(z)
    label.fill_(0)
    output = netD(fake.detach())
    errD_fake = criterion(output, label)
    errD_fake.backward()
    errD = errD_real + errD_fake
    grads_d = [p.grad.clone() for p in netD.parameters()]
    netG.zero_grad()
    label.fill_(1)
    output = netD(fake)
    errG = criterion(output, label)
    errG.backward()
    grads_g = [p.grad.clone() for p in netG.parameters()]

    # By hand: RankGAN Eq. 3 on raw scores, then the WGAN generator loss.
    D_ref.zero_grad()
    fake_ref = G_ref(z)
    loss_d = hinge_margin_loss(D_ref(x), D_ref(fake_ref.detach()), margin=margin)
    loss_d.backward()
    ref_d = [p.grad.clone() for p in D_ref.parameters()]
    G_ref.zero_grad()
    wgan_generator_loss(D_ref(fake_ref)).backward()
    ref_g = [p.grad.clone() for p in G_ref.parameters()]

    assert errD_real.item() == 0.0
    torch.testing.assert_close(errD, loss_d)
    assert any(g.abs().sum() > 0 for g in grads_d)
    for got, want in zip(grads_d, ref_d):
        torch.testing.assert_close(got, want)
    for got, want in zip(grads_g, ref_g):
        torch.testing.assert_close(got, want)
    assert criterion.expected_call == 1  # ready for the next batch


def test_adapter_gradients_equal_a_hand_written_rankgan_stage_step(tmp_path, monkeypatch, capsys):
    netD, netG = _float64_nets(tmp_path, monkeypatch, capsys)
    torch.manual_seed(1)
    x = torch.rand(8, 3, 64, 64, dtype=torch.float64)
    z = torch.randn(8, 100, 1, 1, dtype=torch.float64)
    G_prev = copy.deepcopy(netG).eval()
    for p in G_prev.parameters():
        p.requires_grad_(False)
        p.add_(0.05 * torch.randn_like(p))

    D_ref, G_ref = copy.deepcopy(netD), copy.deepcopy(netG)
    D_ref.main[12] = nn.Identity()
    with torch.no_grad():
        probe = copy.deepcopy(D_ref)
        real_probe, prev_probe = probe(x), probe(G_prev(z))
    rank = rankplug.StageRankLoss(clamp_weight=3.0)
    rank.set_markers(float(real_probe.median()), min(float(prev_probe.median()), float(real_probe.median())))

    criterion = dcgan.margin_criterion(netD, rank=rank)
    netD.zero_grad()
    label = torch.full((8,), 1, dtype=torch.float64)
    output = netD(x)
    real_scores = output.detach().clone()
    criterion(output, label).backward()
    fake = netG(z)
    label.fill_(0)
    errD_fake = criterion(netD(fake.detach()), label, prev_fake_scores=netD(G_prev(z)))
    errD_fake.backward()
    grads_d = [p.grad.clone() for p in netD.parameters()]
    netG.zero_grad()
    label.fill_(1)
    criterion(netD(fake), label).backward()
    grads_g = [p.grad.clone() for p in netG.parameters()]

    D_ref.zero_grad()
    fake_ref = G_ref(z)
    loss_d = rank(D_ref(x), D_ref(fake_ref.detach()), D_ref(G_prev(z)))
    loss_d.backward()
    ref_d = [p.grad.clone() for p in D_ref.parameters()]
    G_ref.zero_grad()
    stage_rank_generator_loss(real_scores, D_ref(fake_ref)).backward()  # D_i(x) from before the critic step
    ref_g = [p.grad.clone() for p in G_ref.parameters()]

    torch.testing.assert_close(errD_fake, loss_d)
    assert any(g.abs().sum() > 0 for g in grads_d)
    for got, want in zip(grads_d, ref_d):
        torch.testing.assert_close(got, want)
    for got, want in zip(grads_g, ref_g):
        torch.testing.assert_close(got, want)


# ------------------------------------------------------------------------------------------------ (e) errors
def _three(n: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(n, requires_grad=True), torch.ones(n), torch.zeros(n)


def test_objective_drives_the_three_calls_gogan_stage_two():
    # GoGAN's stage 2 through objective=: call 2 is GoGAN Eq. 3-5 on the frozen critic's scores of G_{i-1}(z),
    # call 3 the WGAN generator loss, with the gradients of the hand-written losses.
    torch.manual_seed(2)
    netD = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)).double()
    x, fake, prev_fake = (torch.randn(8, 3, dtype=torch.float64) for _ in range(3))
    objective = rankplug.StageObjective("gogan", margin=0.5, rank_weight=2.0)
    criterion = dcgan.DCGANCriterion(objective=objective)
    frozen = copy.deepcopy(netD).requires_grad_(False)
    ones, zeros = torch.ones(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    criterion(netD(x), ones).backward()
    loss_d = criterion(netD(fake), zeros, prev_fake_scores=frozen(prev_fake))
    loss_d.backward()
    got_d = [p.grad.clone() for p in netD.parameters()]
    netD.zero_grad()
    loss_g = criterion(netD(fake), ones)
    loss_g.backward()
    got_g = [p.grad.clone() for p in netD.parameters()]

    netD.zero_grad()
    expected_d = gogan_rank_loss(netD(x), netD(fake), frozen(prev_fake), margin=0.5, rank_weight=2.0)
    expected_d.backward()
    torch.testing.assert_close(loss_d, expected_d)
    for got, want in zip(got_d, (p.grad for p in netD.parameters())):
        torch.testing.assert_close(got, want)
    netD.zero_grad()
    wgan_generator_loss(netD(fake)).backward()
    for got, want in zip(got_g, (p.grad for p in netD.parameters())):
        torch.testing.assert_close(got, want)
    assert criterion.objective is objective and criterion.rank is None and criterion.margin == 0.5


def test_margin_and_rank_are_shorthands_for_an_objective():
    margin_only = dcgan.DCGANCriterion(margin=0.25)
    assert margin_only.objective.variant == "margin" and margin_only.margin == 0.25 and margin_only.rank is None
    rank = rankplug.StageRankLoss(clamp_weight=7.0)
    staged = dcgan.DCGANCriterion(rank=rank)
    # The user's rank loss itself: markers set on it later are the ones the criterion uses.
    assert staged.objective.variant == "rankgan" and staged.objective.rank_loss is rank and staged.rank is rank
    assert staged.objective.judge(2) == "current" and dcgan.DCGANCriterion().margin == 1.0


def test_bad_objectives_raise():
    with pytest.raises(ValueError, match="pass either objective or margin / rank, not both"):
        dcgan.DCGANCriterion(margin=1.0, objective=rankplug.StageObjective("rankgan"))
    with pytest.raises(ValueError, match="objective 'mbgan' trains on embeddings and images"):
        dcgan.margin_criterion(nn.Linear(2, 1), objective=rankplug.StageObjective("mbgan"))
    with pytest.raises(TypeError, match=r"objective must be a rankplug\.StageObjective or None; got str"):
        dcgan.DCGANCriterion(objective="gogan")
    criterion = dcgan.DCGANCriterion(objective=rankplug.StageObjective("wgan-gp"))
    scores, ones, zeros = _three()
    criterion(scores, ones)
    with pytest.raises(ValueError, match=r"'wgan-gp' objective has no rank loss; pass rank=rankplug.StageRankLoss"):
        criterion(scores, zeros, prev_fake_scores=scores.detach())


def test_out_of_order_calls_raise():
    criterion = dcgan.DCGANCriterion()
    scores, ones, zeros = _three()
    with pytest.raises(
        ValueError, match=r"out-of-order call: expected call 1 of a batch.*real label 1.0.*got the fake"
    ):
        criterion(scores, zeros)
    criterion(scores, ones)
    with pytest.raises(ValueError, match=r"expected call 2 of a batch: the fake scores.*fake label 0.0.*got the real"):
        criterion(scores, ones)
    criterion(scores, zeros)
    with pytest.raises(ValueError, match=r"expected call 3 of a batch: the generator's scores.*got the fake"):
        criterion(scores, zeros)
    criterion(scores, ones)
    assert criterion.expected_call == 1
    criterion(scores, ones)
    criterion.reset()
    assert criterion.expected_call == 1
    with pytest.raises(ValueError, match=r"prev_fake_scores belongs to call 2"):
        criterion(scores, ones, prev_fake_scores=scores)
    criterion(scores, ones)
    with pytest.raises(ValueError, match=r"no rank loss; pass rank=rankplug.StageRankLoss"):
        criterion(scores, zeros, prev_fake_scores=scores.detach())


def test_mismatched_batch_sizes_and_labels_raise():
    criterion = dcgan.DCGANCriterion()
    scores, ones, zeros = _three(4)
    criterion(scores, ones)
    message = r"call 2 \(fake scores\) has batch size 3 but call 1 \(real scores\) had batch size 4"
    with pytest.raises(ValueError, match=message):
        criterion(torch.randn(3), torch.zeros(3))
    criterion(scores, zeros)
    with pytest.raises(ValueError, match=r"call 3 \(generator scores\) has batch size 5 but call 1"):
        criterion(torch.randn(5), torch.ones(5))
    with pytest.raises(
        ValueError, match=r"label has shape \(3,\) but scores have batch size 4; expected label of shape"
    ):
        criterion(scores, torch.ones(3))
    with pytest.raises(ValueError, match=r"label must be filled with real_label=1.0 or fake_label=0.0; found values"):
        criterion(scores, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(TypeError, match=r"label must be a torch.Tensor; got list"):
        criterion(scores, [1, 1, 1, 1])


def test_bad_settings_and_discriminators_raise():
    with pytest.raises(ValueError, match="margin must be >= 0; got -1"):
        dcgan.DCGANCriterion(margin=-1.0)
    with pytest.raises(ValueError, match="real_label and fake_label must differ"):
        dcgan.DCGANCriterion(real_label=1.0, fake_label=1.0)
    with pytest.raises(TypeError, match=r"rank must be a rankplug.StageRankLoss"):
        dcgan.DCGANCriterion(rank=rankplug.HingeMarginLoss())
    netD = nn.Module()
    netD.main = nn.Sequential(nn.Linear(2, 1), nn.ReLU())
    with pytest.raises(ValueError, match=r"discriminator.main\[-1\] is ReLU; expected nn.Sigmoid"):
        dcgan.margin_criterion(netD)
    with pytest.raises(ValueError, match=r"no non-empty nn.Sequential attribute 'main'"):
        dcgan.strip_sigmoid(nn.Linear(2, 1))
    stages = rankplug.StageManager(nn.Linear(2, 2), nn.Linear(2, 1), latent_shape=2)
    with pytest.raises(ValueError, match=r"call advance\(\) first"):
        dcgan.batch_statistics_markers(stages, [torch.randn(4, 2)])


def test_wrapped_discriminator_is_stripped():
    netD = nn.Module()
    netD.main = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())
    dcgan.margin_criterion(nn.DataParallel(netD))
    assert isinstance(netD.main[-1], nn.Identity)


def test_docstring_examples_run():
    torch.manual_seed(0)
    result = doctest.testmod(dcgan, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------- (f) examples
def test_margin_example_trains(capsys, monkeypatch):
    args = ["--max-iters", "30", "--batchSize", "8"]
    rows = parse(run_script(EXAMPLES / "dcgan_margin.py", *args, capsys=capsys, monkeypatch=monkeypatch))
    assert all(math.isfinite(v) for row in rows for v in row[1:])
    assert sum(d_x - d_g for *_, d_x, d_g in rows[-5:]) / 5 > 0.3


def test_stage_example_runs_and_keeps_the_scores_apart(capsys, monkeypatch):
    args = ["--niter", "2", "--max-iters", "40", "--batchSize", "8"]
    stdout = run_script(EXAMPLES / "dcgan_rankgan_stages.py", *args, capsys=capsys, monkeypatch=monkeypatch)
    rows = parse(stdout)
    assert {epoch for epoch, *_ in rows} == {0, 1}
    assert all(math.isfinite(v) for row in rows for v in row[1:])
    for stage in (0, 1):
        last = [d_x - d_g for epoch, *_, d_x, d_g in rows if epoch == stage][-5:]
        assert sum(last) / len(last) > 0, (stage, last)
    assert "markers of the last stage (m_high, m_low): (" in stdout


def test_stage_example_differs_from_the_margin_example_in_about_ten_training_lines():
    def training_part(path: Path) -> list[str]:
        text = path.read_text()
        return text[
            text.index("netG, netD = Generator(), Discriminator()") : text.index("        gaps.append")
        ].splitlines()

    diff = difflib.ndiff(
        training_part(EXAMPLES / "dcgan_margin.py"), training_part(EXAMPLES / "dcgan_rankgan_stages.py")
    )
    changed = [line for line in diff if line.startswith("+ ")]
    assert len(changed) <= 10, changed
