"""TopKSAE: sparse encode/decode and their custom backward against dense references, housekeeping, losses."""

from __future__ import annotations

import pytest
import torch

import s3attn.saes.kernels as sae_mod
from s3attn.errors import S3Error
from s3attn.saes import EncoderOutput, ForwardOutput, SaeConfig, TopKSAE, default_lr


def make_sae(d_in=16, latents=64, k=4, seed=0, dtype=torch.float32, **kw) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(SaeConfig(d_in=d_in, num_latents=latents, k=k, **kw), dtype=dtype)
    with torch.no_grad():  # non-trivial biases so their gradients and roles are exercised
        sae.encoder.bias.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


def dense_forward(sae: TopKSAE, x: torch.Tensor):
    """The textbook computation: relu, topk, dense N x latents code, matmul."""
    pre = torch.relu((x - sae.b_dec) @ sae.encoder.weight.T + sae.encoder.bias)
    vals, idx = pre.topk(sae.cfg.k, dim=1)
    code = torch.zeros_like(pre).scatter(1, idx, vals)
    out = code @ sae.W_dec + sae.b_dec
    fvu = (x - out).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    return vals, idx, out, fvu


@pytest.mark.parametrize("latents", [64, 30])  # with and without the top-k pyramid
def test_encode_shapes_and_dense_match(latents):
    sae = make_sae(latents=latents)
    x = torch.randn(50, 16)
    enc = sae.encode(x)
    assert isinstance(enc, EncoderOutput)
    assert enc.top_acts.shape == (50, 4) and enc.top_acts.dtype == torch.float32
    assert enc.top_indices.shape == (50, 4) and enc.top_indices.dtype == torch.int64
    ref_vals, ref_idx, _, _ = dense_forward(sae, x)
    assert (ref_vals > 0).all()  # no ties at zero, so the chosen set is unique
    torch.testing.assert_close(enc.top_acts.sort(1).values, ref_vals.sort(1).values)
    assert torch.equal(enc.top_indices.sort(1).values, ref_idx.sort(1).values)


def test_group_plan():
    assert sae_mod._group_plan(4096, 32) == [4, 4]
    assert sae_mod._group_plan(64, 4) == [4]
    assert sae_mod._group_plan(30, 4) == []


def pyramid(pre: torch.Tensor, k: int, plan: list[int]):
    out = torch.empty(pre.shape[0], k), torch.empty(pre.shape[0], k, dtype=torch.long)
    sae_mod._pyramid_topk(pre, k, plan, out)
    return out


@pytest.mark.parametrize("plan", [[4], [4, 4], [2, 2, 2], [8]])
def test_pyramid_topk_is_exact(plan):
    torch.manual_seed(4)
    pre = torch.randn(40, 256)
    vals, idx = pyramid(pre, 8, plan)
    ref_vals, ref_idx = pre.topk(8, dim=1)
    assert torch.equal(vals.sort(1).values, ref_vals.sort(1).values)
    assert torch.equal(idx.sort(1).values, ref_idx.sort(1).values)
    # heavy ties: the value multiset is still exact and the indices point at those values
    pre = torch.randint(0, 5, (40, 256)).float()
    vals, idx = pyramid(pre, 8, plan)
    assert torch.equal(vals.sort(1).values, pre.topk(8, dim=1).values.sort(1).values)
    assert torch.equal(pre.gather(1, idx), vals)
    assert all(len(set(row.tolist())) == 8 for row in idx)


def test_encode_row_blocks_match_single_block(monkeypatch):
    sae = make_sae()
    x = torch.randn(37, 16)
    whole = sae.encode(x)
    monkeypatch.setattr(sae_mod, "_CPU_BLOCK_ELEMS", 5 * 64)  # 5 rows per block, ragged last block
    blocked = sae.encode(x)
    assert torch.equal(whole.top_indices.sort(1).values, blocked.top_indices.sort(1).values)
    torch.testing.assert_close(whole.top_acts.sort(1).values, blocked.top_acts.sort(1).values)


def test_relu_applied_when_fewer_than_k_positive():
    sae = make_sae(k=8)
    with torch.no_grad():
        sae.encoder.bias.fill_(-100.0)  # every pre-activation negative
    acts, _ = sae.encode(torch.randn(6, 16))
    assert torch.equal(acts, torch.zeros_like(acts))


def test_decode_matches_dense():
    sae = make_sae()
    acts = torch.rand(20, 4)
    idx = torch.stack([torch.randperm(64)[:4] for _ in range(20)])
    dense = torch.zeros(20, 64).scatter(1, idx, acts)
    torch.testing.assert_close(sae.decode(acts, idx), dense @ sae.W_dec + sae.b_dec)


def test_forward_and_gradients_match_dense_reference():
    sae = make_sae(dtype=torch.float64)
    x = torch.randn(40, 16, dtype=torch.float64)
    out = sae(x)
    assert isinstance(out, ForwardOutput)
    out.fvu.backward()
    ours = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    _, _, ref_out, ref_fvu = dense_forward(sae, x)
    ref_fvu.backward()
    torch.testing.assert_close(out.sae_out, ref_out)
    torch.testing.assert_close(out.fvu, ref_fvu)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, msg=name)


