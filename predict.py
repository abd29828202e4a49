"""Classify one image file with a trained model (the tutorial's load_image + predict, stage 五).

    python mnist_cnn.py --predict digit.png                 # the model in runs/cnn
    python mnist_cnn.py --predict digit.png --model runs/cnn/model.pdparams
"""
import os

import numpy as np
import paddle

import checkpoints
import plots
from errors import fail


def add_args(parser):
    parser.add_argument('--predict', metavar='IMAGE',
                        help='classify one PNG/JPG digit with the model trained into --out, '
                             'then stop')
    parser.add_argument('--model', default=None,
                        help='model file for --predict (default: <out>/model.pdparams)')


def load_digit_image(path):
    """A PNG/JPG digit -> float32 [1,1,28,28] normalised like the data (background -1, ink +1).
    Dark-on-light images (ink on paper) are inverted to MNIST's light-on-dark."""
    from PIL import Image, UnidentifiedImageError
    if not os.path.isfile(path):
        fail(f'--predict {path}: no such file')
    try:
        with Image.open(path) as im:
            gray = np.asarray(im.convert('L').resize((28, 28), Image.LANCZOS), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        fail(f'--predict {path} is not an image PIL can read ({e}); give a PNG or JPG of one digit')
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > 127:
        gray = 255.0 - gray
    return (gray / 127.5 - 1.0).reshape(1, 1, 28, 28).astype(np.float32)


@paddle.no_grad()
def predict_digit(model, image, loss_kind):
    """(digit, the 10 probabilities or None) for one [1,1,28,28] image; None: a regression model,
    whose one output, rounded, is the digit."""
    model.eval()
    output = model(paddle.to_tensor(image)).numpy()[0]
    if loss_kind == 'ce':
        probabilities = np.exp(output - output.max())
        probabilities /= probabilities.sum()  # softmax
        return int(probabilities.argmax()), probabilities
    return int(np.clip(np.round(output[0]), 0, 9)), None


def run(args, script, build_model):
    """--predict IMAGE: rebuild the model trained into --out (or --model) and classify one image."""
    prefix = checkpoints.checkpoint_prefix(args.model or os.path.join(args.out, 'model'))
    if not os.path.isfile(prefix + '.pdparams'):
        fail(f'no trained model at {prefix}.pdparams; train first (make cnn), or pass --model with '
             f'a model file (runs/cnn/model.pdparams) or a checkpoint (checkpoint/mnist_epoch0)')
    meta = checkpoints.read_meta(prefix)
    if meta.get('script') != script:
        fail(f'{prefix}.pdparams was trained by {meta.get("script")}.py, not {script}.py; '
             f'use that script\'s --predict')
    image = load_digit_image(args.predict)  # check the image before building anything
    with paddle.utils.unique_name.guard():
        model = build_model(meta['config'])
        checkpoints.load_model(model, prefix + '.pdparams')
        digit, probabilities = predict_digit(model, image, meta['config']['loss'])
    picture = plots.prediction_figure(os.path.join(args.out, 'predict.png'), image[0],
                                      probabilities, digit)
    how = ('regression output, rounded' if probabilities is None
           else f'probability {probabilities.max():.4f}')
    print(f'predicted digit: {digit} ({how}); the image as the model sees it: {picture}')
    return digit, probabilities
