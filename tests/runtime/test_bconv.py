"""Bitwise conv2d / dense (binary, ternary, bit planes), fused output stages, max pooling,
bit planes: every CPU path and variant, 1 and 2 threads, against the numpy reference; the
reference against torch (zero padding, BatchNorm + sign, max pooling) and plain integers."""
import numpy as np
import pytest

from lowbit.runtime import bitconv, kernels, ref

ALL_PATHS = list(kernels.PATHS)
CHANNELS = [1, 63, 64, 65, 127, 128, 129]


def _need(path):
    try:
        kernels.check_path(path)
    except kernels.KernelUnavailableError as exc:
        pytest.skip(f"{path} not run on this machine: {exc}")


def _variants(path, ternary=False):
    """Every variant of a path; ``masked-*`` ones (sign/mask pairs) only for ternary layers."""
    if path == "ref":
        return [None]
    return [v for v in bitconv.xconv_variants(path) if ternary or not v.startswith("masked-")]


def _pm1(rng, shape):
    return np.where(rng.standard_normal(shape) >= 0, 1.0, -1.0).astype(np.float32)


def _packed(rng, shape):
    """Random ±1 values packed along the last axis."""
    return ref.bitpack(_pm1(rng, shape))


# (N, H, W, C, OC, k, stride, padding): every channel edge, odd sizes, strides, paddings
CONV_CASES = [
    (1, 5, 7, 1, 3, 3, 1, 1),
    (2, 7, 5, 63, 5, 3, 2, 1),
    (1, 6, 6, 64, 64, 3, 1, 0),
    (1, 9, 7, 65, 66, 5, 1, 2),
    (2, 5, 5, 127, 7, 1, 1, 0),
    (1, 8, 9, 128, 130, 3, 2, 2),
    (1, 7, 7, 129, 65, 5, 2, 1),
    (1, 3, 3, 65, 9, 3, 1, 2),        # padding 2 on a 3x3 image: pixels with no valid tap
]


@pytest.mark.parametrize("path", ALL_PATHS)
def test_binary_conv2d_every_path_variant_and_thread_count(path):
    _need(path)
    rng = np.random.default_rng(10)
    for n, h, w, c, oc, k, s, p in CONV_CASES:
        x, wt = _packed(rng, (n, h, w, c)), _packed(rng, (oc, k, k, c))
        for pad_value in (0, -1, 1):
            want = ref.binary_conv2d(x, wt, c, s, p, pad_value)
            for variant in _variants(path):
                prepared = bitconv.prepare_binary_conv2d(wt, c, path=path, variant=variant)
                for threads in (1, 2):
                    got = bitconv.binary_conv2d(x, prepared, stride=s, padding=p,
                                                pad_value=pad_value, threads=threads)
                    assert got.dtype == np.int32 and got.shape == want.shape
                    np.testing.assert_array_equal(
                        got, want, err_msg=f"{path}/{variant} t={threads} case={(n, h, w, c, oc, k, s, p)} pv={pad_value}")
            # raw weights (packed on the fly) give the same
            np.testing.assert_array_equal(
                bitconv.binary_conv2d(x, wt, c, s, p, pad_value, path=path), want)


def test_reference_binary_conv2d_equals_torch_zero_padding():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    for n, h, w, c, oc, k, s, p in CONV_CASES:
        xf, wf = _pm1(rng, (n, h, w, c)), _pm1(rng, (oc, k, k, c))
        want = F.conv2d(torch.from_numpy(xf).permute(0, 3, 1, 2), torch.from_numpy(wf).permute(0, 3, 1, 2),
                        stride=s, padding=p).permute(0, 2, 3, 1).numpy()
        got = ref.binary_conv2d(ref.bitpack(xf), ref.bitpack(wf), c, s, p, pad_value=0)
        np.testing.assert_array_equal(got, want.astype(np.int32))
        # pad_value=-1: torch with explicit -1 padding (lowbit QuantConv2d's binary default)
        xpad = F.pad(torch.from_numpy(xf).permute(0, 3, 1, 2), (p, p, p, p), value=-1.0)
        want = F.conv2d(xpad, torch.from_numpy(wf).permute(0, 3, 1, 2), stride=s).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(ref.binary_conv2d(ref.bitpack(xf), ref.bitpack(wf), c, s, p, -1),
                                      want.astype(np.int32))


