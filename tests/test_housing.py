"""housing.py on a synthetic housing.data with a known linear relation (no network, no ../shared)."""
import numpy as np
import pytest

import common
import housing
import housing_paddle

# price = features . TRUE_W + 3, exactly linear, so a converged model recovers it
TRUE_W = np.array([0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 0.25, 1.0, -2.0, 0.75, 0.1, -0.3, 0.6])


@pytest.fixture(scope='module')
def housing_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    features = rng.uniform(0, 10, size=(200, 13)) * rng.uniform(0.5, 5, size=13)
    price = features @ TRUE_W + 3.0
    path = tmp_path_factory.mktemp('housing') / 'housing.data'
    np.savetxt(path, np.c_[features, price], fmt='%.6f')  # whitespace-separated, like the UCI file
    return path


def normalised_coefficients(path):
    """What the true relation becomes after min-max scaling by the training rows."""
    train, _, mins, span = housing.split_and_normalise(housing.load_housing(path))
    return TRUE_W * span[:13] / span[13], train


def test_analytic_gradient_matches_numerical(housing_file):
    _, train = normalised_coefficients(housing_file)
    x, y = train[:20, :-1], train[:20, -1:]
    net = housing.Network(13, seed=1)
    grad_w, grad_b = net.gradient(x, y)
    eps = 1e-6
    numeric_w = np.zeros(13)
    for i in range(13):
        plus, minus = housing.Network(13, seed=1), housing.Network(13, seed=1)
        plus.w[i] += eps
        minus.w[i] -= eps
        numeric_w[i] = (plus.loss(plus.forward(x), y) - minus.loss(minus.forward(x), y)) / (2 * eps)
    plus, minus = housing.Network(13, seed=1), housing.Network(13, seed=1)
    plus.b, minus.b = eps, -eps
    numeric_b = (plus.loss(plus.forward(x), y) - minus.loss(minus.forward(x), y)) / (2 * eps)
    # The tutorial's gradient omits the factor 2 of d(mean square)/dw (it folds into the rate).
    np.testing.assert_allclose(2 * grad_w[:, 0], numeric_w, rtol=1e-5, atol=1e-8)
    assert 2 * grad_b == pytest.approx(numeric_b, rel=1e-5)


@pytest.mark.parametrize('batch_size, epochs, lr', [(None, 20000, 0.2), (20, 3000, 0.1)])
def test_gd_and_sgd_reduce_loss_and_recover_coefficients(housing_file, batch_size, epochs, lr):
    expected, train = normalised_coefficients(housing_file)
    net = housing.Network(13, seed=0)
    losses = net.train(train, epochs, lr, batch_size, seed=0)
    assert losses[-1] < 0.01 * losses[0]
    np.testing.assert_allclose(net.w[:, 0], expected, atol=0.05)


def test_numpy_training_is_deterministic(housing_file):
    _, train = normalised_coefficients(housing_file)
    a = housing.Network(13, seed=3).train(train, 5, 0.1, 16, seed=3)
    b = housing.Network(13, seed=3).train(train, 5, 0.1, 16, seed=3)
    assert a == b


def test_denormalise_returns_original_units(housing_file):
    data = housing.load_housing(housing_file)
    train, test, mins, span = housing.split_and_normalise(data)
    np.testing.assert_allclose(housing.denormalise(test[:, -1], mins, span), data[160:, -1], rtol=1e-12)
    assert train.min() == 0.0 and train.max() == 1.0


def test_paddle_run_saves_reloads_and_predicts(housing_file, tmp_path):
    """The tutorial's save, reload and predict. Every figure the run prints and records (the test
    example's price, the MSEs) comes from the reloaded model; here the model is trained again in
    this process, the same way (its losses equal the run's, so it is the model the run saved), and
    its own predictions must equal the recorded ones, and its weights the saved file's (==: a save
    and a load change no bit). A reload that lost or altered a weight fails here."""
    import paddle
    out = tmp_path / 'run'
    m = housing.main(['--data-dir', str(housing_file), '--epochs', '30', '--out', str(out)])
    assert (out / 'LR_model.pdparams').is_file() and (out / 'loss.png').is_file()
    assert m['batch_losses'][-1] < m['batch_losses'][0]
    train, test, mins, span = housing.split_and_normalise(housing.load_housing(housing_file))
    cfg = m['config']
    with paddle.utils.unique_name.guard():
        paddle.seed(cfg['seed'])
        trained = housing_paddle.Regressor()
        losses = housing_paddle.train(trained, train, cfg['epochs'], cfg['lr'], cfg['batch_size'],
                                      cfg['seed'])
    assert losses == m['batch_losses']  # the same seed, the same training: the model the run saved
    saved = paddle.load(str(out / 'LR_model.pdparams'))
    weights = trained.state_dict()
    assert sorted(saved) == sorted(weights) == ['fc.bias', 'fc.weight']
    for name, value in weights.items():
        assert np.array_equal(np.asarray(saved[name]), value.numpy()), name
    example = test[m['example']['index']:][:1, :-1]
    price = housing.denormalise(housing_paddle.predict(trained, example), mins, span)
    assert float(price[0, 0]) == m['example']['prediction_k']
    for split, key in ((train, 'train_mse'), (test, 'test_mse')):
        error = housing_paddle.predict(trained, split[:, :-1]) - split[:, -1:]
        assert float(np.mean(error ** 2)) == m[key], key


def test_divergence_is_reported(housing_file, tmp_path):
    with pytest.raises(common.UserError, match='training diverged; use a smaller learning rate'):
        housing.main(['--data-dir', str(housing_file), '--impl', 'numpy', '--method', 'gd',
                      '--lr', '100', '--out', str(tmp_path)])


def test_bad_housing_files(tmp_path):
    short = tmp_path / 'housing.data'
    short.write_text(' '.join(['1.0'] * 27) + '\n')
    with pytest.raises(common.UserError, match='27 numbers, not a multiple of 14'):
        housing.load_housing(str(short))
    words = tmp_path / 'words.data'
    words.write_text('price is high\n')
    with pytest.raises(common.UserError, match='something other than numbers'):
        housing.load_housing(str(words))
    with pytest.raises(common.UserError, match='no housing.data there'):
        housing.find_housing(str(tmp_path / 'nowhere'))
