"""Classify one image file with a trained model (the tutorial's load_image + predict, stage 五).

    python mnist_cnn.py --predict digit.png                 # the model in runs/cnn
    python mnist_cnn.py --predict digit.png --model runs/cnn/model.pdparams
"""
import os

import numpy as np
import paddle

import checkpoints
import restore
from errors import fail
from plots import as_2d, pyplot, save_figure


def load_digit_image(path):
    """A PNG/JPG digit -> float32 [1,1,28,28] normalised like the data (background -1, ink +1).
    Dark-on-light images (ink on paper) are inverted to MNIST's light-on-dark."""
    from PIL import Image, UnidentifiedImageError
    if not os.path.isfile(path):
        fail(f'--predict {path}: no such file')
    try:
        with Image.open(path) as im:
            im = im.convert('RGBA')  # a transparent background (drawing apps) becomes paper-white
            paper = Image.alpha_composite(Image.new('RGBA', im.size, 'white'), im)
            gray = np.asarray(paper.convert('L').resize((28, 28), Image.LANCZOS), dtype=np.float32)
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


def prediction_figure(path, image, probabilities, digit):
    """The image as the model sees it, beside a bar of each digit's probability with the predicted
    one in orange; probabilities None (a regression model): the predicted digit as text instead."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(7, 3), width_ratios=(1, 1.6))
    left.imshow(as_2d(np.asarray(image)[None])[0], cmap='gray', vmin=-1, vmax=1)
    left.set_axis_off()
    left.set_title('input (28x28, -1..1)', fontsize=10)
    if probabilities is None:
        right.set_axis_off()
        right.text(0.5, 0.5, f'predicted digit: {int(digit)}', fontsize=16,
                   ha='center', va='center')
    else:
        colours = ['tab:orange' if k == digit else 'tab:gray' for k in range(len(probabilities))]
        right.bar(range(len(probabilities)), probabilities, color=colours)
        right.set(xticks=range(len(probabilities)), ylim=(0, 1), xlabel='digit',
                  ylabel='probability')
        right.set_title(f'predicted: {int(digit)} ({probabilities[digit]:.2f})', fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def run(args, script, build_model):
    """--predict IMAGE: rebuild the model trained into --out (or --model) and classify one image."""
    prefix = restore.checkpoint_prefix(args.model or os.path.join(args.out, 'model'))
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
        restore.load_model(model, prefix + '.pdparams')
        digit, probabilities = predict_digit(model, image, meta['config']['loss'])
    picture = prediction_figure(os.path.join(args.out, 'predict.png'), image[0], probabilities,
                                digit)
    how = ('regression output, rounded' if probabilities is None
           else f'probability {probabilities.max():.4f}')
    print(f'predicted digit: {digit} ({how}) by {prefix}.pdparams (run '
          f'{meta["config"].get("run_id")}); the image as the model sees it: {picture}')
    return digit, probabilities
