"""Verification of a backend against the exact result of its precision mode, for one op
or for a whole training step, by bounds derived from the arithmetic: no tolerance is
chosen, so a correct kernel cannot fail, and a wrong one fails wherever its error
exceeds what rounding can explain.

    from tinycnn.verify import verify_step
    report = verify_step("cuda", lambda be: paper_net(hidden=1024, backend=be), x, y)
    assert report.ok, report.explain()

THE BOUNDS. The exact result of a mode is the float64 reference of that mode
(``numpy64``, tinycnn/precision.py: its products of rounded operands are exact) on the
TESTED side's float32 inputs.

- A product (conv2d, dense: forward and every gradient): each element within
  gamma(n) sum|terms| of the exact one, for FP32 sums of n terms in any order (Higham,
  sec. 4.2; tinycnn.precision.fp32_sum_error_bound), plus the float64 reference's own
  gamma(n) at unit 2**-53. sum|terms| is the same op run on |inputs| with |dout| (the
  ops are bilinear and the roundings odd); n is counted from the shapes (an upper
  bound: gamma grows with n).
- The fused block maxpool2x2(relu(conv)) (ConvBlock): the forward output is within the
  largest conv bound of its window whatever the decisions, since ReLU and max are
  1-Lipschitz. A window is FRAGILE when its decision (which member wins, and whether it
  passes a gradient) could change for conv outputs within their bounds (``fragile``);
  elsewhere the tested side routes dout exactly as the reference. In a fragile window
  either side sends dout to at most one member, one that some conv outputs within the
  bounds make the winner (a candidate), so their routed gradients differ by at most
  |dout| at each candidate. With D = |dout| on every candidate of every fragile window
  (0 elsewhere) and U = max(|dconv_ref|, D) bounding the tested side's routed gradient,
  every gradient g (dx, dw, db) obeys
      |g_tested - g_ref| <= sum_bound(conv_backward(|x|, |w|, U)) + conv_backward(|x|, |w|, D)
  (the first term: the tested side's FP32 sums of its own routed gradient; the second:
  the gradient of the routing difference, exact in float64 up to its gamma). Fragile
  windows are counted: an upper bound on the decisions that flipped.
- ReLU, max-pool, dropout, flatten and the SGD update: bit for bit the float32 NumPy
  reference (the contract: the same comparisons and roundings on every backend).
- The loss: softmax cross-entropy within a bound derived from its few operations
  (``softmax_cross_entropy_bounds``).

A TRAINING STEP (``verify_step``) is verified layer by layer on the TESTED backend's own
intermediates: its run plan is run step by step, each step's input, output and upstream
gradient copied to the host, and each step held to the exact result of that step on those
inputs. The step is verified when every step is (each one consumes what the previous one
produced), and no decision can differ between two chains, because every check uses one
chain's inputs. The end-to-end difference from the float64 reference's own chain is
reported beside it (loss, logits, gradients), not enforced: there a flipped decision
early in the chain moves everything after it.

RESOLUTION. gamma(n) sum|terms| is a worst case over every order: for a sum of n terms
of random signs it exceeds the value itself (about sum|terms| / sqrt(n)) once n^1.5 u > 1,
n > ~4e4 (u = 2**-23). So a check of a weight gradient summed over many positions (the
paper's first conv at batch 4: n = 258064) cannot tell a wrong value from a right one;
each Check reports its resolution (largest bound / largest |exact|; >= 1: blind) so a
reader sees which ones hold something. Smaller shapes (the parity table) hold those
kernels.
"""

from .ops import (block_fragility, check_conv2d, check_conv_block, check_dense, check_softmax_cross_entropy,
                  fragile_windows, softmax_bounds, softmax_cross_entropy_bounds, sparse_conv_backward)
from .report import (ELEMENTARY_ULPS, F64_UNIT, MAX_FRAGILE_FRACTION, Check, Fragility, Report, equal, sum_bound,
                     within)
from .step import SGD_SETTINGS, verify_op, verify_step

__all__ = ["ELEMENTARY_ULPS", "F64_UNIT", "MAX_FRAGILE_FRACTION", "SGD_SETTINGS", "Check", "Fragility", "Report",
           "block_fragility", "check_conv2d", "check_conv_block", "check_dense", "check_softmax_cross_entropy",
           "equal", "fragile_windows", "softmax_bounds", "softmax_cross_entropy_bounds", "sparse_conv_backward",
           "sum_bound", "verify_op", "verify_step", "within"]
