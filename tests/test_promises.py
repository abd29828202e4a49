"""README promises that need no training run, checked in this process.

The README, "What we kept": the convolution's bias is added as a [C, 1, 1] tensor instead of
nn.Conv2D's own add, with "bit-identical losses, the same checkpoint layout". So mnist_cnn.Conv2D
must hold the same parameters under the same names as paddle.nn.Conv2D, load each other's weights,
and give the same numbers.
"""
import numpy as np

import startup
paddle = startup.import_paddle()  # before paddle, as in the scripts

import mnist_cnn


def test_our_conv2d_is_interchangeable_with_paddles():
    images = paddle.to_tensor(np.random.default_rng(0).uniform(-1, 1, (8, 20, 14, 14)).astype('float32'))
    with paddle.utils.unique_name.guard():
        paddle.seed(0)
        ours = mnist_cnn.Conv2D(20, 20, kernel_size=5, stride=1, padding=2)
    with paddle.utils.unique_name.guard():
        paddle.seed(0)
        theirs = paddle.nn.Conv2D(20, 20, kernel_size=5, stride=1, padding=2)
    # the same parameters, names, shapes and (same seed) initial values: one checkpoint layout
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert np.array_equal(a.numpy(), b.numpy()), name
    theirs.set_state_dict({k: paddle.to_tensor(v.numpy() + 0.5) for k, v in ours.state_dict().items()})
    ours.set_state_dict(theirs.state_dict())  # each loads the other's weights
    # the same outputs: the bias added after the convolution either way. (paddle's [1, C, 1, 1]
    # add and ours broadcast the same float32 sums; == is what "bit-identical losses" needs)
    assert np.array_equal(ours(images).numpy(), theirs(images).numpy())