@pytest.mark.parametrize("path", ALL_PATHS)
def test_rectangular_kernels_strides_paddings(path):
    _need(path)
    rng = np.random.default_rng(25)
    x = _packed(rng, (2, 7, 9, 65))
    for kh, kw, s, p in [(3, 1, (2, 1), (1, 0)), (1, 5, (1, 3), (0, 2)), (2, 3, 2, (1, 2))]:
        w = _packed(rng, (11, kh, kw, 65))
        for pv in (0, -1):
            want = ref.binary_conv2d(x, w, 65, s, p, pv)
            for variant in _variants(path):
                np.testing.assert_array_equal(
                    bitconv.binary_conv2d(x, w, 65, s, p, pv, threads=2, path=path, variant=variant), want)


@pytest.mark.parametrize("path", ALL_PATHS)
def test_blocking_and_column_splits(path):
    """K blocks (nlut: > 24 words), several B blocks, few rows with 2 threads (column split)."""
    _need(path)
    rng = np.random.default_rng(12)
    for n, h, w, c, oc, k, s, p in [(1, 4, 4, 640, 200, 3, 1, 1), (1, 1, 2, 130, 300, 1, 1, 0),
                                    (1, 3, 3, 70, 520, 3, 1, 1)]:
        x, wt = _packed(rng, (n, h, w, c)), _packed(rng, (oc, k, k, c))
        want = ref.binary_conv2d(x, wt, c, s, p)
        thr = rng.integers(-20, 20, oc).astype(np.int32)
        flip = rng.integers(0, 2, oc).astype(np.uint8)
        want_bits = ref.bits_from_threshold(want, thr, flip)
        for variant in _variants(path):
            pw = bitconv.prepare_binary_conv2d(wt, c, path=path, variant=variant)
            for threads in (1, 2):
                np.testing.assert_array_equal(bitconv.binary_conv2d(x, pw, stride=s, padding=p, threads=threads), want)
                np.testing.assert_array_equal(
                    bitconv.binary_conv2d(x, pw, stride=s, padding=p, threads=threads, out="bits",
                                          threshold=(thr, flip)), want_bits)