def test_custom_functions_gradcheck():
    torch.manual_seed(1)
    xc = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    W = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w, c: sae_mod._TopKEncode.apply(a, w, c, 3)[0], (xc, W, b))
    acts = torch.rand(7, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.stack([torch.randperm(12)[:3] for _ in range(7)])
    assert torch.autograd.gradcheck(lambda a, w: sae_mod._SparseDecode.apply(a, idx, w), (acts, W))


def test_tied_init_unit_norm_and_zero_bias():
    sae = TopKSAE(SaeConfig(d_in=16, num_latents=64, k=4))
    norms = sae.W_dec.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(64))
    enc = sae.encoder.weight
    torch.testing.assert_close(sae.W_dec, enc / enc.norm(dim=1, keepdim=True), atol=1e-6, rtol=1e-5)
    assert torch.equal(sae.encoder.bias, torch.zeros(64)) and torch.equal(sae.b_dec, torch.zeros(16))
    assert sae.cfg.expansion_factor == 4


def test_set_decoder_norm_and_remove_parallel_gradient():
    sae = make_sae()
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(64, 1) * 3 + 0.1)
    sae.set_decoder_norm_to_unit_norm()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    sae(torch.randn(30, 16)).fvu.backward()
    before = sae.W_dec.grad.clone()
    assert (before * sae.W_dec).sum(1).abs().max() > 1e-4
    sae.remove_gradient_parallel_to_decoder_directions()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-6
    # the orthogonal part is kept
    ortho = before - (before * sae.W_dec).sum(1, keepdim=True) * sae.W_dec
    torch.testing.assert_close(sae.W_dec.grad, ortho)


def test_init_b_dec_mean_and_geometric_median():
    sae = make_sae(d_in=3)
    torch.manual_seed(2)
    inliers = torch.randn(200, 3) * 0.1 + torch.tensor([1.0, -2.0, 0.5])
    x = torch.cat([inliers, torch.full((10, 3), 1000.0)])
    sae.init_b_dec(x, "mean")
    torch.testing.assert_close(sae.b_dec.detach(), x.mean(0))
    sae.init_b_dec(x)  # geometric median ignores the outliers
    assert (sae.b_dec.detach() - torch.tensor([1.0, -2.0, 0.5])).norm() < 0.1
    with pytest.raises(S3Error, match="method"):
        sae.init_b_dec(x, "median")


def test_fvu_known_values():
    sae = TopKSAE(SaeConfig(d_in=2, num_latents=4, k=2, normalize_decoder=False))
    basis = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    with torch.no_grad():
        sae.encoder.weight.copy_(basis)
        sae.W_dec.copy_(basis)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [-2.0, 0.5]])
    out = sae(x)
    assert out.fvu.item() == pytest.approx(0.0, abs=1e-12)  # exact reconstruction
    with torch.no_grad():
        sae.encoder.weight.zero_()  # code is empty: output = b_dec = 0
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # sum x^2 = 10, sum (x - mean)^2 = 2
    assert sae(x).fvu.item() == pytest.approx(5.0)


def test_auxk_zero_without_dead_and_positive_with_dead():
    sae = make_sae()
    x = torch.randn(64, 16)
    assert sae(x).auxk_loss.item() == 0.0
    assert sae(x, dead_mask=torch.zeros(64, dtype=torch.bool)).auxk_loss.item() == 0.0
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:20] = True
    assert sae(x, dead_mask=dead, auxk_coef=0.0).auxk_loss.item() == 0.0
    out = sae(x, dead_mask=dead, auxk_coef=1.0)
    assert out.auxk_loss.item() > 0
    out.auxk_loss.backward()
    g = sae.encoder.weight.grad
    assert g[:20].abs().sum() > 0 and g[20:].abs().sum() == 0  # only dead latents are trained by AuxK
    assert sae.W_dec.grad[20:].abs().sum() == 0


def test_auxk_matches_reference():
    sae = make_sae(dtype=torch.float64)
    x = torch.randn(30, 16, dtype=torch.float64)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    out = sae(x, dead_mask=dead, auxk_coef=0.5)
    e = (x - out.sae_out).detach()
    pre = torch.relu((x - sae.b_dec) @ sae.encoder.weight.T + sae.encoder.bias)
    pre = torch.where(dead, pre, torch.full_like(pre, -1.0))
    vals, idx = pre.topk(min(8, int(dead.sum())), dim=1)
    e_hat = torch.zeros_like(pre).scatter(1, idx, vals.clamp_min(0)) @ sae.W_dec
    ref = 0.5 * (e_hat - e).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
    torch.testing.assert_close(out.auxk_loss, ref)


def test_default_lr():
    assert default_lr(2**14) == pytest.approx(2e-4)
    assert default_lr(2**16) == pytest.approx(1e-4)


