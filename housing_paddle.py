"""Boston housing with PaddlePaddle: the second half of housing.py (`--impl paddle`).

The same linear model as housing.py's numpy Network, z = x.w + b, now as nn.Linear(13, 1): the
framework computes the gradient (loss.backward()) and updates the weights (optimizer.step()).
As in the tutorial, the trained model is saved to LR_model.pdparams, loaded into a fresh model,
and that one predicts. housing.py imports this module only for --impl paddle, so its numpy
chapter runs without PaddlePaddle installed.
"""
import math

import startup
paddle = startup.import_paddle()  # first the project's Python and the CPU settings: see startup.py

import paddle.nn as nn
import paddle.nn.functional as F

import common
from safe_files import atomic_write


class Regressor(nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(in_features=13, out_features=1)  # 13 features -> the price

    def forward(self, x):
        return self.fc(x)


def train(model, data, epochs, lr, batch_size, seed):
    """Mini-batch SGD (or full batch when batch_size is None) with MSE, as the tutorial's loop."""
    optimizer = paddle.optimizer.SGD(learning_rate=lr, parameters=model.parameters())
    losses = []
    size = batch_size or len(data)
    for epoch in range(epochs):
        order = common.epoch_order(len(data), seed, epoch)  # shuffled by (seed, epoch) as for MNIST
        for b in range(math.ceil(len(data) / size)):
            batch = data[order[b * size:(b + 1) * size]]
            x = paddle.to_tensor(batch[:, :-1], dtype='float32')  # 13 features
            y = paddle.to_tensor(batch[:, -1:], dtype='float32')  # the price
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            losses.append(common.check_finite(float(loss), epoch, lr))
            if b == 0 and epoch % max(1, epochs // 10) == 0:
                print(f'epoch: {epoch}, iter: {b}, loss is: {losses[-1]:.6f}')
    return losses


@paddle.no_grad()
def predict(model, x):
    model.eval()
    return model(paddle.to_tensor(x, dtype='float32')).numpy()


def train_and_reload(data, epochs, lr, batch_size, seed, model_path):
    """Train, save to model_path, load into a fresh Regressor; returns (losses, its predict(x))."""
    common.select_device('cpu')  # a 13-weight model: the CPU is the right place
    with paddle.utils.unique_name.guard():
        paddle.seed(seed)  # the same seed, the same initial weights
        model = Regressor()
        losses = train(model, data, epochs, lr, batch_size, seed)
        atomic_write(model_path, lambda tmp: paddle.save(model.state_dict(), tmp))
        loaded = Regressor()
        loaded.set_state_dict(paddle.load(model_path))
    return losses, lambda x: predict(loaded, x)