@pytest.mark.parametrize("path", ALL_PATHS)
def test_output_stages(path):
    _need(path)
    rng = np.random.default_rng(13)
    for n, h, w, c, oc, k, s, p in CONV_CASES[:6]:
        x, wt = _packed(rng, (n, h, w, c)), _packed(rng, (oc, k, k, c))
        acc = ref.binary_conv2d(x, wt, c, s, p)
        thr = rng.integers(-k * k * c, k * k * c + 1, oc).astype(np.int32)
        thr[: oc // 3] = np.median(acc)                                # ties present
        flip = rng.integers(0, 2, oc).astype(bool)
        edges = [(2**31 - 1, True), (-2**31, False), (-2**31, True), (2**31 - 1, False)]
        for i, (t, f) in enumerate(edges[:oc]):                         # always / never
            thr[-1 - i], flip[-1 - i] = t, f
        scale = rng.standard_normal(oc).astype(np.float32)
        bias = rng.standard_normal(oc).astype(np.float32)
        want_bits = ref.apply_stage(acc, "bits", (thr, flip))
        assert want_bits.shape == acc.shape[:-1] + (ref.words_for(oc),)
        mask = ref.pad_mask(oc)
        assert not (want_bits[..., -1] & mask).any()                   # pad bits 0
        want_f = acc.astype(np.float32) * scale + bias
        for variant in _variants(path):
            pw = bitconv.prepare_binary_conv2d(wt, c, path=path, variant=variant)
            for threads in (1, 2):
                kw = dict(stride=s, padding=p, threads=threads)
                np.testing.assert_array_equal(
                    bitconv.binary_conv2d(x, pw, out="bits", threshold=(thr, flip), **kw), want_bits)
                got = bitconv.binary_conv2d(x, pw, out="float", scale=scale, bias=bias, **kw)
                assert got.dtype == np.float32
                np.testing.assert_array_equal(got, want_f)             # bit-exact: same 2 roundings
                np.testing.assert_array_equal(
                    bitconv.binary_conv2d(x, pw, out="float", scale=scale, **kw),
                    acc.astype(np.float32) * scale)


# ---- BatchNorm folded into thresholds ---------------------------------------------------

def _torch_bn_sign_bits(torch, acc, gamma, beta, mean, var, eps):
    """sign(BatchNorm(acc)) as torch eval computes it, packed (bit 1 = >= 0)."""
    t = torch.from_numpy(acc.astype(np.float32)).permute(0, 3, 1, 2)
    y = torch.nn.functional.batch_norm(t, torch.from_numpy(mean), torch.from_numpy(var),
                                       torch.from_numpy(gamma), torch.from_numpy(beta),
                                       training=False, eps=eps)
    return ref.bitpack(y.permute(0, 2, 3, 1).numpy())


def test_bn_eval_fn_is_bit_exact_with_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    c = 67
    gamma, beta = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    mean = (rng.standard_normal(c) * 20).astype(np.float32)
    var = (rng.random(c) * 30 + 0.01).astype(np.float32)
    acc = rng.integers(-600, 600, (3, 5, 4, c))
    fn = ref.bn_eval_fn(gamma, beta, mean, var, 1e-5)
    t = torch.from_numpy(acc.astype(np.float32)).permute(0, 3, 1, 2)
    want = torch.nn.functional.batch_norm(t, torch.from_numpy(mean), torch.from_numpy(var),
                                          torch.from_numpy(gamma), torch.from_numpy(beta),
                                          training=False, eps=1e-5).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(fn(acc), want)


def test_threshold_folding_negative_gamma_zero_gamma_and_exact_ties():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    c, k = 3, 9 * 70                     # 3x3 conv over 70 channels: |acc| <= 630
    n_ch = 12
    # random channels + constructed ones: var + eps = 4 exactly (eps = 0), so alpha = gamma/2
    gamma = rng.standard_normal(n_ch).astype(np.float32)
    beta = rng.standard_normal(n_ch).astype(np.float32)
    mean = (rng.standard_normal(n_ch) * 10).astype(np.float32)
    var = (rng.random(n_ch) * 5 + 0.5).astype(np.float32)
    eps = 0.0
    gamma[0], beta[0], mean[0], var[0] = 2.0, -3.0, 0.0, 4.0      # y = acc - 3: tie at acc = 3
    gamma[1], beta[1], mean[1], var[1] = -2.0, 3.0, 0.0, 4.0      # y = 3 - acc: tie at 3, flips
    gamma[2], beta[2], mean[2], var[2] = 1.0, 0.0, 5.0, 4.0       # y = (acc - 5)/2: tie at 5
    gamma[3], beta[3], mean[3], var[3] = -1.0, 0.0, -7.0, 4.0     # decreasing, tie at -7
    gamma[4], beta[4] = 0.0, 0.5                                   # constant +1
    gamma[5], beta[5] = 0.0, -0.5                                  # constant -1
    gamma[6], beta[6] = 0.0, 0.0                                   # constant BN = 0 -> +1
    gamma[7], beta[7], mean[7], var[7] = 1e-3, 100.0, 0.0, 1.0    # threshold far below -k: +1
    gamma[8], beta[8], mean[8], var[8] = -1e-3, 100.0, 0.0, 1.0   # decreasing, always +1
    gamma[9], beta[9], mean[9], var[9] = 1e-3, -100.0, 0.0, 1.0   # never
    thr, flip = ref.fold_bn_threshold(gamma, beta, mean, var, eps, k)
    assert (flip[[1, 3]] == 1).all() and (flip[[0, 2]] == 0).all()
    assert thr[0] == 3 and thr[1] == 3 and thr[2] == 5 and thr[3] == -7
    # every accumulator value, and a random conv's accumulators: equal to torch's sign(BN)
    all_acc = np.arange(-k, k + 1)[:, None, None, None] * np.ones((1, 1, 1, n_ch), np.int64)
    np.testing.assert_array_equal(ref.bits_from_threshold(all_acc, thr, flip),
                                  _torch_bn_sign_bits(torch, all_acc, gamma, beta, mean, var, eps))
    x, wt = _packed(rng, (1, 6, 7, 70)), _packed(rng, (n_ch, 3, 3, 70))
    acc = ref.binary_conv2d(x, wt, 70, 1, 1)
    want = _torch_bn_sign_bits(torch, acc, gamma, beta, mean, var, eps)
    for path in kernels.available_paths():
        got = bitconv.binary_conv2d(x, wt, 70, padding=1, out="bits", threshold=(thr, flip), path=path)
        np.testing.assert_array_equal(got, want, err_msg=path)
    # the generic form with a pre-scale (XNOR alpha, conv bias) before BN
    pre = lambda a: a.astype(np.float32) * np.float32(0.37) + np.float32(0.25)  # noqa: E731
    thr2, flip2 = ref.fold_bn_threshold(gamma, beta, mean, var, 1e-5, k, pre=pre)
    y = ref.bn_eval_fn(gamma, beta, mean, var, 1e-5, pre)(all_acc)
    np.testing.assert_array_equal(ref.bits_from_threshold(all_acc, thr2, flip2), ref.bitpack(y))


def test_fold_threshold_refuses_non_monotone():
    with pytest.raises(ValueError, match="not monotone"):
        ref.fold_threshold(lambda a: 100.0 - a.astype(np.float64) ** 2, 50, 1)


def test_three_chained_binary_convs_on_packed_bits_equal_float_reference():
    """conv -> BN -> sign, three times, on packed activations (bits stage in between), equals
    the float computation on unpacked ±1 tensors (torch), to the last layer's accumulators."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(16)
    chans = [65, 64, 129, 30]
    xf = rng.standard_normal((2, 9, 8, chans[0])).astype(np.float32)
    layers = []
    for i in range(3):
        cin, cout = chans[i], chans[i + 1]
        wf = rng.standard_normal((cout, 3, 3, cin)).astype(np.float32)
        bn = (rng.standard_normal(cout).astype(np.float32), rng.standard_normal(cout).astype(np.float32),
              (rng.standard_normal(cout) * 5).astype(np.float32), (rng.random(cout) * 40 + 1).astype(np.float32))
        bn[0][::5] *= -1                                            # some negative gammas
        layers.append((wf, bn, 1 if i != 1 else 2))                 # stride 2 in the middle
    # float reference (torch, NCHW)
    t = torch.from_numpy(xf).permute(0, 3, 1, 2)
    ref_accs = []
    for wf, (g, b, m, v), s in layers:
        t = torch.where(t >= 0, 1.0, -1.0)
        wb = torch.from_numpy(np.where(wf >= 0, 1.0, -1.0).astype(np.float32)).permute(0, 3, 1, 2)
        acc = F.conv2d(t, wb, stride=s, padding=1)
        ref_accs.append(acc.permute(0, 2, 3, 1).numpy())
        t = F.batch_norm(acc, torch.from_numpy(m), torch.from_numpy(v), torch.from_numpy(g),
                         torch.from_numpy(b), training=False, eps=1e-5)
    for path in kernels.available_paths():
        a = kernels.bitpack(xf, path=path)                           # (N, H, W, ceil(65/64))
        for i, (wf, (g, b, m, v), s) in enumerate(layers):
            cin = chans[i]
            pw = bitconv.prepare_binary_conv2d(ref.bitpack(wf), cin, path=path)
            if i < 2:
                thr = ref.fold_bn_threshold(g, b, m, v, 1e-5, pw.kbits)
                a = bitconv.binary_conv2d(a, pw, stride=s, padding=1, out="bits", threshold=thr, threads=2)
                np.testing.assert_array_equal(a, ref.bitpack(
                    ref.bn_eval_fn(g, b, m, v, 1e-5)(ref_accs[i].astype(np.int64))), err_msg=f"{path} layer {i}")
            else:
                acc = bitconv.binary_conv2d(a, pw, stride=s, padding=1)
                np.testing.assert_array_equal(acc, ref_accs[i].astype(np.int32), err_msg=path)


# ---- dense ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ALL_PATHS)
def test_binary_dense_and_stages(path):
    _need(path)
    rng = np.random.default_rng(17)
    for m, oc, k in [(1, 10, 1), (3, 64, 63), (5, 65, 64), (1, 130, 65), (7, 3, 129), (2, 200, 1000)]:
        x, w = _packed(rng, (m, k)), _packed(rng, (oc, k))
        want = ref.bgemm(x, w, k)
        np.testing.assert_array_equal(ref.binary_dense(x, w, k), want)
        thr, flip = rng.integers(-5, 5, oc), rng.integers(0, 2, oc)
        scale = rng.standard_normal(oc).astype(np.float32)
        for variant in _variants(path):
            pw = bitconv.prepare_binary_dense(w, k, path=path, variant=variant)
            for threads in (1, 2):
                np.testing.assert_array_equal(bitconv.binary_dense(x, pw, threads=threads), want)
                np.testing.assert_array_equal(
                    bitconv.binary_dense(x, pw, out="bits", threshold=(thr, flip), threads=threads),
                    ref.bits_from_threshold(want, thr, flip))
                np.testing.assert_array_equal(
                    bitconv.binary_dense(x, pw, out="float", scale=scale, threads=threads),
                    want.astype(np.float32) * scale)


# ---- ternary ----------------------------------------------------------------------------

def _ternary(rng, shape):
    t = rng.integers(-1, 2, shape)                                   # {-1, 0, 1}
    sign = ref.bitpack(np.where(t > 0, 1, -1).astype(np.int8))
    # random sign bits where the mask is 0 must not matter
    junk = ref.bitpack(_pm1(rng, shape))
    mask = ref.bitpack(np.where(t != 0, 1, -1).astype(np.int8))
    sign = np.where(rng.random(sign.shape) < 0.5, sign, (sign & mask) | (junk & ~mask))
    return t, sign.astype(np.uint64), mask


@pytest.mark.parametrize("path", ALL_PATHS)
def test_ternary_conv2d_and_dense(path):
    _need(path)
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(18)
    for n, h, w, c, oc, k, s, p in CONV_CASES:
        xf = _pm1(rng, (n, h, w, c))
        t, sign, mask = _ternary(rng, (oc, k, k, c))
        want = ref.ternary_conv2d(ref.bitpack(xf), sign, mask, c, s, p)
        direct = torch.nn.functional.conv2d(torch.from_numpy(xf).permute(0, 3, 1, 2),
                                            torch.from_numpy(t.astype(np.float32)).permute(0, 3, 1, 2),
                                            stride=s, padding=p).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(want, direct.astype(np.int32))
        for variant in _variants(path, ternary=True):
            pw = bitconv.prepare_ternary_conv2d(sign, mask, c, path=path, variant=variant)
            for threads in (1, 2):
                for pv in (0, -1):
                    np.testing.assert_array_equal(
                        bitconv.ternary_conv2d(ref.bitpack(xf), pw, stride=s, padding=p, pad_value=pv,
                                               threads=threads),
                        ref.ternary_conv2d(ref.bitpack(xf), sign, mask, c, s, p, pv))
    for m, oc, k in [(1, 3, 1), (4, 65, 127), (3, 130, 129)]:
        x = _packed(rng, (m, k))
        t, sign, mask = _ternary(rng, (oc, k))
        want = ref.unpack(x, k).astype(np.int64) @ t.T
        thr, flip = rng.integers(-3, 3, oc), rng.integers(0, 2, oc)
        for variant in _variants(path, ternary=True):
            for threads in (1, 2):
                np.testing.assert_array_equal(
                    bitconv.ternary_dense(x, sign, mask, k, threads=threads, path=path, variant=variant), want)
                np.testing.assert_array_equal(
                    bitconv.ternary_dense(x, sign, mask, k, out="bits", threshold=(thr, flip),
                                          threads=threads, path=path, variant=variant),
                    ref.bits_from_threshold(want, thr, flip))


# ---- bit planes: BNN first layer, DoReFa k-bit x m-bit ------------------------------------

@pytest.mark.parametrize("path", ALL_PATHS)
def test_pack_bitplanes(path):
    _need(path)
    rng = np.random.default_rng(19)
    for k in [1, 63, 64, 65, 127, 128, 129, 300]:
        for bits in (1, 2, 8):
            x = rng.integers(0, 1 << bits, (3, 2, k)).astype(np.uint8)
            want = ref.pack_bitplanes(x, bits)
            assert want.shape == (3, 2, bits, ref.words_for(k))
            np.testing.assert_array_equal(ref.planes_to_levels(want, k), x)
            for threads in (1, 2):
                np.testing.assert_array_equal(bitconv.pack_bitplanes(x, bits, threads=threads, path=path), want)


@pytest.mark.parametrize("path", ALL_PATHS)
def test_first_layer_bitplanes_equal_direct_integer_dot(path):
    """8-bit pixels x ±1 weights (BNN Algorithm 4) == the integer convolution of the pixels."""
    _need(path)
    rng = np.random.default_rng(20)
    for n, h, w, c, oc, k, s, p in [(2, 9, 8, 3, 16, 3, 1, 1), (1, 7, 7, 1, 5, 5, 2, 2),
                                    (1, 6, 5, 65, 70, 3, 1, 0), (1, 5, 5, 129, 3, 3, 2, 1)]:
        img = rng.integers(0, 256, (n, h, w, c)).astype(np.uint8)
        wf = _pm1(rng, (oc, k, k, c))
        direct = ref.int_conv2d(img, wf.astype(np.int64), s, p, 0)       # zero padding
        planes = bitconv.pack_bitplanes(img, 8, path=path)
        np.testing.assert_array_equal(ref.bitplane_conv2d(planes, ref.bitpack(wf), c, None, s, p), direct)
        for variant in _variants(path):
            pw = bitconv.prepare_bitplane_conv2d(ref.bitpack(wf), c, path=path, variant=variant)
            for threads in (1, 2):
                got = bitconv.bitplane_conv2d(planes, pw, stride=s, padding=p, threads=threads)
                np.testing.assert_array_equal(got, direct, err_msg=f"{path}/{variant} t={threads}")
                sc = rng.standard_normal(oc).astype(np.float32)
                np.testing.assert_array_equal(
                    bitconv.bitplane_conv2d(planes, pw, stride=s, padding=p, out="float", scale=sc),
                    direct.astype(np.float32) * sc)


@pytest.mark.parametrize("path", ALL_PATHS)
def test_dorefa_kbit_products_equal_integer_products(path):
    _need(path)
    rng = np.random.default_rng(21)
    for a_bits, w_bits in [(2, 1), (2, 2), (4, 3), (1, 8)]:
        for n, h, w, c, oc, k, s, p in [(1, 6, 5, 65, 7, 3, 1, 1), (2, 5, 5, 3, 66, 3, 2, 0)]:
            xa = rng.integers(0, 1 << a_bits, (n, h, w, c))
            wl = rng.integers(0, 1 << w_bits, (oc, k, k, c))
            direct = ref.int_conv2d(xa, wl, s, p, 0)
            xp = bitconv.pack_bitplanes(xa, a_bits, path=path)
            wp = ref.pack_bitplanes(wl, w_bits)                       # (OC, KH, KW, w_bits, Cw)
            for variant in _variants(path):
                for threads in (1, 2):
                    got = bitconv.bitplane_conv2d(xp, wp, c, w_bits, s, p, threads=threads,
                                                  path=path, variant=variant)
                    np.testing.assert_array_equal(got, direct, err_msg=f"{path}/{variant} a{a_bits}w{w_bits}")
        # dense
        m, oc, k = 3, 70, 129
        xa, wl = rng.integers(0, 1 << a_bits, (m, k)), rng.integers(0, 1 << w_bits, (oc, k))
        for variant in _variants(path):
            got = bitconv.bitplane_dense(ref.pack_bitplanes(xa, a_bits), ref.pack_bitplanes(wl, w_bits), k,
                                         w_bits, threads=2, path=path, variant=variant)
            np.testing.assert_array_equal(got, xa @ wl.T)
            got = bitconv.bitplane_dense(ref.pack_bitplanes(xa, a_bits), _packed(rng, (5, k)), k,
                                         path=path, variant=variant)
            assert got.shape == (m, 5)


# ---- max pooling --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ALL_PATHS)
def test_binary_maxpool2d(path):
    _need(path)
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(22)
    for c in (1, 64, 65, 129):
        for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)]:
            xf = _pm1(rng, (2, 7, 6, c))
            want = torch.nn.functional.max_pool2d(torch.from_numpy(xf).permute(0, 3, 1, 2), k, s, p)
            want = ref.bitpack(want.permute(0, 2, 3, 1).numpy())
            x = ref.bitpack(xf)
            np.testing.assert_array_equal(ref.binary_maxpool2d(x, k, s, p), want)
            for threads in (1, 2):
                np.testing.assert_array_equal(bitconv.binary_maxpool2d(x, k, s, p, threads=threads, path=path), want)


# ---- errors -------------------------------------------------------------------------------

def test_bad_input_gives_clear_errors():
    rng = np.random.default_rng(23)
    x, w = _packed(rng, (1, 5, 5, 70)), _packed(rng, (8, 3, 3, 70))
    with pytest.raises(ValueError, match="c .*required"):
        bitconv.binary_conv2d(x, w)
    with pytest.raises(ValueError, match=r"x has 2 words .* 200 channels need ceil\(200/64\)=4"):
        bitconv.binary_conv2d(x, _packed(rng, (8, 3, 3, 200)), 200)
    with pytest.raises(ValueError, match=r"w\[0, 0, 0\] has bits set past channel 65"):
        bitconv.binary_conv2d(x, w, 65)
    with pytest.raises(TypeError, match="uint64"):
        bitconv.binary_conv2d(x.astype(np.int64), w, 70)
    with pytest.raises(ValueError, match="4-D"):
        bitconv.binary_conv2d(x[0], w, 70)
    with pytest.raises(ValueError, match="pad_value"):
        bitconv.binary_conv2d(x, w, 70, padding=1, pad_value=2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        bitconv.binary_conv2d(x[:, :2, :2], w, 70)
    with pytest.raises(ValueError, match="threshold=\\(thr, flip\\)"):
        bitconv.binary_conv2d(x, w, 70, out="bits")
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        bitconv.binary_conv2d(x, w, 70, out="bits", threshold=(np.zeros(7, np.int32), np.zeros(7)))
    with pytest.raises(ValueError, match="scale="):
        bitconv.binary_conv2d(x, w, 70, out="float")
    with pytest.raises(ValueError, match="only used with out='float'"):
        bitconv.binary_conv2d(x, w, 70, scale=np.ones(8))
    with pytest.raises(ValueError, match="out must be one of"):
        bitconv.binary_conv2d(x, w, 70, out="int8")
    with pytest.raises(ValueError, match="stride"):
        bitconv.binary_conv2d(x, w, 70, stride=0)
    with pytest.raises(ValueError, match="threads"):
        bitconv.binary_conv2d(x, w, 70, threads=0)
    pw = bitconv.prepare_binary_conv2d(w, 70, path="portable")
    with pytest.raises(ValueError, match="prepared for path 'portable'"):
        bitconv.binary_conv2d(x, pw, path="ref")
    with pytest.raises(ValueError, match="prepared for a 'binary' layer, not 'ternary'"):
        bitconv.ternary_conv2d(x, pw)
    with pytest.raises(ValueError, match="prepared for c=70"):
        bitconv.binary_conv2d(x, pw, 71)
    with pytest.raises(ValueError, match="variant"):
        bitconv.prepare_binary_conv2d(w, 70, path="portable", variant="nope")
    with pytest.raises(ValueError, match="ternary layers only"):
        bitconv.prepare_binary_conv2d(w, 70, path="portable", variant="masked-swar-2x2")
    with pytest.raises(ValueError, match="levels must be in"):
        bitconv.pack_bitplanes(np.array([0, 4]), 2)
    with pytest.raises(ValueError, match="overflow int32"):
        bitconv.bitplane_dense(np.zeros((1, 8, 1 << 18), np.uint64), np.zeros((2, 8, 1 << 18), np.uint64),
                               64 << 18, w_bits=8)
    with pytest.raises(ValueError, match="w_sign and w_mask"):
        bitconv.prepare_ternary_conv2d(w, w[:4], 70)
    with pytest.raises(ValueError, match="padding"):
        bitconv.binary_maxpool2d(x, 2, 2, 2)
    # the binding's own checks, past the Python ones
    from lowbit import _kernels
    with pytest.raises(ValueError, match="packed weights"):
        _kernels.xconv2d(x[:, :, :, None], np.zeros(3, np.uint64), [3, 3, 1, 1, 0, 0], 0, 8, 630, 1, 1,
                         np.zeros(72, np.int32), 0, np.zeros(0, np.int32), 0, np.empty((1, 3, 3, 8), np.int32),
                         np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.float32),
                         np.zeros(0, np.float32), "portable", "", 1)


def test_prepared_weights_are_one_32nd_of_float_and_correction_is_optional():
    rng = np.random.default_rng(24)
    w = _packed(rng, (128, 3, 3, 128))
    pw = bitconv.prepare_binary_conv2d(w, 128, path="portable", correction=False)
    assert pw.nbytes == w.nbytes == 128 * 3 * 3 * 128 * 4 // 32       # word panels: 1 bit / weight
    assert pw.packed.ctypes.data % 64 == 0 and pw.raw == ()
    full = bitconv.prepare_binary_conv2d(w, 128, path="portable")
    assert full.nbytes == w.nbytes + 4 * 128 * 9                         # + the per-tap sums
    x = _packed(rng, (1, 6, 6, 128))
    np.testing.assert_array_equal(bitconv.binary_conv2d(x, pw, padding=1, pad_value=-1),
                                  ref.binary_conv2d(x, w, 128, 1, 1, -1))
    np.testing.assert_array_equal(bitconv.binary_conv2d(x, pw), ref.binary_conv2d(x, w, 128))
    with pytest.raises(ValueError, match="correction=False"):
        bitconv.binary_conv2d(x, pw, padding=1)
    dense = bitconv.prepare_binary_dense(w.reshape(128, -1)[:, :18], 18 * 64, path="portable")
    assert dense.nbytes == 128 * 18 * 8                                  # dense: never corrected
