"""lowbit.ops.hadamard: the Sylvester matrix, the sign stream and the blockwise transform."""

import math

import pytest
import torch

from lowbit.kernels.philox import random_words
from lowbit.ops.hadamard import hadamard, hadamard_matrix, random_signs


def test_matrix_small_cases_and_orthogonality():
    assert hadamard_matrix(1).tolist() == [[1.0]]
    assert hadamard_matrix(2).tolist() == [[1.0, 1.0], [1.0, -1.0]]
    h4 = hadamard_matrix(4)
    assert h4.tolist() == [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]
    h16 = hadamard_matrix(16)
    assert torch.equal(h16 @ h16.t(), 16 * torch.eye(16))
    # Sylvester recursion H_2k = [[H_k, H_k], [H_k, -H_k]]
    h8 = hadamard_matrix(8)
    assert torch.equal(h16, torch.cat([torch.cat([h8, h8], 1), torch.cat([h8, -h8], 1)], 0))


@pytest.mark.parametrize("block", [0, 3, 12, -4])
def test_bad_block(block):
    with pytest.raises(ValueError, match="power of two"):
        hadamard_matrix(block)
    with pytest.raises(TypeError, match="block must be an int"):
        hadamard_matrix(2.0)


def test_signs_follow_the_philox_stream():
    s = random_signs(1234, 16)
    words = random_words(16, 1234, torch.device("cpu"))
    assert torch.equal(s, (1 - 2 * (words & 1)).float())
    assert set(s.tolist()) == {-1.0, 1.0}
    assert torch.equal(s, random_signs(1234, 16))
    assert not torch.equal(s, random_signs(1235, 16))


def test_two_point_transform_by_hand():
    # Q = H_2 diag(1, -1) / sqrt(2) = [[1, -1], [1, 1]] / sqrt(2)
    x = torch.tensor([[3.0, 1.0], [0.5, -2.0]])
    y = hadamard(x, -1, block=2, signs=torch.tensor([1.0, -1.0]))
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[(3 - 1) * r, (3 + 1) * r], [(0.5 + 2) * r, (0.5 - 2) * r]])
    torch.testing.assert_close(y, expected, rtol=1e-7, atol=0)


def test_blocks_are_independent_along_the_axis():
    x = torch.randn(32, 3)
    s = random_signs(7, 16)
    y = hadamard(x, 0, signs=s)
    torch.testing.assert_close(y[16:], hadamard(x[16:], 0, signs=s))
    q = hadamard_matrix(16) * s[None, :] / 4
    torch.testing.assert_close(y[:16], q @ x[:16])


def test_orthogonal_and_gemm_invariant():
    g, x = torch.randn(48, 5), torch.randn(48, 7)
    s = random_signs(3, 16)
    gt, xt = hadamard(g, 0, signs=s), hadamard(x, 0, signs=s)
    torch.testing.assert_close(gt.norm(dim=0), g.norm(dim=0))
    torch.testing.assert_close(gt.t() @ xt, g.t() @ x, rtol=1e-5, atol=1e-5)
    # the inverse is diag(s) H v' / sqrt(b): the transform with signs of ones, then the signs
    back = hadamard(xt, 0) * s.repeat(3)[:, None]
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-6)


def test_dtype_and_errors():
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    assert hadamard(x, 1).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="multiple of block"):
        hadamard(torch.randn(20, 3), 0)
    with pytest.raises(TypeError, match="floating"):
        hadamard(torch.ones(16, dtype=torch.int32), 0)
    with pytest.raises(ValueError, match="signs must have shape"):
        hadamard(torch.randn(16), 0, signs=torch.ones(8))