def test_bf16_forward_close_to_fp32():
    sae = make_sae()
    sae16 = make_sae()
    sae16.to(torch.bfloat16)
    x = torch.randn(64, 16)
    ref = sae(x)
    out = sae16(x)
    assert out.sae_out.dtype == torch.bfloat16 and out.top_acts.dtype == torch.bfloat16
    # rounding may flip a near-tie in the selection of a few rows; the rest must agree closely
    same = (out.top_indices.sort(1).values == ref.top_indices.sort(1).values).all(1)
    assert same.float().mean() > 0.9
    rel = (out.sae_out.float() - ref.sae_out).norm(dim=1) / ref.sae_out.norm(dim=1)
    assert rel[same].max() < 0.02
    assert abs(out.fvu.item() - ref.fvu.item()) < 0.05
    out.fvu.backward()
    assert sae16.encoder.weight.grad.dtype == torch.bfloat16
    assert torch.isfinite(sae16.W_dec.grad.float()).all()


def test_multi_topk_loss():
    sae = make_sae(multi_topk=True, dtype=torch.float64)
    x = torch.randn(32, 16, dtype=torch.float64)
    out = sae(x)
    _, _, ref_out, ref_fvu = dense_forward(sae, x)  # the k-latent path is unchanged
    torch.testing.assert_close(out.sae_out, ref_out)
    torch.testing.assert_close(out.fvu, ref_fvu)
    sae.cfg.k = 16  # the Multi-TopK term is the FVU of the 4k-latent reconstruction
    _, _, _, ref4 = dense_forward(sae, x)
    torch.testing.assert_close(out.multi_topk_fvu, ref4)
    # gradients of the combined loss (both paths share one transposed index in backward)
    (out.fvu + out.multi_topk_fvu / 8).backward()
    ours = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    (ref_fvu + ref4 / 8).backward()
    for name, p in sae.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, msg=name)
    assert make_sae()(torch.randn(32, 16)).multi_topk_fvu.item() == 0.0


def test_config_validation():
    with pytest.raises(S3Error, match="k=9"):
        SaeConfig(d_in=4, num_latents=8, k=9)
    with pytest.raises(S3Error, match="d_in"):
        SaeConfig(d_in=0, num_latents=8, k=2)


def test_training_reduces_fvu():
    torch.manual_seed(3)
    d_in, n_atoms = 16, 32
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d_in), dim=1)

    def batch(n=256):
        code = torch.zeros(n, n_atoms)
        idx = torch.randint(0, n_atoms, (n, 3))
        code.scatter_(1, idx, torch.rand(n, 3) + 0.5)
        return code @ atoms

    sae = TopKSAE(SaeConfig(d_in=d_in, num_latents=64, k=4))
    sae.init_b_dec(batch(), "geometric_median")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    probe = batch(512)
    with torch.no_grad():
        start = sae(probe).fvu.item()
    for _ in range(40):
        sae.set_decoder_norm_to_unit_norm()
        sae(batch()).fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        end = sae(probe).fvu.item()
    assert end < 0.5 * start


@pytest.mark.parametrize("plan", [[4], [4, 4]])
def test_pyramid_topk_bf16_is_exact(plan):
    torch.manual_seed(5)
    pre = torch.randn(40, 256).bfloat16()  # bf16 rounding leaves many ties
    out = torch.empty(40, 8, dtype=torch.bfloat16), torch.empty(40, 8, dtype=torch.long)
    sae_mod._pyramid_topk(pre, 8, plan, out)
    assert torch.equal(out[0].sort(1).values, pre.topk(8, dim=1).values.sort(1).values)
    assert torch.equal(pre.gather(1, out[1]), out[0])


def test_autocast_encodes_in_bf16_and_backprops_in_fp32():
    sae = make_sae()
    x = torch.randn(64, 16)
    ref = sae(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sae(x)
    assert out.top_acts.dtype == torch.float32 and out.sae_out.dtype == torch.float32
    assert torch.equal(out.top_acts, out.top_acts.bfloat16().float())  # the pre-activations came from bf16
    same = (out.top_indices.sort(1).values == ref.top_indices.sort(1).values).all(1)
    assert same.float().mean() > 0.9
    assert abs(out.fvu.item() - ref.fvu.item()) < 0.02
    out.fvu.backward()
    ours = {n: p.grad.clone() for n, p in sae.named_parameters()}
    assert all(g.dtype == torch.float32 for g in ours.values())
    # dense fp32 reference restricted to the latents autocast selected
    sae.zero_grad()
    pre = torch.relu((x - sae.b_dec) @ sae.encoder.weight.T + sae.encoder.bias)
    mask = torch.zeros_like(pre).scatter(1, out.top_indices, 1.0)
    recon = (pre * mask) @ sae.W_dec + sae.b_dec  # fp32 activations: bf16's differ by ~2**-9
    ((x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).backward()
    for name, p in sae.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, rtol=2e-2, atol=2e-3, msg=name)
